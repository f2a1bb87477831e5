"""PyTorch runtime (``cpu``; ``cuda`` shares the module)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import missing_package
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.precision import ProbeVerdicts, min_cosine
from synapseml_ext.engine.runtimes.base import RunsInTurn

log = logging.getLogger("synapseml_ext.engine")

# Measured on 2-core machines (docs/benchmarks.md): batches of a few thousand tokens keep
# the activations in cache; larger ones gain nothing on CPU.
CPU_MAX_TOKENS = 2048


class TorchBackend(RunsInTurn):
    """A :class:`~synapseml_ext.engine.modules.SentenceModule` on one torch device."""

    # Mixed lengths in one call (a server's merged requests, a small partition) are cut where
    # rows get 10% shorter: calls of 35 random reviews +22% rows/s fp32, +18% bf16; sorted
    # sets unchanged (2-core Zen 4, tools/bench/mixed_batches.py).
    max_pad_waste = 0.1
    min_batch_tokens = 512

    def __init__(self, module, *, runtime: str, precision: str, device: str, num_threads: int,
                 pad_multiple: int = 8, default_max_tokens: int = CPU_MAX_TOKENS) -> None:
        self.module = module
        self.runtime = runtime
        self.precision = precision
        self.device = device
        self.num_threads = num_threads
        self.pad_multiple = pad_multiple
        self.default_max_tokens = default_max_tokens

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            return self.module(ids, mask).float().cpu().numpy()


def load_cpu(
    files: ModelFiles,
    *,
    precision: str,
    num_threads: int,
    prompt_length: int,
    probe: Sequence[TokenBatch],
    verdicts: ProbeVerdicts,
) -> TorchBackend:
    """Load on the CPU in ``precision`` (fp32 or bf16). bf16 must pass the probe check:
    minimum cosine to fp32 over the probe texts >= the verdicts' threshold (``minCosine``),
    else fp32 is used."""
    try:
        import torch
    except ImportError as e:
        raise missing_package("torch", "cpu", "runtime='cpu'") from e

    from synapseml_ext.engine.modules import build_sentence_module
    from synapseml_ext.engine.runtimes.cpu.onednn import pack_bf16_linears

    torch.set_num_threads(num_threads)
    module = build_sentence_module(files, attn_implementation="sdpa", prompt_length=prompt_length)

    def backend(m, prec):
        return TorchBackend(m, runtime="cpu", precision=prec, device="cpu",
                            num_threads=num_threads)

    if precision == "fp32":
        return backend(module, "fp32")
    reduced = copy.deepcopy(module).to(torch.bfloat16)
    # The verdict belongs to the layers that run: packed oneDNN ones round differently.
    variant = "bf16+onednn" if pack_bf16_linears(reduced) else "bf16"
    verdict = verdicts.get(variant)
    if verdict is None:
        reference = _run_probe(backend(module, "fp32").run, probe)
        candidate = _run_probe(backend(reduced, "bf16").run, probe)
        verdict = verdicts.put(variant, min_cosine(reference, candidate))
    if verdict.passed:
        log.info("bf16 kept: minimum cosine to fp32 on the probe texts %.6f >= minCosine %g",
                 verdict.min_cosine, verdict.threshold)
        del module
        return backend(reduced, "bf16")
    log.warning(
        "bf16 rejected, falling back to fp32: minimum cosine to fp32 on the probe texts "
        "%.6f < minCosine %g", verdict.min_cosine, verdict.threshold)
    return backend(module, "fp32")


def _run_probe(run: Callable[[np.ndarray, np.ndarray], np.ndarray],
               probe: Sequence[TokenBatch]) -> np.ndarray:
    return np.concatenate([run(b.input_ids, b.attention_mask) for b in probe])
