"""The Spark-free CPU engine: one faiss index over one partition's vectors, and its search.

What a partition's index is (:class:`PartitionIndex` and its :class:`BuildInfo`), how it is
searched (faiss top-k, distances turned into the metric's real values, missing neighbours
padded) and how it is stored: faiss's own format (``serialize_index``), so an index is never
rebuilt. Building one is :mod:`.index_build`; tuning its search breadth, :mod:`.index_tuning`.

Labels inside an index are row positions; the caller keeps the ids in label order.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synapseml_ext.nn.ivf_scan import list_major_search, worth_it

log = logging.getLogger("synapseml_ext.nn")

L2_METRICS = ("euclidean", "l2", "sqeuclidean")


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
    owner: Any = None  # memory faiss reads the codes from (a zero-copy read): kept with it

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
# Serialisation


def serialize(index: PartitionIndex) -> np.ndarray:
    """The index as a uint8 array (faiss' own format)."""
    return faiss_module().serialize_index(index.index)


def deserialize(blob: np.ndarray, info: BuildInfo) -> PartitionIndex:
    """The index of :func:`serialize`'s bytes ``blob``, its codes read in place where faiss
    can (``ZeroCopyIOReader`` with ``IO_FLAG_MMAP_IFC``, faiss >= 1.11: the index keeps
    ``blob``), else copied: ``deserialize_index`` copies the bytes once more before it
    reads them (a search miss without a local store adds 1.16x a 589 MiB partition to its
    worker with this, 3.2x with ``deserialize_index``: tools/bench/ann_unpack_memory.py)."""
    faiss = faiss_module()
    in_place = _in_place_flag(faiss)
    reader_of = getattr(faiss, "ZeroCopyIOReader", None)
    if in_place and reader_of is not None:
        reader = reader_of(faiss.swig_ptr(blob), blob.nbytes)
        try:
            return PartitionIndex(faiss.read_index(reader, in_place), info, owner=(blob, reader))
        except RuntimeError:  # index kinds faiss cannot read in place
            pass
    return PartitionIndex(faiss.deserialize_index(blob), info)


def read_mapped(path: str, info: BuildInfo) -> PartitionIndex:
    """An index from a file written with the bytes of :func:`serialize`, its codes
    memory-mapped where faiss can, else read. ``IO_FLAG_MMAP_IFC`` (faiss >= 1.11) maps flat,
    HNSW and IVF codes; ``IO_FLAG_MMAP`` maps IVF lists only (measured here, faiss 1.15: a
    flat or HNSW index read with it is copied into memory)."""
    faiss = faiss_module()
    flags = [f for f in (_in_place_flag(faiss), faiss.IO_FLAG_MMAP) if f]
    if flags[0] != faiss.IO_FLAG_MMAP:
        _read_ahead(path)
    for flag in flags:
        try:
            return PartitionIndex(faiss.read_index(path, flag), info)
        except RuntimeError:  # index kinds faiss cannot map so
            continue
    return PartitionIndex(faiss.read_index(path), info)


def _read_ahead(path: str, window: int = 16 << 20) -> None:
    """Bring the file into the page cache in order, ``window`` bytes mapped at a time (the
    worker's resident memory grows by one window, not the file): codes mapped in place are
    otherwise read a page per fault, in the order the search probes them. Measured on a
    589 MiB IVF file (faiss 1.15, 2,000 queries, 2 cores): from a cold cache 12.6-13.1 s
    without this, 4.5-4.8 s with it (4.4-4.5 s warm), 8.2-8.6 s with ``IO_FLAG_MMAP``'s
    lists (they prefetch, but search slower: 8.1 s warm); from a warm cache it costs ~10 ms."""
    import mmap

    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            for offset in range(0, size, window):
                with mmap.mmap(file.fileno(), min(window, size - offset), prot=mmap.PROT_READ,
                               offset=offset) as mapped:
                    if hasattr(mapped, "madvise"):
                        mapped.madvise(mmap.MADV_WILLNEED)
                    pages = np.frombuffer(mapped, dtype=np.uint8)
                    int(pages[::mmap.PAGESIZE].sum())  # one byte a page
                    del pages
    except (OSError, ValueError, BufferError):  # unreadable: read_index says why
        pass


def _in_place_flag(faiss: Any) -> int | None:
    """faiss' flag to read codes where they lie (file or buffer), None before faiss 1.11."""
    return getattr(faiss, "IO_FLAG_MMAP_IFC", None)


def set_threads(threads: int) -> None:
    faiss_module().omp_set_num_threads(max(1, int(threads)))
