"""``RemoteEncoder``: the encoder interface of the local runtimes, over an embedding server.

A task's texts are cut into requests of the server's batch size and sent with at most
``maxConcurrentRequests`` in flight; each request is retried on its own, so a failure never
loses or duplicates a row, and the vectors come back in input order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import httpx
import numpy as np

from synapseml_ext.engine.encoder import EncodeStats
from synapseml_ext.engine.errors import UserInputError
from synapseml_ext.engine.spec import EncoderSpec
from synapseml_ext.remote.api import API_SHAPES, safe_url
from synapseml_ext.remote.client import (
    RemoteEndpointError,
    RetryPolicy,
    TooManyInputsError,
    post_embeddings,
)

__all__ = ["RemoteEncoder", "check_endpoint", "get_remote_encoder"]

log = logging.getLogger("synapseml_ext.remote")

INFO_TIMEOUT_S = 10.0


class RemoteEncoder:
    """Embeds texts by calling the server at ``spec.endpoint`` (``spec.runtime == "remote"``).

    Owns one event loop and one pooled HTTP client, used from one thread at a time (a Spark
    Python worker runs one task at a time); :func:`get_remote_encoder` shares it across the
    tasks of a reused worker.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        self.spec = spec
        self.shape = API_SHAPES[spec.api_format]
        self.url = self.shape.url(spec.endpoint)
        self.policy = RetryPolicy(max_retries=spec.max_retries)
        if spec.prompt_name and spec.api_format != "tei":
            raise UserInputError(
                f"promptName={spec.prompt_name!r} needs apiFormat='tei' (TEI's prompt_name); "
                "OpenAI-style servers take no prompt names: pass the prompt text as prompt")
        self.stats = EncodeStats()
        self.runtime = "remote"
        self.precision = "server"
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._batch: int | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)``; row ``i`` is the server's embedding of ``texts[i]``."""
        started = time.perf_counter()
        texts = [self.spec.prompt + t for t in texts] if self.spec.prompt else list(texts)
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        vectors, tokens = self._loop.run_until_complete(self._encode(texts))
        if self.spec.truncate_dim:  # Matryoshka, as the local runtimes: cut, then normalise
            vectors = np.ascontiguousarray(vectors[:, :self.spec.truncate_dim])
        if self.spec.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.stats.add(EncodeStats(len(texts), tokens, tokens, time.perf_counter() - started))
        return vectors

    def encode_many(self, chunks: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        for texts in chunks:
            yield self.encode(texts)

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.aclose())
            self._client = None
        self._loop.close()

    async def _encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        client = self._http()
        size = await self._batch_size(client)
        limit = asyncio.Semaphore(self.spec.max_concurrent_requests)

        async def one(start: int) -> tuple[int, np.ndarray, int]:
            async with limit:
                vectors, tokens = await self._post(client, texts[start:start + size])
            return start, vectors, tokens

        tasks = [asyncio.ensure_future(one(s)) for s in range(0, len(texts), size)]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one request failed for good: the others are not needed
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        dims = {v.shape[1] for _, v, _ in done}
        if len(dims) != 1:
            raise RemoteEndpointError(
                f"embedding server {safe_url(self.url)} returned vectors of different sizes "
                f"{sorted(dims)} in one task; is the endpoint a load balancer over different "
                "models?")
        out = np.empty((len(texts), dims.pop()), dtype=np.float32)
        for start, vectors, _ in done:
            out[start:start + len(vectors)] = vectors
        return out, sum(t for _, _, t in done)

    async def _post(self, client: httpx.AsyncClient, texts: list[str]) -> tuple[np.ndarray, int]:
        body = self.shape.body(texts, self.spec.model, self.spec.normalize,
                               self.spec.prompt_name)
        try:
            return await post_embeddings(client, self.shape, self.url, body, len(texts),
                                         self.policy)
        except TooManyInputsError as e:
            if len(texts) == 1:
                raise RemoteEndpointError(
                    f"embedding server {safe_url(self.url)} refused one input as too large "
                    f"(HTTP 413: {e}); ask the server to truncate (TEI: --auto-truncate) or "
                    "shorten the texts") from e
            # The server takes fewer inputs at once than we sent: halve, and remember it.
            half = len(texts) // 2
            self._batch = min(self._batch or half, half)
            first, t1 = await self._post(client, texts[:half])
            second, t2 = await self._post(client, texts[half:])
            return np.concatenate([first, second]), t1 + t2

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"User-Agent": "synapseml-ext"}
            key = _api_key(self.spec.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
            connections = self.spec.max_concurrent_requests
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.spec.request_timeout),
                limits=httpx.Limits(max_connections=connections,
                                    max_keepalive_connections=connections))
        return self._client

    async def _batch_size(self, client: httpx.AsyncClient) -> int:
        """``batchSize``, capped by what the server says it takes (TEI's /info)."""
        if self._batch is None:
            server = await _server_batch_limit(client, self.shape, self.spec.endpoint)
            self._batch = max(1, min(self.spec.batch_size, server or self.shape.default_batch))
            log.info("embedding server %s: %d inputs per request, %d in flight",
                     safe_url(self.url), self._batch, self.spec.max_concurrent_requests)
        return self._batch


async def _server_batch_limit(client: httpx.AsyncClient, shape, endpoint: str) -> int | None:
    if not shape.info_route:
        return None
    try:
        response = await client.get(shape.info_url(endpoint), timeout=INFO_TIMEOUT_S)
        limit = response.json().get("max_client_batch_size") if response.is_success else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None  # no /info: the API's default, and 413 halves it if too many
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def _api_key(name: str) -> str:
    if not name:
        return ""
    key = os.environ.get(name, "")
    if not key:
        raise RemoteEndpointError(
            f"apiKeyEnv={name!r} but the environment variable {name} is not set on this "
            f"executor: set it on every node (e.g. spark.executorEnv.{name}, or the "
            "cluster's environment variables)")
    return key


_encoders: dict[tuple, RemoteEncoder] = {}
_lock = threading.Lock()


def get_remote_encoder(spec: EncoderSpec) -> RemoteEncoder:
    """This process's encoder for ``spec``: its pooled connections serve every later task."""
    key = tuple(sorted(spec.to_dict().items()))
    with _lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = _encoders[key] = RemoteEncoder(spec)
        encoder.stats = EncodeStats()  # per task, as the local runtimes' encoders
        return encoder


def check_endpoint(spec: EncoderSpec) -> None:
    """Driver side: the server answers at all (any HTTP status), so a wrong host or port is
    one line here rather than a retry storm in every task. Only where the driver's network
    is the executors' (local master)."""
    shape = API_SHAPES[spec.api_format]
    probe = shape.info_url(spec.endpoint) if shape.info_route else shape.url(spec.endpoint)
    try:
        httpx.get(probe, timeout=INFO_TIMEOUT_S)
    except httpx.HTTPError as e:
        raise RemoteEndpointError(
            f"cannot reach the embedding server at {safe_url(spec.endpoint)} "
            f"({type(e).__name__}: {str(e) or 'no answer'}); start it, or fix endpoint") from e
