"""Run the embedding server inside this process, for tests and benchmarks.

    from synapseml_ext.serve import ServeConfig, start_in_thread

    with start_in_thread(ServeConfig(model="/models/all-MiniLM-L6-v2", runtime="onnx")) as srv:
        httpx.post(f"{srv.url}/embed", json={"inputs": ["a text"]}).json()
"""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette

from synapseml_ext.serve.app import Service, create_app
from synapseml_ext.serve.config import ServeConfig
from synapseml_ext.serve.main import bind_socket, server_url


class ServerHandle:
    """A server started by :func:`start_in_thread`: ``url`` (no trailing slash), ``app``,
    ``service`` (its :class:`~synapseml_ext.serve.app.Service`), ``stop()``; also a context
    manager that stops it on exit."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str,
                 app: Starlette) -> None:
        self.server = server
        self.thread = thread
        self.url = url
        self.app = app

    @property
    def service(self) -> Service:
        return self.app.state.service

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop: in-flight requests are answered, the queue drained, the thread
        ended; raises ``TimeoutError`` if that takes more than ``timeout`` seconds."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the server at {self.url} did not stop within {timeout:g}s")

    def wait(self, ready: bool = True, timeout: float = 120.0) -> None:
        """Until ``/health`` is 200 (``ready=False``: until it answers at all); raises
        ``RuntimeError`` with the load's error if the model failed to load."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server at {self.url} stopped during start-up")
            try:
                response = httpx.get(f"{self.url}/health", timeout=5)
            except httpx.TransportError:
                response = None
            if response is not None:
                body = response.json()
                if body.get("status") == "failed":
                    raise RuntimeError(f"synapseml-ext: the model failed to load: "
                                       f"{body.get('error')}")
                if response.status_code == 200 or not ready:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self.url} was not ready in {timeout:g}s")
            time.sleep(0.05)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(config: ServeConfig, *, port: int = 0, wait_ready: bool = True,
                    timeout: float = 120.0) -> ServerHandle:
    """Serve ``config`` with uvicorn in a daemon thread, on ``config.host`` (default
    127.0.0.1) and ``port`` (default 0: a free port; ``config.port`` is not used).

    Returns once ``/health`` is 200 (the model loaded), or with ``wait_ready=False`` as soon
    as the server answers. Raises if the model fails to load (the server is stopped first).
    Stop it with ``handle.stop()`` or a ``with`` block. Logging is left as the process has it.
    """
    app = create_app(config)
    server, thread, url = run_app_in_thread(app, config.host, port)
    handle = ServerHandle(server, thread, url, app)
    try:
        handle.wait(ready=wait_ready, timeout=timeout)
    except BaseException:
        handle.stop()
        raise
    return handle


def run_app_in_thread(app, host: str = "127.0.0.1", port: int = 0, *, lifespan: str = "on",
                      graceful_s: float = 60) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Any ASGI ``app`` served by uvicorn in a started daemon thread on ``host:port``
    (``port=0``: a free one): the server (set ``should_exit`` to stop it), the thread and
    the base URL. Listening when this returns: the socket is bound here."""
    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, lifespan=lifespan, loop="asyncio",
                                           log_config=None, log_level="warning",
                                           access_log=False,
                                           timeout_graceful_shutdown=graceful_s))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"synapseml-ext-serve:{sock.getsockname()[1]}")
    thread.start()
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return server, thread, server_url(local, sock.getsockname()[1])
