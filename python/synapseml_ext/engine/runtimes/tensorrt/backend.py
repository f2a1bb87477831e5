"""TensorRT (``tensorrt``): engines built from the onnx runtime's export, cached on disk.

Build: the raw ``model.onnx`` of :mod:`synapseml_ext.engine.runtimes.onnx_export` (one export path for
both graph runtimes), in fp16 turned into an fp16 graph first (TensorRT 10.12+ deprecates and
11 removes the FP16 builder flag: networks are "strongly typed", the graph carries the
types), parsed with ``OnnxParser`` and built with one optimization profile per length bucket
(:mod:`synapseml_ext.engine.runtimes.tensorrt.profiles`). Engines are cached by
:class:`~synapseml_ext.engine.runtimes.tensorrt.engine_cache.EngineCache` under a key of the model, graph,
precision, profiles, GPU compute capability and TensorRT version.

Run: torch CUDA tensors hold inputs and outputs; their addresses go to
``IExecutionContext.set_tensor_address`` and ``execute_async_v3`` runs on a torch stream, so
no pycuda is needed.

Never run on GPU hardware by this repository's CI (no GPU and no TensorRT there): the
TensorRT calls follow the TensorRT 10/11 Python API documentation. See docs/gpu.md.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import EngineError, missing_package
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.paths import cache_root
from synapseml_ext.engine.precision import ProbeVerdicts
from synapseml_ext.engine.precision import min_cosine as lowest_cosine
from synapseml_ext.engine.runtimes.base import RunsInTurn
from synapseml_ext.engine.runtimes.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAME,
    ensure_onnx,
    export_key,
)
from synapseml_ext.engine.runtimes.tensorrt.engine_cache import EngineCache
from synapseml_ext.engine.runtimes.tensorrt.profiles import (
    PAD_MULTIPLE,
    TRT_MAX_TOKENS,
    Profile,
    plan_profiles,
    split_for_profiles,
)

log = logging.getLogger("synapseml_ext.engine")

# Bump when the build recipe changes: old engines stop matching.
BUILD_VERSION = 1
# Ops kept in fp32 in the fp16 graph: normalisation statistics and the pooling reductions,
# where fp16's range and rounding lose accuracy; matmuls, softmax and GELU run in fp16.
FP32_OPS = ("LayerNormalization", "ReduceMean", "ReduceSum", "ReduceMax", "Pow", "Sqrt",
            "Div", "Clip")


def import_tensorrt():
    try:
        import tensorrt as trt
    except Exception as e:
        raise missing_package("tensorrt", "tensorrt", "runtime='tensorrt'") from e
    if not hasattr(trt, "Builder"):
        raise missing_package("tensorrt (with its native libraries)", "tensorrt",
                              "runtime='tensorrt'")
    return trt


def fp16_graph(raw: Path, out: Path) -> Path:
    """Write an fp16 copy of the fp32 graph ``raw`` to ``out``: weights and most ops in fp16,
    :data:`FP32_OPS` in fp32, inputs and output types unchanged (int64 ids, float32
    embeddings). Runs anywhere onnx and onnxruntime are installed."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(raw))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_OPS))
    onnx.save(converted, str(out))
    return out


def engine_parts(*, graph_key: str, model_fingerprint: str, precision: str,
                 profiles: Sequence[Profile], compute_capability: tuple[int, int],
                 tensorrt_version: str, strongly_typed: bool) -> dict:
    """Everything an engine's bytes depend on, and where they can run (the cache key)."""
    return {
        "build_version": BUILD_VERSION,
        "graph": graph_key,
        "model": model_fingerprint,
        "precision": precision,
        "profiles": [p.to_dict() for p in profiles],
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "tensorrt": tensorrt_version,
        "strongly_typed": strongly_typed,
    }


def _strongly_typed_flag(trt):
    return getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)


def build_engine(trt, logger, onnx_path: Path, precision: str,
                 profiles: Sequence[Profile]) -> bytes:
    """Serialised engine for the fp32 graph at ``onnx_path``."""
    strongly = _strongly_typed_flag(trt)
    major = int(trt.__version__.split(".")[0])
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    with tempfile.TemporaryDirectory(prefix="synapseml-ext-trt-") as scratch:
        graph = onnx_path
        if precision == "fp16" and strongly is not None:
            flags |= 1 << int(strongly)
            graph = fp16_graph(onnx_path, Path(scratch) / "model.fp16.onnx")
        elif strongly is not None:
            flags |= 1 << int(strongly)
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(graph)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT could not parse {graph}: {errors}")
        config = builder.create_builder_config()
        if precision == "fp16" and strongly is None:  # TensorRT before strong typing
            config.set_flag(trt.BuilderFlag.FP16)
        inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        for p in profiles:
            profile = builder.create_optimization_profile()
            for name in INPUT_NAMES:
                if name in inputs:
                    profile.set_shape(name, *p.shapes())
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see the "
                          "TensorRT log lines above)")
    return bytes(serialized)


