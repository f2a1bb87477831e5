"""An ONNX-only worker (the core install, no torch): runtime 'onnx' and 'auto' run the model's
own ONNX graph (sentence-transformers' layout) with pooling and Dense layers in NumPy.

Each worker here is a child process in which ``import torch`` fails, as on a machine where
torch is not installed; the references come from sentence-transformers in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synapseml_ext.engine import modules, numpy_head
from synapseml_ext.engine.errors import RuntimeUnavailableError

from helpers import cosines
from tiny_models import build_tiny_model, export_model_graph

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, os, sys
for name in os.environ["BLOCKED"].split(","):  # import fails, find_spec is None: not installed
    sys.modules[name] = None
import numpy as np
from synapseml_ext.engine.encoder import get_encoder
from synapseml_ext.engine.errors import user_message
from synapseml_ext.engine.spec import EncoderSpec

model, runtime, texts, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
try:
    encoder = get_encoder(EncoderSpec(model=model, runtime=runtime))
    np.save(out, encoder.encode(texts))
    print(json.dumps({"runtime": encoder.runtime, "precision": encoder.precision,
                      "torch_loaded": sys.modules.get("torch") is not None,
                      "backend": type(encoder.model.backend).__name__}))
except Exception as e:
    print(json.dumps({"error": user_message(e) or f"{type(e).__name__}: {e}"}))
"""


def without_torch(model: str | Path, texts: list[str], out: Path, runtime: str = "auto",
                  blocked: str = "torch,sentence_transformers") -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python"), "BLOCKED": blocked}
    done = subprocess.run([sys.executable, "-c", WORKER, str(model), runtime, json.dumps(texts),
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def minilm_with_graph(tmp_path_factory, minilm_dir) -> Path:
    model = tmp_path_factory.mktemp("onnx-only") / "minilm"
    shutil.copytree(minilm_dir, model)
    export_model_graph(model)
    return model


def test_minilm_without_torch_gives_sentence_transformers_vectors(
        minilm_with_graph, review_texts, st_reference, tmp_path):
    texts = [*review_texts[:64], ""]
    ran = without_torch(minilm_with_graph, texts, tmp_path / "v.npy")
    assert ran == {"runtime": "onnx", "precision": "fp32", "torch_loaded": False,
                   "backend": "ModelGraphBackend"}
    reference = np.vstack([st_reference[:64], _st_encode(minilm_with_graph, [""])])
    assert cosines(np.load(tmp_path / "v.npy"), reference).min() >= 0.9999


def test_dense_layer_and_max_pooling_without_torch(tmp_path, minilm_dir):
    model = Path(build_tiny_model(tmp_path / "tiny", minilm_dir, pooling="max", dense=True,
                                  normalize=False))
    export_model_graph(model / "0_Transformer" if (model / "0_Transformer").is_dir() else model)
    texts = ["great coffee, smooth and rich", "stale crackers", "a", "das wetter ist sonnig"]
    ran = without_torch(model, texts, tmp_path / "v.npy", runtime="onnx")
    assert ran["runtime"] == "onnx", ran
    assert cosines(np.load(tmp_path / "v.npy"), _st_encode(model, texts)).min() >= 0.9999


def test_torch_without_onnx_runs_the_model_graph_too(tmp_path, minilm_with_graph):
    """torch alone (e.g. an image's own) cannot export: the model's graph, not a traceback."""
    ran = without_torch(minilm_with_graph, ["x"], tmp_path / "v.npy", runtime="onnx",
                        blocked="onnx")
    assert ran["backend"] == "ModelGraphBackend", ran


def test_auto_bf16_without_torch_names_the_extra(monkeypatch):
    from synapseml_ext.engine import runtimes

    monkeypatch.setattr(runtimes, "torch_installed", lambda: False)
    assert runtimes.choose_runtime("auto", "auto", gpus=0).runtime == "onnx"
    with pytest.raises(RuntimeUnavailableError, match=r"precision='bf16' on a CPU needs .*'torch'"
                       r".*synapseml-ext\[cpu\]"):
        runtimes.choose_runtime("auto", "bf16", gpus=0)


def test_bf16_dense_weights_are_read_without_torch(tmp_path):
    from safetensors.torch import save_file

    weight = torch.randn(4, 6).to(torch.bfloat16)
    save_file({"linear.weight": weight, "linear.bias": torch.ones(4, dtype=torch.bfloat16)},
              str(tmp_path / "model.safetensors"))
    read = numpy_head._read_safetensors(tmp_path)
    np.testing.assert_array_equal(read["linear.weight"], weight.float().numpy())
    assert read["linear.bias"].dtype == np.float32 and (read["linear.bias"] == 1).all()


def test_a_model_without_a_graph_names_the_extra_that_exports_one(tmp_path, minilm_dir):
    ran = without_torch(minilm_dir, ["x"], tmp_path / "v.npy")
    assert "onnx/model.onnx does not exist" in ran["error"]
    assert "pip install 'synapseml-ext[cpu]'" in ran["error"]


def test_runtime_cpu_without_torch_names_the_extra(tmp_path, minilm_with_graph):
    ran = without_torch(minilm_with_graph, ["x"], tmp_path / "v.npy", runtime="cpu")
    assert "needs the Python package 'torch'" in ran["error"]
    assert "pip install 'synapseml-ext[cpu]'" in ran["error"]


def test_a_graph_others_can_change_is_not_run(tmp_path, minilm_with_graph):
    model = tmp_path / "shared-model"
    shutil.copytree(minilm_with_graph, model)
    graph = model / "onnx" / "model.onnx"
    graph.chmod(0o666)
    ran = without_torch(model, ["x"], tmp_path / "v.npy")
    assert f"the model's ONNX graph {graph} is not loaded" in ran["error"], ran


@pytest.mark.parametrize("modes", [("mean",), ("cls",), ("max",), ("mean_sqrt_len_tokens",),
                                   ("weightedmean",), ("lasttoken",), ("cls", "mean", "max")])
@pytest.mark.parametrize("prompt_length", [0, 2])
def test_numpy_pooling_is_the_torch_pooling(modes, prompt_length):
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 7, 16)).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 3 + [0] * 4], dtype=np.int64)
    ours = numpy_head.pool(hidden, mask, modes, prompt_length)
    theirs = modules.pool(torch.from_numpy(hidden), torch.from_numpy(mask), modes, prompt_length)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)


def _st_encode(model: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model), device="cpu").encode(texts, convert_to_numpy=True)
