"""PyTorch on the GPU (``cuda``): fp16 (default), bf16 or fp32, batches sized to the GPU.

CI has no GPU: this runs on the GPU machine through tools/gpu_check.py (figures measured on
an H100 in docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import RuntimeUnavailableError
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.paths import cache_root
from synapseml_ext.engine.precision import ProbeVerdicts
from synapseml_ext.engine.precision import min_cosine as lowest_cosine
from synapseml_ext.engine.runtimes.cuda.budget import TokenBudget, budget_for, run_halving_on_oom
from synapseml_ext.engine.runtimes.gpu_common import (
    PendingCopy,
    PinnedIO,
    gpu_signature,
    run_probe,
    worker_device,
)

log = logging.getLogger("synapseml_ext.engine")

# Tensor cores want sequence lengths in multiples of 8 (fp16/bf16).
GPU_PAD_MULTIPLE = 8
# With budgets of 100k+ tokens a length-sorted batch would span a wide length range and
# compute mostly padding (46% extra on the reviews with e5-large); a batch that holds
# MIN_BATCH_TOKENS already ends where rows get MAX_PAD_WASTE shorter than its longest.
# 0.2 / 16384 measured best of 0.05/4096, 0.1/8192, 0.2/16384 on an H100 with
# tools/bench/gpu_profile.py (docs/benchmarks.md, GPU).
MAX_PAD_WASTE = 0.2
MIN_BATCH_TOKENS = 16384


class CudaBackend:
    """A :class:`~synapseml_ext.engine.modules.SentenceModule` on one GPU.

    ``default_max_tokens`` is the learnt :class:`TokenBudget`: the encoder reads it before
    each batch, so batches grow as the budget grows.
    """

    runtime = "cuda"
    pad_multiple = GPU_PAD_MULTIPLE
    max_pad_waste = MAX_PAD_WASTE
    min_batch_tokens = MIN_BATCH_TOKENS
    overlaps_batches = True

    def __init__(self, module, *, precision: str, device, budget: TokenBudget) -> None:
        self.module = module
        self.precision = precision
        self.device = str(device)
        self._device = device
        self.num_threads = 1
        self.budget = budget
        self.io = PinnedIO(device)

    @property
    def default_max_tokens(self) -> int:
        return self.budget.tokens

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        return run_halving_on_oom(self._run_measured, input_ids, attention_mask, self.budget,
                                  (torch.cuda.OutOfMemoryError,), torch.cuda.empty_cache)

    def run_pipelined(self, batches: Iterable[TokenBatch]) -> Iterator[tuple[TokenBatch, np.ndarray]]:
        """``(batch, embeddings)`` in order, keeping one batch queued on the GPU while the next
        is padded, copied and launched, so the GPU does not idle between batches.

        Launching allocates (and can run out of memory) on the host side; the batch in
        flight is then collected first and the failed one runs through :meth:`run`, which
        halves it as needed.
        """
        import torch

        in_flight: tuple[TokenBatch, PendingCopy] | None = None
        slot = 0
        for batch in batches:
            try:
                launched = (batch, self._launch(batch.input_ids, batch.attention_mask,
                                                str(slot)))
            except torch.cuda.OutOfMemoryError:
                launched = None
            if in_flight is not None:
                yield in_flight[0], in_flight[1].result()
                in_flight = None
            if launched is None:
                torch.cuda.empty_cache()
                yield batch, self.run(batch.input_ids, batch.attention_mask)
                continue
            in_flight = launched
            slot ^= 1  # two sets of pinned buffers: one in flight, one being filled
        if in_flight is not None:
            yield in_flight[0], in_flight[1].result()

    def _run_measured(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._launch(input_ids, attention_mask, "").result()

    def _launch(self, input_ids: np.ndarray, attention_mask: np.ndarray, slot: str
                ) -> PendingCopy:
        """Queue one batch on the GPU through the pinned buffers of ``slot``; the budget
        learns from the allocator's peak, known once the kernels are queued (allocation
        happens on the host)."""
        import torch

        device = self._device
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            ids = self.io.to_device(f"input_ids{slot}", input_ids)
            mask = self.io.to_device(f"attention_mask{slot}", attention_mask)
            pending = self.io.to_host_later(self.module(ids, mask), f"out{slot}")
        peak = torch.cuda.max_memory_allocated(device)
        free, _total = torch.cuda.mem_get_info(device)
        # What this process may use: free memory plus what its allocator already holds.
        usable = free + torch.cuda.memory_reserved(device)
        self.budget.after_success(int(input_ids.size), peak, base, usable)
        return pending

def load_cuda(
    files: ModelFiles,
    *,
    precision: str,
    cache_dir: str,
    prompt_length: int,
    min_cosine: float,
    probe: Sequence[TokenBatch],
) -> CudaBackend:
    """Load on this worker's GPU in ``precision``. fp16/bf16 must pass the probe check
    (minimum cosine to fp32 >= ``min_cosine``), else the GPU runs fp32 and says why."""
    import torch

    from synapseml_ext.engine.modules import build_sentence_module

    device = worker_device("cuda")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RuntimeUnavailableError(
            f"precision='bf16' needs a GPU with bf16 support (compute capability 8.0+); "
            f"{torch.cuda.get_device_name(device)} has none: use precision='fp16'")
    module = build_sentence_module(files, attn_implementation="sdpa",
                                   prompt_length=prompt_length).to(device)
    fingerprint = files.fingerprint()

    def backend(m, prec: str) -> CudaBackend:
        budget = budget_for((str(device), fingerprint, prec, prompt_length))
        return CudaBackend(m, precision=prec, device=device, budget=budget)

    if precision == "fp32":
        return backend(module, "fp32")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    verdicts = ProbeVerdicts(cache_root(cache_dir), fingerprint, gpu_signature(device),
                             threshold=min_cosine)
    verdict = verdicts.get(precision)
    if verdict is None:
        reference = run_probe(backend(module, "fp32").run, probe)
        reduced = copy.deepcopy(module).to(dtype)
        candidate = run_probe(backend(reduced, precision).run, probe)
        verdict = verdicts.put(precision, lowest_cosine(reference, candidate))
    else:
        reduced = None
    if verdict.passed:
        log.info("%s kept on %s: minimum cosine to fp32 on the probe texts %.6f >= minCosine %g",
                 precision, device, verdict.min_cosine, verdict.threshold)
        reduced = reduced if reduced is not None else module.to(dtype)
        del module
        torch.cuda.empty_cache()
        return backend(reduced, precision)
    log.warning("%s rejected on %s, falling back to fp32: minimum cosine to fp32 on the probe "
                "texts %.6f < minCosine %g", precision, device, verdict.min_cosine,
                verdict.threshold)
    del reduced
    torch.cuda.empty_cache()
    return backend(module, "fp32")

