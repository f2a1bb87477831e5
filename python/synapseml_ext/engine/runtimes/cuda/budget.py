"""Token budgets for GPU batches: grow while memory allows, halve on out-of-memory.

Pure policy, no torch: the cuda runtime measures (peak bytes, usable bytes) and this module
decides. One budget per (device, model, precision) lives for the whole Python worker, so a
size learnt by one task serves the next tasks in the same worker.

Why not a fixed size: the right batch depends on the GPU (16 GiB T4 or 80 GiB H100), on the
model (MiniLM or e5-large) and on what else shares the GPU (other Spark tasks); too small
wastes the GPU, too large fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from synapseml_ext.engine.errors import EngineError

START_TOKENS = 8192
FLOOR_TOKENS = 256
CAP_TOKENS = 1 << 20
# Grow only while the predicted peak stays below this share of the memory this process may use.
HEADROOM = 0.85
# Budgets move in steps of this many tokens (keeps batch shapes few and repeatable).
STEP = 256


@dataclass
class TokenBudget:
    """Padded tokens per GPU batch, learnt from measurements.

    ``ceiling`` is the smallest batch (in padded tokens) that ran out of memory: the budget
    never grows back to it.
    """

    tokens: int = START_TOKENS
    floor: int = FLOOR_TOKENS
    cap: int = CAP_TOKENS
    headroom: float = HEADROOM
    ceiling: int = 0
    grown: int = 0
    halved: int = 0

    def after_success(self, batch_tokens: int, peak_bytes: int, base_bytes: int,
                      usable_bytes: int) -> int:
        """Update after a batch of ``batch_tokens`` padded tokens ran with peak allocation
        ``peak_bytes``, ``base_bytes`` being allocated before it (weights) and
        ``usable_bytes`` what this process may hold in total. Returns the new budget.

        Memory grows about linearly with tokens at a fixed width, so the measured bytes per
        token predict the next size; growth is at most 2x per step because attention grows
        with the square of the width and the next batch may be wider.
        """
        if batch_tokens <= 0 or batch_tokens * 2 < self.tokens:
            # A short batch (end of a partition, the row cap) says little about a full one.
            return self.tokens
        per_token = max(peak_bytes - base_bytes, 1) / batch_tokens
        fits = (self.headroom * usable_bytes - base_bytes) / per_token
        target = min(self.cap, 2 * self.tokens, int(fits))
        if self.ceiling:
            target = min(target, self.ceiling - STEP)
        target = target // STEP * STEP
        if target > self.tokens:
            self.tokens = target
            self.grown += 1
        return self.tokens

    def after_oom(self, batch_tokens: int) -> int:
        """Halve after a batch of ``batch_tokens`` padded tokens ran out of memory."""
        self.ceiling = min(self.ceiling, batch_tokens) if self.ceiling else batch_tokens
        # Half the failed size, unless the budget is already below that (the halves of a
        # batch planned before an earlier halving fail at sizes above the budget).
        halved = min(self.tokens, batch_tokens // 2) // STEP * STEP
        self.tokens = max(self.floor, halved)
        self.halved += 1
        return self.tokens


_budgets: dict[tuple, TokenBudget] = {}
_budgets_lock = threading.Lock()


def budget_for(key: tuple, start: int = START_TOKENS) -> TokenBudget:
    """The worker-wide budget for ``key`` (device, model fingerprint, precision), created on
    first use; later loads of the same model on the same device start from what was learnt."""
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            budget = _budgets[key] = TokenBudget(tokens=start)
        return budget


def run_halving_on_oom(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    budget: TokenBudget,
    oom_errors: tuple[type[BaseException], ...],
    release: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """``run`` on the batch; on one of ``oom_errors`` halve ``budget``, free what the failed
    call held (``release``) and run each half of the rows on its own, recursively.

    Rows come back in order. A single row that does not fit is an :class:`EngineError`.
    """
    try:
        return run(input_ids, attention_mask)
    except oom_errors as e:
        # Keep the message only: the exception's traceback holds the failed call's frames,
        # and with them its GPU tensors, which the retry needs freed.
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    budget.after_oom(int(input_ids.size))
    release()
    rows = input_ids.shape[0]
    if rows == 1:
        raise EngineError(
            f"one text of {int(attention_mask.sum())} tokens does not fit in GPU memory even "
            f"alone ({reason}); lower maxSeqLength, use a smaller model or a GPU with more "
            "free memory")
    half = rows // 2
    first = run_halving_on_oom(run, input_ids[:half], attention_mask[:half], budget,
                               oom_errors, release)
    second = run_halving_on_oom(run, input_ids[half:], attention_mask[half:], budget,
                                oom_errors, release)
    return np.concatenate([first, second])
