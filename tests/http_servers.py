"""ASGI apps on 127.0.0.1 in a background thread, for tests over real loopback HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from synapseml_ext.serve.testing import run_app_in_thread


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app, *, lifespan: str = "off") -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL."""
    server, thread, url = run_app_in_thread(app, lifespan=lifespan, graceful_s=2)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
