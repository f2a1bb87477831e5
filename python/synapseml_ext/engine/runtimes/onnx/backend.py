"""ONNX Runtime runtime (``onnx``): our cached export, fused for ONNX Runtime, or without
torch the model's own graph."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synapseml_ext.engine import cache_trust
from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import ModelLoadError, RuntimeUnavailableError, missing_package
from synapseml_ext.engine.hardware import onnx_exporter_installed
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.numpy_head import SentenceHead
from synapseml_ext.engine.runtimes.base import RunsInTurn

log = logging.getLogger("synapseml_ext.engine")

# Measured on 2-core machines (docs/benchmarks.md): ~1k-token batches are fastest on CPU.
ORT_CPU_MAX_TOKENS = 1024
# sentence-transformers' ONNX layout: the transformer's graph beside its files
MODEL_GRAPH = Path("onnx") / "model.onnx"
TOKEN_OUTPUTS = ("token_embeddings", "last_hidden_state")
FED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxBackend(RunsInTurn):
    # As the torch CPU runtime (cpu/backend.py): calls of 35 random reviews +9% rows/s,
    # sorted sets unchanged (tools/bench/mixed_batches.py); 256 beat 512 here.
    max_pad_waste = 0.1
    min_batch_tokens = 256

    def __init__(self, session, *, num_threads: int, device: str) -> None:
        self.session = session
        self.runtime = "onnx"
        self.precision = "fp32"
        self.device = device
        self.num_threads = num_threads
        self.pad_multiple = 1
        self.default_max_tokens = ORT_CPU_MAX_TOKENS
        self._inputs = {i.name for i in session.get_inputs()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]


class ModelGraphBackend(OnnxBackend):
    """The model's own ONNX graph (token embeddings out), then pooling and Dense layers in
    NumPy: the onnx runtime on a worker without torch."""

    def __init__(self, session, head, *, num_threads: int, device: str) -> None:
        super().__init__(session, num_threads=num_threads, device=device)
        self.head = head
        unknown = [i.name for i in session.get_inputs() if i.name not in FED_INPUTS]
        if unknown:
            raise ModelLoadError(
                f"the model's ONNX graph needs inputs {unknown} besides {list(FED_INPUTS)}: "
                "install torch on this worker to export one (pip install 'synapseml-ext[cpu]')")
        self._int32 = {i.name for i in session.get_inputs() if i.type == "tensor(int32)"}
        outputs = {o.name: o for o in session.get_outputs()}
        name = next((n for n in TOKEN_OUTPUTS if n in outputs), next(iter(outputs)))
        if len(outputs[name].shape) != 3:
            raise ModelLoadError(
                f"the model's ONNX graph gives {name!r} of shape {outputs[name].shape}, not token "
                "embeddings (batch, sequence, hidden): install torch on this worker to export "
                "one (pip install 'synapseml-ext[cpu]')")
        self._output = name

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:  # allocated only for graphs that take it
            feed["token_type_ids"] = np.zeros_like(input_ids)
        feed = {k: v.astype(np.int32) if k in self._int32 else v
                for k, v in feed.items() if k in self._inputs}
        hidden = self.session.run([self._output], feed)[0]
        return self.head(hidden, attention_mask)


def load_onnx(
    files: ModelFiles,
    *,
    num_threads: int,
    cache_dir: str,
    prompt_length: int,
    probe: Sequence[TokenBatch],
) -> OnnxBackend:
    """Our export of the model (checked against PyTorch, fused, cached) where torch is
    and onnx are installed; the model's own graph (:data:`MODEL_GRAPH`) otherwise (an
    ONNX-only install)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_package("onnxruntime", "onnx", "runtime='onnx'") from e
    options, providers = _session_options(ort, num_threads)
    device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
    if not onnx_exporter_installed():
        session = ort.InferenceSession(str(model_graph(files)), options, providers=providers)
        log.info("runtime='onnx' without our exporter (torch, onnx): %s's own ONNX graph, pooling in NumPy (not "
                 "compared with PyTorch here)", files.root.name)
        return ModelGraphBackend(session, SentenceHead(files, prompt_length),
                                 num_threads=num_threads, device=device)
    from synapseml_ext.engine.runtimes.onnx_export import ensure_onnx

    artifacts = ensure_onnx(files, probe, cache_dir=cache_dir, prompt_length=prompt_length)
    try:
        session = ort.InferenceSession(str(artifacts.for_onnxruntime), options, providers=providers)
    except Exception:
        # Verified bytes that still fail to load: drop the entry and export again once.
        import shutil

        shutil.rmtree(artifacts.directory, ignore_errors=True)
        artifacts = ensure_onnx(files, probe, cache_dir=cache_dir, prompt_length=prompt_length)
        session = ort.InferenceSession(str(artifacts.for_onnxruntime), options, providers=providers)
    return OnnxBackend(session, num_threads=num_threads, device=device)


def model_graph(files: ModelFiles) -> Path:
    """The model's own ONNX graph, if it ships one that only this user can change (a graph
    is code for ONNX Runtime, so one others could swap is refused)."""
    path = files.transformer_dir / MODEL_GRAPH
    if not path.is_file():
        raise RuntimeUnavailableError(
            f"runtime 'onnx' without torch ('auto' picks it there) runs the model's own ONNX "
            f"graph, and {path} does not exist: use a model that ships one "
            "(sentence-transformers' ONNX layout) or install torch and onnx on the workers to "
            "export it: pip install 'synapseml-ext[cpu]'")
    for part in (path, path.with_name(path.name + "_data")):  # the graph, its external data
        why = cache_trust.why_untrusted(part) if os.path.lexists(part) else ""
        if why:
            raise ModelLoadError(
                f"the model's ONNX graph {part} is not loaded: {why}; ONNX Runtime runs a graph "
                "as code, so copy the model to a folder only you can write, or install torch "
                "on the workers to export a private one (pip install 'synapseml-ext[cpu]')")
    return path


def _session_options(ort, num_threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        from synapseml_ext.engine.hardware import cuda_device_count

        if cuda_device_count() > 0:  # onnxruntime-gpu on a GPU worker
            providers.insert(0, "CUDAExecutionProvider")
    return options, providers
