"""What every runtime provides to the encoder."""

from __future__ import annotations

from typing import Protocol

import numpy as np


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
    pad_multiple: int
    default_max_tokens: int

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...
