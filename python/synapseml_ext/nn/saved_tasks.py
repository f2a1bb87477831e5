"""``save()`` and ``load()`` on the executors: index rows cut into the pieces a saved model
holds, and pieces joined back into index rows, each checked against the digest recorded at
fit and kept in the local store as the build's are."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import numpy as np

from synapseml_ext.nn import packing
from synapseml_ext.nn.integrity import DIGEST, check_partition, damaged_partition
from synapseml_ext.nn.tables import (
    IDS,
    INDEX,
    INFO,
    LABELS,
    PART,
    binary_array,
    binary_value,
    labelled,
    spark_id_type,
)
from synapseml_ext.nn.task_config import JoinChunksTask
from synapseml_ext.nn.unpacked import keep_unpacked
from synapseml_ext.nn.vectors import ERROR_PREFIX

# A saved index table holds each partition's index bytes in pieces of at most
# SAVE_CHUNK_BYTES, numbered by CHUNK (ids and info on piece 0): parquet's writer buffers a
# whole value several times on the JVM heap, and two 770 MB rows ran a 6 GB heap out of memory.
CHUNK = "__chunk"
SAVE_CHUNK_BYTES = 64 << 20
PIECES = "pieces"  # key of piece 0's info: how many pieces the partition has


def saved_index_options() -> dict[str, str]:
    """Parquet options of the saved pieces: uncompressed (the index bytes are packed already, and
    parquet 1.13's snappy reader is very slow on large pages, PARQUET-2429), and a row group
    per piece: the writer checks its buffered size only every 100 rows by default, so it
    had buffered a whole partition's pieces, several times."""
    return {"compression": "none", "parquet.block.size": str(SAVE_CHUNK_BYTES),
            "parquet.page.size.row.check.min": "1", "parquet.page.size.row.check.max": "1"}

def saved_index_schema(id_kind: str, label_kind: str | None = None) -> str:
    """The index table as saved: pieces of each partition's index bytes, numbered by CHUNK,
    with the ids, info (and labels) on piece 0 only."""
    return (f"{PART} int, {CHUNK} int, {IDS} array<{spark_id_type(id_kind)}>, {INDEX} binary, "
            f"{INFO} string{labelled(LABELS, label_kind)}")

def make_save_chunks_fn(chunk_bytes: int) -> Callable:
    """Executor: index rows -> their pieces of at most ``chunk_bytes`` (views of the
    row's bytes, not copies). In Python because a Spark SQL expression reading the binary
    column copies the whole value on every access, once per piece."""

    def pieces(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        size = int(chunk_bytes)
        for batch in batches:
            for row in range(batch.num_rows):
                blob = binary_value(batch.column(INDEX), row)
                count = max(1, -(-blob.size // size))
                ends = np.minimum(np.arange(count + 1, dtype=np.int64) * size, blob.size)
                chunks = pa.Array.from_buffers(
                    pa.binary(), count, [None, pa.py_buffer(ends.astype(np.int32)), blob])
                first = batch.slice(row, 1)
                # The count travels in piece 0's info, so that the load can tell a missing
                # last piece from a shorter index.
                info = {**json.loads(first.column(INFO)[0].as_py()), PIECES: count}
                on_first = [c for c in (IDS, LABELS) if c in batch.schema.names]
                yield pa.RecordBatch.from_arrays(
                    [pa.array(np.full(count, batch.column(PART)[row].as_py(), np.int32)),
                     pa.array(np.arange(count, dtype=np.int32)),
                     _first_only(first, IDS, count),
                     chunks,
                     pa.array([json.dumps(info)] + [None] * (count - 1), pa.string()),
                     *[_first_only(first, c, count) for c in on_first[1:]]],
                    [PART, CHUNK, IDS, INDEX, INFO, *on_first[1:]])

    return pieces

def _first_only(first: Any, column: str, count: int) -> Any:
    """``first``'s value of ``column`` on piece 0, nulls on the other ``count - 1`` pieces."""
    import pyarrow as pa

    return pa.concat_arrays([first.column(column), pa.nulls(count - 1, first.column(column).type)])

def make_join_chunks_fn(cfg: JoinChunksTask) -> Callable:
    """Executor: a saved index table's pieces, sorted by partition and chunk number within
    the task -> one index row per partition (as the build returns it), each checked against
    the digest recorded at fit and kept in the local store as the build's are."""

    def join(batches: Iterator[Any]) -> Iterator[Any]:
        part, pieces, first = None, [], None
        for batch in batches:
            for row in range(batch.num_rows):
                this = batch.column(PART)[row].as_py()
                if this != part:
                    if part is not None:
                        yield _joined(cfg, part, pieces, first)
                    part, pieces, first = this, [], None
                chunk = batch.column(CHUNK)[row].as_py()
                if chunk != len(pieces):
                    raise _missing_piece(len(pieces), part, cfg)
                if chunk == 0:
                    first = batch.slice(row, 1)
                pieces.append(binary_value(batch.column(INDEX), row))
        if part is not None:
            yield _joined(cfg, part, pieces, first)

    return join

def _missing_piece(piece: int, part: int, cfg: JoinChunksTask) -> ValueError:
    return ValueError(f"{ERROR_PREFIX} the saved model at {cfg.path or '(unknown path)'} "
                      f"lacks piece {piece} of index partition {part}: files of its "
                      "data/indexes are missing; restore them from a copy, or fit and save "
                      "the model again")

def _one_buffer(pieces: list[Any]) -> Any:
    """The pieces as one buffer: a view where they lie end to end in memory (consecutive
    values of one Arrow batch, as a task mostly receives them: no copy), else joined."""
    import pyarrow as pa

    if all(a.address + a.size == b.address for a, b in pairwise(pieces)):
        return pa.foreign_buffer(pieces[0].address, sum(p.size for p in pieces), base=list(pieces))
    return pa.py_buffer(b"".join(pieces))


def _joined(cfg: JoinChunksTask, part: int, pieces: list[Any], first: Any) -> Any:
    import pyarrow as pa

    info = json.loads(first.column(INFO)[0].as_py())
    expected = info.pop(PIECES, len(pieces))
    if len(pieces) != expected:
        raise _missing_piece(len(pieces), part, cfg)
    blob = _one_buffer(pieces)
    labels = first.column(LABELS) if LABELS in first.schema.names else None
    row = pa.RecordBatch.from_arrays(
        [pa.array([part], pa.int32()), first.column(IDS), binary_array(blob),
         pa.array([json.dumps(info)], pa.string())] + ([labels] if labels is not None else []),
        [PART, IDS, INDEX, INFO] + ([LABELS] if labels is not None else []))
    pieces.clear()
    where = f"the saved model at {cfg.path or '(unknown path)'}"
    digests = cfg.digests

    def check(actual: str) -> None:  # the digest is of the raw bytes, packed or not
        check_partition(part, actual, info.get(DIGEST), where)
        check_partition(part, actual, (digests or {}).get(str(part), actual), where)

    try:
        keep_unpacked(cfg.store, part, row,
                      check if digests is not None or DIGEST in info else None)
    except packing.DamagedPackError as e:
        raise damaged_partition(part, where) from e
    return row  # packed as it was saved (a model saved before packing: raw)
