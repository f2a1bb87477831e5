"""The synapseml-ext command: quickstart and embed (csv, jsonl, parquet)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synapseml_ext
from synapseml_ext.engine import EncoderSpec, SentenceEncoder

from conftest import REPO
from helpers import cosines


def _run(args: list[str], cache_dir: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), SYNAPSEML_EXT_CACHE=cache_dir,
               **env_extra)
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    return subprocess.run([sys.executable, "-m", "synapseml_ext.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def _one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2 and stderr one error line: no Spark warning, Java frame or traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("synapseml-ext: error: ")]
    assert len(lines) == len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "at org.apache" not in done.stderr
    assert "Set mode" not in done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.spark
def test_quickstart_prints_the_nearest_reviews(cache_dir):
    done = _run(["quickstart", "--runtime", "onnx"], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Nearest sample reviews" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("desserts", "disgusting"))]
    assert len(lines) == 6
    # Sanity of the search itself: a dessert review first for "desserts", a spoiled one
    # for "disgusting".
    first = {line.split()[0]: line for line in lines if line.split()[1] == "1"}
    assert any(w in first["desserts"].lower() for w in ("pie", "cake", "ice cream", "dessert",
                                                         "tart", "brownie", "cookie"))
    assert any(w in first["disgusting"].lower() for w in ("rotten", "disgusting", "mold",
                                                           "rancid", "gross", "vile"))


@pytest.mark.spark
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_embed_writes_parquet_in_order(tmp_path, fmt, minilm_dir, cache_dir):
    texts = ["Crème brûlée, the best dessert", None, "stale, rancid crackers", "ok",
             'quoted "text", with commas'] * 3
    frame = pd.DataFrame({"id": range(len(texts)), "review": texts})
    source = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        frame.to_csv(source, index=False)
    elif fmt == "jsonl":
        frame.to_json(source, orient="records", lines=True)
    else:
        frame.to_parquet(source)
    out_dir = tmp_path / "out"
    # jsonl: the workers' records at INFO, which the CLI shows after the run
    level = {"SYNAPSEML_EXT_LOG_LEVEL": "INFO"} if fmt == "jsonl" else {}
    done = _run(["embed", "--input", str(source), "--text-col", "review", "--output",
                 str(out_dir), "--model", minilm_dir, "--runtime", "onnx"], cache_dir, **level)
    assert done.returncode == 0, done.stderr[-3000:]
    # not a terminal: no progress; the JVM's stderr went to the private log, and only our
    # workers' records (warnings by default: none here) come back from it
    if fmt == "jsonl":
        assert "synapseml_ext.hf INFO: embedded " in done.stderr, done.stderr[-3000:]
        assert "incubator" not in done.stderr
    else:
        assert done.stderr == "", done.stderr[-3000:]
    closing = done.stdout.strip().splitlines()[-1]
    assert closing.startswith(f"embedded {len(texts)} rows (3 null) into {out_dir} in ")
    # Start-up (Spark, model load) apart from the embedding's own time and rates.
    assert "s (start-up " in closing and "s, embedding " in closing
    assert "rows/s" in closing and "tokens/s" in closing and "runtime=onnx" in closing
    assert "precision=fp32" in closing
    result = pd.read_parquet(out_dir)
    assert [int(i) for i in result["id"]] == list(range(len(texts)))
    assert result["embeddings"].isna().sum() == 3
    present = result.dropna(subset=["embeddings"])
    expected = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx",
                                           cache_dir=cache_dir)).encode(present["review"].tolist())
    assert cosines(np.stack(present["embeddings"].to_numpy()), expected).min() >= 0.9999


@pytest.mark.spark
def test_embed_names_the_option_of_a_wrong_column(tmp_path, minilm_dir, cache_dir):
    """jsonl's columns are known once Spark reads it: the errors name the CLI's options (not
    the stage's inputCol / outputCol) and leave nothing behind."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a", "stars": 3}\n', encoding="utf-8")
    base = ["embed", "--input", str(source), "--output", str(tmp_path / "o"), "--model",
            minilm_dir]
    for given, expected in [
        (["--text-col", "body"], "--text-col 'body' not found in --input; available columns: "
                                 "stars, text"),
        (["--text-col", "stars"], "--text-col 'stars' is a bigint column of --input, not text"),
        (["--text-col", "text", "--output-col", "stars"],
         "--output-col 'stars' is already a column of --input: choose another name"),
    ]:
        done = _run([*base, *given], cache_dir, XDG_STATE_HOME=str(tmp_path / "state"))
        _one_line_error(done, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "state"]
    assert not list((tmp_path / "state").rglob("*.log"))  # no log kept that nobody names


