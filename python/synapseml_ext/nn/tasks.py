"""What runs on the executors: build one index per item partition, cut queries into blocks,
search (block, index partition) pairs, with the executor's local copy of the partition
(:mod:`.local_store`) or with its bytes; cut index rows into the pieces ``save()`` writes,
and join them back at ``load()``. With labels (filtered search), index rows carry the
items' labels and blocks the queries' allowed labels (:mod:`.labels`), and a partition is
searched among the allowed items only (:mod:`.filtered`).

Each ``make_*`` factory runs on the driver and returns a function of plain values (nothing
of the stage is pickled); the returned functions run inside ``mapInArrow`` tasks and import
faiss there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from synapseml_ext.nn import labels as labels_mod
from synapseml_ext.nn.integrity import DIGEST, check_partition, partition_digest
from synapseml_ext.nn.vectors import (
    ERROR_PREFIX,
    VectorDataError,
    ids_to_numpy,
    vectors_to_numpy,
)

# Column names of the tables passed between stages (internal; users never see them).
ID, VEC = "__id", "__vec"
QIDS, QVECS = "__qids", "__qvecs"
# Filtered search only (the Scala mirror's tables never have them): an item's label and a
# query's allowed labels on the way in; a partition's labels in label order, and a block's
# allowed labels per query.
LABEL, COND = "__label", "__cond"
LABELS, QCONDS = "__labels", "__qconds"
PART, IDS, INDEX, INFO = "__part", "__ids", "__index", "__info"
FOUND_QID, INDICES, DISTANCES = "__qid", "indices", "distances"
# Query blocks a search task could not search (no local copy of its index partition).
MISS_PART = "__miss_part"
# A saved index table holds each partition's index bytes in pieces of at most
# SAVE_CHUNK_BYTES, numbered by CHUNK (ids and info on piece 0): parquet's writer buffers a
# whole value several times on the JVM heap, and two 770 MB rows ran a 6 GB heap out of memory.
CHUNK = "__chunk"
SAVE_CHUNK_BYTES = 64 << 20
PIECES = "pieces"  # key of piece 0's info: how many pieces the partition has

LONG_MAX = np.iinfo(np.int64).max


def spark_id_type(id_kind: str) -> str:
    return "bigint" if id_kind == "long" else "string"


def arrow_id_type(id_kind: str) -> Any:
    """The pyarrow type of ids of ``id_kind`` (long or string)."""
    import pyarrow as pa

    return pa.int64() if id_kind == "long" else pa.string()


def _labelled(column: str, label_kind: str | None, depth: int = 1) -> str:
    """``, <column> array<...<label type>>`` for filtered search, else nothing."""
    if label_kind is None:
        return ""
    return f", {column} {'array<' * depth}{spark_id_type(label_kind)}{'>' * depth}"


def index_schema(id_kind: str, label_kind: str | None = None) -> str:
    """One row per item partition: its ids in label order, the serialised index, and what
    was built (JSON :class:`~synapseml_ext.nn.engine.BuildInfo` plus the first id); with
    labels, the items' labels in label order too."""
    return (f"{PART} int, {IDS} array<{spark_id_type(id_kind)}>, {INDEX} binary, "
            f"{INFO} string{_labelled(LABELS, label_kind)}")


def block_schema(id_kind: str, label_kind: str | None = None) -> str:
    return (f"{QIDS} array<{spark_id_type(id_kind)}>, {QVECS} binary"
            f"{_labelled(QCONDS, label_kind, 2)}")


def found_schema(query_kind: str, item_kind: str) -> str:
    return (f"{FOUND_QID} {spark_id_type(query_kind)}, {INDICES} array<{spark_id_type(item_kind)}>, "
            f"{DISTANCES} array<float>")


def local_found_schema(query_kind: str, item_kind: str, label_kind: str | None = None) -> str:
    """What a search from local index copies returns: found rows (the miss columns null)
    and miss rows (the query blocks of a partition this executor holds no copy of; the
    found columns null)."""
    return (f"{found_schema(query_kind, item_kind)}, {MISS_PART} int, "
            f"{QIDS} array<{spark_id_type(query_kind)}>, {QVECS} binary"
            f"{_labelled(QCONDS, label_kind, 2)}")


