"""encode_many: a task's chunks in order, with the next chunk tokenized ahead on the GPU runtimes."""

from __future__ import annotations

import threading

import numpy as np

from synapseml_ext.engine import EncoderSpec, SentenceEncoder


class Overlapping:
    """The CPU backend with a ``run_pipelined`` that runs the batches in order: it takes the
    encoder down its GPU path (the next chunk tokenized on a background thread) on a CPU."""

    overlaps_batches = True

    def __init__(self, backend) -> None:
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def run_pipelined(self, batches):
        for batch in batches:
            yield batch, self._backend.run(batch.input_ids, batch.attention_mask)


def test_encode_many_matches_encode_chunk_by_chunk(minilm_dir, cache_dir, review_texts):
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", cache_dir=cache_dir))
    chunks = [review_texts[:40], [], review_texts[40:41], review_texts[41:120]]
    expected = [encoder.encode(c) for c in chunks]

    sequential = list(encoder.encode_many(iter(chunks)))

    encoder.model.backend = Overlapping(encoder.model.backend)
    threads: list[str] = []
    tokenize = encoder.model.tokenize

    def recording(texts):
        threads.append(threading.current_thread().name)
        return tokenize(texts)

    encoder.model.tokenize = recording
    overlapped = list(encoder.encode_many(iter(chunks)))

    for got in (sequential, overlapped):
        assert [g.shape for g in got] == [(40, 384), (0, 384), (1, 384), (79, 384)]
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_allclose(have, want, atol=1e-6)
    # The empty chunk is never tokenized; the others were, off the calling thread.
    assert len(threads) == 3
    assert all(name.startswith("synapseml-ext-tokenize") for name in threads)
