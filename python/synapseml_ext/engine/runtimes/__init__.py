"""Runtime choice and loading: resolved once per worker, never per batch.

Choosing (:func:`choose_runtime`: an ordered list of candidates) is apart from loading
(:func:`load_backend`: the first candidate that serves). Each runtime is a package here
(``cpu``, ``onnx``, ``cuda``, ``tensorrt``) with one loader, imported only when it loads;
``gpu_common`` and ``onnx_export`` are shared by two runtimes each. The encoder only ever
sees a :class:`Backend`.
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

__all__ = ["Backend", "Candidate", "RuntimeChoice", "choose_runtime", "load_backend"]

log = logging.getLogger("synapseml_ext.engine")


@dataclass(frozen=True)
class Candidate:
    """One runtime and precision that may serve the model on this worker."""

    runtime: str
    precision: str


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs on this worker: ``candidates`` in the order they are tried.

    The first is the choice; a later one is loaded only when the one before it fails in the
    way documented at :func:`load_backend`. An explicit runtime has exactly one candidate, so
    it never falls back silently.
    """

    candidates: tuple[Candidate, ...]
    reason: str

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError("a RuntimeChoice needs at least one candidate")

    @classmethod
    def only(cls, runtime: str, precision: str, reason: str) -> RuntimeChoice:
        return cls((Candidate(runtime, precision),), reason)

    @property
    def runtime(self) -> str:
        return self.candidates[0].runtime

    @property
    def precision(self) -> str:
        return self.candidates[0].precision


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
        return RuntimeChoice.only(runtime, _gpu_precision(precision), "requested")
    if runtime == "auto":
        choice = _choose_auto(precision, gpus, flags, tensorrt_error)
        announced = (choice.runtime, choice.precision, choice.reason)
        if announced not in _announced:  # once per worker process
            _announced.add(announced)
            log.info("runtime='auto' chose runtime=%s precision=%s on this worker: %s",
                     *announced)
        return choice
    if runtime == "onnx":
        return RuntimeChoice.only("onnx", "fp32", "requested")
    prec, why = resolve_cpu_precision(precision, flags)
    return RuntimeChoice.only("cpu", prec, why)


def _choose_auto(precision: str, gpus: int, flags, tensorrt_error: str | None) -> RuntimeChoice:
    if gpus > 0:
        if precision == "bf16":
            return RuntimeChoice.only("cuda", "bf16", f"auto: {gpus} GPU(s); bf16 runs on PyTorch")
        trt_error = tensorrt_import_error() if tensorrt_error is None else tensorrt_error
        gpu_precision = _gpu_precision(precision)
        if not trt_error:
            # a model TensorRT cannot build still runs on the same GPU with PyTorch
            return RuntimeChoice((Candidate("tensorrt", gpu_precision),
                                  Candidate("cuda", gpu_precision)),
                                 f"auto: {gpus} GPU(s) and TensorRT")
        return RuntimeChoice.only("cuda", gpu_precision,
                                  f"auto: {gpus} GPU(s), no TensorRT ({trt_error})")
    if not torch_installed() and precision in ("auto", "fp32"):
        # an ONNX-only install: the model's own graph, see load_onnx
        return RuntimeChoice.only("onnx", "fp32", "auto on CPU: torch is not installed, so "
                                  "ONNX Runtime in fp32")
    if not torch_installed() and precision == "bf16":
        raise missing_package("torch", "cpu", "precision='bf16' on a CPU")
    prec, why = resolve_cpu_precision(precision, flags)
    reason = f"auto on CPU ({why})"
    if prec == "bf16":
        # with bf16 rejected by the probe, ONNX Runtime fp32 is faster than PyTorch fp32
        return RuntimeChoice((Candidate("cpu", "bf16"), Candidate("onnx", "fp32")), reason)
    return RuntimeChoice.only("onnx", prec, reason)


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
    """Load the first of ``choice.candidates`` that serves here.

    The next candidate is tried only when TensorRT cannot build the model (an
    :class:`EngineError`, logged as a warning) or when a bf16 CPU backend comes back in another
    precision (the probe rejected bf16). The last candidate's failure is the caller's error.
    """
    loaders = _Loaders(files, num_threads=num_threads, cache_dir=cache_dir,
                       prompt_length=prompt_length, min_cosine=min_cosine, probe=probe)
    *earlier, last = choice.candidates
    for candidate, following in zip(earlier, choice.candidates[1:], strict=True):
        backend = loaders.attempt(candidate, following)
        if backend is not None:
            return backend
    return loaders.load(last)


@dataclass(frozen=True)
class _Loaders:
    """Every runtime's loader, with the arguments one load shares (heavy imports stay lazy)."""

    files: ModelFiles
    num_threads: int
    cache_dir: str
    prompt_length: int
    min_cosine: float
    probe: Sequence[TokenBatch]

    def attempt(self, candidate: Candidate, following: Candidate) -> Backend | None:
        """``candidate``'s backend, or None on a failure that hands over to ``following``."""
        if candidate.runtime == "tensorrt":
            try:
                return self.load(candidate)
            except EngineError as e:
                log.warning("runtime='auto': TensorRT could not load %s (%s); using runtime=%r",
                            self.files.root.name, e, following.runtime)
                return None
        backend = self.load(candidate)
        if candidate.precision == "bf16" and backend.precision != "bf16":
            return None  # the probe rejected bf16 (the CPU backend logged why)
        return backend

    def load(self, candidate: Candidate) -> Backend:
        runtime, precision = candidate.runtime, candidate.precision
        if runtime == "onnx":
            from synapseml_ext.engine.runtimes.onnx.backend import load_onnx

            return load_onnx(self.files, num_threads=self.num_threads, cache_dir=self.cache_dir,
                             prompt_length=self.prompt_length, probe=self.probe)
        if runtime == "cuda":
            from synapseml_ext.engine.runtimes.cuda.backend import load_cuda

            return load_cuda(self.files, precision=precision, cache_dir=self.cache_dir,
                             prompt_length=self.prompt_length, min_cosine=self.min_cosine,
                             probe=self.probe)
        if runtime == "tensorrt":
            from synapseml_ext.engine.runtimes.tensorrt.backend import load_tensorrt

            return load_tensorrt(self.files, precision=precision, cache_dir=self.cache_dir,
                                 prompt_length=self.prompt_length, min_cosine=self.min_cosine,
                                 probe=self.probe)
        if runtime == "cpu":
            from synapseml_ext.engine.runtimes.cpu.backend import load_cpu

            verdicts = ProbeVerdicts(cache_root(self.cache_dir), self.files.fingerprint(),
                                     threshold=self.min_cosine)
            return load_cpu(self.files, precision=precision, num_threads=self.num_threads,
                            prompt_length=self.prompt_length, probe=self.probe,
                            verdicts=verdicts)
        raise ValueError(f"unknown runtime {runtime!r}")  # pragma: no cover


def gpu_count() -> int:
    return cuda_device_count()
