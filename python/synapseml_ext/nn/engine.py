"""The Spark-free CPU engine: one faiss index over one partition's vectors.

Build (once, at ``fit``): validate vectors, pick the index layout from the partition size,
train and fill the index, and tune its search breadth (``nprobe`` / ``ef_search``) against
exact search on held-out items until the measured recall reaches ``target_recall``.
Search: faiss top-k, distances turned into the metric's real values, missing neighbours
padded. Serialisation is faiss's own (``serialize_index``), so an index is never rebuilt.

Labels inside an index are row positions; the caller keeps the ids in label order.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synapseml_ext.nn.ivf_scan import list_major_search, worth_it

log = logging.getLogger("synapseml_ext.nn")

L2_METRICS = ("euclidean", "l2", "sqeuclidean")
DEFAULT_TARGET_RECALL = 0.95
# IVF default: nlist = NLIST_PER_SQRT_N * sqrt(n), trained on TRAIN_POINTS_PER_LIST points a
# list (faiss warns below 39). Chosen by measurement, see docs/ann.md ("Defaults and how they
# were chosen"): from 1 to 4 sqrt(n) the search is as fast at equal recall, the build ~7x
# slower at 4.
NLIST_PER_SQRT_N = 1.0
TRAIN_POINTS_PER_LIST = 96
MIN_POINTS_PER_LIST = 39
def calibration_k(k: int, partitions: int) -> int:
    """Neighbours per partition that the breadth is tuned for: the global top-k spreads over
    hash partitions (k / partitions each on average), and the ones a partition holds are its
    own nearest; tune for a high quantile of that count (mean + 2 sd of the binomial), at
    least 1 and at most max(k, 10)."""
    mean = k / max(1, partitions)
    return int(max(1, min(max(k, 10), math.ceil(mean + 2 * math.sqrt(mean)))))


# Partitions too small for a useful IVF/HNSW index are searched exactly.
MIN_ANN_ITEMS = 10_000
CALIBRATION_QUERIES = 400
NPROBE_STEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192,
                256, 384, 512, 768, 1024, 1536, 2048, 4096, 8192, 16384, 32768, 65536)
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def faiss_module():
    """faiss, imported on first use (executors only)."""
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        from synapseml_ext.engine.errors import RuntimeUnavailableError

        raise RuntimeUnavailableError(
            "the CPU nearest-neighbour engine needs the Python package 'faiss-cpu' (a "
            "dependency of synapseml-ext), which is not installed on this worker; install it "
            "with: pip install faiss-cpu") from e
    return faiss


def worst_distance(metric: str) -> float:
    """The distance of a missing neighbour: it sorts after every real one."""
    return -math.inf if metric == "inner_product" else math.inf


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """float32, C-contiguous; unit length for cosine (zero vectors stay zero)."""
    out = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine" and len(out):
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
        out = out.astype(np.float32, copy=False)
    return out


def _faiss_metric(metric: str) -> int:
    faiss = faiss_module()
    return faiss.METRIC_L2 if metric in L2_METRICS else faiss.METRIC_INNER_PRODUCT


@dataclass
class BuildInfo:
    """What was built for one partition, and how well it searches (JSON-serialisable)."""

    kind: str                      # flat | ivfflat | ivfpq | hnsw
    n: int
    dim: int
    metric: str
    params: dict[str, Any] = field(default_factory=dict)   # nlist, M, n_bits, ...
    search: dict[str, int] = field(default_factory=dict)   # nprobe or ef_search (tuned)
    calibration_recall: float | None = None
    reason: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> BuildInfo:
        return BuildInfo(**values)


@dataclass
class PartitionIndex:
    """A searchable index over one partition; ``order[i]`` is the input row of label ``i``."""

    index: Any
    info: BuildInfo
    order: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(self.info.n) * int(self.info.dim) * 4

    def search(self, queries: np.ndarray, k: int, search_params: dict[str, Any] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances float32 [q, k], labels int64 [q, k])`` of prepared queries, nearest
        first; missing neighbours have label -1 and :func:`worst_distance`."""
        metric = self.info.metric
        q = len(queries)
        if q == 0 or self.info.n == 0:
            return (np.full((q, k), worst_distance(metric), dtype=np.float32),
                    np.full((q, k), -1, dtype=np.int64))
        self._apply_breadth(k, search_params or {})
        found = min(k, self.info.n)
        exact_scores = self.info.kind == "flat"
        if self.info.kind == "ivfflat" and worth_it(q, self.index.nprobe, self.index.nlist):
            labels, raw = list_major_search(self.index, queries, found, self.index.nprobe,
                                            metric in L2_METRICS)
            exact_scores = True
        else:
            raw, labels = self.index.search(queries, found)
            if exact_scores:
                raw = self._exact_scores(queries, labels)
        distances = _to_metric(raw, labels, metric)
        if exact_scores:
            distances, labels = _resort(distances, labels, metric)
        if found < k:
            distances = np.hstack([distances, np.full((q, k - found), worst_distance(metric),
                                                      dtype=np.float32)])
            labels = np.hstack([labels, np.full((q, k - found), -1, dtype=np.int64)])
        return distances, labels

    def _apply_breadth(self, k: int, params: dict[str, Any]) -> None:
        """The user's nprobe / ef_search for this call, else the tuned one."""
        knob = breadth_knob(self.info.kind)
        if knob is not None:
            set_breadth(self.index, self.info.kind, int(params.get(knob)
                                                         or self.info.search[knob]), k)

    def _exact_scores(self, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """faiss' flat search goes through BLAS (|q|^2 + |x|^2 - 2 q.x), which loses the
        small distances to rounding; recompute the k winners' scores directly."""
        n, d = self.info.n, self.info.dim
        stored = faiss_module().rev_swig_ptr(self.index.get_xb(), n * d).reshape(n, d)
        out = np.empty(labels.shape, dtype=np.float32)
        step = max(1, (64 << 20) // max(1, labels.shape[1] * d * 4))
        for lo in range(0, len(queries), step):
            winners = stored[np.maximum(labels[lo: lo + step], 0)]
            out[lo: lo + step] = _direct_scores(queries[lo: lo + step], winners, self.info.metric)
        return out


def _direct_scores(queries: np.ndarray, winners: np.ndarray, metric: str) -> np.ndarray:
    """faiss scores (squared L2 or inner product) of ``queries [q, d]`` with their
    ``winners [q, k, d]``, computed elementwise rather than through a matrix product, a few
    hundred queries at a time (the differences then stay in the CPU cache)."""
    out = np.empty(winners.shape[:2], dtype=np.float32)
    for lo in range(0, len(queries), DIRECT_ROWS):
        part, query = winners[lo: lo + DIRECT_ROWS], queries[lo: lo + DIRECT_ROWS]
        if metric in L2_METRICS:
            diff = part - query[:, None, :]
            out[lo: lo + DIRECT_ROWS] = np.einsum("qkd,qkd->qk", diff, diff)
        else:
            out[lo: lo + DIRECT_ROWS] = np.einsum("qkd,qd->qk", part, query)
    return out


DIRECT_ROWS = 256


def breadth_knob(kind: str) -> str | None:
    """The search-time knob of an index kind: more means slower and better recall."""
    return {"ivfflat": "nprobe", "ivfpq": "nprobe", "hnsw": "ef_search"}.get(kind)


def set_breadth(index, kind: str, value: int, k: int) -> None:
    faiss = faiss_module()
    if kind == "hnsw":
        index.hnsw.efSearch = max(int(value), k)
    elif kind in ("ivfflat", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(int(value), ivf.nlist)


def _to_metric(raw: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """faiss scores -> the metric's values: sqrt for euclidean, 1 - cos for cosine."""
    if metric in ("euclidean", "l2"):
        out = np.sqrt(np.maximum(raw, 0.0))
    elif metric == "sqeuclidean":
        out = np.maximum(raw, 0.0)
    elif metric == "cosine":
        out = 1.0 - raw
    else:
        out = raw
    out = out.astype(np.float32, copy=False)
    out[labels < 0] = worst_distance(metric)
    return out


def _resort(distances: np.ndarray, labels: np.ndarray, metric: str
            ) -> tuple[np.ndarray, np.ndarray]:
    key = -distances if metric == "inner_product" else distances
    order = np.argsort(key, axis=1, kind="stable")
    return (np.take_along_axis(distances, order, axis=1),
            np.take_along_axis(labels, order, axis=1))


# ---------------------------------------------------------------------------------------
# Build


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
    ``k`` is the neighbour count the automatic breadth is tuned for (see :func:`calibration_k`).
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


def _tune(index, info: BuildInfo, base: np.ndarray, probe: np.ndarray, k: int, target: float,
          params: dict[str, Any]) -> None:
    """Smallest breadth whose recall@k on the held-out rows reaches ``target`` (or the user's
    nprobe / ef_search, measured but not changed)."""
    knob = breadth_knob(info.kind)
    steps = _breadth_ladder(info)
    if len(probe) == 0:
        info.search[knob] = int(params.get(knob, steps[min(len(steps) - 1, 4)]))
        return
    k = min(k, len(base))
    truth = _exact_truth(base, probe, k, info.metric)

    def recall_at(value: int) -> float:
        set_breadth(index, info.kind, value, k)
        return _recall(index.search(probe, k)[1], truth)

    pinned = params.get(knob)
    chosen, recall = _smallest_reaching([int(pinned)] if pinned else steps, recall_at, target)
    info.search[knob] = chosen
    info.calibration_recall = round(recall, 4)


def _add_and_tune_ivfflat(index, info: BuildInfo, base: np.ndarray, probe: np.ndarray, k: int,
                          target: float, params: dict[str, Any]) -> None:
    """:func:`_tune` for IVF-Flat without searching once per breadth: IVF-Flat scores the
    probed lists exactly, so a held-out query finds a true neighbour exactly when that
    neighbour's list is among its ``nprobe`` nearest lists, and the recall of every nprobe
    follows from one ranking of the lists per held-out query. The base rows' lists, needed
    for that, are the ones ``add`` would compute, so they are computed once and passed to it.
    Measured on 50k x 384 items: 1.4 s of searches per fit become 0.1 s."""
    faiss = faiss_module()
    lists = index.quantizer.assign(base, 1).ravel().astype(np.int64)
    index.add_core(len(base), faiss.swig_ptr(base), None, faiss.swig_ptr(lists))
    nlist = info.params["nlist"]
    k = min(k, len(base))
    truth = _exact_truth(base, probe, k, info.metric)
    _, order = index.quantizer.search(probe, nlist)  # each held-out query's lists, nearest first
    rank = np.full((len(probe), nlist), nlist, dtype=np.int64)
    rows = np.arange(len(probe))[:, None]
    rank[rows, np.where(order >= 0, order, 0)] = np.where(order >= 0, np.arange(nlist), nlist)
    found_within = rank[rows, lists[np.maximum(truth, 0)]][truth >= 0]  # nprobe that finds each

    def recall_at(value: int) -> float:
        return float(np.mean(found_within < value)) if found_within.size else 1.0

    pinned = params.get("nprobe")
    chosen, recall = _smallest_reaching([int(pinned)] if pinned else _breadth_ladder(info),
                                        recall_at, target)
    set_breadth(index, info.kind, chosen, k)
    info.search["nprobe"] = chosen
    info.calibration_recall = round(recall, 4)


def _breadth_ladder(info: BuildInfo) -> tuple[int, ...]:
    """The breadths calibration tries, smallest first (nprobe up to nlist, or ef_search)."""
    if breadth_knob(info.kind) == "ef_search":
        return EF_STEPS
    nlist = info.params["nlist"]
    return (*(s for s in NPROBE_STEPS if s < nlist), nlist)


def _exact_truth(base: np.ndarray, probe: np.ndarray, k: int, metric: str) -> np.ndarray:
    """The held-out rows' true k nearest base rows (labels), by exact search."""
    exact = faiss_module().IndexFlat(base.shape[1], _faiss_metric(metric))
    exact.add(base)
    return exact.search(probe, k)[1]


def _smallest_reaching(values: list[int] | tuple[int, ...], recall_at: Any, target: float
                       ) -> tuple[int, float]:
    """The first of ``values`` whose recall reaches ``target`` (else the last) and its recall."""
    chosen, recall = values[-1], 0.0
    for value in values:
        chosen, recall = value, recall_at(value)
        if recall >= target:
            break
    return int(chosen), float(recall)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


# ---------------------------------------------------------------------------------------
# Serialisation


def serialize(index: PartitionIndex) -> np.ndarray:
    """The index as a uint8 array (faiss' own format)."""
    return faiss_module().serialize_index(index.index)


def deserialize(blob: np.ndarray, info: BuildInfo) -> PartitionIndex:
    return PartitionIndex(faiss_module().deserialize_index(blob), info)


def read_mapped(path: str, info: BuildInfo) -> PartitionIndex:
    """An index from a file written with the bytes of :func:`serialize`, memory-mapped
    where faiss can (IVF and flat data are then not copied), else read."""
    faiss = faiss_module()
    try:
        return PartitionIndex(faiss.read_index(path, faiss.IO_FLAG_MMAP), info)
    except RuntimeError:  # index kinds faiss cannot map
        return PartitionIndex(faiss.read_index(path), info)


def set_threads(threads: int) -> None:
    faiss_module().omp_set_num_threads(max(1, int(threads)))
