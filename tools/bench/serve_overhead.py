"""What the server costs per request, with the model taken out, one run.

    .venv/bin/python tools/bench/serve_overhead.py [--seconds 10]

The server's own work (HTTP, JSON, routing, metrics, batching, tokenising) is what a fast
engine leaves: on a GPU the engine embeds thousands of texts a second, so this work, not the
model, bounds single-text requests. Here the app runs with an engine that returns a constant
vector per text, and ``wrk`` (one thread, 64 connections) posts the fine-food reviews (one per
request, then 32), for each server stack in one run:

- ``h11 + asyncio, json``: the stack before this benchmark (uvicorn's pure-Python HTTP parser,
  the standard event loop, vectors written by ``json.dumps``);
- ``h11 + asyncio, orjson``: vectors written by orjson;
- ``httptools + uvloop, orjson``: what ``pip install "synapseml-ext[serve]"`` now installs.

Prints CPU flags, the same-run matmul rate, requests/s, texts/s, p99 and the server's CPU milliseconds per request.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    save_results,
    seed_texts_from_csv,
)
from serve_load import (
    CpuMeter,
    ServerRun,
    default_model_dir,
    free_port,
    launch,
    stop,
    wait_healthy,
    wrk_cell,
    wrk_script,
)

STACKS = {  # name: (uvicorn http, uvicorn loop, JSON writer)
    "h11 + asyncio, json": ("h11", "asyncio", "json"),
    "h11 + asyncio, orjson": ("h11", "asyncio", "orjson"),
    "httptools + uvloop, orjson": ("httptools", "uvloop", "orjson"),
}

# The server process: the real app and tokenizer, an engine that returns constant vectors.
SERVER = """
import json, sys
import numpy as np
import uvicorn
from synapseml_ext.serve import app as app_module
from synapseml_ext.serve.config import ServeConfig, load_encoder

model, port, http, loop, writer = sys.argv[1:6]

def constant_engine(config):
    encoder = load_encoder(config)
    vector = np.full(encoder.dimension, 0.0123456, np.float32)
    encoder.encode_tokens = lambda tokens: np.tile(vector, (len(tokens.ids), 1))
    return encoder

if writer == "json":  # Starlette's JSONResponse settings, arrays as lists
    class StdlibJSON(app_module.JSONResponse):
        def render(self, content):
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                              default=lambda a: a.tolist()).encode()
    app_module.JSONResponse = StdlibJSON

app = app_module.create_app(ServeConfig(model=model, runtime="cpu", precision="fp32",
                                        encoder_factory=constant_engine))
uvicorn.run(app, host="127.0.0.1", port=int(port), http=http, loop=loop, log_level="warning",
            access_log=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()

    facts = cpu_facts()
    fp32 = matmul_gflops("float32")
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}\n"
          f"same-run torch matmul fp32 {fp32:.0f} GFLOP/s", flush=True)
    texts = seed_texts_from_csv(args.csv)
    folder = Path(tempfile.mkdtemp(prefix="serve_overhead_"))
    scripts = {batch: wrk_script(texts, batch, folder) for batch in (1, 32)}
    rows, data = [], {"cpu": facts, "matmul_gflops": {"fp32": fp32}, "args": vars(args) | {"csv": str(args.csv)}, "cells": []}
    for name, (http, loop, writer) in STACKS.items():
        port = free_port()
        run = ServerRun(name, [sys.executable, "-c", SERVER, default_model_dir(), str(port),
                               http, loop, writer], f"http://127.0.0.1:{port}")
        log_path = folder / f"{http}-{loop}-{writer}.log"
        proc = launch(run, log_path)
        try:
            wait_healthy(run, proc, log_path)
            meter = CpuMeter(proc.pid)
            wrk_cell(run, meter, scripts[1], args.clients, 1, 2)  # warm, not recorded
            for batch, script in scripts.items():
                time.sleep(1)
                cell = wrk_cell(run, meter, script, args.clients, batch, args.seconds)
                requests_per_s = cell.requests / cell.seconds
                cpu_ms = cell.server_cores * 1000 / requests_per_s
                rows.append([name, batch, round(requests_per_s), round(cell.texts_per_s),
                             round(cell.p99_ms), f"{cell.server_cores:.2f}", f"{cpu_ms:.2f}",
                             sum(cell.errors.values())])
                data["cells"].append({"stack": name, "batch": batch,
                                      "requests_per_s": requests_per_s,
                                      "server_cpu_ms_per_request": cpu_ms, **vars(cell)})
                print(markdown_table(HEADER, rows[-1:]).split("\n", 2)[2], flush=True)
        finally:
            stop(proc)
    text = (f"CPU: {facts['cpu']} ({facts['cores']} cores), {facts['flags']}; same-run torch "
            f"matmul fp32 {fp32:.0f} GFLOP/s; {args.clients} wrk "
            f"connections, {args.seconds:g} s per cell, constant-vector engine\n\n"
            f"{markdown_table(HEADER, rows)}\n")
    print("\n" + text)
    save_results("serve_overhead", text, data)


HEADER = ["server stack", "texts/request", "requests/s", "texts/s", "p99 ms", "server cores",
          "server CPU ms/request", "errors"]

if __name__ == "__main__":
    if shutil.which("wrk") is None:
        sys.exit("serve_overhead.py: wrk is missing; install it (Debian: apt-get install wrk)")
    main()
