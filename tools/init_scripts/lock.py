"""Writes a hashed requirements file for the init scripts' REQUIREMENTS_LOCK: the exact set pip
resolves for the pins of versions.env, on one Python version and platform, each file with its
sha256, for `pip install --require-hashes -r LOCK`. Nothing is installed (pip --dry-run --report,
which reads the packages' metadata, not their wheels). Run it where the indexes are reachable:

  python tools/init_scripts/lock.py gpu --python-version 3.11 \\
      --constraint runtime-freeze.txt --wheel dist/synapseml_ext-0.1.0-py3-none-any.whl \\
      -o requirements-gpu-cp311.lock

--constraint: the target runtime's `pip freeze` (in a notebook on that runtime:
`%sh /databricks/python/bin/pip freeze > /Volumes/.../runtime-freeze.txt`). Without it the lock
resolves from nothing and pins versions that may differ from what the runtime ships; the init
script keeps the runtime's numpy, pandas, pyarrow, pyspark and torch, so pip would then stop
with a conflict. A lock holds one platform's files: regenerate it for another Python version,
another runtime, or after changing versions.env.
--wheel: a synapseml-ext wheel file; its dependencies go into the lock, not the file itself (the
init script installs WHEEL after the lock). Without --wheel the lock pins synapseml-ext from the
index.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPI = "https://pypi.org/simple"
VERSION_NAMES = (
    "SYNAPSEML_EXT_VERSION TORCH_VERSION TORCH_GPU_VERSION ONNXRUNTIME_VERSION FAISS_CPU_VERSION "
    "CUDA_RUNTIME_CU12_VERSION CUDA_NVRTC_CU12_VERSION CUBLAS_CU12_VERSION CUDNN_CU12_VERSION "
    "CUFFT_CU12_VERSION CURAND_CU12_VERSION CUSOLVER_CU12_VERSION CUSPARSE_CU12_VERSION "
    "NVJITLINK_CU12_VERSION NCCL_CU12_VERSION TENSORRT_CU12_VERSION RAPIDS_VERSION "
    "SPARK_RAPIDS_ML_VERSION TORCH_CPU_INDEX_URL TORCH_GPU_INDEX_URL NVIDIA_INDEX_URL"
).split()


def versions_env() -> dict[str, str]:
    """versions.env as the scripts see it (overrides from the environment included)."""
    script = f'source "{HERE / "versions.env"}"; ' + "; ".join(
        f'printf "%s=%s\\n" {n} "${{{n}}}"' for n in VERSION_NAMES)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def specs_for(kind: str, v: dict[str, str], extras: str) -> tuple[list[str], str]:
    """The requirements the script installs for KIND, and the index its torch comes from."""
    if kind == "cpu":
        specs = [f"torch=={v['TORCH_VERSION']}", f"onnxruntime=={v['ONNXRUNTIME_VERSION']}",
                 f"faiss-cpu=={v['FAISS_CPU_VERSION']}"]
        return specs, v["TORCH_CPU_INDEX_URL"]
    cuda = {"nvidia-cuda-runtime-cu12": "CUDA_RUNTIME_CU12_VERSION",
            "nvidia-cuda-nvrtc-cu12": "CUDA_NVRTC_CU12_VERSION",
            "nvidia-cublas-cu12": "CUBLAS_CU12_VERSION", "nvidia-cudnn-cu12": "CUDNN_CU12_VERSION",
            "nvidia-cufft-cu12": "CUFFT_CU12_VERSION", "nvidia-curand-cu12": "CURAND_CU12_VERSION",
            "nvidia-cusolver-cu12": "CUSOLVER_CU12_VERSION",
            "nvidia-cusparse-cu12": "CUSPARSE_CU12_VERSION",
            "nvidia-nvjitlink-cu12": "NVJITLINK_CU12_VERSION", "nvidia-nccl-cu12": "NCCL_CU12_VERSION"}
    specs = [f"torch=={v['TORCH_GPU_VERSION']}", *(f"{n}=={v[k]}" for n, k in cuda.items()),
             f"tensorrt-cu12=={v['TENSORRT_CU12_VERSION']}", f"cuml-cu12=={v['RAPIDS_VERSION']}",
             f"cuvs-cu12=={v['RAPIDS_VERSION']}",
             f"spark-rapids-ml=={v['SPARK_RAPIDS_ML_VERSION']}",
             f"onnxruntime=={v['ONNXRUNTIME_VERSION']}", f"faiss-cpu=={v['FAISS_CPU_VERSION']}"]
    return specs, v["TORCH_GPU_INDEX_URL"]


def manylinux_platforms(arch: str, glibc_minor: int) -> list[str]:
    """pip matches --platform tags exactly: every manylinux tag a node with that glibc accepts."""
    tags = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}"] + ([f"manylinux2010_{arch}", f"manylinux1_{arch}"]
                                              if arch == "x86_64" else [])


def lock_lines(report: dict, skip: set[str]) -> list[str]:
    """`name==version --hash=sha256:...` for each package pip's --report would install."""
    lines = []
    for item in sorted(report["install"], key=lambda i: canonical(i["metadata"]["name"])):
        name = canonical(item["metadata"]["name"])
        if name in skip:
            continue
        info = item["download_info"]
        hashes = info.get("archive_info", {}).get("hashes", {})
        digest = hashes.get("sha256") or info.get("archive_info", {}).get("hash", "").removeprefix(
            "sha256=")
        if not re.fullmatch(r"[0-9a-f]{64}", digest or ""):
            raise SystemExit(f"lock.py: no sha256 for {name} ({info.get('url')}): cannot lock it")
        lines.append(f"{name}=={item['metadata']['version']} \\\n    --hash=sha256:{digest}")
    return lines


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("cpu", "gpu"), help="databricks-cpu.sh or databricks-gpu.sh")
    parser.add_argument("--python-version", default="3.11", help="of the target (default 3.11)")
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    parser.add_argument("--glibc", default="2.35", help="of the target (Ubuntu 22.04: 2.35)")
    parser.add_argument("--constraint", help="the target runtime's pip freeze")
    parser.add_argument("--wheel", help="a synapseml-ext wheel file (its dependencies are locked)")
    parser.add_argument("--extras", default=None, help="of synapseml-ext (default: the script's)")
    parser.add_argument("--index-url", default=PYPI, help=f"main index (default {PYPI})")
    parser.add_argument("--nvidia-index-url", default="https://pypi.nvidia.com",
                        help="gpu: NVIDIA's index, next to the main one ('' = none)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)

    v = versions_env()
    extras = args.extras if args.extras is not None else ("cpu" if args.kind == "cpu"
                                                          else "gpu,tensorrt")
    specs, torch_index = specs_for(args.kind, v, extras)
    if args.wheel:
        uri = Path(args.wheel).resolve().as_uri()
        specs.append(f"synapseml-ext[{extras}] @ {uri}" if extras else f"synapseml-ext @ {uri}")
    else:
        ours = v["SYNAPSEML_EXT_VERSION"]
        specs.append(f"synapseml-ext[{extras}]=={ours}" if extras else f"synapseml-ext=={ours}")
    # Hashes pin every file, so in a lock a second index cannot swap one: torch's own index (pip
    # prefers its +cpu build for the same version) and, for the GPU set, NVIDIA's (cuvs-cu12,
    # tensorrt-cu12-libs 25.12/11.x are wheels there and source stubs on PyPI) are listed next
    # to the main one.
    extra = [torch_index] if torch_index else []
    if args.kind == "gpu" and args.nvidia_index_url:
        extra.append(args.nvidia_index_url)
    indexes = ["--index-url", args.index_url]
    for url in extra:
        indexes += ["--extra-index-url", url]
    py = args.python_version
    abi = "cp" + py.replace(".", "")
    glibc_minor = int(args.glibc.split(".")[1])
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
               "--dry-run", "--ignore-installed", "--quiet", "--report", str(report_path),
               "--only-binary=:all:", "--python-version", py, "--implementation", "cp",
               "--abi", abi, "--abi", "abi3", "--abi", "none", *[a for p in manylinux_platforms(args.arch, glibc_minor)
                               for a in ("--platform", p)], *indexes]
        if args.constraint:
            cmd += ["--constraint", args.constraint]
        done = subprocess.run([*cmd, *specs])
        if done.returncode != 0:
            return done.returncode
        report = json.loads(report_path.read_text())
    skip = {"synapseml-ext"} if args.wheel else set()
    shown = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    header = [
        f"# REQUIREMENTS_LOCK for databricks-{args.kind}.sh: CPython {py}, Linux {args.arch},"
        f" glibc >= {args.glibc}",
        f"# generated by: python tools/init_scripts/lock.py {shown}",
        "# Regenerate it the same way after changing versions.env, for another runtime or Python.",
        *[" ".join(indexes[i:i + 2]) for i in range(0, len(indexes), 2)],
    ]
    Path(args.output).write_text("\n".join(header + lock_lines(report, skip)) + "\n")
    print(f"lock.py: wrote {args.output} ({len(report['install']) - len(skip)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
