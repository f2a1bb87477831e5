"""What the machine running the encoder offers: CPU flags, CPU share, GPUs.

Everything here runs where the model runs (an executor's Python worker), never on the
driver: the driver's hardware says nothing about the executors'.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose_cpu_precision(flags: Iterable[str]) -> tuple[str, str]:
    """``(precision, reason)`` for ``precision="auto"`` on a CPU with these flags.

    bf16 wins where the CPU multiplies bf16 in hardware: AMX tiles (Sapphire Rapids and
    later) or AVX-512 BF16 dot products (Cooper Lake, Zen 4 and later; measured faster than
    fp32 for MiniLM in docs/benchmarks.md). Without either, bf16 is emulated and slower.
    """
    flags = set(flags)
    if "amx_bf16" in flags:
        return "bf16", "CPU has AMX-BF16"
    if "avx512_bf16" in flags:
        return "bf16", "CPU has AVX512-BF16"
    return "fp32", "CPU has neither AMX-BF16 nor AVX512-BF16"


def cpu_signature() -> str:
    """Identifies the CPU kind for caches of per-CPU verdicts."""
    relevant = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith(("amx", "avx512")))
    return f"{cpu_model_name()}|{' '.join(relevant)}"


def task_cpu_share() -> int:
    """Threads this process may use: the Spark task's CPUs (``spark.task.cpus``) inside a
    task, else the CPUs this process may run on. Several tasks on one machine then split its
    cores instead of each taking all of them."""
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
    except ImportError:
        context = None
    if context is not None:
        try:
            return max(1, int(context.cpus()))
        except Exception:
            return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def torch_installed() -> bool:
    """Whether torch can be imported on this worker (an ONNX-only install has none)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def onnx_exporter_installed() -> bool:
    """Whether our ONNX export can run here: torch and the onnx package ([cpu] has both)."""
    import importlib.util

    return torch_installed() and importlib.util.find_spec("onnx") is not None


def cuda_device_count() -> int:
    """Visible CUDA devices, 0 where torch has no CUDA or no GPU is present."""
    try:
        import torch
    except ImportError:
        return 0
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def cuda_unavailable_reason() -> str:
    """Why torch sees no GPU here, in words for an error message ("" when one is visible)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} on this worker is a CPU-only build"
    try:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return ""
    except Exception as e:
        return f"torch could not initialise CUDA ({e})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable NVIDIA GPU "
            f"or driver on this worker{where}")


@lru_cache(maxsize=1)
def tensorrt_import_error() -> str:
    """"" when the ``tensorrt`` Python package imports and has its builder, else why not.

    The PyPI ``tensorrt`` wheels install stubs when their native libraries are missing, so
    importing is not enough: the builder class must be there too.
    """
    try:
        import tensorrt
    except Exception as e:  # ImportError, or the stub's own error about missing libraries
        return f"the tensorrt package does not import ({type(e).__name__}: {e})"
    if not hasattr(tensorrt, "Builder") or not hasattr(tensorrt, "OnnxParser"):
        return "the tensorrt package has no Builder/OnnxParser (a stub without its libraries)"
    return ""
