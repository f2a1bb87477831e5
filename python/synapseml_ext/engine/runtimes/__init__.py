"""Runtime choice and loading: resolved once per worker, never per batch.

Each runtime has one loader; the encoder only ever sees a :class:`Backend`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import EngineError, RuntimeUnavailableError, missing_package
from synapseml_ext.engine.hardware import (
    cuda_device_count,
    cuda_unavailable_reason,
    tensorrt_import_error,
    torch_installed,
)
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.paths import cache_root
from synapseml_ext.engine.precision import ProbeVerdicts, resolve_cpu_precision
from synapseml_ext.engine.runtimes.base import Backend
from synapseml_ext.engine.spec import check_runtime_precision

__all__ = ["Backend", "RuntimeChoice", "choose_runtime", "load_backend"]

log = logging.getLogger("synapseml_ext.engine")


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    precision: str
    reason: str


_announced: set[tuple[str, str, str]] = set()


def choose_runtime(runtime: str, precision: str, *, gpus: int, flags=None,
                   tensorrt_error: str | None = None) -> RuntimeChoice:
    """Turn the requested runtime and precision into what will run on this worker.

    ``auto``: TensorRT when it imports and a GPU is present, else PyTorch on the GPU, else
    the CPU choice: PyTorch where bf16 is chosen (ONNX Runtime has no fast bf16 CPU kernels),
    ONNX Runtime in fp32 otherwise. An explicit runtime that cannot run here is an error
    naming what is missing, never a silent fallback to the CPU.

    ``gpus`` and ``tensorrt_error`` ("" when TensorRT imports) describe this worker; both
    are measured here when not given.
    """
    check_runtime_precision(runtime, precision)
    if runtime in ("cuda", "tensorrt"):
        if gpus < 1:
            raise _no_gpu(runtime)
        if runtime == "tensorrt":
            trt_error = tensorrt_import_error() if tensorrt_error is None else tensorrt_error
            if trt_error:
                raise RuntimeUnavailableError(
                    f"runtime='tensorrt' needs TensorRT on this worker: {trt_error}; install "
                    "it with: pip install 'synapseml-ext[tensorrt]' (or use runtime='cuda')")
        return RuntimeChoice(runtime, _gpu_precision(precision), "requested")
    if runtime == "auto":
        choice = _choose_auto(precision, gpus, flags, tensorrt_error)
        announced = (choice.runtime, choice.precision, choice.reason)
        if announced not in _announced:  # once per worker process
            _announced.add(announced)
            log.info("runtime='auto' chose runtime=%s precision=%s on this worker: %s",
                     *announced)
        return choice
    if runtime == "onnx":
        return RuntimeChoice("onnx", "fp32", "requested")
    prec, why = resolve_cpu_precision(precision, flags)
    return RuntimeChoice("cpu", prec, why)


def _choose_auto(precision: str, gpus: int, flags, tensorrt_error: str | None) -> RuntimeChoice:
    if gpus > 0:
        if precision == "bf16":
            return RuntimeChoice("cuda", "bf16", f"auto: {gpus} GPU(s); bf16 runs on PyTorch")
        trt_error = tensorrt_import_error() if tensorrt_error is None else tensorrt_error
        if not trt_error:
            return RuntimeChoice("tensorrt", _gpu_precision(precision),
                                 f"auto: {gpus} GPU(s) and TensorRT")
        return RuntimeChoice("cuda", _gpu_precision(precision),
                             f"auto: {gpus} GPU(s), no TensorRT ({trt_error})")
    if not torch_installed() and precision in ("auto", "fp32"):
        # an ONNX-only install: the model's own graph, see load_onnx
        return RuntimeChoice("onnx", "fp32", "auto on CPU: torch is not installed, so ONNX "
                             "Runtime in fp32")
    if not torch_installed() and precision == "bf16":
        raise missing_package("torch", "cpu", "precision='bf16' on a CPU")
    prec, why = resolve_cpu_precision(precision, flags)
    chosen = "cpu" if prec == "bf16" else "onnx"
    return RuntimeChoice(chosen, prec, f"auto on CPU ({why})")


def _gpu_precision(precision: str) -> str:
    return "fp16" if precision == "auto" else precision


def _no_gpu(runtime: str) -> RuntimeUnavailableError:
    extra = "tensorrt" if runtime == "tensorrt" else "gpu"
    return RuntimeUnavailableError(
        f"runtime={runtime!r} needs an NVIDIA GPU and none is usable on this worker: "
        f"{cuda_unavailable_reason() or 'no CUDA device visible'}. Run it on GPU workers with "
        f"the CUDA build of torch (pip install 'synapseml-ext[{extra}]'), or use "
        "runtime='cpu', 'onnx' or 'auto'")


def load_backend(
    files: ModelFiles,
    choice: RuntimeChoice,
    *,
    num_threads: int,
    cache_dir: str,
    prompt_length: int,
    min_cosine: float,
    probe: Sequence[TokenBatch],
) -> Backend:
    if choice.runtime == "onnx":
        from synapseml_ext.engine.runtimes.onnx.backend import load_onnx

        return load_onnx(files, num_threads=num_threads, cache_dir=cache_dir,
                         prompt_length=prompt_length, probe=probe)
    if choice.runtime == "cuda":
        from synapseml_ext.engine.runtimes.cuda.backend import load_cuda

        return load_cuda(files, precision=choice.precision, cache_dir=cache_dir,
                         prompt_length=prompt_length, min_cosine=min_cosine, probe=probe)
    if choice.runtime == "tensorrt":
        from synapseml_ext.engine.runtimes.tensorrt.backend import load_tensorrt

        try:
            return load_tensorrt(files, precision=choice.precision, cache_dir=cache_dir,
                                 prompt_length=prompt_length, min_cosine=min_cosine, probe=probe)
        except EngineError as e:
            if not choice.reason.startswith("auto"):
                raise
            # auto picked TensorRT; a model it cannot build still runs on the same GPU.
            log.warning("runtime='auto': TensorRT could not load %s (%s); using runtime='cuda'",
                        files.root.name, e)
            from synapseml_ext.engine.runtimes.cuda.backend import load_cuda

            return load_cuda(files, precision=choice.precision, cache_dir=cache_dir,
                             prompt_length=prompt_length, min_cosine=min_cosine, probe=probe)
    if choice.runtime == "cpu":
        from synapseml_ext.engine.runtimes.cpu.backend import load_cpu

        verdicts = ProbeVerdicts(cache_root(cache_dir), files.fingerprint(), threshold=min_cosine)
        backend = load_cpu(files, precision=choice.precision, num_threads=num_threads,
                           prompt_length=prompt_length, probe=probe, verdicts=verdicts)
        if choice.precision == "bf16" and backend.precision != "bf16" and \
                choice.reason.startswith("auto"):
            # auto chose PyTorch for bf16; with bf16 rejected, ONNX Runtime fp32 is faster.
            from synapseml_ext.engine.runtimes.onnx.backend import load_onnx

            return load_onnx(files, num_threads=num_threads, cache_dir=cache_dir,
                             prompt_length=prompt_length, probe=probe)
        return backend
    raise ValueError(f"unknown runtime {choice.runtime!r}")  # pragma: no cover


def gpu_count() -> int:
    return cuda_device_count()
