"""Driver-side checks and the CLI's file handling, without Spark: one-line errors, the model
and runtime checks, the strict decoding check and the staged output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from synapseml_ext import cli_io, cli_logs, cli_output
from synapseml_ext._spark import is_local_master
from synapseml_ext.engine.errors import (
    ERROR_PREFIX,
    EngineError,
    ModelLoadError,
    RuntimeUnavailableError,
    UserInputError,
    user_message,
)
from synapseml_ext.hf import checks

# -- one-line messages of ours, found again inside Spark's wrappers ------------------------

def test_engine_errors_are_one_prefixed_line():
    e = ModelLoadError("could not read\n  the model:\nbad header")
    assert str(e) == f"{ERROR_PREFIX} could not read the model: bad header"
    assert str(EngineError(str(e))) == str(e)  # the prefix is added once
    assert user_message(e) == "could not read the model: bad header"
    assert isinstance(UserInputError("x"), ValueError)


def test_user_message_finds_the_outermost_error_in_a_spark_trace():
    inner = RuntimeUnavailableError("runtime='cuda' needs an NVIDIA GPU: none here")
    outer = ModelLoadError("could not load model 'm' on this worker: OSError: x")
    trace = (
        "An error occurred while calling o87.parquet.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 ...\n"
        "org.apache.spark.api.python.PythonException: Traceback (most recent call last):\n"
        '  File "/w/embedder.py", line 230, in embed_batches\n'
        f"synapseml_ext.engine.errors.RuntimeUnavailableError: {inner}\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        f"synapseml_ext.engine.errors.ModelLoadError: {outer}\n"
        "\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException\n"
        "Caused by: org.apache.spark.api.python.PythonException: Traceback ...\n"
        f"synapseml_ext.engine.errors.ModelLoadError: {outer}\n"
        "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages\n")
    assert user_message(trace) == "could not load model 'm' on this worker: OSError: x"

    class FakePy4JError(Exception):
        pass

    wrapped = FakePy4JError(trace)
    assert user_message(wrapped) == user_message(trace)
    assert user_message(RuntimeError("java.lang.OutOfMemoryError: Java heap space")) is None
    # Not ours: the CLI shows the last Python error line, not a Java one.
    foreign = trace.replace(f"synapseml_ext.engine.errors.ModelLoadError: {outer}",
                            "SafetensorError: Error while deserializing header")
    assert user_message(foreign) == "runtime='cuda' needs an NVIDIA GPU: none here"
    foreign = foreign.replace(str(inner), "no GPU")
    assert user_message(foreign) is None
    assert cli_logs.summary(RuntimeError(foreign)) == (
        "SafetensorError: Error while deserializing header")


# -- the model and the runtime, checked on the driver ---------------------------------------

def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text and text.startswith(ERROR_PREFIX)
    return text


def test_model_directory_checks(tmp_path, minilm_dir):
    checks.check_model(minilm_dir)  # the real model passes
    with pytest.raises(ModelLoadError, match="does not exist: pass a directory") as e:
        checks.check_model(str(tmp_path / "no-such-model"))
    _one_line(e)
    with pytest.raises(ModelLoadError, match=r"has no config\.json") as e:
        checks.check_model(str(tmp_path))
    _one_line(e)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(minilm_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelLoadError, match="has no weights"):
        checks.check_model(str(no_weights))
    cut = tmp_path / "cut"
    shutil.copytree(minilm_dir, cut)
    weights = next(cut.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"has damaged weights .*copy or download") as e:
        checks.check_model(str(cut))
    _one_line(e)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json is damaged \(not valid JSON"):
        checks.check_model(str(broken))
    # transformers would fail on the worker with a bare JSONDecodeError
    cut_vocabulary = tmp_path / "cut-vocabulary"
    shutil.copytree(minilm_dir, cut_vocabulary)
    tokenizer = cut_vocabulary / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[: tokenizer.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is damaged \(not valid JSON: .*"
                                             r"\): save or download the model again$") as e:
        checks.check_model(str(cut_vocabulary))
    _one_line(e)
    # cut inside a multi-byte character: not even text
    data = (Path(minilm_dir) / "tokenizer.json").read_bytes()
    lead = next(i for i, byte in enumerate(data) if byte >= 0xC0)
    tokenizer.write_bytes(data[: lead + 1])
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is damaged \(not valid JSON: "
                                             r"'utf-8' codec can't decode"):
        checks.check_model(str(cut_vocabulary))
    with pytest.raises(ModelLoadError, match="is a file, not a model directory"):
        checks.check_model(str(Path(minilm_dir) / "config.json"))
    # On a cluster the directory may exist on the executors only: left to them.
    checks.check_model(str(tmp_path / "no-such-model"), local=False)


def test_model_without_its_vocabulary_is_refused_not_noise(tmp_path, minilm_dir):
    """Without tokenizer.json and vocab.txt transformers builds a tokenizer of 5 special tokens
    and every word embeds as the unknown token: a load error, not vectors of noise."""
    from synapseml_ext.engine.encoder import load_model
    from synapseml_ext.engine.spec import EncoderSpec

    no_vocab = tmp_path / "no-vocab"
    shutil.copytree(minilm_dir, no_vocab,
                    ignore=shutil.ignore_patterns("tokenizer.json", "vocab.txt"))
    spec = EncoderSpec(model=str(no_vocab), runtime="cpu", precision="fp32",
                       cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=r"tokenizer has \d+ tokens but the model has "
                                             r"30522.*vocabulary file .* missing or damaged"):
        load_model(spec)


def test_cli_keeps_a_relative_model_path_as_absolute(tmp_path, monkeypatch, minilm_dir):
    """The embed table's marker names the model for a later `search`, which may run from
    another directory."""
    from synapseml_ext import cli

    (tmp_path / "my-model").symlink_to(minilm_dir)
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["embed", "--input", "in.csv", "--text-col", "Text", "--output", "out",
         "--model", "my-model", "--cache-dir", str(tmp_path / "cache")])
    assert cli._prechecks(args) == str(tmp_path / "my-model")


def test_hub_id_offline_and_not_cached(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=r"the driver is offline \(HF_HUB_OFFLINE is set\): "
                                             r"pass a local model directory") as e:
        checks.check_model("acme/not-a-real-model-xyz")
    _one_line(e)


def test_hub_id_without_network_names_the_fix(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError) as e:
        checks.check_model("acme/not-a-real-model-xyz")
    text = _one_line(e)
    # Offline here (the normal case); with network the hub says the repository is unknown.
    assert "driver is offline" in text or "neither a local directory nor" in text
    assert "pass a local model directory" in text


def test_hub_id_in_the_local_cache_passes_offline(monkeypatch, tmp_path, minilm_dir):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--cached-minilm"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(minilm_dir, repo / "snapshots" / commit, copy_function=os.symlink)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    checks.check_model("acme/cached-minilm")


def test_runtime_checks_on_a_machine_without_gpu():
    from synapseml_ext.engine.hardware import cuda_device_count

    checks.check_runtime("onnx")
    checks.check_runtime("cpu")
    checks.check_runtime("auto")
    if cuda_device_count():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='cuda' needs an NVIDIA GPU and none is usable here: .*"
                             r"Use runtime='cpu', 'onnx' or 'auto'.*synapseml-ext\[gpu\]") as e:
        checks.check_runtime("cuda")
    _one_line(e)


def test_runtime_package_missing(monkeypatch):
    real = checks.importlib.util.find_spec
    monkeypatch.setattr(checks.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='onnx' needs the Python package 'onnxruntime', which is "
                             r"not installed on this machine; install it with: pip install "
                             r"'synapseml-ext\[onnx\]'"):
        checks.check_runtime("onnx")


def test_driver_checks_run_once_and_runtime_only_for_local_masters(monkeypatch, minilm_dir):
    calls = []
    monkeypatch.setattr(checks, "check_model", lambda *a, **k: calls.append(("model", a)))
    monkeypatch.setattr(checks, "check_runtime", lambda r: calls.append(("runtime", r)))
    monkeypatch.setattr(checks, "_passed", set())
    for _ in range(3):
        checks.driver_checks(minilm_dir, "cuda", local=False)
    assert calls == [("model", (minilm_dir,))]
    checks.driver_checks(minilm_dir, "cuda", local=True)
    assert calls[-1] == ("runtime", "cuda")
    assert [is_local_master(m) for m in
            ("local", "local[2]", "local[*]", "local[2,3]", "spark://h:7077", "yarn", None)] == [
        True, True, True, True, False, False, False]


# -- the CLI's input and output, before Spark --------------------------------------------------

def test_decoding_check_reports_the_byte_offset_across_chunks(tmp_path):
    good = tmp_path / "good.csv"
    # A two-byte character split across the 1 MiB read boundary is valid.
    good.write_bytes(b"Text\n" + b"a" * ((1 << 20) - 6) + "é\n".encode() + b"tail\n")
    cli_io._check_decodes(good, "utf-8")
    bad = tmp_path / "bad.csv"
    head = b"Text\n" + b"b" * (1 << 20) + b"\nline three "
    bad.write_bytes(head + b"caf\xe9\n")
    with pytest.raises(UserInputError) as e:
        cli_io._check_decodes(bad, "utf-8")
    assert f"is not valid utf-8: 0xe9 at byte offset {len(head) + 3} (line 3)" in str(e.value)
    assert "--encoding" in str(e.value)
    cli_io._check_decodes(bad, "latin-1")  # the right encoding passes
    truncated = tmp_path / "truncated.csv"
    truncated.write_bytes(b"Text\nabc\xc3")  # a sequence cut at the end of the file
    with pytest.raises(UserInputError, match="0xc3 at byte offset 8 "):
        cli_io._check_decodes(truncated, "utf-8")


def test_staged_output_moves_into_place_only_on_success(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("Text\nx\n")
    inputs = cli_io.check_input(str(source), None, "utf-8")
    out = tmp_path / "out"
    plan = cli_output.check_output(str(out), inputs, overwrite=False)
    with pytest.raises(RuntimeError, match="job failed"), \
            cli_output.staged_output(plan, {"input": str(source)}) as temp:
        (temp.mkdir(), (temp / "part-0").write_text("half"))
        raise RuntimeError("job failed")
    assert sorted(os.listdir(tmp_path)) == ["in.csv"]  # no output, no temp sibling

    plan = cli_output.check_output(str(out), inputs, overwrite=False)
    with cli_output.staged_output(plan, {"input": str(source)}) as temp:
        (temp.mkdir(), (temp / "part-0").write_text("first"))
    marker = json.loads((out / cli_output.MARKER).read_text())
    assert marker["tool"] == "synapseml-ext" and marker["files"] == ["part-0"]
    assert marker["input"] == str(source)

    with pytest.raises(UserInputError, match="already exists: pass --overwrite"):
        cli_output.check_output(str(out), inputs, overwrite=False)
    plan = cli_output.check_output(str(out), inputs, overwrite=True)
    with cli_output.staged_output(plan, {"input": str(source)}) as temp:
        (temp.mkdir(), (temp / "part-1").write_text("second"))
    assert sorted(os.listdir(out)) == [cli_output.MARKER, "part-1"]
    assert sorted(os.listdir(tmp_path)) == ["in.csv", "out"]

    (out / "notes.txt").write_text("mine")  # no longer only ours
    with pytest.raises(UserInputError, match=rf"--output '{out}' holds files synapseml-ext "
                                             r"did not write \(notes.txt\)"):
        cli_output.check_output(str(out), inputs, overwrite=True)
    (out / cli_output.MARKER).unlink()
    with pytest.raises(UserInputError, match="is not a synapseml-ext output"):
        cli_output.check_output(str(out), inputs, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_output_never_contains_or_sits_inside_the_input(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("Text\nx\n")
    inputs = cli_io.check_input(str(data), "csv", "utf-8")
    for output in (data, data / "sub", tmp_path, data / "a.csv"):
        with pytest.raises(UserInputError, match="contains or is inside the input"):
            cli_output.check_output(str(output), inputs, overwrite=True)


def test_log_files_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    log = cli_logs.new_log_file("embed")
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.parent.stat().st_mode & 0o777 == 0o700
    conf = cli_logs.quiet_spark_conf(log)
    props = log.with_suffix(".log4j2.properties")
    assert props.stat().st_mode & 0o777 == 0o600
    assert f"fileName = {log}" in props.read_text()
    assert str(props) in conf["spark.driver.extraJavaOptions"]


def test_py4j_tracebacks_go_to_the_log_not_the_terminal(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a job: py4j logs the cut connection with logging.exception on the root
    logger (three tracebacks); the CLI sends those to its log and keeps other warnings."""
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    log_file = tmp_path / "run.log"
    handlers = cli_logs.quiet_py4j_logging(log_file)
    try:
        py4j_record = logging.LogRecord(
            "root", logging.ERROR, "/venv/site-packages/py4j/java_gateway.py", 1070,
            "KeyboardInterrupt while sending command.", None, None)
        root.handle(py4j_record)
        logging.getLogger("synapseml_ext.engine").warning("bf16 rejected, falling back")
        logging.getLogger("synapseml_ext.engine").info("not shown: below WARNING")
    finally:
        cli_logs.drop_handlers(handlers)
    assert root.handlers == []
    err = capsys.readouterr().err
    assert err == "bf16 rejected, falling back\n"
    assert "KeyboardInterrupt while sending command." in log_file.read_text()
    assert "bf16 rejected" not in log_file.read_text()