# -- nothing lost: --overwrite, failed runs, retries -------------------------------------------

def test_overwrite_refuses_a_directory_holding_the_input(tmp_path, cache_dir):
    danger = tmp_path / "danger"
    danger.mkdir()
    data = (Path(synapseml_ext.__file__).parent / "data" / "sample_reviews.csv").read_bytes()
    (danger / "mydata.csv").write_bytes(data)
    (danger / "notes.txt").write_text("notes\n")
    state = tmp_path / "state"
    done = _run(["embed", "--input", str(danger / "mydata.csv"), "--text-col", "Text",
                 "--output", str(danger), "--overwrite"], cache_dir, XDG_STATE_HOME=str(state))
    _one_line_error(done, "contains or is inside the input", "choose an output directory")
    assert sorted(p.name for p in danger.iterdir()) == ["mydata.csv", "notes.txt"]
    assert (danger / "mydata.csv").read_bytes() == data
    assert (danger / "notes.txt").read_text() == "notes\n"
    assert not state.exists()  # refused before Spark started
    # The same directory as --output for another input: not ours, so never replaced.
    other = tmp_path / "other.csv"
    other.write_bytes(data)
    done = _run(["embed", "--input", str(other), "--text-col", "Text", "--output", str(danger),
                 "--overwrite"], cache_dir, XDG_STATE_HOME=str(state))
    _one_line_error(done, "is not a synapseml-ext output", "choose a new or empty directory")
    assert sorted(p.name for p in danger.iterdir()) == ["mydata.csv", "notes.txt"]


def _damaged_model(minilm_dir: str, target: Path) -> Path:
    """The bundled model with another model's (well-formed) weights: every check on the
    driver passes, loading on the executor fails."""
    from safetensors.numpy import save_file

    shutil.copytree(minilm_dir, target, copy_function=os.symlink)
    (target / "model.safetensors").unlink()
    save_file({"classifier.weight": np.zeros((2, 4), np.float32)},
              str(target / "model.safetensors"))
    return target


@pytest.mark.spark
def test_failed_run_leaves_nothing_and_retry_and_overwrite_work(tmp_path, minilm_dir,
                                                                  cache_dir):
    work = tmp_path / "work"
    work.mkdir()
    source = work / "latin.csv"
    source.write_bytes("id,Text\n1,café crème brûlée\n2,rancid nuts\n".encode("latin-1"))
    out = work / "out"
    state = tmp_path / "state"
    args = ["embed", "--input", str(source), "--text-col", "Text", "--output", str(out),
            "--runtime", "onnx", "--encoding", "latin-1"]

    # 1. Fails on the executor: one line of ours, where the full log is, nothing left behind.
    bad = _damaged_model(minilm_dir, tmp_path / "damaged")
    done = _run([*args, "--model", str(bad)], cache_dir, XDG_STATE_HOME=str(state))
    line = _one_line_error(done, f"the weights in {bad} lack 101 tensor(s)", "(full log: ")
    assert sorted(p.name for p in work.iterdir()) == ["latin.csv"]  # no output, no temp
    log = Path(line.rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log.is_relative_to(state) and log.stat().st_mode & 0o777 == 0o600
    assert "Traceback" in log.read_text() and "ModelLoadError" in log.read_text()

    # 2. The retry succeeds into the same --output; latin-1 text arrives intact.
    done = _run([*args, "--model", minilm_dir], cache_dir, XDG_STATE_HOME=str(state))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "synapseml-ext: error" not in done.stderr
    first = pd.read_parquet(out)
    assert first["Text"].tolist() == ["café crème brûlée", "rancid nuts"]
    marker = json.loads((out / "_SYNAPSEML_EXT_OUTPUT").read_text())
    assert marker["tool"] == "synapseml-ext" and marker["input"] == str(source)
    assert set(marker["files"]) == {p.name for p in out.iterdir()} - {"_SYNAPSEML_EXT_OUTPUT"}

    # 3. Without --overwrite the previous output stays; with it, it is replaced.
    done = _run([*args, "--model", minilm_dir], cache_dir, XDG_STATE_HOME=str(state))
    _one_line_error(done, "already exists: pass --overwrite")
    done = _run([*args, "--model", minilm_dir, "--overwrite", "--output-col", "vec"], cache_dir,
                XDG_STATE_HOME=str(state))
    assert done.returncode == 0, done.stderr[-3000:]
    second = pd.read_parquet(out)
    assert list(second.columns) == ["id", "Text", "vec"]
    assert cosines(np.stack(second["vec"].to_numpy()),
                   np.stack(first["embeddings"].to_numpy())).min() >= 0.9999
    assert sorted(p.name for p in work.iterdir()) == ["latin.csv", "out"]
    old_parts = {name for name in marker["files"] if "part-" in name}
    assert old_parts and not old_parts & {p.name for p in out.iterdir()}  # old parts gone


# -- every user error: exit code 2 and one line, checked before Spark starts --------------------

@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write, root included (chattr +i where we are root)."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("chattr +i is not available here")
        else:
            path.chmod(0o555)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)


