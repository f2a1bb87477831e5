"""The ASGI app: TEI's ``/embed`` and OpenAI's ``/v1/embeddings`` on the project's engine.

Also ``/health`` (503 until the model is loaded), ``/info`` and ``/metrics`` (Prometheus).
The model loads on the engine's worker thread after start-up, so the server answers
``/health`` at once; every encode runs on that same thread, fed by :class:`Batcher`.
``/embed`` normalises unless the request says ``"normalize": false`` (as TEI);
``/v1/embeddings`` returns what the model's own config gives (as ``SentenceEncoder.encode``
and the Spark stage), re-normalised after a ``dimensions`` cut.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from synapseml_ext.engine.errors import user_message
from synapseml_ext.serve.batcher import Batcher, OverloadedError, ShuttingDownError
from synapseml_ext.serve.config import ServeConfig, load_encoder
from synapseml_ext.serve.engine import Embedded, Embedder, EmbedItem, RequestError
from synapseml_ext.serve.metrics import Metrics, MetricsMiddleware
from synapseml_ext.serve.schemas import parse_json, parse_openai, parse_tei

log = logging.getLogger("synapseml_ext.serve")


class JSONResponse(Response):
    """JSON written by orjson, NumPy arrays included: one 384-float vector takes ~7 us where
    ``json.dumps`` takes ~170 us (tools/bench/serve_overhead.py), and float32 values are written
    as their shortest round-trip form, which parses back to the very same float32."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class Service:
    """One app's state: the encoder once loaded, its batcher, and how the load went."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="synapseml-ext-engine")
        self.encoder = None
        self.batcher: Batcher[EmbedItem] | None = None
        self.error: str | None = None
        self.stopping = False
        metrics.watch_queue(lambda: self.batcher.queued if self.batcher else 0)

    async def load(self, on_load: Callable[[Service], None] | None) -> None:
        factory = self.config.encoder_factory or load_encoder
        try:  # on the engine's own thread: some runtimes keep per-thread state
            encoder = await asyncio.get_running_loop().run_in_executor(
                self.pool, factory, self.config)
        except Exception as e:
            self.error = user_message(e) or f"{type(e).__name__}: {e}".splitlines()[0]
            log.error("synapseml-ext: the model failed to load: %s", self.error, exc_info=e)
        else:
            cfg = self.config
            self.encoder = encoder
            self.batcher = Batcher(Embedder(encoder).run, max_texts=cfg.max_batch_texts,
                                   max_requests=cfg.max_concurrent_requests,
                                   max_wait_s=cfg.max_wait_ms / 1000, pool=self.pool,
                                   on_call=self.metrics.on_engine_call)
            self.batcher.start()
        if on_load is not None:
            on_load(self)

    async def close(self, loading: asyncio.Task) -> None:
        self.stopping = True
        if self.batcher is not None:
            await self.batcher.close()  # answers what is queued, then stops the thread
        else:
            loading.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> Batcher[EmbedItem]:
        if self.stopping:
            raise RequestError(503, "the server is shutting down", "unavailable")
        if self.error is not None:
            raise RequestError(503, f"the model failed to load: {self.error}", "unavailable")
        if self.batcher is None:
            raise RequestError(503, "the model is still loading", "unavailable",
                               {"Retry-After": "1"})
        return self.batcher

    def prepare(self, texts: list[str], prompt_name: str | None = None) -> list[str]:
        """``texts`` checked against the batch limit, with the named prompt in front."""
        self.ready()
        limit = self.config.max_client_batch_size
        if len(texts) > limit:
            raise RequestError(413, f"{len(texts)} inputs is more than max_client_batch_size "
                                    f"({limit}); split the request")
        if prompt_name is None:
            return texts
        files = self.encoder.model.files
        if prompt_name not in files.prompts:
            known = ", ".join(sorted(files.prompts)) or "none"
            raise RequestError(422, f"unknown prompt_name {prompt_name!r}; the model's "
                                    f"prompts: {known}")
        if not files.include_prompt:
            raise RequestError(422, "the model's pooling excludes prompt tokens "
                                    "(include_prompt=false); this server does not support "
                                    "prompt_name for it")
        prompt = files.prompts[prompt_name]
        return [prompt + t for t in texts]

    async def embed(self, texts: list[str], truncate: bool | None) -> Embedded:
        item = EmbedItem(texts, self.config.auto_truncate if truncate is None else truncate)
        try:
            result = await self.ready().submit(item)
        except OverloadedError as e:
            raise RequestError(429, str(e), "overloaded", {"Retry-After": "1"}) from None
        except ShuttingDownError as e:
            raise RequestError(503, str(e), "unavailable") from None
        except RequestError:
            raise
        except Exception as e:
            log.error("synapseml-ext: embedding failed", exc_info=e)
            message = user_message(e) or type(e).__name__
            raise RequestError(500, f"embedding failed: {message}", "backend") from None
        self.metrics.inputs.inc(len(texts))
        self.metrics.tokens.inc(result.tokens)
        return result

    def info(self) -> dict:
        self.ready()
        cfg, enc = self.config, self.encoder
        from synapseml_ext import __version__

        return {
            "model_id": cfg.model, "max_concurrent_requests": cfg.max_concurrent_requests,
            "max_input_length": enc.max_seq_length,
            "max_batch_tokens": cfg.max_batch_texts * enc.max_seq_length,
            "max_client_batch_size": cfg.max_client_batch_size,
            "auto_truncate": cfg.auto_truncate, "version": __version__,
            "dimension": enc.dimension, "runtime": enc.runtime, "precision": enc.precision,
            "normalize": enc.model.files.normalize, "max_batch_texts": cfg.max_batch_texts,
            "prompt_names": sorted(enc.model.files.prompts),
        }


def create_app(config: ServeConfig,
               on_load: Callable[[Service], None] | None = None) -> Starlette:
    """The server's app; ``on_load(service)`` runs once the load ends (``service.error`` is
    set when it failed). ``app.state.service`` is the :class:`Service`."""
    metrics = Metrics()
    service = Service(config, metrics)

    async def embed(request: Request) -> Response:
        body = parse_tei(parse_json(await request.body()))
        texts = service.prepare(body.texts, body.prompt_name)
        vectors = (await service.embed(texts, body.truncate)).vectors
        return JSONResponse(np.ascontiguousarray(_normalized(vectors) if body.normalize
                                                 else vectors))

    async def openai_embeddings(request: Request) -> Response:
        body = parse_openai(parse_json(await request.body()))
        texts = service.prepare(body.texts)
        dim = service.encoder.dimension
        if body.dimensions is not None and not 1 <= body.dimensions <= dim:
            raise RequestError(422, f'"dimensions" must be between 1 and {dim}, '
                                    f"got {body.dimensions}")
        result = await service.embed(texts, None)
        vectors = result.vectors
        if body.dimensions is not None:  # Matryoshka-style: keep the first N, re-normalise
            vectors = _normalized(vectors[:, :body.dimensions])
        elif service.encoder.model.files.normalize:
            vectors = _normalized(vectors)
        data = [{"object": "embedding", "index": i, "embedding": _encode_vector(v, body)}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": body.model or config.model,
                             "usage": {"prompt_tokens": result.tokens,
                                       "total_tokens": result.tokens}})

    async def health(request: Request) -> Response:
        if service.error is not None:
            return JSONResponse({"status": "failed", "error": service.error}, 503)
        if service.stopping or service.batcher is None:
            status = "stopping" if service.stopping else "loading"
            return JSONResponse({"status": status}, 503)
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> Response:
        return JSONResponse(service.info())

    async def prometheus(request: Request) -> Response:
        return metrics.response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.load(on_load))
        try:
            yield
        finally:
            await service.close(loading)

    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if config.api_key:
        middleware.append(Middleware(BearerAuth, key=config.api_key))
    app = Starlette(
        routes=[Route("/embed", embed, methods=["POST"]),
                Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
                Route("/health", health), Route("/info", info), Route("/metrics", prometheus)],
        middleware=middleware, lifespan=lifespan,
        exception_handlers={RequestError: _request_error, HTTPException: _http_error})
    app.state.service = service
    return app


def error_response(status: int, message: str, error_type: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status, headers=headers)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, str(exc), exc.error_type, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
    return error_response(exc.status_code, str(exc.detail), kind, exc.headers)


class BearerAuth:
    """Every route but ``/health`` needs ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and not self._allowed(scope):
            response = error_response(401, "missing or wrong API key: send the header "
                                           "'Authorization: Bearer <key>'", "unauthorized",
                                      {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest: the time taken does not tell how much of the key matched
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


def _normalized(vectors: np.ndarray) -> np.ndarray:
    # The engine's own formula, so the vectors match SentenceEncoder.encode.
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _encode_vector(vector: np.ndarray, body) -> np.ndarray | str:
    if body.encoding_format == "base64":  # OpenAI's: little-endian float32 bytes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vector)  # orjson writes it as a list
