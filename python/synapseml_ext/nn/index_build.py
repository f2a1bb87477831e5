"""Building one partition's index, once, at ``fit``: prepare the vectors, pick the layout
from the partition size (searched exactly below :data:`MIN_ANN_ITEMS` items unless the user
sized the index; else IVF-Flat, IVF-PQ or HNSW with nlist / M / n_bits defaults), train and
fill it, holding out up to :data:`CALIBRATION_QUERIES` rows on which :mod:`.index_tuning`
sets the search breadth before they are added too.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from synapseml_ext.nn.engine import (
    BuildInfo,
    PartitionIndex,
    _faiss_metric,
    faiss_module,
    prepare_vectors,
)
from synapseml_ext.nn.index_tuning import _add_and_tune_ivfflat, _tune

DEFAULT_TARGET_RECALL = 0.95
# IVF default: nlist = NLIST_PER_SQRT_N * sqrt(n), trained on TRAIN_POINTS_PER_LIST points a
# list (faiss warns below 39). Chosen by measurement, see docs/ann.md ("Defaults and how they
# were chosen"): from 1 to 4 sqrt(n) the search is as fast at equal recall, the build ~7x
# slower at 4.
NLIST_PER_SQRT_N = 1.0
TRAIN_POINTS_PER_LIST = 96
MIN_POINTS_PER_LIST = 39

# Partitions too small for a useful IVF/HNSW index are searched exactly.
MIN_ANN_ITEMS = 10_000
CALIBRATION_QUERIES = 400


def default_nlist(n: int) -> int:
    """Inverted lists for ``n`` items: ~sqrt(n), at most n / 39 (faiss' minimum of training
    points per list)."""
    return int(max(1, min(round(NLIST_PER_SQRT_N * math.sqrt(n)), n // MIN_POINTS_PER_LIST)))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers: the largest divisor of ``dim`` giving at least 4 dimensions each."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def build_index(vectors: np.ndarray, algorithm: str, metric: str, params: dict[str, Any],
                k: int, seed: int = 0) -> PartitionIndex:
    """Build one partition's index from validated float vectors ``[n, dim]``.

    ``algorithm`` is exact, ivfflat, ivfpq or hnsw; ``params`` are normalised algoParams.
    ``k`` is the neighbour count the automatic breadth is tuned for (see
    :func:`.index_tuning.calibration_k`).
    """
    started = time.perf_counter()
    x = prepare_vectors(vectors, metric)
    n, dim = x.shape if x.ndim == 2 else (0, 0)
    if algorithm == "exact" or n == 0:
        built = _flat(x, metric, BuildInfo("flat", n, dim, metric, reason="exact"))
    elif n < MIN_ANN_ITEMS and not _explicit_layout(params):
        built = _flat(x, metric, BuildInfo("flat", n, dim, metric,
                                           reason=f"partition of {n} items < {MIN_ANN_ITEMS}: "
                                                  "searched exactly"))
    else:
        built = _approximate(x, algorithm, metric, params, k, seed)
    built.info.seconds = round(time.perf_counter() - started, 3)
    return built


def _explicit_layout(params: dict[str, Any]) -> bool:
    """The user sized the index: build it as asked, even on a small partition."""
    return any(key in params for key in ("nlist", "M", "n_bits", "ef_construction"))


def _flat(x: np.ndarray, metric: str, info: BuildInfo) -> PartitionIndex:
    faiss = faiss_module()
    index = faiss.IndexFlat(max(info.dim, 1), _faiss_metric(metric))
    if info.n:
        index.add(x)
    return PartitionIndex(index, info)


def _approximate(x: np.ndarray, algorithm: str, metric: str, params: dict[str, Any], k: int,
                 seed: int) -> PartitionIndex:
    n = len(x)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    held = min(CALIBRATION_QUERIES, n // 20)
    base_rows, held_rows = order[held:], order[:held]
    base, probe = x[base_rows], x[held_rows]
    index, info = _new_index(base, algorithm, metric, params, rng)
    target = float(params.get("target_recall", DEFAULT_TARGET_RECALL))
    if algorithm == "ivfflat" and len(probe):
        _add_and_tune_ivfflat(index, info, base, probe, k, target, params)
    else:
        index.add(base)
        _tune(index, info, base, probe, k, target, params)
    index.add(probe)
    info.n = n
    # Labels follow insertion order: the base rows, then the held-out rows.
    return PartitionIndex(index, info, np.concatenate([base_rows, held_rows]))


def _new_index(base: np.ndarray, algorithm: str, metric: str, params: dict[str, Any],
               rng: np.random.Generator):
    faiss = faiss_module()
    n, dim = base.shape
    fmetric = _faiss_metric(metric)
    if algorithm == "hnsw":
        m = int(params.get("M", 32))
        index = faiss.IndexHNSWFlat(dim, m, fmetric)
        index.hnsw.efConstruction = int(params.get("ef_construction", 100))
        return index, BuildInfo("hnsw", n, dim, metric,
                                {"M": m, "ef_construction": index.hnsw.efConstruction})
    requested = params.get("nlist")
    nlist = default_nlist(n) if requested is None else min(int(requested), max(1, n // 4))
    quantizer = faiss.IndexFlat(dim, fmetric)
    info = BuildInfo(algorithm, n, dim, metric, {"nlist": nlist})
    if requested is not None and nlist < requested:
        info.reason = f"nlist {requested} lowered to {nlist} for a partition of {n} items"
    if algorithm == "ivfflat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, fmetric)
        ivf = index
    else:
        m = int(params.get("M", default_pq_m(dim)))
        if dim % m:
            raise ValueError(f"algoParams M={m} must divide the vector dimension {dim}")
        bits = int(params.get("n_bits", 8))
        bits = max(1, min(bits, int(math.log2(max(2, n // MIN_POINTS_PER_LIST)))))
        ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, m, bits, fmetric)
        factor = int(params.get("refine_factor", 2))
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = float(factor)
        info.params.update({"M": m, "n_bits": bits, "refine_factor": factor})
    ivf.cp.seed = int(rng.integers(0, 2**31 - 1))
    ivf.cp.spherical = metric == "cosine"
    ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    train = base[rng.permutation(n)[: max(TRAIN_POINTS_PER_LIST * nlist, 256 * 39)]]
    index.train(train)
    return index, info
