"""Prometheus metrics of one app, in its own registry (several apps can share a process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROUTES = ("/embed", "/v1/embeddings", "/health", "/info", "/metrics")
_TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("synapseml_ext_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("synapseml_ext_request_duration_seconds",
                                 "HTTP request latency", ["route"], registry=r)
        self.inputs = Counter("synapseml_ext_inputs", "texts embedded", registry=r)
        self.tokens = Counter("synapseml_ext_tokens", "tokens embedded", registry=r)
        self.engine_calls = Counter("synapseml_ext_engine_calls", "engine calls", registry=r)
        self.texts_per_call = Histogram("synapseml_ext_engine_call_texts", "texts per engine call",
                                        buckets=_TEXT_BUCKETS, registry=r)
        self.queue_depth = Gauge("synapseml_ext_queue_depth",
                                 "requests waiting for the engine", registry=r)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def on_engine_call(self, texts: int) -> None:
        self.engine_calls.inc()
        self.texts_per_call.observe(texts)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts every HTTP request by route and status, and times it (401s included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
