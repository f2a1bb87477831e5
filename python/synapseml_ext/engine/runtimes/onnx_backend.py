"""ONNX Runtime runtime (``onnx``): the cached export, fused for ONNX Runtime."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import missing_package
from synapseml_ext.engine.model_files import ModelFiles

# Measured on 2-core machines (docs/benchmarks.md): ~1k-token batches are fastest on CPU.
ORT_CPU_MAX_TOKENS = 1024


class OnnxBackend:
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


def load_onnx(
    files: ModelFiles,
    *,
    num_threads: int,
    cache_dir: str,
    prompt_length: int,
    probe: Sequence[TokenBatch],
) -> OnnxBackend:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise missing_package("onnxruntime", "onnx", "runtime='onnx'") from e
    from synapseml_ext.engine.onnx_export import ensure_onnx

    artifacts = ensure_onnx(files, probe, cache_dir=cache_dir, prompt_length=prompt_length)
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
    try:
        session = ort.InferenceSession(str(artifacts.for_onnxruntime), options, providers=providers)
    except Exception:
        # Verified bytes that still fail to load: drop the entry and export again once.
        import shutil

        shutil.rmtree(artifacts.directory, ignore_errors=True)
        artifacts = ensure_onnx(files, probe, cache_dir=cache_dir, prompt_length=prompt_length)
        session = ort.InferenceSession(str(artifacts.for_onnxruntime), options, providers=providers)
    device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
    return OnnxBackend(session, num_threads=num_threads, device=device)
