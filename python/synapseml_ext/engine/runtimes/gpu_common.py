"""What the two GPU runtimes (cuda, tensorrt) share: the device, pinned transfers, the probe.

torch is imported inside the functions: this module is imported only on GPU workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import RuntimeUnavailableError
from synapseml_ext.engine.hardware import cuda_unavailable_reason

log = logging.getLogger("synapseml_ext.engine")


def worker_device(runtime: str):
    """The ``torch.device`` this worker uses (see :mod:`synapseml_ext.engine.device`)."""
    import torch

    from synapseml_ext.engine.device import worker_gpu

    reason = cuda_unavailable_reason()
    if reason:
        extra = "tensorrt" if runtime == "tensorrt" else "gpu"
        raise RuntimeUnavailableError(
            f"runtime={runtime!r} needs an NVIDIA GPU: {reason}; install the CUDA build of "
            f"torch with pip install 'synapseml-ext[{extra}]'")
    device = torch.device("cuda", worker_gpu(torch.cuda.device_count()))
    torch.cuda.set_device(device)
    return device


def gpu_signature(device) -> str:
    """The GPU kind, for caches of per-GPU verdicts: name, compute capability, CUDA."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}|sm{major}{minor}|cuda{torch.version.cuda}"


class PinnedIO:
    """Host<->device copies through reusable page-locked buffers.

    Page-locked (pinned) host memory lets the copy engine move data without a staging copy,
    asynchronously; buffers grow to the largest batch and are reused. Each batch makes one
    device-to-host copy of the pooled embeddings only.
    """

    def __init__(self, device) -> None:
        self.device = device
        self._host: dict[str, Any] = {}  # torch tensors (torch loads lazily)

    def _buffer(self, name: str, numel: int, dtype):
        import torch

        buf = self._host.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = torch.empty(max(numel, 1), dtype=dtype, pin_memory=True)
            self._host[name] = buf
        return buf[:numel]

    def to_device(self, name: str, array: np.ndarray, dtype=None):
        import torch

        src = torch.from_numpy(np.ascontiguousarray(array))
        staged = self._buffer(name, src.numel(), src.dtype).view(src.shape)
        staged.copy_(src)
        out = staged.to(self.device, non_blocking=True)
        return out if dtype is None or out.dtype == dtype else out.to(dtype)

    def to_host(self, tensor, stream=None) -> np.ndarray:
        """float32 numpy copy of ``tensor``, after the stream has finished."""
        return self.to_host_later(tensor, "out", stream).result()

    def to_host_later(self, tensor, name: str, stream=None) -> PendingCopy:
        """Start the float32 device-to-host copy of ``tensor`` into the pinned buffer ``name``
        without waiting: the caller reads it with :meth:`PendingCopy.result`, and must not
        reuse ``name`` before that."""
        import torch

        value = tensor.float()
        host = self._buffer(name, value.numel(), torch.float32).view(value.shape)
        host.copy_(value, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream or torch.cuda.current_stream(self.device))
        return PendingCopy(host, done)


class PendingCopy:
    """A device-to-host copy in flight: ``result()`` waits for it and returns a numpy copy."""

    def __init__(self, host, done) -> None:
        self._host = host
        self._done = done

    def result(self) -> np.ndarray:
        self._done.synchronize()
        return self._host.numpy().copy()  # the pinned buffer is reused by a later batch


def run_probe(run: Callable[[np.ndarray, np.ndarray], np.ndarray],
              probe: Sequence[TokenBatch]) -> np.ndarray:
    return np.concatenate([run(b.input_ids, b.attention_mask) for b in probe])


def fp32_reference(files, device, prompt_length: int, probe: Sequence[TokenBatch]) -> np.ndarray:
    """The fp32 PyTorch embeddings of the probe texts on ``device``: what reduced precision
    is measured against."""
    import torch

    from synapseml_ext.engine.modules import build_sentence_module

    module = build_sentence_module(files, attn_implementation="sdpa",
                                   prompt_length=prompt_length).to(device)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(ids).to(device),
                          torch.from_numpy(mask).to(device)).float().cpu().numpy()

    out = run_probe(run, probe)
    module.cpu()  # free the GPU copy before the caller loads its own
    torch.cuda.empty_cache()
    return out