def _sample_csv(tmp_path: Path) -> Path:
    source = tmp_path / "in.csv"
    source.write_text("id,Text\n1,chocolate cake\n2,rancid nuts\n", encoding="utf-8")
    return source


def _embedded_table(path: Path) -> None:
    """A directory as ``embed`` leaves it: parquet part files and our marker."""
    path.mkdir()
    pd.DataFrame({"Text": ["a"], "embeddings": [[0.5, 0.5]]}).to_parquet(path / "part-0.parquet")
    marker = {"tool": "synapseml-ext", "command": "embed", "format": "parquet",
              "files": ["part-0.parquet"]}
    (path / "_SYNAPSEML_EXT_OUTPUT").write_text(json.dumps(marker), encoding="utf-8")


CASES = {
    "missing input": (lambda t: ["--input", str(t / "nope.csv")], "does not exist: check the path"),
    "unknown format": (lambda t: ["--input", str(t / "in.txt")], "pass --format csv"),
    "empty input file": (lambda t: ["--input", str(t / "empty.csv")],
                         "is empty (0 bytes): pass a file with data"),
    "existing output": (lambda t: ["--output", str(t / "full")], "already exists: pass --overwrite"),
    "existing output not ours": (lambda t: ["--output", str(t / "full"), "--overwrite"],
                                 "is not a synapseml-ext output"),
    "missing parent": (lambda t: ["--output", str(t / "nowhere" / "out")],
                       "does not exist: create it first"),
    "parent is a file": (lambda t: ["--output", str(t / "in.txt" / "out")],
                         "is a file, not a directory"),
    "latin-1 bytes": (lambda t: ["--input", str(t / "latin.csv")],
                      "is not valid utf-8: 0xe9 at byte offset 13 (line 2); pass its encoding "
                      "with --encoding"),
    "unknown encoding": (lambda t: ["--encoding", "klingon"], "unknown --encoding 'klingon'"),
    "missing text column": (lambda t: ["--text-col", "Body"],
                            "--text-col 'Body' not found in --input; available columns: id, Text"),
    "existing output column": (lambda t: ["--output-col", "id"],
                               "--output-col 'id' is already a column of --input"),
    # a table embed wrote: its marker tells the format, so the columns are checked
    "embed output as input": (lambda t: ["--input", str(t / "embedded")],
                              "--output-col 'embeddings' is already a column of --input"),
    "missing model directory": (lambda t: ["--model", str(t / "no-model")],
                                "does not exist: pass a directory that holds"),
    "directory without a model": (lambda t: ["--model", str(t)], "does not hold a usable model"),
    "unknown hub id offline": (lambda t: ["--model", "acme/no-such-model-xyz"],
                               "the driver is offline"),
    "runtime without its precision": (lambda t: ["--runtime", "onnx", "--precision", "fp16"],
                                      "is not supported by runtime='onnx'"),
    "master that refuses": (lambda t: ["--master", "spark://127.0.0.1:9"],
                            "--master 'spark://127.0.0.1:9' cannot be reached (127.0.0.1:9: "
                            "Connection refused): check its URL"),
    "runtime cuda without gpu": (lambda t: ["--runtime", "cuda"],
                                 "needs an NVIDIA GPU and none is usable here"),
}


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_before_spark(tmp_path, cache_dir, case):
    if case == "runtime cuda without gpu":
        from synapseml_ext.engine.hardware import cuda_device_count

        if cuda_device_count():
            pytest.skip("this machine has a GPU")
    _sample_csv(tmp_path)
    (tmp_path / "in.txt").write_text("Text\nx\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "latin.csv").write_bytes("id,Text\n1,café\n".encode("latin-1"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    _embedded_table(tmp_path / "embedded")
    extra, expected = CASES[case]
    args = {"--input": str(tmp_path / "in.csv"), "--text-col": "Text",
            "--output": str(tmp_path / "out")}
    given = extra(tmp_path)
    args.update(dict(zip(given[::2], given[1::2], strict=False)))
    flags = [a for a in given if a == "--overwrite"]
    argv = ["embed", *[x for kv in args.items() for x in kv], *flags]
    state = tmp_path / "state"
    done = _run(argv, cache_dir, XDG_STATE_HOME=str(state), HF_HUB_OFFLINE="1")
    _one_line_error(done, expected)
    assert not state.exists()  # Spark never started
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if "synapseml-ext-tmp" in p.name]


