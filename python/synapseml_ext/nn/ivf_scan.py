"""IVF-Flat search list by list: one matrix product per inverted list for a block of queries.

faiss scans IVF lists query by query: each query streams its ``nprobe`` lists from memory,
so a block of 10k queries reads the probed vectors 10k times and the search is memory-bound
(measured: only 2.2x faster than exact search at 1/30 of its arithmetic, docs/ann.md).
Inverting the loop reads each probed list once per block and scores all the queries that
probe it with one GEMM, which runs at the machine's matmul rate instead.

The neighbours are the same as faiss' IVF-Flat search with the same ``nprobe`` (the same
lists are probed and scored exhaustively); candidates are ranked by ``|x|^2 - 2 q.x`` and kept
in one faiss heap of ``k`` per query, which each list's score matrix updates in C (a compare
per score, against a numpy top-k per (query, list) pair and a merge of those: 24% less time
per search, docs/ann.md). The winners' scores are then recomputed directly from their stored
vectors (small distances keep their precision).
"""

from __future__ import annotations

import numpy as np

# Below this many (query, list) visits per probed list, faiss' own scan is as fast.
MIN_QUERIES_PER_LIST = 8
# Rows of the query block scored against one list at a time (bounds the score matrix).
ROW_CHUNK = 4096


def worth_it(queries: int, nprobe: int, nlist: int) -> bool:
    """Whether the block is large enough for list-major scanning to pay off."""
    return queries * nprobe >= MIN_QUERIES_PER_LIST * nlist


def list_major_search(ivf, queries: np.ndarray, k: int, nprobe: int, l2: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` of the ``k`` best items per query over the ``nprobe`` nearest
    lists of the faiss ``IndexIVFFlat`` ``ivf``: int64 labels ``[q, k]`` (``-1`` where fewer
    than ``k`` items were probed, unordered) and their float32 faiss scores (squared L2 or
    inner product, computed elementwise from the stored vectors; 0 for ``-1``). Candidates
    are ranked by ``|x|^2 - 2 q.x`` for L2 and ``-q.x`` for inner product."""
    import faiss

    q, dim = queries.shape
    _, assigned = ivf.quantizer.search(queries, nprobe)
    # Scaled once, so that a list's matrix product is its ranking score but for |x|^2.
    scaled = queries * np.float32(-2.0 if l2 else -1.0)
    # Each query's k smallest ranking scores so far, with where they are stored:
    # list << 32 | offset in the list (-1: none yet).
    best = np.empty((q, k), dtype=np.float32)
    where = np.empty((q, k), dtype=np.int64)
    heaps = faiss.float_maxheap_array_t()
    heaps.nh, heaps.k = q, k
    heaps.val, heaps.ids = faiss.swig_ptr(best), faiss.swig_ptr(where)
    heaps.heapify()

    for lst, pairs in _pairs_by_list(assigned):
        vectors, _ids = _stored_list(ivf, lst, dim)
        size = len(vectors)
        if size == 0:
            continue
        offset = np.einsum("ij,ij->i", vectors, vectors) if l2 else None
        stored_at = (np.int64(lst) << 32) | np.arange(size, dtype=np.int64)
        for c in range(0, len(pairs), ROW_CHUNK):
            rows = pairs[c: c + ROW_CHUNK] // nprobe  # a query probes a list at most once
            scores = scaled[rows] @ vectors.T
            if l2:  # in place: the score matrix is the largest temporary of the scan
                scores += offset
            # id stride 0: every row's column j is the list's item j
            heaps.addn_query_subset_with_ids(len(rows), faiss.swig_ptr(rows), size,
                                             faiss.swig_ptr(scores),
                                             faiss.swig_ptr(stored_at), 0)
    return _winners(ivf, queries, where, l2)


def _pairs_by_list(assigned: np.ndarray):
    """``(list, flat positions in assigned)`` for every list probed by some query (faiss
    marks lists it could not assign with -1; those are skipped)."""
    flat = assigned.ravel()
    order = np.argsort(flat, kind="stable")
    lists, starts = np.unique(flat[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    for lst, lo, hi in zip(lists.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if lst >= 0:
            yield lst, order[lo:hi]


def _winners(ivf, queries: np.ndarray, where: np.ndarray, l2: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and direct scores of the winners, list by list (an IVF index keeps no label ->
    vector map). Scored where they are read: a ``[q, k, dim]`` array of their vectors would
    be ~150 MB for 10k queries, and a fresh mapping of that size page-faults on every search."""
    k, dim = where.shape[1], queries.shape[1]
    labels = np.full(where.shape, -1, dtype=np.int64)
    scores = np.zeros(where.shape, dtype=np.float32)
    flat_where, flat_labels, flat_scores = where.ravel(), labels.ravel(), scores.ravel()
    lists = np.where(flat_where >= 0, flat_where >> 32, -1).reshape(-1, 1)
    for lst, positions in _pairs_by_list(lists):
        stored, ids = _stored_list(ivf, lst, dim)
        offsets = flat_where[positions] & 0xFFFFFFFF
        flat_labels[positions] = ids[offsets]
        vectors, query = stored[offsets], queries[positions // k]
        if l2:
            vectors -= query
            flat_scores[positions] = np.einsum("ij,ij->i", vectors, vectors)
        else:
            flat_scores[positions] = np.einsum("ij,ij->i", vectors, query)
    return labels, scores


def _stored_list(ivf, lst: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Views (no copies) of inverted list ``lst``: its float32 vectors and their labels."""
    import faiss

    invlists = ivf.invlists
    size = invlists.list_size(lst)
    if size == 0:
        return np.empty((0, dim), dtype=np.float32), np.empty(0, dtype=np.int64)
    vectors = faiss.rev_swig_ptr(invlists.get_codes(lst), size * dim * 4)
    return (vectors.view(np.float32).reshape(size, dim),
            faiss.rev_swig_ptr(invlists.get_ids(lst), size))
