"""Params of :class:`ApproximateNearestNeighbors` and its model, one definition each.

Names, defaults and meanings follow ``spark_rapids_ml.knn.ApproximateNearestNeighbors`` (k,
algorithm, metric, algoParams, inputCol, idCol) so that switching only changes the import;
``backend``, ``numPartitions`` and ``numQueryBlocks`` are ours.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol

from synapseml_ext.engine.spec import IntAtLeast, OneOf

P = TypeVar("P", bound="_ApproximateNearestNeighborsParams")

ALGORITHMS = ("ivfflat", "ivfpq", "hnsw", "exact", "cagra")
METRICS = ("euclidean", "sqeuclidean", "l2", "inner_product", "cosine")
BACKENDS = ("auto", "cpu", "gpu")
# Spellings used by cuVS / spark-rapids-ml internals and by faiss users.
_ALGORITHM_ALIASES = {"ivf_flat": "ivfflat", "ivf_pq": "ivfpq", "brute": "exact",
                      "brute_force": "exact", "flat": "exact"}

# algoParams keys, by algorithm: spark-rapids-ml's names first, then cuVS / faiss spellings
# that mean the same thing. The CPU engine and the GPU delegation both read these.
ALGO_PARAM_KEYS = {
    "exact": {},
    "ivfflat": {"nlist": "nlist", "n_lists": "nlist", "nprobe": "nprobe", "n_probes": "nprobe",
                "target_recall": "target_recall"},
    "ivfpq": {"nlist": "nlist", "n_lists": "nlist", "nprobe": "nprobe", "n_probes": "nprobe",
              "M": "M", "pq_dim": "M", "n_bits": "n_bits", "nbits": "n_bits",
              "pq_bits": "n_bits", "refine_factor": "refine_factor",
              "target_recall": "target_recall"},
    "hnsw": {"M": "M", "ef_construction": "ef_construction", "efConstruction": "ef_construction",
             "ef_search": "ef_search", "efSearch": "ef_search", "target_recall": "target_recall"},
    # Passed to cuVS unchanged (GPU only); see spark-rapids-ml's docs for the keys.
    "cagra": None,
}
_INT_KEYS = {"nlist", "nprobe", "M", "n_bits", "refine_factor", "ef_construction", "ef_search"}


def _to_algo_params(value: Any) -> dict[str, Any] | None:
    """typeConverter of ``algoParams``: a dict with string keys and JSON values, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"algoParams must be a dict such as {{'nlist': 100, 'nprobe': 10}}, "
                        f"got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"algoParams keys must be strings, got {key!r}")
        try:
            json.dumps(item)
        except (TypeError, ValueError) as e:
            raise TypeError(f"algoParams[{key!r}] must be a JSON value, got {item!r}") from e
    return dict(value)


def canonical_algorithm(value: str) -> str:
    name = _ALGORITHM_ALIASES.get(value.lower(), value.lower())
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {value!r}; expected one of: {', '.join(ALGORITHMS)}")
    return name


def normalize_algo_params(algorithm: str, algo_params: dict | None) -> dict[str, Any]:
    """``algoParams`` under our canonical key names for the CPU engine; raises ``ValueError``
    naming an unknown key or a bad value."""
    keys = ALGO_PARAM_KEYS[algorithm]
    params = dict(algo_params or {})
    if keys is None:
        return params
    out: dict[str, Any] = {}
    for key, value in params.items():
        canonical = keys.get(key)
        if canonical is None:
            known = ", ".join(sorted(keys)) or "(none)"
            raise ValueError(f"algoParams key {key!r} is not used by algorithm {algorithm!r}; "
                             f"known keys: {known}")
        if canonical in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"algoParams[{key!r}] must be a positive integer, got {value!r}")
        elif canonical == "target_recall":
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0.0 < float(value) <= 1.0 or math.isnan(float(value))):
                raise ValueError(f"algoParams[{key!r}] must be a number in (0, 1], got {value!r}")
            value = float(value)
        out[canonical] = value
    if "n_bits" in out and not 1 <= out["n_bits"] <= 16:
        raise ValueError(f"algoParams n_bits must be between 1 and 16, got {out['n_bits']}")
    return out


# The engine's value rules (same checks and messages as the embedder's Params).
_VALUE_RULES = {"k": IntAtLeast(1), "backend": OneOf(BACKENDS),
                "numPartitions": IntAtLeast(0), "numQueryBlocks": IntAtLeast(0)}


