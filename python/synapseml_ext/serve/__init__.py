"""``synapseml-ext serve``: an HTTP embedding server on the project's engine.

TEI's ``POST /embed`` and OpenAI's ``POST /v1/embeddings``, with dynamic batching on one
engine thread, ``/health``, ``/info`` and Prometheus ``/metrics``. Needs the ``serve`` extra
(starlette, uvicorn with httptools and uvloop, orjson, prometheus-client), imported only
when a server is built.
"""

from __future__ import annotations

from typing import Any

from synapseml_ext.serve.config import ServeConfig, load_encoder

__all__ = ["ServeConfig", "ServerHandle", "create_app", "load_encoder", "start_in_thread"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports this package to build its parser without the serve extra.
    if name == "create_app":
        from synapseml_ext.serve.app import create_app

        return create_app
    if name in ("start_in_thread", "ServerHandle"):
        from synapseml_ext.serve import testing

        return getattr(testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
