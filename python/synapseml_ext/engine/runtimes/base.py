"""What every runtime provides to the encoder: the :class:`Backend` protocol, and
:class:`RunsInTurn`, the defaults of a runtime that runs one batch at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from synapseml_ext.engine.batching import TokenBatch


class Backend(Protocol):
    """One loaded model on one runtime.

    ``run`` takes right-padded int64 ``(batch, seq)`` arrays and returns the pooled (and
    dense-projected) float32 ``(batch, dim)`` embeddings, not yet normalised. The encoder
    does tokenising, batching, normalising and ordering the same way for every runtime.
    """

    runtime: str
    precision: str
    device: str
    num_threads: int
    pad_multiple: int         # batch widths are rounded up to a multiple of this
    # A batch holding min_batch_tokens ends at the first row more than max_pad_waste shorter
    # than its longest (0: batches are cut by the token budget alone); see iter_batches.
    max_pad_waste: float
    min_batch_tokens: int
    overlaps_batches: bool    # run_pipelined launches the next batch while one computes

    @property
    def default_max_tokens(self) -> int:
        """The token budget of one batch (it grows as the GPU runtimes learn their memory)."""
        ...

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def run_pipelined(self, batches: Iterable[TokenBatch]
                      ) -> Iterator[tuple[TokenBatch, np.ndarray]]:
        """``(batch, embeddings)`` for each batch, in order."""
        ...


class RunsInTurn:
    """Defaults of a runtime that runs its batches one after another (the CPU runtimes)."""

    max_pad_waste = 0.0
    min_batch_tokens = 0
    overlaps_batches = False

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_pipelined(self, batches: Iterable[TokenBatch]
                      ) -> Iterator[tuple[TokenBatch, np.ndarray]]:
        for batch in batches:
            yield batch, self.run(batch.input_ids, batch.attention_mask)
