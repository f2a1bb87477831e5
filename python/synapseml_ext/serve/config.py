"""The options of one embedding server, shared by the CLI, the app and the test helper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine (torch, transformers) loads only in the server's worker thread
    from synapseml_ext.engine import SentenceEncoder


@dataclass(frozen=True)
class ServeConfig:
    """What ``synapseml-ext serve`` runs; the limits follow text-embeddings-inference (TEI).

    ``max_client_batch_size``: inputs per request (TEI's default, 32; more is HTTP 413).
    ``max_concurrent_requests``: requests admitted and not yet answered, queued or computing
    (TEI's name and default, 512); past it a request gets HTTP 429 with ``Retry-After``.
    ``max_batch_texts``: texts per engine call; one request larger than it runs alone.
    ``max_wait_ms``: how long an idle engine waits for more requests to join a small batch.
    ``auto_truncate``: over-long inputs are cut at the model's ``max_seq_length`` (as the Spark
    stage and sentence-transformers do); off, they get HTTP 413 unless a TEI request says
    ``"truncate": true``.
    ``encoder_factory``: builds the encoder (default :func:`load_encoder`); a hook for tests.
    It must return an encoder with ``normalize=False``: the server normalises per request.
    """

    model: str
    runtime: str = "auto"
    precision: str = "auto"
    num_threads: int = 0
    cache_dir: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str = field(default="", repr=False)  # never printed: repr() leaves it out
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    max_batch_texts: int = 256
    max_wait_ms: float = 5.0
    auto_truncate: bool = True
    encoder_factory: Callable[[ServeConfig], SentenceEncoder] | None = field(
        default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_client_batch_size", "max_concurrent_requests", "max_batch_texts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")


def load_encoder(config: ServeConfig) -> SentenceEncoder:
    """The server's encoder: raw (unnormalised) vectors, normalised per request."""
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    spec = EncoderSpec(model=config.model, runtime=config.runtime, precision=config.precision,
                       num_threads=config.num_threads, cache_dir=config.cache_dir,
                       normalize=False)
    return SentenceEncoder(spec)
