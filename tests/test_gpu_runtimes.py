"""Choosing cuda / tensorrt / auto, precision rules, GPU selection, and the errors a worker
without a GPU or without TensorRT gives (the real code paths: this machine has neither)."""

from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

import pytest

from synapseml_ext.engine import EncoderSpec, EngineError, RuntimeUnavailableError, SentenceEncoder
from synapseml_ext.engine.device import choose_gpu
from synapseml_ext.engine.hardware import cuda_device_count, tensorrt_import_error
from synapseml_ext.engine.runtimes import choose_runtime, load_backend
from synapseml_ext.engine.spec import check_runtime_precision

from tiny_models import build_tiny_model

pytestmark = pytest.mark.gpu

SKYLAKE = {"avx512f", "avx2"}
SAPPHIRE_RAPIDS = {"avx512f", "avx512_bf16", "amx_bf16"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_dir) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", minilm_dir)


# -- what each worker picks ----------------------------------------------------------------

@pytest.mark.parametrize("runtime, precision, trt_error, expected", [
    ("cuda", "auto", "", ("cuda", "fp16")),
    ("cuda", "bf16", "", ("cuda", "bf16")),
    ("cuda", "fp32", "", ("cuda", "fp32")),
    ("tensorrt", "auto", "", ("tensorrt", "fp16")),
    ("tensorrt", "fp32", "", ("tensorrt", "fp32")),
    ("auto", "auto", "", ("tensorrt", "fp16")),
    ("auto", "auto", "no module named tensorrt", ("cuda", "fp16")),
    ("auto", "bf16", "", ("cuda", "bf16")),
    ("auto", "fp32", "", ("tensorrt", "fp32")),
])
def test_choice_on_a_gpu_worker(runtime, precision, trt_error, expected):
    choice = choose_runtime(runtime, precision, gpus=1, tensorrt_error=trt_error)
    assert (choice.runtime, choice.precision) == expected


@pytest.mark.parametrize("flags, expected", [
    (SAPPHIRE_RAPIDS, ("cpu", "bf16")), (SKYLAKE, ("onnx", "fp32")),
])
def test_auto_without_gpu_keeps_the_cpu_choice(flags, expected):
    choice = choose_runtime("auto", "auto", gpus=0, flags=flags, tensorrt_error="")
    assert (choice.runtime, choice.precision) == expected


def test_auto_logs_its_choice_once_per_worker(caplog):
    why = f"tensorrt stub {uuid.uuid4().hex}"  # a reason no earlier test announced
    with caplog.at_level(logging.INFO, logger="synapseml_ext"):
        for _ in range(3):
            choose_runtime("auto", "auto", gpus=2, tensorrt_error=why)
    lines = [r.getMessage() for r in caplog.records if "runtime='auto' chose" in r.getMessage()]
    assert lines == [f"runtime='auto' chose runtime=cuda precision=fp16 on this worker: "
                     f"auto: 2 GPU(s), no TensorRT ({why})"]


# -- the candidates a choice tries, in order, and how loading walks them -------------------

def _pairs(choice) -> list[tuple[str, str]]:
    return [(c.runtime, c.precision) for c in choice.candidates]


def test_auto_candidates_fall_back_only_where_documented():
    # TensorRT first; a model it cannot build still runs on the same GPU with PyTorch.
    assert _pairs(choose_runtime("auto", "auto", gpus=1, tensorrt_error="")) == [
        ("tensorrt", "fp16"), ("cuda", "fp16")]
    assert _pairs(choose_runtime("auto", "auto", gpus=1, tensorrt_error="no tensorrt")) == [
        ("cuda", "fp16")]
    # bf16 on CPU: PyTorch first; ONNX Runtime fp32 when the probe rejects bf16.
    assert _pairs(choose_runtime("auto", "auto", gpus=0, flags=SAPPHIRE_RAPIDS)) == [
        ("cpu", "bf16"), ("onnx", "fp32")]
    assert _pairs(choose_runtime("auto", "auto", gpus=0, flags=SKYLAKE)) == [("onnx", "fp32")]


@pytest.mark.parametrize("runtime, precision, gpus, expected", [
    ("tensorrt", "auto", 1, ("tensorrt", "fp16")),
    ("cuda", "fp32", 1, ("cuda", "fp32")),
    ("cpu", "bf16", 0, ("cpu", "bf16")),
    ("onnx", "auto", 0, ("onnx", "fp32")),
])
def test_an_explicit_runtime_has_exactly_one_candidate(runtime, precision, gpus, expected):
    choice = choose_runtime(runtime, precision, gpus=gpus, tensorrt_error="",
                            flags=SAPPHIRE_RAPIDS)
    assert _pairs(choice) == [expected]
    assert (choice.runtime, choice.precision, choice.reason[:9]) == (*expected, "requested")


