"""Progress in rows for ``synapseml-ext embed``, and the timing of its closing line.

Spark's accumulators reach the driver only when a task ends and its status tracker counts
tasks, so neither moves while a task embeds its rows. Here each task sends the driver a UDP
datagram after every Arrow batch it embedded, holding its stage, partition, attempt and the
rows and tokens it has done so far: absolute counts, so a lost or late datagram is mended by
the next one and a retried task starts again from zero. The driver adds up the latest count
of each partition against the row count it took before the job. The task-end accumulator is
the floor (where datagrams cannot reach the driver, the bar still moves at each task's end)
and gives the exact totals at the end. Datagrams carry a random token known only to the
job's tasks; anything else arriving at the port is ignored.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark.accumulators import Accumulator

from synapseml_ext.hf.embedder import EMBEDDING_TYPE, EmbedStatsAccumulator, embed_batches


@dataclass(frozen=True)
class Channel:
    """Where the tasks send their counts."""

    host: str
    port: int
    token: str


class ProgressStats(EmbedStatsAccumulator):
    """:class:`EmbedStatsAccumulator` plus ``ready``: the earliest time (epoch seconds) at
    which a worker had the model loaded, for the start-up / embedding split."""

    @staticmethod
    def create(sc) -> Accumulator:
        return sc.accumulator(ProgressStats.empty(), ProgressStats())

    @staticmethod
    def empty() -> dict:
        return {**EmbedStatsAccumulator.empty(), "ready": math.inf}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        super().addInPlace(value1, value2)
        value1["ready"] = min(value1.get("ready", math.inf), value2.get("ready", math.inf))
        return value1


# -- executor side ---------------------------------------------------------------------------

def make_progress_udf(spec: dict, stats: Accumulator, channel: Channel | None):
    """The embedder's pandas UDF (``string -> array<float>``, same spec, same output), that
    also reports each task's rows and tokens as it goes."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(EMBEDDING_TYPE)  # type: ignore[call-overload]
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        return embed_reporting(spec, batches, stats, channel)

    return embed


