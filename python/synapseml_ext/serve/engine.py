"""The model side of the server: tokenise, check lengths, encode, split per request.

Everything here runs on the batcher's one worker thread: neither the runtimes nor the
Hugging Face tokenizers may be called from two threads at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synapseml_ext.engine.encoder import SentenceEncoder, Tokenized


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` with a one-line message."""

    def __init__(self, status: int, message: str, error_type: str = "validation",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.headers = headers or {}


@dataclass
class EmbedItem:
    """One request's texts (prompt already prepended) as the batcher queues them."""

    texts: Sequence[str]
    truncate: bool


@dataclass
class Embedded:
    vectors: np.ndarray  # float32 (n, dim), unnormalised
    tokens: int  # tokens the model saw (after truncation), special tokens included


class Embedder:
    """Runs a batch of requests through one :class:`SentenceEncoder` built with
    ``normalize=False``."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder

    def run(self, items: list[EmbedItem]) -> list[Embedded | RequestError]:
        texts = [t for item in items for t in item.texts]
        tokens = self.encoder.tokenize(texts)
        verdicts: list[RequestError | None] = []
        keep: list[int] = []
        start = 0
        for item in items:
            stop = start + len(item.texts)
            error = None if item.truncate else self._too_long(item.texts,
                                                               tokens.lengths[start:stop])
            verdicts.append(error)
            if error is None:
                keep.extend(range(start, stop))
            start = stop
        if len(keep) < len(texts):  # encode only what was accepted
            tokens = Tokenized([tokens.ids[i] for i in keep])
        vectors = self.encoder.encode_tokens(tokens)
        results: list[Embedded | RequestError] = []
        row = 0
        for item, error in zip(items, verdicts, strict=True):
            if error is not None:
                results.append(error)
                continue
            n = len(item.texts)
            mine = vectors[row:row + n]
            if np.isfinite(mine).all():
                results.append(Embedded(mine, int(tokens.lengths[row:row + n].sum())))
            else:  # a model gone wrong: an error, never nulls in the JSON
                results.append(RequestError(500, "the model gave non-finite values (NaN or "
                                                 "infinity) for this request", "backend"))
            row += n
        return results

    def _too_long(self, texts: Sequence[str], lengths: np.ndarray) -> RequestError | None:
        limit = self.encoder.max_seq_length
        suspects = [int(i) for i in np.flatnonzero(lengths >= limit)]
        if not suspects:
            return None
        # Truncated at limit + 1: enough to tell "exactly at the limit" from "over it".
        model = self.encoder.model
        sample = [texts[i].lower() if model.files.do_lower_case else texts[i] for i in suspects]
        ids = model.tokenizer(sample, truncation=True, max_length=limit + 1, padding=False,
                              return_attention_mask=False)["input_ids"]
        for i, one in zip(suspects, ids, strict=True):
            if len(one) > limit:
                return RequestError(
                    413, f"input {i} is longer than the model's limit of {limit} tokens; "
                         "shorten it or send \"truncate\": true")
        return None