@pytest.fixture
def fake_loaders(monkeypatch):
    """Every runtime's loader replaced (at the path load_backend imports it from): each call is
    recorded; ``fail`` names the runtimes that raise, ``cpu_gives`` the CPU backend's precision."""
    from synapseml_ext.engine.runtimes.cpu import backend as cpu
    from synapseml_ext.engine.runtimes.cuda import backend as cuda
    from synapseml_ext.engine.runtimes.onnx import backend as onnx
    from synapseml_ext.engine.runtimes.tensorrt import backend as tensorrt

    state = SimpleNamespace(calls=[], fail=set(), cpu_gives="bf16")

    def fake(runtime):
        def load(files, *, precision="fp32", **_):
            state.calls.append((runtime, precision))
            if runtime in state.fail:
                raise EngineError(f"{runtime} cannot build this model")
            given = state.cpu_gives if runtime == "cpu" else precision
            return SimpleNamespace(runtime=runtime, precision=given)
        return load

    monkeypatch.setattr(cpu, "load_cpu", fake("cpu"))
    monkeypatch.setattr(cuda, "load_cuda", fake("cuda"))
    monkeypatch.setattr(onnx, "load_onnx", fake("onnx"))
    monkeypatch.setattr(tensorrt, "load_tensorrt", fake("tensorrt"))
    return state


def _load(choice, tmp_path):
    files = SimpleNamespace(root=tmp_path / "m", fingerprint=lambda: "fake-model")
    return load_backend(files, choice, num_threads=1, cache_dir=str(tmp_path), prompt_length=0,
                        min_cosine=0.999, probe=[])


def test_load_backend_moves_to_the_next_candidate_on_a_documented_failure(
        fake_loaders, tmp_path, caplog):
    auto_gpu = choose_runtime("auto", "auto", gpus=1, tensorrt_error="")
    assert (_load(auto_gpu, tmp_path).runtime, fake_loaders.calls) == (
        "tensorrt", [("tensorrt", "fp16")])
    fake_loaders.calls.clear()
    fake_loaders.fail = {"tensorrt"}
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        backend = _load(auto_gpu, tmp_path)
    assert (backend.runtime, backend.precision) == ("cuda", "fp16")
    assert fake_loaders.calls == [("tensorrt", "fp16"), ("cuda", "fp16")]
    assert "runtime='auto': TensorRT could not load m (" in caplog.text
    assert "tensorrt cannot build this model); using runtime='cuda'" in caplog.text

    auto_cpu = choose_runtime("auto", "auto", gpus=0, flags=SAPPHIRE_RAPIDS)
    fake_loaders.calls.clear()
    assert _load(auto_cpu, tmp_path).runtime == "cpu"  # bf16 accepted: no second load
    fake_loaders.calls.clear()
    fake_loaders.cpu_gives = "fp32"  # the probe rejected bf16
    backend = _load(auto_cpu, tmp_path)
    assert (backend.runtime, backend.precision) == ("onnx", "fp32")
    assert fake_loaders.calls == [("cpu", "bf16"), ("onnx", "fp32")]


def test_load_backend_never_falls_back_from_an_explicit_runtime(fake_loaders, tmp_path):
    fake_loaders.fail = {"tensorrt"}
    with pytest.raises(EngineError, match="tensorrt cannot build"):
        _load(choose_runtime("tensorrt", "auto", gpus=1, tensorrt_error=""), tmp_path)
    assert fake_loaders.calls == [("tensorrt", "fp16")]
    fake_loaders.calls.clear()
    fake_loaders.cpu_gives = "fp32"  # runtime='cpu' keeps PyTorch in fp32 when bf16 is rejected
    backend = _load(choose_runtime("cpu", "bf16", gpus=0), tmp_path)
    assert (backend.runtime, backend.precision) == ("cpu", "fp32")
    assert fake_loaders.calls == [("cpu", "bf16")]


# -- impossible requests fail clearly ---------------------------------------------------------

def test_explicit_gpu_runtimes_without_gpu_name_what_is_missing():
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='cuda' needs an NVIDIA GPU.*pip install 'synapseml-ext\[gpu\]'"):
        choose_runtime("cuda", "auto", gpus=0)
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='tensorrt' needs an NVIDIA GPU.*synapseml-ext\[tensorrt\]"):
        choose_runtime("tensorrt", "auto", gpus=0)
    with pytest.raises(RuntimeUnavailableError,
                       match=r"needs TensorRT on this worker: libnvinfer missing; install it "
                             r"with: pip install 'synapseml-ext\[tensorrt\]'"):
        choose_runtime("tensorrt", "fp16", gpus=1, tensorrt_error="libnvinfer missing")


# The next tests check what a worker WITHOUT a GPU says; on a GPU machine they do not apply
# (tools/gpu_check.py and tests/test_gpu_check.py cover the GPU paths there).
without_gpu = pytest.mark.skipif(cuda_device_count() > 0,
                                 reason="checks a worker without a GPU; this machine has one")


