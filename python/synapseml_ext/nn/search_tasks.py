"""The search's executor tasks: query partitions cut into blocks, and (index partition,
query block) rows searched with the executor's local copy of the partition
(:mod:`.local_store`) or with its bytes; blocks of a partition the executor has no copy of
come back as miss rows. With labels (filtered search), blocks carry the queries' allowed
labels (:mod:`.labels`) and a partition is searched among the allowed items only
(:mod:`.filtered`).

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
from synapseml_ext.nn import packing
from synapseml_ext.nn.integrity import DIGEST, damaged_partition
from synapseml_ext.nn.tables import (
    COND,
    DISTANCES,
    FOUND_QID,
    ID,
    IDS,
    INDEX,
    INDICES,
    INFO,
    LABELS,
    LONG_MAX,
    MISS_PART,
    PART,
    QCONDS,
    QIDS,
    QVECS,
    VEC,
    arrow_id_type,
    arrow_table,
    binary_value,
    task_name,
    use_task_threads,
)
from synapseml_ext.nn.task_config import BlockTask, SearchTask
from synapseml_ext.nn.unpacked import keep_unpacked
from synapseml_ext.nn.vectors import ids_to_numpy, vectors_to_numpy


def make_block_fn(cfg: BlockTask) -> Callable:
    """Executor: one query partition -> block rows (query ids + float32 matrix bytes, at most
    ``cfg.block_bytes`` of vectors each), validated against the items' dimension."""

    def block(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        table = arrow_table(batches)
        if table is None:
            return
        ids = table.column(ID)
        vectors = vectors_to_numpy(ids, table.column(VEC), "query", cfg.column, cfg.dim)
        vectors = np.ascontiguousarray(vectors, np.float32)
        id_type = arrow_id_type(cfg.id_kind)
        flat_ids = pa.concat_arrays([c.cast(id_type) for c in ids.chunks])
        conds = (labels_mod.query_conditions(table.column(COND), flat_ids, cfg.label_kind,
                                             cfg.cond_col) if cfg.label_kind else None)
        rows = max(1, cfg.block_bytes // max(1, 4 * cfg.dim))
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

def make_search_fn(cfg: SearchTask) -> Callable:
    """Executor: (index partition, query block) rows -> one row per query with the
    partition's top-k (padded with the missing-neighbour id and worst distance).

    A task's rows share one index partition, whose bytes come on its first row at least
    (the plan may null them on the others, so that the index crosses from the JVM once per
    task); the blocks are searched together, up to ``cfg.search_bytes`` of queries at a
    time. A partition received is also kept in the executor's local store for later
    searches.
    """
    return _searcher(cfg, local=False)

def make_local_search_fn(cfg: SearchTask) -> Callable:
    """Executor: (index partition number, query block) rows -> found rows as
    :func:`make_search_fn` returns, searched with this executor's local copy of the
    partition; where it has none, the blocks come back as miss rows (at most
    ``cfg.miss_bytes`` of vectors each), which the plan joins with their partition's bytes
    and searches again with :func:`make_search_fn`.
"""
    return _searcher(cfg, local=True)


def _searcher(cfg: SearchTask, local: bool) -> Callable:
    def search(batches: Iterator[Any]) -> Iterator[Any]:
        use_task_threads()
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
                qvecs = np.frombuffer(binary_value(batch.column(QVECS), row), dtype=np.float32)
                conds = (batch.column(QCONDS)[row].values if QCONDS in batch.schema.names
                         else None)
                pending.append((batch.column(QIDS)[row].values, qvecs.reshape(-1, cfg.dim),
                                conds))
                # Misses go back as they came, in a few large rows.
                limit = cfg.search_bytes if loaded.index is not None else cfg.miss_bytes
                if sum(q.nbytes for _, q, _ in pending) >= limit:
                    yield from _flush(loaded, pending, cfg, local)
        yield from _flush(loaded, pending, cfg, local)

    return search


class _LoadedIndex:
    """The one index partition a search task holds: deserialized from the row carrying it,
    or from this executor's local copy."""

    def __init__(self, cfg: SearchTask) -> None:
        self.cfg = cfg
        self.item_kind = cfg.item_kind
        self.part: int | None = None
        self.index: Any = None
        self.ids: np.ndarray | None = None
        self.labels: np.ndarray | None = None  # the items' labels in label order, if any

    def load(self, part: int, batch: Any, row: int) -> None:
        """From the bytes on ``batch[row]`` (kept locally as well)."""
        if batch.column(INDEX).is_null()[row].as_py():  # (a scalar of the bytes copies them)
            raise RuntimeError(f"index partition {part} reached its search task without its "
                               "index bytes (they travel on the task's first row)")
        index_row = _index_row(batch, row)
        try:
            # Unpacked into the local copy and mapped from there where the store takes it
            # (never the raw bytes and faiss' copy of them in memory at once), else here.
            if keep_unpacked(self.cfg.store, part, index_row):
                self.load_local(part, source="bytes")
                if self.index is not None:
                    return
            stored = packing.raw_row(index_row)
        except packing.DamagedPackError as e:
            raise damaged_partition(part, "the model's index table") from e
        self._set(part, stored, "bytes")

    def load_local(self, part: int, source: str = "local") -> None:
        """From this executor's local copy; ``index`` stays None where there is none
        (``source``: what the event records, "bytes" for a copy just made of them)."""
        from synapseml_ext.nn import local_store

        self.index = self.ids = self.labels = None
        self.part = part
        token = self.cfg.store.token
        stored = local_store.read(token, part) if token else None
        if stored is not None:
            self._set(part, stored[0], source, mapped=stored[1])

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
            blob = np.frombuffer(binary_value(stored.column(INDEX), 0), dtype=np.uint8)
            self.index = engine.deserialize(blob, build_info)
        ids = ids_to_numpy(stored.column(IDS)[0].values, self.item_kind)
        pad = LONG_MAX if self.item_kind == "long" else None
        self.ids = np.append(ids, np.array([pad], dtype=ids.dtype))  # label -1 -> the pad
        if LABELS in stored.schema.names and self.cfg.label_kind:
            self.labels = ids_to_numpy(stored.column(LABELS)[0].values, self.cfg.label_kind)
        self.part = part
        record_event("nn_load", partition=part, source=source,
                     seconds=time.perf_counter() - started)

def _index_row(batch: Any, row: int) -> Any:
    """Row ``row`` of ``batch`` as a one-row batch of the columns an index copy keeps."""
    import pyarrow as pa

    kept = [c for c in (IDS, INDEX, INFO, LABELS) if c in batch.schema.names]
    return pa.RecordBatch.from_arrays([batch.column(c).slice(row, 1) for c in kept], kept)

def _flush(loaded: _LoadedIndex, pending: list[tuple[Any, np.ndarray, Any]],
           cfg: SearchTask, local: bool) -> Iterator[Any]:
    if not pending:
        return
    if loaded.index is not None:
        yield from _search_pending(loaded, pending, cfg, local)
    else:
        yield _misses(loaded.part, pending, cfg)

def _misses(part: int, pending: list[tuple[Any, np.ndarray, Any]], cfg: SearchTask) -> Any:
    """The pending blocks as one miss row of partition ``part``; empties ``pending``."""
    import pyarrow as pa

    qids = pa.concat_arrays([ids for ids, _, _ in pending])
    vectors = b"".join(q.tobytes() for _, q, _ in pending)
    conds = _pending_conditions(pending)
    pending.clear()
    query_type = arrow_id_type(cfg.query_kind)
    item_type = arrow_id_type(cfg.item_kind)
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
                    cfg: SearchTask, local: bool = False) -> Iterator[Any]:
    """Search the pending blocks against the loaded index together, and empty ``pending``."""
    import pyarrow as pa

    from synapseml_ext.engine.encoder import record_event
    from synapseml_ext.nn import engine

    if not pending:
        return
    started = time.perf_counter()
    k, metric = cfg.k, cfg.metric
    qids = pa.concat_arrays([ids for ids, _, _ in pending])
    queries = pending[0][1] if len(pending) == 1 else np.concatenate([q for _, q, _ in pending])
    conds = _pending_conditions(pending)
    pending.clear()
    queries = engine.prepare_vectors(queries, metric)
    if conds is None:
        distances, labels = _nearest(loaded, queries, k, dict(cfg.search), metric)
    else:
        distances, labels = _filtered(loaded, queries, conds, cfg)
    labels = np.where(labels < 0, len(loaded.ids) - 1, labels)
    record_event("nn_search", partition=loaded.part, queries=len(queries), task=task_name(),
                 seconds=time.perf_counter() - started)
    item_type = arrow_id_type(cfg.item_kind)
    offsets = pa.array(np.arange(0, len(queries) * k + 1, k, dtype=np.int32))
    columns = [qids,
               pa.ListArray.from_arrays(offsets, pa.array(loaded.ids[labels].ravel(), item_type)),
               pa.ListArray.from_arrays(offsets, pa.array(distances.ravel(), pa.float32()))]
    names = [FOUND_QID, INDICES, DISTANCES]
    if local:
        query_type = arrow_id_type(cfg.query_kind)
        columns += [pa.nulls(len(qids), pa.int32()), pa.nulls(len(qids), pa.list_(query_type)),
                    pa.nulls(len(qids), pa.binary())]
        names += [MISS_PART, QIDS, QVECS]
        if conds is not None:
            columns.append(pa.nulls(len(qids), pa.list_(conds.type)))
            names.append(QCONDS)
    yield pa.RecordBatch.from_arrays(columns, names)

def _nearest(loaded: _LoadedIndex, queries: np.ndarray, k: int, search: dict[str, Any],
             metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The partition's k nearest of each query, ties broken by item id."""
    def fetch(rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        return loaded.index.search(_rows_of(queries, rows), width, search)

    return _tie_broken(fetch, len(queries), k, loaded.ids, metric)


def _tie_broken(fetch: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], q: int,
                k: int, ids: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``fetch(rows, width)``'s first k, ties broken by item id as the merge breaks them
    (faiss keeps either of two tied items): one more is fetched to see a tie at the k-th
    place, and only the rows with one are fetched wider, doubling, until the tie ends."""
    n = len(ids) - 1  # the last id is the pad
    distances, labels = fetch(np.arange(q), k + 1)
    out_d, out_l = distances[:, :k].copy(), labels[:, :k].copy()
    # Rows whose k+1 found items hold equal distances: re-ranked by (distance, id) below.
    adjacent = (distances[:, 1:] == distances[:, :-1]) & (labels[:, 1:] >= 0)
    boundary = adjacent[:, k - 1]
    for row in np.flatnonzero(adjacent.any(axis=1) & ~boundary):
        out_d[row], out_l[row] = _by_id(distances[row], labels[row], ids, k, metric)
    rows, width = np.flatnonzero(boundary), k + 1
    while len(rows):
        width = min(2 * width, n)
        d, lab = fetch(rows, width)
        done = (width >= n) | (lab[:, -1] < 0) | (d[:, -1] != distances[rows, k - 1])
        for i in np.flatnonzero(done):
            out_d[rows[i]], out_l[rows[i]] = _by_id(d[i], lab[i], ids, k, metric)
        rows = rows[~done]
    return out_d, out_l


def _rows_of(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # ``rows`` is sorted and distinct: all of them means the block itself, uncopied.
    return queries if len(rows) == len(queries) else queries[rows]


def _by_id(distances: np.ndarray, labels: np.ndarray, ids: np.ndarray, k: int, metric: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """One row's first k by (distance, item id), in the merge's order (descending for
    inner_product, whose sort_array is descending)."""
    found = [(float(d), ids[lab], lab) for d, lab in zip(distances, labels, strict=True)
             if lab >= 0]
    found.sort(key=lambda f: (f[0], f[1]), reverse=metric == "inner_product")
    found = found[:k]
    d = np.full(k, distances[-1] if len(found) < k else 0, dtype=np.float32)
    lab = np.full(k, -1, dtype=np.int64)
    d[: len(found)] = [f[0] for f in found]
    lab[: len(found)] = [f[2] for f in found]
    return d, lab


def _filtered(loaded: _LoadedIndex, queries: np.ndarray, conds: Any, cfg: SearchTask
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top-k among the partition's items whose label it allows."""
    from synapseml_ext.nn import filtered

    if loaded.labels is None:
        raise RuntimeError(f"index partition {loaded.part} has no labels: the model was "
                           "fitted without labelCol")
    allowed = labels_mod.allowed_sets(conds, cfg.label_kind)

    def fetch(rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        subset = allowed if len(rows) == len(allowed) else [allowed[row] for row in rows]
        return filtered.search(loaded.index, loaded.labels, _rows_of(queries, rows), subset,
                               width, dict(cfg.search))

    return _tie_broken(fetch, len(queries), cfg.k, loaded.ids, cfg.metric)
