"""Token-budget batching: sort by length, cut by tokens and rows, pad each batch tightly.

A fixed row count (SynapseML hands the model 64 rows at a time) pads every row to the longest
of a random 64; sorting first and cutting by a token budget keeps padding small and the work
per call even, whatever the length mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    """One model call: ``rows`` index the caller's input; arrays are right-padded."""

    rows: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_batches(
    lengths: np.ndarray,
    max_tokens: int,
    max_rows: int,
    pad_multiple: int = 1,
    max_waste: float = 0.0,
    min_tokens: int = 0,
) -> list[np.ndarray]:
    """Split row indices, longest first, into batches of at most ``max_rows`` rows whose padded
    size (rows x longest row, rounded up to ``pad_multiple``) stays within ``max_tokens``.

    A row longer than the budget on its own still gets a batch of one. ``max_waste`` and
    ``min_tokens``: see :func:`iter_batches`.
    """
    return list(iter_batches(lengths, lambda: max_tokens, max_rows, pad_multiple, max_waste,
                             min_tokens))


def iter_batches(
    lengths: np.ndarray,
    max_tokens: Callable[[], int],
    max_rows: int,
    pad_multiple: int = 1,
    max_waste: float = 0.0,
    min_tokens: int = 0,
) -> Iterator[np.ndarray]:
    """:func:`plan_batches` cut lazily: ``max_tokens()`` is read as each batch is cut, so a
    budget that changes while batches run (the GPU runtimes learn theirs) applies at once.

    ``max_waste`` > 0 also ends a batch that already holds ``min_tokens`` padded tokens at
    the first row more than that share shorter than its longest row: with large budgets a
    batch otherwise spans a wide length range and computes mostly padding.
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    padded = -(-np.maximum(lengths[order], 1) // pad_multiple) * pad_multiple
    start = 0
    n = len(order)
    while start < n:
        longest = int(padded[start])
        rows = max(1, min(max_rows, max_tokens() // longest, n - start))
        if max_waste > 0 and rows * longest > min_tokens:
            keep = max(1, min_tokens // longest)
            # Rows are sorted longest first: the first too-short row past ``keep`` ends it.
            short = np.flatnonzero(padded[start + keep : start + rows] < longest * (1 - max_waste))
            if len(short):
                rows = keep + int(short[0])
        yield order[start : start + rows]
        start += rows


def pad_batches(
    token_ids: Sequence[Sequence[int]],
    lengths: np.ndarray,
    plan: Iterable[np.ndarray],
    pad_id: int,
    pad_multiple: int = 1,
) -> Iterator[TokenBatch]:
    """Materialise the planned batches as padded int64 arrays, one batch at a time."""
    for rows in plan:
        width = round_up(max(int(lengths[rows].max()), 1), pad_multiple)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            seq = token_ids[i]
            ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        yield TokenBatch(rows=rows, input_ids=ids, attention_mask=mask)