@without_gpu
def test_this_machine_really_has_no_gpu_and_no_tensorrt():
    """The facts the next tests rely on, measured, not assumed."""
    assert cuda_device_count() == 0
    assert tensorrt_import_error()  # says why, e.g. "does not import (ModuleNotFoundError..."


@without_gpu
@pytest.mark.parametrize("runtime, extra", [("cuda", "gpu"), ("tensorrt", "tensorrt")])
def test_encoder_with_explicit_gpu_runtime_fails_without_fallback(tiny_model, tmp_path,
                                                                  runtime, extra):
    with pytest.raises(RuntimeUnavailableError) as err:
        SentenceEncoder(EncoderSpec(model=tiny_model, runtime=runtime, cache_dir=str(tmp_path)))
    message = str(err.value)
    assert f"runtime={runtime!r} needs an NVIDIA GPU" in message
    assert f"pip install 'synapseml-ext[{extra}]'" in message
    assert "no usable NVIDIA GPU" in message or "CPU-only build" in message


@without_gpu
def test_auto_encoder_runs_on_cpu_here(tiny_model, tmp_path):
    encoder = SentenceEncoder(EncoderSpec(model=tiny_model, runtime="auto", cache_dir=str(tmp_path)))
    assert encoder.runtime in ("cpu", "onnx")
    assert encoder.encode(["a", "b c"]).shape == (2, 64)


@without_gpu
def test_gpu_loaders_called_directly_name_the_missing_piece(tiny_model, tmp_path):
    from synapseml_ext.engine.model_files import cached_model_files
    from synapseml_ext.engine.runtimes.cuda.backend import load_cuda
    from synapseml_ext.engine.runtimes.gpu_common import worker_device
    from synapseml_ext.engine.runtimes.tensorrt.backend import import_tensorrt, load_tensorrt

    files = cached_model_files(tiny_model, 0)
    with pytest.raises(RuntimeUnavailableError, match=r"synapseml-ext\[gpu\]"):
        worker_device("cuda")
    with pytest.raises(RuntimeUnavailableError, match=r"runtime='cuda' needs an NVIDIA GPU"):
        load_cuda(files, precision="fp16", cache_dir=str(tmp_path), prompt_length=0,
                  min_cosine=0.999, probe=[])
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='tensorrt' needs the Python package 'tensorrt'.*"
                             r"pip install 'synapseml-ext\[tensorrt\]'"):
        import_tensorrt()
    with pytest.raises(RuntimeUnavailableError, match=r"synapseml-ext\[tensorrt\]"):
        load_tensorrt(files, precision="fp16", cache_dir=str(tmp_path), prompt_length=0,
                      min_cosine=0.999, probe=[])


# -- precision rules (driver side) -------------------------------------------------------------

@pytest.mark.parametrize("runtime, precision, message", [
    ("cpu", "fp16", "precision='fp16' needs a GPU"),
    ("onnx", "fp16", "not supported by runtime='onnx'"),
    ("onnx", "bf16", "not supported by runtime='onnx'"),
    ("tensorrt", "bf16", "not supported by runtime='tensorrt'.*use runtime='cuda' for bf16"),
])
def test_impossible_precision_is_refused_on_the_driver(runtime, precision, message):
    with pytest.raises(ValueError, match=message):
        check_runtime_precision(runtime, precision)
    with pytest.raises(ValueError, match=message):
        EncoderSpec(model="m", runtime=runtime, precision=precision)


@pytest.mark.parametrize("runtime", ["cuda", "auto"])
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32", "auto"])
def test_gpu_precisions_are_accepted(runtime, precision):
    EncoderSpec(model="m", runtime=runtime, precision=precision)


def test_embedder_refuses_impossible_combination_before_any_job(spark):
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    df = spark.createDataFrame([("x",)], "text string")
    emb = HuggingFaceSentenceEmbedder(inputCol="text", runtime="tensorrt", precision="bf16")
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup())
    with pytest.raises(ValueError, match="not supported by runtime='tensorrt'"):
        emb.transform(df)
    assert len(tracker.getJobIdsForGroup()) == before


# -- which GPU ------------------------------------------------------------------------------------

def test_gpu_from_spark_resources_partition_or_default():
    assert choose_gpu(4, task_gpus=("2",)) == 2
    assert choose_gpu(2, task_gpus=("3",), visible_devices="2,3") == 1
    assert choose_gpu(1, task_gpus=("5",), visible_devices="5") == 0
    assert choose_gpu(1, task_gpus=("5",), visible_devices="GPU-uuid") == 0
    assert choose_gpu(4, partition_id=6) == 2
    assert choose_gpu(2) == 0
    with pytest.raises(ValueError, match=r"assigned GPU '7'.*only 2 GPU"):
        choose_gpu(2, task_gpus=("7",), visible_devices="0,1")
    with pytest.raises(ValueError, match="no GPU is visible"):
        choose_gpu(0)
