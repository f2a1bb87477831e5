"""Runtime choice and loading: resolved once per worker, never per batch.

Each runtime has one loader; the encoder only ever sees a :class:`Backend`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import RuntimeUnavailableError
from synapseml_ext.engine.hardware import cuda_device_count
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.paths import cache_root
from synapseml_ext.engine.precision import ProbeVerdicts, resolve_cpu_precision
from synapseml_ext.engine.runtimes.base import Backend

__all__ = ["Backend", "RuntimeChoice", "choose_runtime", "load_backend"]

log = logging.getLogger("synapseml_ext.engine")


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    precision: str
    reason: str


def choose_runtime(runtime: str, precision: str, *, gpus: int, flags=None) -> RuntimeChoice:
    """Turn the requested runtime and precision into what will run on this worker.

    ``auto`` on a CPU worker: PyTorch where bf16 is chosen (ONNX Runtime has no fast bf16 CPU
    kernels), ONNX Runtime in fp32 otherwise. An explicit runtime that cannot run here is an
    error, never a silent fallback.
    """
    if runtime in ("cuda", "tensorrt"):
        raise RuntimeUnavailableError(
            f"runtime={runtime!r} is not available in this build of synapseml-ext (it needs a "
            "GPU worker and the GPU runtimes); use runtime='cpu', 'onnx' or 'auto'"
        )
    if runtime == "auto":
        prec, why = resolve_cpu_precision(precision, flags)
        chosen = "cpu" if prec == "bf16" else "onnx"
        return RuntimeChoice(chosen, prec, f"auto on CPU ({why})")
    if runtime == "onnx":
        if precision in ("bf16", "fp16"):
            raise ValueError(
                f"precision={precision!r} is not supported by runtime='onnx' (ONNX Runtime on "
                "CPU runs fp32); use runtime='cpu' for bf16"
            )
        return RuntimeChoice("onnx", "fp32", "requested")
    prec, why = resolve_cpu_precision(precision, flags)
    return RuntimeChoice("cpu", prec, why)


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
        from synapseml_ext.engine.runtimes.onnx_backend import load_onnx

        return load_onnx(files, num_threads=num_threads, cache_dir=cache_dir,
                         prompt_length=prompt_length, probe=probe)
    if choice.runtime == "cpu":
        from synapseml_ext.engine.runtimes.torch_backend import load_cpu

        verdicts = ProbeVerdicts(cache_root(cache_dir), files.fingerprint(), threshold=min_cosine)
        backend = load_cpu(files, precision=choice.precision, num_threads=num_threads,
                           prompt_length=prompt_length, probe=probe, verdicts=verdicts)
        if choice.precision == "bf16" and backend.precision != "bf16" and \
                choice.reason.startswith("auto"):
            # auto chose PyTorch for bf16; with bf16 rejected, ONNX Runtime fp32 is faster.
            from synapseml_ext.engine.runtimes.onnx_backend import load_onnx

            return load_onnx(files, num_threads=num_threads, cache_dir=cache_dir,
                             prompt_length=prompt_length, probe=probe)
        return backend
    raise ValueError(f"unknown runtime {choice.runtime!r}")  # pragma: no cover


def gpu_count() -> int:
    return cuda_device_count()
