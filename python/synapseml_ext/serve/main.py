"""``synapseml-ext serve``: its options, its checks before start-up, and its run."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator

from synapseml_ext.engine.errors import UserInputError, missing_package
from synapseml_ext.engine.spec import PRECISIONS, RUNTIMES
from synapseml_ext.serve.config import ServeConfig


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="serve embeddings over HTTP (TEI's /embed and OpenAI's /v1/embeddings)")
    p.add_argument("--model", default="",
                   help="hub id or local model directory (default: the bundled all-MiniLM-L6-v2)")
    # "remote" calls an embedding server: not something to serve from
    p.add_argument("--runtime", default="auto", choices=[r for r in RUNTIMES if r != "remote"])
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8080, help="default 8080; 0 picks a free one")
    p.add_argument("--api-key-env", default="", metavar="NAME",
                   help="require 'Authorization: Bearer <key>' on every route but /health, the "
                        "key read from the environment variable NAME")
    p.add_argument("--max-client-batch-size", type=_positive, default=32,
                   help="inputs per request (default 32, as TEI; more is HTTP 413)")
    p.add_argument("--max-concurrent-requests", type=_positive, default=512,
                   help="requests queued or computing (default 512); more get HTTP 429")
    p.add_argument("--max-batch-texts", type=_positive, default=256,
                   help="texts per engine call (default 256)")
    p.add_argument("--max-wait-ms", type=_non_negative, default=5.0,
                   help="how long an idle engine waits for a batch to fill (default 5)")
    p.add_argument("--no-auto-truncate", dest="auto_truncate", action="store_false",
                   help="refuse inputs over the model's max_seq_length (HTTP 413) unless a "
                        "request says \"truncate\": true (default: truncate them)")
    p.add_argument("--num-threads", type=int, default=0, help="CPU threads (default: all)")
    p.add_argument("--cache-dir", default="", help="ONNX/engine cache directory")
    p.add_argument("--debug", action="store_true", help="log the server's details and tracebacks")
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Check, bind, load and serve until SIGINT/SIGTERM (then drain and exit 0)."""
    config = checked_config(args)
    try:
        import uvicorn

        from synapseml_ext.serve.app import Service, create_app
    except ImportError as e:
        raise missing_package(e.name or "uvicorn", "serve", "synapseml-ext serve",
                              where="this machine") from None
    sock = bind_socket(config.host, config.port)
    url = server_url(config.host, sock.getsockname()[1])
    outcome = {"code": 0}
    if args.debug:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("synapseml_ext").setLevel(logging.DEBUG)

    def on_load(service: Service) -> None:
        if service.error is not None:
            print(f"synapseml-ext: error: the model failed to load: {service.error}",
                  file=sys.stderr, flush=True)
            outcome["code"] = 1
            server.should_exit = True
            return
        enc = service.encoder
        print(f"synapseml-ext: serving {config.model} (runtime={enc.runtime}, "
              f"precision={enc.precision}, dim={enc.dimension}) on {url}", flush=True)

    server = uvicorn.Server(uvicorn.Config(create_app(config, on_load), lifespan="on",
                                           log_level="debug" if args.debug else "info",
                                           timeout_graceful_shutdown=60))
    with _graceful_signals(server):
        server.run(sockets=[sock])
    return outcome["code"]


def checked_config(args: argparse.Namespace) -> ServeConfig:
    """The server's config; raises one-line errors (exit 2) before anything starts."""
    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.cli_io import check_cache_dir
    from synapseml_ext.engine.spec import EncoderSpec
    from synapseml_ext.hf.checks import check_model, check_runtime

    check_cache_dir(args.cache_dir)
    try:
        model = args.model or bundled_model_dir()
    except SystemExit as e:  # the bundled model's package is not installed
        raise UserInputError(str(e)) from None
    EncoderSpec(model=model, runtime=args.runtime, precision=args.precision,
                num_threads=args.num_threads, cache_dir=args.cache_dir)
    check_model(model, local=True)
    check_runtime(args.runtime)
    key = ""
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "").strip()
        if not key:
            raise UserInputError(f"--api-key-env {args.api_key_env}: that environment variable "
                                 "is unset or empty; put the API key in it")
    return ServeConfig(
        model=model, runtime=args.runtime, precision=args.precision,
        num_threads=args.num_threads, cache_dir=args.cache_dir, host=args.host, port=args.port,
        api_key=key, max_client_batch_size=args.max_client_batch_size,
        max_concurrent_requests=args.max_concurrent_requests,
        max_batch_texts=args.max_batch_texts, max_wait_ms=args.max_wait_ms,
        auto_truncate=args.auto_truncate)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free one), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserInputError(f"--host {host!r} is not a usable address ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    if os.name != "nt":  # as uvicorn: a restart need not wait for TIME_WAIT to pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)  # connections wait in the backlog until uvicorn serves them
    except OSError as e:
        sock.close()
        hint = ("another process is listening there: stop it or pass another --port"
                if e.errno == errno.EADDRINUSE else "pass another --host or --port")
        raise UserInputError(f"cannot listen on {host}:{port} ({e.strerror}); {hint}") from None
    return sock


def server_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def _graceful_signals(server) -> Iterator[None]:
    """SIGINT and SIGTERM stop the server gracefully and the command exits 0: uvicorn
    re-raises the signal after its shutdown, and these handlers absorb it."""

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _number(kind: type, low: float, high: float = float("inf")):
    """An argparse type: ``kind`` in ``[low, high]``."""

    def parse(value: str):
        number = kind(value)
        if not low <= number <= high:
            bounds = f">= {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
        return number

    return parse


_port = _number(int, 0, 65535)
_positive = _number(int, 1)
_non_negative = _number(float, 0)
