"""precision=auto from CPU flags, the bf16 quality guard, and the precision Param."""

from __future__ import annotations

import logging

import pytest

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine.hardware import choose_cpu_precision
from synapseml_ext.engine.runtimes import choose_runtime
from synapseml_ext.hf import HuggingFaceSentenceEmbedder

from tiny_models import build_tiny_model

SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
ZEN4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
SKYLAKE = {"avx2", "avx512f", "avx512_vnni"}
HASWELL = {"avx2", "fma"}


@pytest.mark.parametrize("flags, expected", [
    (SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "bf16"), (SKYLAKE, "fp32"), (HASWELL, "fp32"), (set(), "fp32"),
])
def test_auto_precision_from_cpu_flags(flags, expected):
    precision, reason = choose_cpu_precision(flags)
    assert precision == expected and reason


@pytest.mark.parametrize("flags, runtime, precision", [
    (SAPPHIRE_RAPIDS, "cpu", "bf16"), (SKYLAKE, "onnx", "fp32"),
])
def test_auto_runtime_on_cpu(flags, runtime, precision):
    choice = choose_runtime("auto", "auto", gpus=0, flags=flags)
    assert (choice.runtime, choice.precision) == (runtime, precision)
    assert choose_runtime("cpu", "auto", gpus=0, flags=SKYLAKE).precision == "fp32"


def test_precision_errors():
    with pytest.raises(ValueError, match="precision='fp16' needs a GPU"):
        choose_runtime("cpu", "fp16", gpus=0)
    with pytest.raises(ValueError, match="not supported by runtime='onnx'"):
        choose_runtime("onnx", "bf16", gpus=0)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        EncoderSpec(model="m", precision="fp8")
    with pytest.raises(ValueError, match=r"minCosine must be a number in \[0, 1\]"):
        HuggingFaceSentenceEmbedder(inputCol="t", minCosine=1.5)


def test_guard_falls_back_to_fp32_and_says_why(tmp_path, minilm_dir, caplog):
    model = build_tiny_model(tmp_path / "m", minilm_dir)
    with caplog.at_level(logging.INFO, logger="synapseml_ext"):
        strict = SentenceEncoder(EncoderSpec(model=model, runtime="cpu", precision="bf16",
                                             min_cosine=1.0, cache_dir=str(tmp_path / "c")))
    assert strict.precision == "fp32"
    assert "bf16 rejected, falling back to fp32" in caplog.text
    assert "< minCosine 1" in caplog.text
    lenient = SentenceEncoder(EncoderSpec(model=model, runtime="cpu", precision="bf16",
                                          min_cosine=0.9, cache_dir=str(tmp_path / "c")))
    assert lenient.precision == "bf16"
    # The verdict is stored per model and CPU: a later load reuses it without probing.
    stored = list((tmp_path / "c" / "precision").glob("*.json"))
    assert len(stored) == 1 and "bf16" in stored[0].read_text()


def test_worker_log_names_the_choice(tmp_path, minilm_dir, caplog):
    model = build_tiny_model(tmp_path / "m", minilm_dir)
    with caplog.at_level(logging.INFO, logger="synapseml_ext"):
        enc = SentenceEncoder(EncoderSpec(model=model, runtime="auto", precision="auto",
                                          cache_dir=str(tmp_path / "c")))
    line = next(r.getMessage() for r in caplog.records if "loaded" in r.getMessage())
    assert f"runtime={enc.runtime} precision={enc.precision}" in line
    assert "auto on CPU (CPU has" in line


def test_precision_persists(spark, tmp_path):  # save/load needs the session
    emb = HuggingFaceSentenceEmbedder(inputCol="t", precision="bf16", minCosine=0.9995)
    emb.save(str(tmp_path / "e"))
    loaded = HuggingFaceSentenceEmbedder.load(str(tmp_path / "e"))
    assert loaded.getPrecision() == "bf16" and loaded.getMinCosine() == 0.9995