def test_a_java_that_does_not_start_is_one_line_naming_it(tmp_path, cache_dir):
    """The JVM's stderr goes to the private log: where it exits before Spark starts, the
    line carries what it said."""
    source = _sample_csv(tmp_path)
    done = _run(["embed", "--input", str(source), "--text-col", "Text", "--output",
                 str(tmp_path / "out")], cache_dir, JAVA_HOME=str(tmp_path / "no-java"),
                XDG_STATE_HOME=str(tmp_path / "state"))
    line = _one_line_error(done, "Spark did not start: ", "no-java/bin/java",
                           "check JAVA_HOME", "full log: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert Path(line.rsplit("full log: ", 1)[1].rstrip(")")).is_file()
    assert not (tmp_path / "out").exists()
    # the JVM runs but spark-submit refuses: its own line, not the JVM's start-up warning
    done = _run(["embed", "--input", str(source), "--text-col", "Text", "--output",
                 str(tmp_path / "out"), "--master", "foo"], cache_dir,
                XDG_STATE_HOME=str(tmp_path / "state"))
    line = _one_line_error(done, "Spark did not start: ", "Master must either be yarn")
    assert "JAVA_HOME" not in line and "incubator" not in line


def test_read_only_locations_are_one_line(tmp_path, cache_dir, read_only_dir):
    source = _sample_csv(tmp_path)
    locked = read_only_dir(tmp_path / "locked")
    empty_locked = read_only_dir(tmp_path / "empty-locked")
    base = ["embed", "--input", str(source), "--text-col", "Text"]
    done = _run([*base, "--output", str(locked / "out")], cache_dir)
    _one_line_error(done, f"cannot write to {locked} (the parent of --output)")
    done = _run([*base, "--output", str(empty_locked)], cache_dir)
    _one_line_error(done, "is not writable", "choose another --output")
    done = _run([*base, "--output", str(tmp_path / "out"), "--cache-dir", str(locked / "c")],
                cache_dir)
    _one_line_error(done, "--cache-dir", "is not writable", "pass a writable directory")


def test_debug_shows_the_traceback_and_version_is_printed(tmp_path, cache_dir):
    done = _run(["embed", "--input", str(tmp_path / "nope.csv"), "--text-col", "Text",
                 "--output", str(tmp_path / "o"), "--debug"], cache_dir)
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "UserInputError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("synapseml-ext: error: --input")
    done = _run(["--version"], cache_dir)
    assert done.returncode == 0
    assert done.stdout.strip() == f"synapseml-ext {version('synapseml-ext')}"


@pytest.mark.spark
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_the_job_is_one_line_and_leaves_nothing(tmp_path, cache_dir, presses):
    """SIGINT while the main thread waits on the JVM: pyspark's handler calls into py4j
    again and py4j logs three tracebacks; a second Ctrl-C interrupts a py4j read, which py4j
    logs with its traceback. The user reads one line, and no output is left."""
    import signal
    import time

    source = tmp_path / "many.csv"
    texts = [f"review {i}: the tea was {'fine ' * (i % 40)}and arrived late" for i in range(4000)]
    pd.DataFrame({"Text": texts}).to_csv(source, index=False)
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), SYNAPSEML_EXT_CACHE=cache_dir,
               SYNAPSEML_EXT_PROGRESS_EVERY="0.2", XDG_STATE_HOME=str(tmp_path / "state"))
    argv = [sys.executable, "-m", "synapseml_ext.cli", "embed", "--input", str(source),
            "--text-col", "Text", "--output", str(tmp_path / "out"), "--runtime", "cpu",
            "--precision", "fp32", "--progress", "lines"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:  # the tasks have started once the model loads on a worker
        seen.append(line)
        if line.startswith("loading model"):
            break
    for press in range(presses):
        time.sleep(0.3 * press)
        proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "synapseml-ext: interrupted", err[-3000:]
    assert "Traceback" not in err and "ERROR:root" not in err, err[-3000:]
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "state")  # our own log
    assert left == ["many.csv"], left
