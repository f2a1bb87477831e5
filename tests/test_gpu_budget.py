"""The GPU batch-size policy: grow while memory allows, halve and retry on out-of-memory.

The policy is pure (no torch); the retry helper is driven by a real ``torch.cuda.
OutOfMemoryError`` raised by a run function with a memory limit, the way the CUDA caching
allocator raises it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synapseml_ext.engine.batching import iter_batches, plan_batches
from synapseml_ext.engine.errors import EngineError
from synapseml_ext.engine.runtimes.cuda.budget import (
    STEP,
    TokenBudget,
    budget_for,
    run_halving_on_oom,
)

pytestmark = pytest.mark.gpu

GIB = 1 << 30


def test_grows_at_most_twice_per_step_while_memory_allows():
    budget = TokenBudget(tokens=8192)
    # 1 GiB weights, 100 KiB per token, 40 GiB usable: 2x (16k tokens, ~2.6 GiB) fits.
    assert budget.after_success(8192, GIB + 8192 * 100_000, GIB, 40 * GIB) == 16384
    assert budget.after_success(16384, GIB + 16384 * 100_000, GIB, 40 * GIB) == 32768
    assert budget.grown == 2


def test_stops_close_to_the_memory_limit():
    budget = TokenBudget(tokens=8192, headroom=0.85)
    # 1 MiB per token, 10 GiB usable: 0.85 * 10 GiB - 1 GiB fits ~7680 tokens < 8192.
    per_token = 1 << 20
    assert budget.after_success(8192, GIB + 8192 * per_token, GIB, 10 * GIB) == 8192
    # With 20 GiB usable the fit is between 1x and 2x: growth lands below 2x, on a step.
    grown = budget.after_success(8192, GIB + 8192 * per_token, GIB, 15 * GIB)
    assert 8192 < grown < 16384 and grown % STEP == 0
    predicted = GIB + grown * per_token
    assert predicted <= 0.85 * 15 * GIB < GIB + (grown + STEP) * per_token


def test_short_batches_do_not_move_the_budget():
    budget = TokenBudget(tokens=8192)
    assert budget.after_success(1000, GIB + 1000, GIB, 80 * GIB) == 8192


def test_oom_halves_and_never_grows_back_to_the_failed_size():
    budget = TokenBudget(tokens=32768)
    assert budget.after_oom(32768) == 16384
    assert budget.ceiling == 32768
    # Plenty of memory reported afterwards: growth stays below the size that failed.
    grown = budget.after_success(16384, GIB + 16384 * 1000, GIB, 80 * GIB)
    assert 16384 < grown < 32768
    budget.after_oom(grown)
    assert budget.ceiling == grown and budget.tokens <= grown // 2


def test_floor_and_registry():
    budget = TokenBudget(tokens=512, floor=256)
    assert budget.after_oom(512) == 256
    assert budget.after_oom(256) == 256
    key = ("cuda:0", "model-fingerprint", "fp16", 0)
    first = budget_for(key)
    first.tokens = 12345
    assert budget_for(key) is first and budget_for(key).tokens == 12345
    assert budget_for((*key[:-1], 1)) is not first


def _limited_run(limit_tokens: int, calls: list):
    """Pooled "embeddings" of a batch (row sums of ids), out of memory above a token limit."""
    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        calls.append(ids.shape)
        if ids.size > limit_tokens:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.stack([(ids * mask).sum(axis=1), mask.sum(axis=1)], axis=1).astype(np.float32)
    return run


def test_halving_retry_keeps_rows_in_order_and_learns_the_size():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, size=(64, 32))
    mask = np.ones_like(ids)
    mask[40:, 20:] = 0
    calls: list = []
    budget = TokenBudget(tokens=4096)
    released = []
    out = run_halving_on_oom(_limited_run(600, calls), ids, mask, budget,
                             (torch.cuda.OutOfMemoryError,), lambda: released.append(1))
    expected = _limited_run(10**9, [])(ids, mask)
    np.testing.assert_array_equal(out, expected)
    succeeded = [rows for rows, width in calls if rows * width <= 600]
    assert sum(succeeded) == 64  # every row ran exactly once, in pieces that fit
    assert budget.tokens == 512 and budget.ceiling == 1024 and budget.halved == 3
    assert len(released) == budget.halved


def test_a_single_row_that_never_fits_is_a_clear_error():
    ids = np.ones((1, 512), dtype=np.int64)
    with pytest.raises(EngineError, match=r"one text of 512 tokens does not fit in GPU memory "
                                          r"even alone \(OutOfMemoryError: CUDA out of memory"):
        run_halving_on_oom(_limited_run(100, []), ids, ids, TokenBudget(),
                           (torch.cuda.OutOfMemoryError,))


def test_other_errors_are_not_retried():
    def broken(ids, mask):
        raise RuntimeError("CUDA error: device-side assert triggered")
    with pytest.raises(RuntimeError, match="device-side assert"):
        run_halving_on_oom(broken, np.ones((4, 4)), np.ones((4, 4)), TokenBudget(),
                           (torch.cuda.OutOfMemoryError,))


def test_batches_follow_a_budget_that_changes_while_they_run():
    lengths = np.full(100, 10)
    budget = {"tokens": 100}
    sizes = []
    for rows in iter_batches(lengths, lambda: budget["tokens"], max_rows=1000):
        sizes.append(len(rows))
        budget["tokens"] *= 2  # as if the GPU runtime grew its budget after each batch
    assert sizes[:3] == [10, 20, 40] and sum(sizes) == 100
    fixed = plan_batches(lengths, 100, 1000)
    assert [len(b) for b in fixed] == [10] * 10