class TensorRTBackend(RunsInTurn):
    """One deserialised engine with one execution context on one GPU.

    Batches are split to fit the profiles (:func:`split_for_profiles`); the context switches
    profile only when the width moves into another bucket, which is rare since the encoder
    runs batches longest first.
    """

    runtime = "tensorrt"
    pad_multiple = PAD_MULTIPLE
    default_max_tokens = TRT_MAX_TOKENS

    def __init__(self, trt, engine, profiles: Sequence[Profile], *, precision: str,
                 device) -> None:
        import torch

        from synapseml_ext.engine.runtimes.gpu_common import PinnedIO

        self.engine = engine
        self.profiles = tuple(profiles)
        self.precision = precision
        self.device = str(device)
        self._device = device
        self.num_threads = 1
        self.io = PinnedIO(device)
        self.stream = torch.cuda.Stream(device)
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_input[n]]
        outputs = [n for n in names if not is_input[n]]
        self.output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.active_profile = 0

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        rows, width = input_ids.shape
        pieces = [self._run_piece(index, input_ids[start:stop], attention_mask[start:stop])
                  for index, start, stop in split_for_profiles(rows, width, self.profiles)]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _run_piece(self, profile: int, input_ids: np.ndarray,
                   attention_mask: np.ndarray) -> np.ndarray:
        import torch

        handle = self.stream.cuda_stream
        with torch.cuda.stream(self.stream):
            if profile != self.active_profile:
                self.context.set_optimization_profile_async(profile, handle)
                self.active_profile = profile
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
            held = []  # keep device tensors alive until the stream is done
            for name in self.inputs:
                tensor = self.io.to_device(name, feeds[name], self.dtypes[name])
                held.append(tensor)
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            shape = tuple(self.context.get_tensor_shape(self.output))
            out = torch.empty(shape, dtype=self.dtypes[self.output], device=self._device)
            self.context.set_tensor_address(self.output, out.data_ptr())
            if not self.context.execute_async_v3(handle):
                raise EngineError(f"TensorRT execution failed for a batch of shape "
                                  f"{input_ids.shape}")
            return self.io.to_host(out, self.stream)


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


def load_tensorrt(
    files: ModelFiles,
    *,
    precision: str,
    cache_dir: str,
    prompt_length: int,
    min_cosine: float,
    probe: Sequence[TokenBatch],
) -> TensorRTBackend:
    """Load (building once if needed) the engine of ``files`` on this worker's GPU. An fp16
    engine must pass the probe check (minimum cosine to PyTorch fp32 >= ``min_cosine``), else
    an fp32 engine is used and the log says why."""
    import torch

    from synapseml_ext.engine.runtimes.gpu_common import (
        fp32_reference,
        gpu_signature,
        run_probe,
        worker_device,
    )

    trt = import_tensorrt()
    device = worker_device("tensorrt")
    artifacts = ensure_onnx(files, probe, cache_dir=cache_dir, prompt_length=prompt_length)
    profiles = plan_profiles(files.max_seq_length)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    cache: EngineCache = EngineCache(cache_root(cache_dir) / "tensorrt")
    fingerprint = files.fingerprint()

    def engine_for(prec: str) -> TensorRTBackend:
        parts = engine_parts(
            graph_key=export_key(files, prompt_length), model_fingerprint=fingerprint,
            precision=prec, profiles=profiles,
            compute_capability=torch.cuda.get_device_capability(device),
            tensorrt_version=trt.__version__,
            strongly_typed=_strongly_typed_flag(trt) is not None)
        with torch.cuda.device(device):
            engine, built = cache.get_or_build(
                parts,
                build=lambda: build_engine(trt, logger, artifacts.raw, prec, profiles),
                deserialize=runtime.deserialize_cuda_engine)
        log.info("TensorRT %s engine for %s %s (%d profiles)", prec, files.root.name,
                 "built" if built else "loaded from the cache", len(profiles))
        return TensorRTBackend(trt, engine, profiles, precision=prec, device=device)

    if precision == "fp32":
        return engine_for("fp32")
    verdicts = ProbeVerdicts(cache_root(cache_dir), fingerprint,
                             f"tensorrt{trt.__version__}|{gpu_signature(device)}",
                             threshold=min_cosine)
    backend = engine_for(precision)
    verdict = verdicts.get(precision)
    if verdict is None:
        reference = fp32_reference(files, device, prompt_length, probe)
        verdict = verdicts.put(precision, lowest_cosine(reference, run_probe(backend.run, probe)))
    if verdict.passed:
        return backend
    log.warning("TensorRT %s rejected, using an fp32 engine: minimum cosine to fp32 on the "
                "probe texts %.6f < minCosine %g", precision, verdict.min_cosine,
                verdict.threshold)
    del backend
    return engine_for("fp32")
