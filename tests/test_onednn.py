"""bf16 linear layers packed for oneDNN (GELU fused): every layer rewritten on MiniLM, the
same vectors as plain bf16, and a rewrite that does not run or does not match left out."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine.encoder import ModelCache
from synapseml_ext.engine.model_files import read_model_files
from synapseml_ext.engine.modules import build_sentence_module
from synapseml_ext.engine.runtimes.cpu import onednn

pytestmark = pytest.mark.skipif(
    not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")),
    reason="this PyTorch build has no oneDNN linear ops")


@pytest.fixture(scope="module")
def minilm_bf16(minilm_dir):
    module = build_sentence_module(read_model_files(minilm_dir), attn_implementation="sdpa")
    return module.to(torch.bfloat16)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_every_bf16_linear_is_packed_and_each_gelu_fused(minilm_bf16):
    module = copy.deepcopy(minilm_bf16)
    linears = sum(isinstance(m, nn.Linear) for m in module.modules())
    assert onednn.pack_bf16_linears(module) == linears  # 6 layers x 6, and the pooler
    assert not any(isinstance(m, nn.Linear) for m in module.modules())
    intermediates = [m for m in module.modules() if type(m).__name__ == "BertIntermediate"]
    assert len(intermediates) == 6
    for block in intermediates:
        assert isinstance(block.intermediate_act_fn, nn.Identity)
        assert block.dense.post_op == "gelu" and block.dense.algorithm == "none"


def test_packed_vectors_match_plain_bf16_and_fp32(minilm_dir, minilm_bf16, review_texts,
                                                  st_reference, tmp_path):
    texts = review_texts[:200]
    ModelCache.clear()
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="bf16",
                                          min_cosine=0, cache_dir=str(tmp_path)))
    backend = encoder.model.backend
    packed_out = encoder.encode(texts)
    try:
        backend.module = minilm_bf16  # the same runtime on plain F.linear layers
        plain_out = encoder.encode(texts)
    finally:
        ModelCache.clear()
    assert _cos(plain_out, packed_out).min() >= 0.9999
    # and to sentence-transformers in fp32, as the bf16 precision promises
    assert _cos(packed_out, st_reference[:200]).min() >= 0.9995


def test_the_cpu_runtime_runs_packed_layers_and_keys_its_verdict(minilm_dir, tmp_path):
    ModelCache.clear()
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="bf16",
                                          cache_dir=str(tmp_path)))
    assert encoder.precision == "bf16"
    assert any(isinstance(m, onednn.PackedLinear) for m in encoder.model.backend.module.modules())
    stored = next((tmp_path / "precision").glob("*.json")).read_text()
    assert '"bf16+onednn"' in stored


def test_a_rewrite_that_does_not_match_is_left_out(minilm_bf16, monkeypatch):
    module = copy.deepcopy(minilm_bf16)
    wrong = onednn.PackedLinear.forward
    monkeypatch.setattr(onednn.PackedLinear, "forward", lambda self, x: -wrong(self, x))
    assert onednn.pack_bf16_linears(module) == 0
    assert sum(isinstance(m, nn.Linear) for m in module.modules()) == 37


def test_a_rewrite_that_does_not_run_is_left_out(minilm_bf16, monkeypatch):
    module = copy.deepcopy(minilm_bf16)

    def fails(*args, **kwargs):
        raise RuntimeError("no such op in this PyTorch")

    monkeypatch.setattr(onednn.PackedLinear, "__init__", fails)
    assert onednn.pack_bf16_linears(module) == 0
    assert sum(isinstance(m, nn.Linear) for m in module.modules()) == 37


def test_the_switch_turns_packing_off(minilm_bf16, monkeypatch):
    monkeypatch.setenv(onednn.SWITCH_ENV, "0")
    module = copy.deepcopy(minilm_bf16)
    assert onednn.pack_bf16_linears(module) == 0
    assert sum(isinstance(m, nn.Linear) for m in module.modules()) == 37
