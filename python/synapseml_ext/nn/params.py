"""Params of :class:`ApproximateNearestNeighbors` and its model, one definition each.

Names, defaults and meanings follow ``spark_rapids_ml.knn.ApproximateNearestNeighbors`` (k,
algorithm, metric, algoParams, inputCol / inputCols, idCol, verbose) so that switching only
changes the import; ``backend``, ``numPartitions`` and ``numQueryBlocks`` are ours, and
``outputCol`` (``transform``), ``labelCol`` / ``conditionerCol`` (filtered search) follow
SynapseML's ``KNN`` / ``ConditionalKNN``.

The Scala stages are generated from these Params (``python -m synapseml_ext.codegen``).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasInputCols

from synapseml_ext.contract.checked_params import CheckedParams
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


DEFAULT_OUTPUT_COL = "neighbors"


def _to_verbose(value: Any) -> bool | int:
    """typeConverter of ``verbose``: spark-rapids-ml's cuML levels, a bool or an int 0-6."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and 0 <= value <= 6:
        return int(value)
    raise TypeError(f"verbose must be a bool or an integer between 0 and 6, got {value!r}")


# The engine's value rules (same checks and messages as the embedder's Params).
_VALUE_RULES = {"k": IntAtLeast(1), "backend": OneOf(BACKENDS),
                "numPartitions": IntAtLeast(0), "numQueryBlocks": IntAtLeast(0)}


class _ApproximateNearestNeighborsParams(HasInputCol, HasInputCols, CheckedParams):
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

    outputCol: Param[str] = Param(
        Params._dummy(), "outputCol",
        "transform: column added to each query row, the k nearest items as "
        "array<struct<value: item id, distance: float>>, nearest first",
        typeConverter=TypeConverters.toString)
    labelCol: Param[str] = Param(
        Params._dummy(), "labelCol",
        "filtered search: the items' label column (integral or string), kept with the index "
        "at fit",
        typeConverter=TypeConverters.toString)
    conditionerCol: Param[str] = Param(
        Params._dummy(), "conditionerCol",
        "filtered search: the queries' column of allowed labels (an array of labelCol's "
        "type); each query's neighbours are items whose label is in it",
        typeConverter=TypeConverters.toString)
    verbose: Param[bool | int] = Param(
        Params._dummy(), "verbose",
        "log level as spark-rapids-ml's (False, True or 0-6): 0 silent, 1 critical, 2 error, "
        "3 warning, 4 or False info, 5 or True and 6 debug",
        typeConverter=_to_verbose)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._setDefault(k=5, algorithm="ivfflat", metric="euclidean", algoParams=None,
                         backend="auto", numPartitions=0, numQueryBlocks=0,
                         outputCol=DEFAULT_OUTPUT_COL, verbose=False)

    def _set_checked(self: P, **kwargs) -> P:
        """``_set`` after validation shared by the constructor, ``setParams`` and setters;
        ``None`` leaves a Param as it is."""
        values = {k: v for k, v in kwargs.items() if v is not None}
        if isinstance(values.get("inputCol"), (list, tuple)):  # spark-rapids-ml's spelling
            values["inputCols"] = values.pop("inputCol")
        if "inputCol" in values and "inputCols" in values:
            raise ValueError("set inputCol (one vector column) or inputCols (scalar columns, "
                             "one dimension each), not both")
        for name, value in list(values.items()):
            values[name] = self._validated(name, self.getParam(name).typeConverter(value))
        self._set(**values)
        # One vector column or several scalar ones: setting either replaces the other.
        for name, other in (("inputCol", "inputCols"), ("inputCols", "inputCol")):
            if name in values and self.isSet(getattr(self, other)):
                self.clear(getattr(self, other))
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
        if name in ("inputCol", "idCol", "outputCol", "labelCol", "conditionerCol") and not value:
            raise ValueError(f"{name} must be a non-empty column name")
        if name == "inputCols" and (not value or not all(value) or len(set(value)) < len(value)):
            raise ValueError(f"inputCols must be distinct non-empty column names, got {value!r}")
        return value

    def setK(self: P, value: int) -> P:
        return self._set_checked(k=value)

    def setAlgorithm(self: P, value: str) -> P:
        return self._set_checked(algorithm=value)

    def setMetric(self: P, value: str) -> P:
        return self._set_checked(metric=value)

    def setAlgoParams(self: P, value: dict[str, Any]) -> P:
        return self._set_checked(algoParams=value)

    def setInputCol(self: P, value: str | list[str]) -> P:
        """One vector column; a list of scalar columns sets ``inputCols`` (as spark-rapids-ml)."""
        return self._set_checked(inputCol=value)

    def setInputCols(self: P, value: list[str]) -> P:
        return self._set_checked(inputCols=value)

    def setOutputCol(self: P, value: str) -> P:
        return self._set_checked(outputCol=value)

    def setLabelCol(self: P, value: str) -> P:
        return self._set_checked(labelCol=value)

    def setConditionerCol(self: P, value: str) -> P:
        return self._set_checked(conditionerCol=value)

    def setVerbose(self: P, value: bool | int) -> P:
        return self._set_checked(verbose=value)

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

    def getInputCol(self) -> str | list[str]:
        """The vector column, or the list of scalar columns where ``inputCols`` is set (as
        spark-rapids-ml's ``getInputCol``)."""
        if self.isDefined(self.inputCols):
            return self.getOrDefault(self.inputCols)
        return self.getOrDefault(self.inputCol)

    def getOutputCol(self) -> str:
        return self.getOrDefault(self.outputCol)

    def getLabelCol(self) -> str | None:
        return self.getOrDefault(self.labelCol) if self.isDefined(self.labelCol) else None

    def getConditionerCol(self) -> str | None:
        return (self.getOrDefault(self.conditionerCol) if self.isDefined(self.conditionerCol)
                else None)

    def getVerbose(self) -> bool | int:
        return self.getOrDefault(self.verbose)

    def _input_name(self) -> str:
        """The input as named in messages: the column, or the scalar columns joined by ','."""
        value = self.getInputCol()
        return value if isinstance(value, str) else ",".join(value)

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