class _ApproximateNearestNeighborsParams(HasInputCol):
    """Params shared by :class:`ApproximateNearestNeighbors` and its model."""

    k: Param[int] = Param(
        Params._dummy(), "k",
        "number of nearest neighbours to return per query (>= 1)",
        typeConverter=TypeConverters.toInt)
    algorithm: Param[str] = Param(
        Params._dummy(), "algorithm",
        "search algorithm: ivfflat (inverted lists, exact distances), ivfpq (product "
        "quantisation, re-ranked), hnsw (graph; CPU), exact (brute force) or cagra (GPU only)",
        typeConverter=TypeConverters.toString)
    metric: Param[str] = Param(
        Params._dummy(), "metric",
        "distance: euclidean (= l2), sqeuclidean, inner_product (larger is nearer) or cosine "
        "(1 - cosine similarity)",
        typeConverter=TypeConverters.toString)
    algoParams: Param[dict] = Param(
        Params._dummy(), "algoParams",
        "algorithm parameters, spark-rapids-ml's names: nlist, nprobe (ivf*), M, n_bits "
        "(ivfpq), M, ef_construction, ef_search (hnsw), target_recall (CPU engine: recall the "
        "automatic nprobe/ef_search aims at, default 0.95); unset keys are chosen per partition",
        typeConverter=_to_algo_params)
    idCol: Param[str] = Param(
        Params._dummy(), "idCol",
        "column of unique item/query ids (integral or string); unset adds a generated "
        "'unique_id' column as spark-rapids-ml does",
        typeConverter=TypeConverters.toString)
    backend: Param[str] = Param(
        Params._dummy(), "backend",
        "where the search runs: cpu (our distributed faiss engine), gpu (delegates to "
        "spark-rapids-ml / cuVS), auto (gpu where spark-rapids-ml and cuVS import and see a GPU "
        "on the executors, else cpu)",
        typeConverter=TypeConverters.toString)
    numPartitions: Param[int] = Param(
        Params._dummy(), "numPartitions",
        "CPU engine: number of item partitions, one index each (0 keeps the input's "
        "partitioning); fewer, larger partitions search faster (one per core is fastest, "
        "see docs/ann.md), and each must stay below ~1.5 GB",
        typeConverter=TypeConverters.toInt)
    numQueryBlocks: Param[int] = Param(
        Params._dummy(), "numQueryBlocks",
        "CPU engine: query groups per kneighbors call (0: enough for every core, i.e. "
        "ceil(default parallelism / index partitions)); every index partition meets every "
        "group in one task, so tasks = index partitions x groups (more groups: more "
        "parallelism and less memory per task, but each index partition is read once per "
        "group)",
        typeConverter=TypeConverters.toInt)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._setDefault(k=5, algorithm="ivfflat", metric="euclidean", algoParams=None,
                         backend="auto", numPartitions=0, numQueryBlocks=0)

    def _set_checked(self: P, **kwargs) -> P:
        """``_set`` after validation shared by the constructor, ``setParams`` and setters;
        ``None`` leaves a Param as it is."""
        values = {k: v for k, v in kwargs.items() if v is not None}
        for name, value in list(values.items()):
            values[name] = self._validated(name, self.getParam(name).typeConverter(value))
        self._set(**values)
        if "algorithm" in values or "algoParams" in values:
            algorithm = self.getAlgorithm()
            if algorithm != "cagra":
                normalize_algo_params(algorithm, self.getAlgoParams())
        return self

    @staticmethod
    def _validated(name: str, value: Any) -> Any:
        rule = _VALUE_RULES.get(name)
        if rule is not None:
            rule.check(name, value)
        if name == "algorithm":
            return canonical_algorithm(value)
        if name == "metric":
            if value.lower() not in METRICS:
                raise ValueError(f"unknown metric {value!r}; expected one of: "
                                 f"{', '.join(METRICS)}")
            return value.lower()
        if name in ("inputCol", "idCol") and not value:
            raise ValueError(f"{name} must be a non-empty column name")
        return value

    def setK(self: P, value: int) -> P:
        return self._set_checked(k=value)

    def setAlgorithm(self: P, value: str) -> P:
        return self._set_checked(algorithm=value)

    def setMetric(self: P, value: str) -> P:
        return self._set_checked(metric=value)

    def setAlgoParams(self: P, value: dict[str, Any]) -> P:
        return self._set_checked(algoParams=value)

    def setInputCol(self: P, value: str) -> P:
        return self._set_checked(inputCol=value)

    def setIdCol(self: P, value: str) -> P:
        return self._set_checked(idCol=value)

    def setBackend(self: P, value: str) -> P:
        return self._set_checked(backend=value)

    def setNumPartitions(self: P, value: int) -> P:
        return self._set_checked(numPartitions=value)

    def setNumQueryBlocks(self: P, value: int) -> P:
        return self._set_checked(numQueryBlocks=value)

    def getK(self) -> int:
        return self.getOrDefault(self.k)

    def getAlgorithm(self) -> str:
        return self.getOrDefault(self.algorithm)

    def getMetric(self) -> str:
        return self.getOrDefault(self.metric)

    def getAlgoParams(self) -> dict[str, Any] | None:
        return self.getOrDefault(self.algoParams)

    def getIdCol(self) -> str | None:
        """The id column, or ``None`` while unset (then ``unique_id`` is generated)."""
        return self.getOrDefault(self.idCol) if self.isDefined(self.idCol) else None

    def getBackend(self) -> str:
        return self.getOrDefault(self.backend)

    def getNumPartitions(self) -> int:
        return self.getOrDefault(self.numPartitions)

    def getNumQueryBlocks(self) -> int:
        return self.getOrDefault(self.numQueryBlocks)
