"""Filtered search in one index partition (Spark-free): each query's k nearest items among
those whose label is in the query's set of allowed labels (SynapseML's ``ConditionalKNN``).

Queries are grouped by their allowed set (each group shares one selection of items). Per
group, with m of the partition's n items allowed:

* exact search over the m items, when the index is flat (``algorithm="exact"`` or a small
  partition) or when the m items are no more than the vectors an approximate search would
  score anyway (ivf: nlist + nprobe * n / nlist; hnsw: ef_search * M): the answer is then
  exact, and costs no more than the index would;
* otherwise the index itself, searched through a faiss ``IDSelectorBitmap`` of the allowed
  items, with its breadth (nprobe / ef_search) divided by the allowed fraction m / n (capped
  at nlist), so that about as many allowed items are scored as an unfiltered search scores
  items; a query that still finds fewer than min(k, m) items is searched exactly.

Over-fetching instead (an unfiltered search for k / (m/n) neighbours, then filtering) was
measured against this on the reviews' MiniLM embeddings (``tools/bench/ann_filtered.py``,
docs/ann.md): it needs very large k for rare labels and reached lower recall at equal work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from synapseml_ext.nn import engine

# HNSW's ef_search is capped here when divided by a small allowed fraction.
MAX_EF = 4096


def search(index: engine.PartitionIndex, labels: np.ndarray, queries: np.ndarray,
           allowed: list[np.ndarray], k: int, overrides: dict[str, Any] | None = None,
           exact_when_cheaper: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(distances float32 [q, k], labels int64 [q, k])`` as ``PartitionIndex.search``
    returns them, each query restricted to the items whose label (``labels[i]``: item i's,
    in label order) is in ``allowed[query]``. Missing neighbours: label -1, worst distance.
    ``exact_when_cheaper=False`` (measurements only) sends every group of an approximate
    index through the selector."""
    metric = index.info.metric
    q = len(queries)
    distances = np.full((q, k), engine.worst_distance(metric), dtype=np.float32)
    found = np.full((q, k), -1, dtype=np.int64)
    for key, members in _groups(allowed).items():
        rows = np.flatnonzero(np.isin(labels, np.array(key, dtype=labels.dtype)))
        if len(rows) == 0:
            continue
        group = queries[members]
        if index.info.kind == "flat" or (exact_when_cheaper
                                          and _exact_is_cheaper(index, len(rows), overrides)):
            d, i = exact(index, rows, group, k)
        else:
            d, i = _selected(index, rows, group, k, overrides)
            short = (i >= 0).sum(axis=1) < min(k, len(rows))
            if short.any():  # too few allowed items in the lists probed: search exactly
                d[short], i[short] = exact(index, rows, group[short], k)
        distances[members], found[members] = d, i
    return distances, found


def _groups(allowed: list[np.ndarray]) -> dict[tuple, np.ndarray]:
    """Query positions by allowed set (sorted distinct labels, nulls dropped)."""
    groups: dict[tuple, list[int]] = {}
    for position, labels in enumerate(allowed):
        key = tuple(sorted({label for label in labels.tolist() if label is not None}))
        groups.setdefault(key, []).append(position)
    return {key: np.array(members) for key, members in groups.items()}


def _exact_is_cheaper(index: engine.PartitionIndex, allowed: int,
                      overrides: dict[str, Any] | None) -> bool:
    """Whether scoring the allowed items costs no more than the approximate search would."""
    info = index.info
    knob = engine.breadth_knob(info.kind)
    breadth = int((overrides or {}).get(knob) or info.search[knob])
    if knob == "nprobe":
        nlist = int(info.params["nlist"])
        scanned = nlist + min(breadth, nlist) * info.n / nlist
    else:
        scanned = breadth * int(info.params.get("M", 32))
    return allowed <= scanned