def _table(batches: Iterator[Any]):
    import pyarrow as pa

    batches = list(batches)
    if not batches or sum(b.num_rows for b in batches) == 0:
        return None
    return pa.Table.from_batches(batches)


def _threads() -> None:
    from synapseml_ext.engine.hardware import task_cpu_share
    from synapseml_ext.nn.engine import set_threads

    set_threads(task_cpu_share())


def make_build_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: the whole item partition -> one index row (none for an empty partition).

    ``cfg``: id_kind, column, algorithm, metric, params (normalised algoParams), k,
    partitions; token and store_limit (the local index store, :mod:`.local_store`).
    """

    def build(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        from synapseml_ext.engine.encoder import record_event
        from synapseml_ext.engine.logs import configure_worker_logging
        from synapseml_ext.nn import engine

        table = _table(batches)
        if table is None:
            return
        configure_worker_logging()
        _threads()
        ids = table.column(ID)
        ids_np = ids_to_numpy(ids, cfg["id_kind"])
        _check_unique(ids_np)
        vectors = vectors_to_numpy(ids, table.column(VEC), "item", cfg["column"])
        labels = (labels_mod.item_labels(table.column(LABEL), ids, cfg["label_kind"],
                                         cfg["label_col"]) if cfg.get("label_kind") else None)
        context = TaskContext.get()
        part = context.partitionId() if context is not None else 0
        built = engine.build_index(vectors, cfg["algorithm"], cfg["metric"], cfg["params"],
                                   engine.calibration_k(cfg["k"], cfg["partitions"]), seed=part)
        in_label_order = ids_np if built.order is None else ids_np[built.order]
        blob = engine.serialize(built)
        id_type = arrow_id_type(cfg["id_kind"])
        ids_row = pa.array([in_label_order.tolist()], pa.list_(id_type))
        labels_row = None if labels is None else labels_mod.in_label_order(labels, built.order)
        info = {**built.info.to_dict(), "first_id": _plain(ids_np[0]),
                DIGEST: partition_digest(blob, ids_row[0].values,
                                         None if labels_row is None else labels_row[0].values)}
        record_event("nn_build", partition=part, n=built.info.n, kind=built.info.kind,
                     search=built.info.search, recall=built.info.calibration_recall,
                     seconds=built.info.seconds)
        engine.log.info("partition %d: built %s index over %d items in %.2fs (%s, calibration "
                        "recall %s)", part, built.info.kind, built.info.n, built.info.seconds,
                        built.info.search or built.info.params, built.info.calibration_recall)
        columns = [pa.array([part], pa.int32()), ids_row, pa.array([blob.tobytes()], pa.binary()),
                   pa.array([json.dumps(info)], pa.string())]
        labelled = labels_row is not None
        row = pa.RecordBatch.from_arrays(columns + ([labels_row] if labelled else []),
                                         [PART, IDS, INDEX, INFO] + ([LABELS] if labelled else []))
        _keep_locally(cfg, part, row)
        yield row

    return build


def _check_unique(ids: np.ndarray) -> None:
    """Items are hash-partitioned by id, so every copy of a duplicated id is in this task."""
    if ids.dtype == object:
        uniques, counts = np.unique(ids.astype(str), return_counts=True)
    else:
        uniques, counts = np.unique(ids, return_counts=True)
    if len(uniques) != len(ids):
        dup = uniques[np.flatnonzero(counts > 1)[0]]
        shown = repr(str(dup)) if ids.dtype == object else int(dup)
        raise VectorDataError(f"item id {shown} occurs {int(counts[counts > 1][0])} times; "
                              "idCol must identify each item uniquely")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# A query block row holds at most this many bytes of vectors (Arrow and Spark rows are
# limited to 2 GB, and a block is one value); the search task joins blocks back together up
# to SEARCH_BYTES, since the list-major scan is more efficient on large blocks.
BLOCK_BYTES = 32 << 20
SEARCH_BYTES = 64 << 20


def saved_index_options() -> dict[str, str]:
    """Parquet options of the saved pieces: uncompressed (faiss' floats do not compress, and
    parquet 1.13's snappy reader is very slow on large pages, PARQUET-2429), and a row group
    per piece: the writer checks its buffered size only every 100 rows by default, so it
    had buffered a whole partition's pieces, several times."""
    return {"compression": "none", "parquet.block.size": str(SAVE_CHUNK_BYTES),
            "parquet.page.size.row.check.min": "1", "parquet.page.size.row.check.max": "1"}


def saved_index_schema(id_kind: str, label_kind: str | None = None) -> str:
    """The index table as saved: pieces of each partition's index bytes, numbered by CHUNK,
    with the ids, info (and labels) on piece 0 only."""
    return (f"{PART} int, {CHUNK} int, {IDS} array<{spark_id_type(id_kind)}>, {INDEX} binary, "
            f"{INFO} string{_labelled(LABELS, label_kind)}")


def make_save_chunks_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: index rows -> their pieces of at most ``cfg["chunk_bytes"]`` (views of the
    row's bytes, not copies). In Python because a Spark SQL expression reading the binary
    column copies the whole value on every access, once per piece."""

    def pieces(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        size = int(cfg["chunk_bytes"])
        for batch in batches:
            for row in range(batch.num_rows):
                blob = batch.column(INDEX)[row].as_buffer()
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


def make_join_chunks_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: a saved index table's pieces, sorted by partition and chunk number within
    the task -> one index row per partition (as the build returns it), each checked against
    the digest recorded at fit and kept in the local store as the build's are. ``cfg``:
    token, store_limit, digests (``{part: sha256}``; None for models saved before digests),
    path (named in errors)."""

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
                pieces.append(batch.column(INDEX)[row].as_buffer())
        if part is not None:
            yield _joined(cfg, part, pieces, first)

    return join


def _missing_piece(piece: int, part: int, cfg: dict[str, Any]) -> ValueError:
    return ValueError(f"{ERROR_PREFIX} the saved model at {cfg.get('path') or '(unknown path)'} "
                      f"lacks piece {piece} of index partition {part}: files of its "
                      "data/indexes are missing; restore them from a copy, or fit and save "
                      "the model again")


def _joined(cfg: dict[str, Any], part: int, pieces: list[Any], first: Any) -> Any:
    import pyarrow as pa

    info = json.loads(first.column(INFO)[0].as_py())
    expected = info.pop(PIECES, len(pieces))
    if len(pieces) != expected:
        raise _missing_piece(len(pieces), part, cfg)
    # One copy of the index bytes (the join), wrapped as the binary value without another.
    blob = pa.py_buffer(b"".join(pieces))
    digests = cfg.get("digests")
    labels = first.column(LABELS) if LABELS in first.schema.names else None
    if digests is not None or DIGEST in info:
        actual = partition_digest(blob, first.column(IDS)[0].values,
                                  None if labels is None else labels[0].values)
        where = f"the saved model at {cfg.get('path') or '(unknown path)'}"
        check_partition(part, actual, info.get(DIGEST), where)
        check_partition(part, actual, (digests or {}).get(str(part), actual), where)
    offsets = pa.py_buffer(np.array([0, blob.size], dtype=np.int32))
    row = pa.RecordBatch.from_arrays(
        [pa.array([part], pa.int32()), first.column(IDS),
         pa.Array.from_buffers(pa.binary(), 1, [None, offsets, blob]),
         pa.array([json.dumps(info)], pa.string())] + ([labels] if labels is not None else []),
        [PART, IDS, INDEX, INFO] + ([LABELS] if labels is not None else []))
    pieces.clear()
    _keep_locally(cfg, part, row)
    return row


def make_block_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: one query partition -> block rows (query ids + float32 matrix bytes, at most
    BLOCK_BYTES of vectors each), validated against the items' dimension.
    ``cfg``: id_kind, column, dim (and block_bytes, for tests)."""

    def block(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        table = _table(batches)
        if table is None:
            return
        ids = table.column(ID)
        vectors = vectors_to_numpy(ids, table.column(VEC), "query", cfg["column"], cfg["dim"])
        vectors = np.ascontiguousarray(vectors, np.float32)
        id_type = arrow_id_type(cfg["id_kind"])
        flat_ids = pa.concat_arrays([c.cast(id_type) for c in ids.chunks])
        conds = (labels_mod.query_conditions(table.column(COND), flat_ids, cfg["label_kind"],
                                             cfg["cond_col"]) if cfg.get("label_kind") else None)
        rows = max(1, cfg.get("block_bytes", BLOCK_BYTES) // max(1, 4 * cfg["dim"]))
        for lo in range(0, len(flat_ids), rows):
            part_ids = flat_ids.slice(lo, rows)
            columns = [pa.ListArray.from_arrays(pa.array([0, len(part_ids)], pa.int32()), part_ids),
                       pa.array([vectors[lo: lo + rows].tobytes()], pa.binary())]
            if conds is not None:
                part_conds = conds.slice(lo, rows)
                columns.append(pa.ListArray.from_arrays(pa.array([0, len(part_conds)], pa.int32()),
                                                        part_conds))
            yield pa.RecordBatch.from_arrays(columns, [QIDS, QVECS, QCONDS][: len(columns)])

    return block


def make_search_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: (index partition, query block) rows -> one row per query with the
    partition's top-k (padded with the missing-neighbour id and worst distance).

    A task's rows share one index partition, whose bytes come on its first row at least
    (the plan may null them on the others, so that the index crosses from the JVM once per
    task); the blocks are searched together, up to SEARCH_BYTES of queries at a time. A
    partition received is also kept in the executor's local store for later searches.
    ``cfg``: item_kind, query_kind, metric, k, dim, search (nprobe / ef_search overrides),
    token and store_limit (and search_bytes, for tests).
    """
    return _searcher(cfg, local=False)


def make_local_search_fn(cfg: dict[str, Any]) -> Callable:
    """Executor: (index partition number, query block) rows -> found rows as
    :func:`make_search_fn` returns, searched with this executor's local copy of the
    partition; where it has none, the blocks come back as miss rows (at most MISS_BYTES of
    vectors each), which the plan joins with their partition's bytes and searches again
    with :func:`make_search_fn`.
    ``cfg``: as :func:`make_search_fn`."""
    return _searcher(cfg, local=True)


# A miss row holds at most this many bytes of query vectors (each carries its partition's
# index bytes to the second search, so fewer, larger rows move less).
MISS_BYTES = 256 << 20


def _searcher(cfg: dict[str, Any], local: bool) -> Callable:
    def search(batches: Iterator[Any]) -> Iterator[Any]:
        _threads()
        loaded = _LoadedIndex(cfg)
        # (query ids, query vectors, allowed labels or None) per block
        pending: list[tuple[Any, np.ndarray, Any]] = []
        for batch in batches:
            for row in range(batch.num_rows):
                part = batch.column(PART)[row].as_py()
                if part != loaded.part:
                    yield from _flush(loaded, pending, cfg, local)
                    if local:
                        loaded.load_local(part)
                    else:
                        loaded.load(part, batch, row)
                qvecs = np.frombuffer(batch.column(QVECS)[row].as_buffer(), dtype=np.float32)
                conds = (batch.column(QCONDS)[row].values if QCONDS in batch.schema.names
                         else None)
                pending.append((batch.column(QIDS)[row].values, qvecs.reshape(-1, cfg["dim"]),
                                conds))
                # Misses go back as they came, in a few large rows.
                limit = (cfg.get("search_bytes", SEARCH_BYTES) if loaded.index is not None
                         else cfg.get("miss_bytes", MISS_BYTES))
                if sum(q.nbytes for _, q, _ in pending) >= limit:
                    yield from _flush(loaded, pending, cfg, local)
        yield from _flush(loaded, pending, cfg, local)

    return search


class _LoadedIndex:
    """The one index partition a search task holds: deserialized from the row carrying it,
    or from this executor's local copy."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.item_kind = cfg["item_kind"]
        self.part: int | None = None
        self.index: Any = None
        self.ids: np.ndarray | None = None
        self.labels: np.ndarray | None = None  # the items' labels in label order, if any

    def load(self, part: int, batch: Any, row: int) -> None:
        """From the bytes on ``batch[row]`` (kept locally as well)."""
        blob = batch.column(INDEX)[row]
        if not blob.is_valid:
            raise RuntimeError(f"index partition {part} reached its search task without its "
                               "index bytes (they travel on the task's first row)")
        stored = _index_row(batch, row)
        self._set(part, stored, "bytes")
        _keep_locally(self.cfg, part, stored)

    def load_local(self, part: int) -> None:
        """From this executor's local copy; ``index`` stays None where there is none."""
        from synapseml_ext.nn import local_store

        self.index = self.ids = self.labels = None
        self.part = part
        token = self.cfg.get("token")
        stored = local_store.read(token, part) if token else None
        if stored is not None:
            self._set(part, stored[0], "local", mapped=stored[1])

    def _set(self, part: int, stored: Any, source: str, mapped: Any = None) -> None:
        """``stored``: ids and info (and the index bytes, unless ``mapped`` names the
        index file to map)."""
        from synapseml_ext.engine.encoder import record_event
        from synapseml_ext.nn import engine

        started = time.perf_counter()
        self.index = self.ids = self.labels = None  # one index in memory at a time
        info = json.loads(stored.column(INFO)[0].as_py())
        info.pop("first_id", None)
        info.pop(DIGEST, None)
        build_info = engine.BuildInfo.from_dict(info)
        if mapped is not None:
            self.index = engine.read_mapped(str(mapped), build_info)
        else:
            blob = np.frombuffer(stored.column(INDEX)[0].as_buffer(), dtype=np.uint8)
            self.index = engine.deserialize(blob, build_info)
        ids = ids_to_numpy(stored.column(IDS)[0].values, self.item_kind)
        pad = LONG_MAX if self.item_kind == "long" else None
        self.ids = np.append(ids, np.array([pad], dtype=ids.dtype))  # label -1 -> the pad
        if LABELS in stored.schema.names and self.cfg.get("label_kind"):
            self.labels = ids_to_numpy(stored.column(LABELS)[0].values, self.cfg["label_kind"])
        self.part = part
        record_event("nn_load", partition=part, source=source,
                     seconds=time.perf_counter() - started)


def _index_row(batch: Any, row: int) -> Any:
    """Row ``row`` of ``batch`` as a one-row batch of the columns an index copy keeps."""
    import pyarrow as pa

    kept = [c for c in (IDS, INDEX, INFO, LABELS) if c in batch.schema.names]
    return pa.RecordBatch.from_arrays([batch.column(c).slice(row, 1) for c in kept], kept)


def _keep_locally(cfg: dict[str, Any], part: int, row: Any) -> None:
    from synapseml_ext.nn import local_store

    if cfg.get("token"):
        local_store.write(cfg["token"], part, row, int(cfg.get("store_limit", local_store.AUTO)))


def _flush(loaded: _LoadedIndex, pending: list[tuple[Any, np.ndarray, Any]],
           cfg: dict[str, Any], local: bool) -> Iterator[Any]:
    if not pending:
        return
    if loaded.index is not None:
        yield from _search_pending(loaded, pending, cfg, local)
    else:
        yield _misses(loaded.part, pending, cfg)


def _misses(part: int, pending: list[tuple[Any, np.ndarray, Any]], cfg: dict[str, Any]) -> Any:
    """The pending blocks as one miss row of partition ``part``; empties ``pending``."""
    import pyarrow as pa

    qids = pa.concat_arrays([ids for ids, _, _ in pending])
    vectors = b"".join(q.tobytes() for _, q, _ in pending)
    conds = _pending_conditions(pending)
    pending.clear()
    query_type = arrow_id_type(cfg["query_kind"])
    item_type = arrow_id_type(cfg["item_kind"])
    columns = [pa.nulls(1, query_type), pa.nulls(1, pa.list_(item_type)),
               pa.nulls(1, pa.list_(pa.float32())), pa.array([part], pa.int32()),
               pa.ListArray.from_arrays(pa.array([0, len(qids)], pa.int32()),
                                        qids.cast(query_type)),
               pa.array([vectors], pa.binary())]
    if conds is not None:
        columns.append(pa.ListArray.from_arrays(pa.array([0, len(conds)], pa.int32()), conds))
    return pa.RecordBatch.from_arrays(
        columns, [FOUND_QID, INDICES, DISTANCES, MISS_PART, QIDS, QVECS, QCONDS][: len(columns)])


def _pending_conditions(pending: list[tuple[Any, np.ndarray, Any]]) -> Any:
    """The pending blocks' allowed labels, one list per query (None without a filter)."""
    import pyarrow as pa

    if pending[0][2] is None:
        return None
    return pa.concat_arrays([conds for _, _, conds in pending])


def _search_pending(loaded: _LoadedIndex, pending: list[tuple[Any, np.ndarray, Any]],
                    cfg: dict[str, Any], local: bool = False) -> Iterator[Any]:
    """Search the pending blocks against the loaded index together, and empty ``pending``."""
    import pyarrow as pa

    from synapseml_ext.engine.encoder import record_event
    from synapseml_ext.nn import engine

    if not pending:
        return
    started = time.perf_counter()
    k, metric = cfg["k"], cfg["metric"]
    qids = pa.concat_arrays([ids for ids, _, _ in pending])
    queries = pending[0][1] if len(pending) == 1 else np.concatenate([q for _, q, _ in pending])
    conds = _pending_conditions(pending)
    pending.clear()
    queries = engine.prepare_vectors(queries, metric)
    if conds is None:
        distances, labels = loaded.index.search(queries, k, cfg["search"])
    else:
        distances, labels = _filtered(loaded, queries, conds, cfg)
    labels = np.where(labels < 0, len(loaded.ids) - 1, labels)
    record_event("nn_search", partition=loaded.part, queries=len(queries), task=_task_name(),
                 seconds=time.perf_counter() - started)
    item_type = arrow_id_type(cfg["item_kind"])
    offsets = pa.array(np.arange(0, len(queries) * k + 1, k, dtype=np.int32))
    columns = [qids,
               pa.ListArray.from_arrays(offsets, pa.array(loaded.ids[labels].ravel(), item_type)),
               pa.ListArray.from_arrays(offsets, pa.array(distances.ravel(), pa.float32()))]
    names = [FOUND_QID, INDICES, DISTANCES]
    if local:
        query_type = arrow_id_type(cfg["query_kind"])
        columns += [pa.nulls(len(qids), pa.int32()), pa.nulls(len(qids), pa.list_(query_type)),
                    pa.nulls(len(qids), pa.binary())]
        names += [MISS_PART, QIDS, QVECS]
        if conds is not None:
            columns.append(pa.nulls(len(qids), pa.list_(conds.type)))
            names.append(QCONDS)
    yield pa.RecordBatch.from_arrays(columns, names)


def _filtered(loaded: _LoadedIndex, queries: np.ndarray, conds: Any, cfg: dict[str, Any]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top-k among the partition's items whose label it allows."""
    from synapseml_ext.nn import filtered

    if loaded.labels is None:
        raise RuntimeError(f"index partition {loaded.part} has no labels: the model was "
                           "fitted without labelCol")
    return filtered.search(loaded.index, loaded.labels, queries,
                           labels_mod.allowed_sets(conds, cfg["label_kind"]), cfg["k"],
                           cfg["search"])


def _task_name() -> str | None:
    """``stage.partition`` of the Spark task running this (None outside Spark)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return None if context is None else f"{context.stageId()}.{context.partitionId()}"


def gpu_probe(_batches: Iterator[Any]) -> Iterator[Any]:
    """Executor: can spark-rapids-ml's ANN run here (spark_rapids_ml, cuVS, cupy and a GPU)?"""
    import pandas as pd

    try:
        import cupy
        import cuvs.neighbors  # noqa: F401
        import spark_rapids_ml.knn  # noqa: F401

        count = cupy.cuda.runtime.getDeviceCount()
        ok, reason = count > 0, f"{count} GPU(s) with spark-rapids-ml and cuVS"
    except Exception as e:  # ImportError, or CUDA errors where no driver/GPU is present
        ok, reason = False, f"{type(e).__name__}: {e}"
    yield pd.DataFrame({"ok": [ok], "reason": [reason[:500]]})