def embed_reporting(spec: dict, batches: Iterator[pd.Series], stats: Accumulator,
                    channel: Channel | None) -> Iterator[pd.Series]:
    """Executor side: :func:`embed_batches` over a task's Arrow batches, sending the driver
    the task's counts after each batch."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:  # empty partitions never load the model
        return
    sender = _Sender(channel)
    try:
        chunks = itertools.chain([first], batches)
        encoder = _load(spec, sender, stats)
        if encoder is not None and _pipelines_chunks(encoder):
            # One call, so that the runtime tokenizes the next batch while this one computes;
            # rows are counted as they come out, tokens at the task's end.
            done = 0
            for out in embed_batches(spec, chunks, stats):
                done += len(out)
                sender.send(r=done)
                yield out
            return
        # One call per Arrow batch (nothing is overlapped across batches on these runtimes):
        # each call's counts are the batch's rows and tokens.
        task = ProgressStats.empty()
        for chunk in chunks:
            counts = _Counts()
            out = list(embed_batches(spec, iter([chunk]), counts))  # one batch in, one out
            ProgressStats().addInPlace(task, counts.value)
            sender.send(r=task["rows"], t=task["tokens"])
            yield from out
        stats.add(task)
    finally:
        sender.close()


def _load(spec: dict, sender: _Sender, stats: Accumulator):
    """This worker's encoder (loaded on first use), after telling the driver it is ready;
    ``None`` when it cannot load (:func:`embed_batches` then raises the stage's error)."""
    from synapseml_ext.encoders import get_encoder
    from synapseml_ext.engine import EncoderSpec
    from synapseml_ext.engine.logs import configure_worker_logging

    configure_worker_logging()  # before the load, whose log line it would otherwise lose
    started = time.time()
    try:
        encoder = get_encoder(EncoderSpec(**spec))
    except Exception:  # reported by embed_batches, in the stage's words
        return None
    ready = time.time()
    sender.send(ev="ready", load=round(ready - started, 3),
                rt=getattr(encoder, "runtime", "-"), pr=getattr(encoder, "precision", "-"))
    stats.add({**ProgressStats.empty(), "ready": ready})
    return encoder


def _pipelines_chunks(encoder) -> bool:
    # The condition under which SentenceEncoder.encode_many overlaps one chunk with the next.
    backend = getattr(getattr(encoder, "model", None), "backend", None)  # none: remote
    return bool(getattr(backend, "overlaps_batches", False))


class _Counts:
    """Stands in for the accumulator in one :func:`embed_batches` call."""

    def __init__(self) -> None:
        self.value = EmbedStatsAccumulator.empty()

    def add(self, term: dict) -> None:
        EmbedStatsAccumulator().addInPlace(self.value, term)


class _Sender:
    """A task's datagrams to the driver; sending never fails or slows the task."""

    def __init__(self, channel: Channel | None) -> None:
        from pyspark import TaskContext

        self.channel = channel
        self.sock: socket.socket | None = None
        self.address: tuple | None = None
        context = TaskContext.get()
        self.where = ({"s": context.stageId(), "p": context.partitionId(),
                       "a": context.attemptNumber()} if context is not None
                      else {"s": 0, "p": 0, "a": 0})
        if channel is None:
            return
        try:
            family, kind, proto, _, self.address = socket.getaddrinfo(
                channel.host, channel.port, type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.setblocking(False)
        except OSError:
            self.sock = None

    def send(self, **fields) -> None:
        if self.sock is None or self.channel is None:
            return
        data = json.dumps({"k": self.channel.token, **self.where, **fields}).encode()
        try:
            self.sock.sendto(data, self.address)
        except OSError:
            pass  # progress is best effort; the accumulator still counts

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


# -- driver side -----------------------------------------------------------------------------

def resolve_mode(mode: str) -> str:
    """``auto``: a bar on a terminal, nothing otherwise."""
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "off"
    return mode


class RowProgress:
    """Receives the tasks' counts while the job runs and shows them as a bar (``bar``) or as
    a line every ``every`` seconds and a last one (``lines``); removed when the job fails."""

    def __init__(self, mode: str, total: int, stats: Accumulator, host: str | None,
                 model_name: str, every: float = 10.0) -> None:
        self.mode = mode
        self.total = total
        self.stats = stats
        self.model_name = model_name
        self.every = every
        self.channel: Channel | None = None
        self.sock: socket.socket | None = None
        self.parts: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.ready_at: float | None = None  # when the first worker said it was ready
        self.loaded: dict | None = None
        self.failed = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="synapseml-ext-progress")
        if host is not None:
            self._listen(host)

    def _listen(self, host: str) -> None:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, 0, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.bind(address)
        except OSError:  # no channel: the bar moves at task ends only
            return
        self.sock = sock
        self.channel = Channel(host, sock.getsockname()[1], secrets.token_hex(16))

    def __enter__(self) -> RowProgress:
        if self.mode != "off":
            print(f"loading model {self.model_name} ...", file=sys.stderr, flush=True)
        self.thread.start()
        return self

    def __exit__(self, kind, *exc) -> None:
        self.failed = kind is not None
        self.done.set()
        self.thread.join()
        if self.sock is not None:
            self.sock.close()

    # -- counts ----------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """Rows and tokens done: the tasks' latest counts, at least the finished tasks'."""
        rows = sum(r for _, r, _ in self.parts.values())
        tokens = sum(t for _, _, t in self.parts.values())
        value = self.stats.value
        return max(rows, value["rows"]), max(tokens, value["tokens"])

    def first_ready(self) -> float | None:
        """When the model was first ready on a worker (datagram or accumulator)."""
        ready = min(self.ready_at or math.inf, self.stats.value.get("ready", math.inf))
        return None if math.isinf(ready) else ready

    def _receive(self, timeout: float) -> None:
        if self.sock is None:
            self.done.wait(timeout)
            return
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError, OSError):
                return
            self._take(data)
            self.sock.settimeout(0)  # then whatever else is already there

    def _take(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message.get("k") != self.channel.token:  # type: ignore[union-attr]
                return
            key, attempt = (int(message["s"]), int(message["p"])), int(message["a"])
            if message.get("ev") == "ready":
                if self.ready_at is None:
                    self.ready_at = time.time()
                    self.loaded = message
                return
            rows, tokens = int(message["r"]), int(message.get("t", 0))
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        seen = self.parts.get(key)
        if seen is None or attempt > seen[0]:
            self.parts[key] = (attempt, rows, tokens)
        elif attempt == seen[0]:  # datagrams may arrive out of order: counts only grow
            self.parts[key] = (attempt, max(rows, seen[1]), max(tokens, seen[2]))

    # -- display ---------------------------------------------------------------------------

    def rates(self, rows: int, tokens: int, now: float) -> tuple[float, float]:
        ready = self.first_ready()
        seconds = now - ready if ready is not None else 0.0
        if seconds <= 0:
            return 0.0, 0.0
        return rows / seconds, tokens / seconds

    def _run(self) -> None:
        view = _Bar(self.total) if self.mode == "bar" else (
            _Lines(self.total, self.every) if self.mode == "lines" else None)
        announced = False
        while not self.done.is_set():
            self._receive(0.25)
            if view is None:
                continue
            if not announced and self.loaded is not None:
                announced = True
                view.note(f"model loaded in {self.loaded.get('load', 0):.1f}s "
                          f"[runtime={self.loaded.get('rt')}, precision={self.loaded.get('pr')}]")
            rows, tokens = self.counts()
            view.show(rows, *self.rates(rows, tokens, time.time()),
                      started=self.first_ready() is not None)
        self._receive(0)
        if view is not None:
            rows, tokens = self.counts()
            if not self.failed:
                view.show(rows, *self.rates(rows, tokens, time.time()), started=True,
                          final=True)
            view.close(keep=not self.failed)


class _Bar:
    """A tqdm bar in rows."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="loading model", file=sys.stderr, leave=True,
                        dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rows "
                                   "[{elapsed}<{remaining}{postfix}]")

    def note(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def show(self, rows: int, rows_s: float, tokens_s: float, started: bool,
             final: bool = False) -> None:
        if started:
            self.bar.set_description_str("embedding", refresh=False)
            self.bar.set_postfix_str(f"{rows_s:.1f} rows/s, {tokens_s:.0f} tokens/s",
                                     refresh=False)
        if rows != self.bar.n:
            self.bar.update(rows - self.bar.n)
        if final:
            self.bar.refresh()

    def close(self, keep: bool) -> None:
        self.bar.leave = keep
        self.bar.close()


class _Lines:
    """A line on stderr every ``every`` seconds while rows move, and a last one."""

    def __init__(self, total: int, every: float) -> None:
        self.total = total
        self.every = every
        self.last_shown = -1
        self.last_time = time.monotonic()

    def note(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def show(self, rows: int, rows_s: float, tokens_s: float, started: bool,
             final: bool = False) -> None:
        now = time.monotonic()
        # Between the model load and the last line: only moves, at most one an interval.
        if not final and (not started or rows in (0, self.last_shown, self.total)
                          or now - self.last_time < self.every):
            return
        self.last_shown, self.last_time = rows, now
        percent = 100.0 * rows / self.total if self.total else 100.0
        print(f"embedding: {rows}/{self.total} rows ({percent:.0f}%), {rows_s:.1f} rows/s, "
              f"{tokens_s:.0f} tokens/s", file=sys.stderr, flush=True)

    def close(self, keep: bool) -> None:
        return None


def closing_line(rows: int, nulls: int, tokens: int, output: str, started: float,
                 ready: float | None, finished: float, runtimes: set[str],
                 precisions: set[str]) -> str:
    """``embedded ... in T (start-up S, embedding E: rows/s, tokens/s) [runtime, precision]``;
    start-up runs from the command's start to the first worker with the model loaded."""
    ready = finished if ready is None else min(max(ready, started), finished)
    embedding = finished - ready
    rows_s = rows / embedding if embedding > 0 else 0.0
    tokens_s = tokens / embedding if embedding > 0 else 0.0
    return (f"embedded {rows} rows ({nulls} null) into {output} in {finished - started:.1f}s "
            f"(start-up {ready - started:.1f}s, embedding {embedding:.1f}s: {rows_s:.1f} rows/s, "
            f"{tokens_s:.0f} tokens/s) [runtime={'/'.join(sorted(runtimes)) or '-'}, "
            f"precision={'/'.join(sorted(precisions)) or '-'}]")