def exact(index: engine.PartitionIndex, rows: np.ndarray, queries: np.ndarray, k: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of the items ``rows`` (labels), exactly: their stored vectors scored by
    faiss' brute force, the winners re-scored directly (as the flat search does)."""
    faiss = engine.faiss_module()
    metric = index.info.metric
    vectors = stored_vectors(index, rows)
    found = min(k, len(rows))
    fmetric = faiss.METRIC_L2 if metric in engine.L2_METRICS else faiss.METRIC_INNER_PRODUCT
    _, positions = faiss.knn(queries, vectors, found, fmetric)
    raw = np.empty(positions.shape, dtype=np.float32)
    for lo in range(0, len(queries), engine.DIRECT_ROWS):
        part = positions[lo: lo + engine.DIRECT_ROWS]
        raw[lo: lo + engine.DIRECT_ROWS] = engine._direct_scores(
            queries[lo: lo + engine.DIRECT_ROWS], vectors[np.maximum(part, 0)], metric)
    labels = np.where(positions >= 0, rows[np.maximum(positions, 0)], -1)
    distances, labels = engine._resort(engine._to_metric(raw, labels, metric), labels, metric)
    return _pad(distances, labels, k, metric)


def _pad(distances: np.ndarray, labels: np.ndarray, k: int, metric: str
         ) -> tuple[np.ndarray, np.ndarray]:
    missing = k - labels.shape[1]
    if missing <= 0:
        return distances, labels
    q = len(labels)
    return (np.hstack([distances, np.full((q, missing), engine.worst_distance(metric),
                                          dtype=np.float32)]),
            np.hstack([labels, np.full((q, missing), -1, dtype=np.int64)]))


def stored_vectors(index: engine.PartitionIndex, rows: np.ndarray) -> np.ndarray:
    """The (prepared) vectors of labels ``rows``, float32 ``[len(rows), dim]``."""
    faiss = engine.faiss_module()
    kind, n, d = index.info.kind, index.info.n, index.info.dim
    if kind == "ivfflat":  # the vectors are in the inverted lists: reach them by id
        ivf = faiss.extract_index_ivf(index.index)
        if ivf.direct_map.type == faiss.DirectMap.NoMap:
            ivf.make_direct_map()
        return ivf.reconstruct_batch(rows.astype(np.int64))
    flat = {"flat": lambda i: i, "hnsw": lambda i: faiss.downcast_index(i.storage),
            "ivfpq": lambda i: faiss.downcast_index(i.refine_index)}[kind](index.index)
    stored = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    return np.ascontiguousarray(stored[rows])


def _selected(index: engine.PartitionIndex, rows: np.ndarray, queries: np.ndarray, k: int,
              overrides: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """The index searched through a selector of ``rows``, its breadth widened by n / m."""
    faiss = engine.faiss_module()
    info = index.info
    mask = np.zeros(info.n, dtype=bool)
    mask[rows] = True
    bits = np.packbits(mask, bitorder="little")  # kept alive while faiss reads it
    selector = faiss.IDSelectorBitmap(info.n, faiss.swig_ptr(bits))
    knob = engine.breadth_knob(info.kind)
    base = int((overrides or {}).get(knob) or info.search[knob])
    widened = math.ceil(base * info.n / len(rows))
    if info.kind == "hnsw":
        params: Any = faiss.SearchParametersHNSW(sel=selector, efSearch=max(k, min(widened,
                                                                                   MAX_EF)))
    else:
        params = faiss.SearchParametersIVF(sel=selector,
                                           nprobe=min(widened, int(info.params["nlist"])))
        if info.kind == "ivfpq":
            params = faiss.IndexRefineSearchParameters(
                k_factor=float(info.params.get("refine_factor", 2)), base_index_params=params)
    found = min(k, len(rows))
    raw, labels = index.index.search(queries, found, params=params)
    del bits
    return _pad(engine._to_metric(raw, labels, info.metric), labels, k, info.metric)
