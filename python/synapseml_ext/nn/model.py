"""``ApproximateNearestNeighbors`` and its model: the Spark plumbing of k-NN search.

CPU engine (``backend="cpu"``), in Spark terms:

* ``fit``: items are hash-partitioned by id (so duplicated ids meet in one task), each
  partition builds one faiss index (``mapInArrow``), and the table of serialised indexes
  (one row per partition) is persisted and kept by the model: indexes are built once.
* ``kneighbors``: each query partition becomes block rows, which a shuffle gathers into a
  few groups; index partitions x groups are paired by a cartesian product (no broadcast:
  neither queries nor indexes pass through the driver), and the per-partition top-k lists
  are merged per query with ``groupBy`` (as spark-rapids-ml does). The pairs carry partition
  numbers, not index bytes: a task searches with its executor's local copy of the partition
  (:mod:`.local_store`, written by the build and by every search that received the bytes).
  This runs when ``kneighbors`` is called; blocks that found no copy come back as miss
  rows, and only where there are some does a join with the index table (index partition p
  in shuffle partition p, :mod:`.placement`, so the index is not shuffled) bring them their
  index bytes.

GPU (``backend="gpu"``, or ``"auto"`` where the executors have spark-rapids-ml, cuVS and a
GPU): the fit is delegated to ``spark_rapids_ml.knn.ApproximateNearestNeighbors``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from pyspark import StorageLevel, keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegralType,
    StringType,
    StructType,
)

from synapseml_ext.bridge.persistence import BridgedParamsReadable  # loads Scala-saved too
from synapseml_ext.nn import gpu, integrity, local_store, tasks
from synapseml_ext.nn.engine import breadth_knob
from synapseml_ext.nn.params import _ApproximateNearestNeighborsParams, normalize_algo_params
from synapseml_ext.nn.placement import placement_key
from synapseml_ext.nn.vectors import ERROR_PREFIX

__all__ = ["ApproximateNearestNeighbors", "ApproximateNearestNeighborsModel"]

log = logging.getLogger("synapseml_ext.nn")

GENERATED_ID = "unique_id"  # spark-rapids-ml's name for a generated id column


class _SchemaMixin(_ApproximateNearestNeighborsParams):
    """Driver-side checks and column expressions shared by the estimator and the model."""

    def _id_col_or_default(self) -> str:
        return self.getIdCol() or GENERATED_ID

    def _with_id(self, df: DataFrame, what: str) -> DataFrame:
        """``df`` with its id column: the idCol (which must exist) or a generated
        ``unique_id`` as spark-rapids-ml adds."""
        id_col = self.getIdCol()
        if id_col is None:
            if GENERATED_ID in df.columns:
                raise ValueError(f"the {what} DataFrame already has a column {GENERATED_ID!r} "
                                 "but idCol is not set; set idCol to use it as the id")
            return df.select(F.monotonically_increasing_id().alias(GENERATED_ID), "*")
        if id_col not in df.columns:
            raise ValueError(f"idCol {id_col!r} not found in the {what} DataFrame; available "
                             f"columns: {', '.join(df.columns) or '(none)'}")
        return df

    def _id_kind(self, schema: StructType, what: str) -> str:
        id_col = self._id_col_or_default()
        data_type = schema[id_col].dataType
        if isinstance(data_type, IntegralType):
            return "long"
        if isinstance(data_type, StringType):
            return "string"
        raise TypeError(f"idCol {id_col!r} of the {what} DataFrame must be an integral or "
                        f"string column, got {data_type.simpleString()}")

    def _vector_expr(self, schema: StructType, what: str) -> Column:
        """The inputCol as ``array<float>``; raises for a missing or non-vector column."""
        if not self.isDefined(self.inputCol):
            raise ValueError("inputCol is not set: name the vector column to search")
        name = self.getInputCol()
        if name not in schema.fieldNames():
            raise ValueError(f"inputCol {name!r} not found in the {what} DataFrame; available "
                             f"columns: {', '.join(schema.fieldNames()) or '(none)'}")
        data_type = schema[name].dataType
        if isinstance(data_type, ArrayType) and isinstance(data_type.elementType,
                                                           (FloatType, DoubleType)):
            return F.col(name).cast("array<float>")
        if type(data_type).__name__ == "VectorUDT":
            from pyspark.ml.functions import vector_to_array

            return vector_to_array(F.col(name), "float32")
        raise TypeError(f"inputCol {name!r} of the {what} DataFrame must be array<float>, "
                        f"array<double> or a Vector column, got {data_type.simpleString()}")

    def _cpu_algorithm(self) -> str:
        algorithm = self.getAlgorithm()
        if algorithm == "cagra":  # GPU-only graph index: the CPU engine's graph is HNSW
            log.warning("algorithm 'cagra' runs on GPUs only; the CPU engine uses 'hnsw'")
            return "hnsw"
        return algorithm

    def _cpu_algo_params(self) -> dict[str, Any]:
        algorithm = self._cpu_algorithm()
        params = self.getAlgoParams() if self.getAlgorithm() != "cagra" else None
        return normalize_algo_params(algorithm, params)


class ApproximateNearestNeighbors(Estimator, _SchemaMixin, BridgedParamsReadable,
                                  DefaultParamsWritable):
    """k approximate nearest neighbours of query vectors among item vectors.

    API-compatible with ``spark_rapids_ml.knn.ApproximateNearestNeighbors`` (same Params,
    ``kneighbors`` and ``approxSimilarityJoin``), plus a CPU engine: faiss indexes, one per
    item partition, built once at ``fit`` and saved with the model. See docs/ann.md.

    Examples
    --------
    >>> from synapseml_ext.nn import ApproximateNearestNeighbors
    >>> items = spark.createDataFrame([(i, [float(i), 0.0]) for i in range(6)], ["id", "v"])
    >>> ann = ApproximateNearestNeighbors(k=2, algorithm="exact", inputCol="v", idCol="id",
    ...                                   backend="cpu")
    >>> model = ann.fit(items)
    >>> queries = spark.createDataFrame([(0, [2.2, 0.0])], ["id", "v"])
    >>> _, _, knn = model.kneighbors(queries)
    >>> knn.head()
    Row(query_id=0, indices=[2, 3], distances=[0.2000..., 0.7999...])
    >>> model.save(temp_path + "/ann-model")
    >>> ApproximateNearestNeighborsModel.load(temp_path + "/ann-model").kneighbors(
    ...     queries)[2].head().indices
    [2, 3]
    """

    @keyword_only
    def __init__(self, *, k: int | None = None, algorithm: str | None = None,
                 metric: str | None = None, algoParams: dict[str, Any] | None = None,
                 inputCol: str | None = None, idCol: str | None = None,
                 backend: str | None = None, numPartitions: int | None = None,
                 numQueryBlocks: int | None = None) -> None:
        """
        __init__(self, *, k=5, algorithm="ivfflat", metric="euclidean", algoParams=None,
                 inputCol=None, idCol=None, backend="auto", numPartitions=0, numQueryBlocks=0)
        """
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, k: int | None = None, algorithm: str | None = None,
                  metric: str | None = None, algoParams: dict[str, Any] | None = None,
                  inputCol: str | None = None, idCol: str | None = None,
                  backend: str | None = None, numPartitions: int | None = None,
                  numQueryBlocks: int | None = None) -> ApproximateNearestNeighbors:
        """Sets params (``None`` leaves a Param unchanged)."""
        return self._set_checked(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> ApproximateNearestNeighborsModel:
        items = self._with_id(dataset, "item")
        id_kind = self._id_kind(items.schema, "item")
        vector = self._vector_expr(items.schema, "item")
        backend, reason = self._choose_backend(dataset.sparkSession, id_kind)
        log.info("ApproximateNearestNeighbors: backend %s (%s)", backend, reason)
        if backend == "gpu":
            return self._fit_gpu(dataset, reason)
        if self.getIdCol() is None:  # generated ids must not change between fit and use
            items = items.persist()
        return self._fit_cpu(items, id_kind, vector, reason)

    # -- backend choice ------------------------------------------------------------------

    def _choose_backend(self, spark: SparkSession, id_kind: str) -> tuple[str, str]:
        requested = self.getBackend()
        if requested == "cpu":
            return "cpu", "backend='cpu'"
        unsupported = gpu.gpu_unsupported(self.getAlgorithm(), self.getMetric(), id_kind)
        if unsupported:
            if requested == "gpu":
                log.warning("backend='gpu': %s; falling back to the CPU engine", unsupported)
            return "cpu", unsupported
        if requested == "gpu":
            # At fit, not at the first search: the delegate's fit is lazy, so without this a
            # CPU cluster "fitted" and failed later with a bare ModuleNotFoundError.
            backend, reason = _executor_gpu_check(spark)
            if backend != "gpu":
                raise ValueError(
                    f"{ERROR_PREFIX} backend='gpu' cannot run on this cluster: {reason}; use "
                    "backend='cpu' (or 'auto'), or install spark-rapids-ml and RAPIDS cuVS on "
                    "GPU executors (pip install 'synapseml-ext[rapids]')")
            return "gpu", "backend='gpu'"
        return _executor_gpu_check(spark)

    def _fit_gpu(self, dataset: DataFrame, reason: str) -> ApproximateNearestNeighborsModel:
        kwargs = gpu.rapids_kwargs(self.getK(), self.getAlgorithm(), self.getMetric(),
                                   self.getAlgoParams(), self.getInputCol(), self.getIdCol())
        delegate = gpu.rapids_estimator(kwargs).fit(dataset)
        model = ApproximateNearestNeighborsModel()
        model._delegate = delegate
        model._backend_reason = reason
        return self._copyValues(model)

    # -- CPU engine ----------------------------------------------------------------------

    def _fit_cpu(self, items: DataFrame, id_kind: str, vector: Column, reason: str
                 ) -> ApproximateNearestNeighborsModel:
        id_col = self._id_col_or_default()
        partitions = self.getNumPartitions() or _num_partitions(items)
        prepared = (items.select(F.col(id_col).cast(tasks.spark_id_type(id_kind)).alias(tasks.ID),
                                 vector.alias(tasks.VEC))
                    .repartition(partitions, tasks.ID))
        token = local_store.new_token()
        cfg = {"id_kind": id_kind, "column": self.getInputCol(),
               "algorithm": self._cpu_algorithm(), "metric": self.getMetric(),
               "params": self._cpu_algo_params(), "k": self.getK(), "partitions": partitions,
               "token": token, "store_limit": _store_limit(items.sparkSession)}
        indexes = _by_part(prepared.mapInArrow(tasks.make_build_fn(cfg),
                                               tasks.index_schema(id_kind)), partitions)
        with _DataErrors():
            rows = indexes.select(tasks.PART, tasks.INFO).collect()
        if not rows:
            indexes.unpersist()
            raise ValueError("the item DataFrame is empty: nothing to search")
        infos = [(row[0], json.loads(row[1])) for row in rows]
        summary = _summarise([info for _, info in infos], self.getInputCol())
        summary.update(token=token, parts=sorted(part for part, _ in infos),
                       index_partitions=partitions, digests=integrity.digests_of(infos))
        model = ApproximateNearestNeighborsModel()
        model._set_state(items, indexes, summary, reason)
        return self._copyValues(model)


class ApproximateNearestNeighborsModel(Model, _SchemaMixin, MLReadable, MLWritable):
    """The fitted k-NN search: ``kneighbors`` and ``approxSimilarityJoin``.

    Holds the item DataFrame (with its id column) and, on the CPU engine, the table of
    serialised per-partition indexes; ``save``/``load`` write and read both, so a loaded
    model searches without rebuilding.
    """

    def __init__(self) -> None:
        super().__init__()
        self._item_df: DataFrame | None = None
        self._index_df: DataFrame | None = None
        self._summary: dict[str, Any] = {}
        self._delegate: Any = None
        self._backend_reason = ""

    def _set_state(self, item_df: DataFrame, index_df: DataFrame, summary: dict[str, Any],
                   reason: str) -> None:
        self._item_df, self._index_df, self._summary = item_df, index_df, summary
        self._backend_reason = reason

    @property
    def backendUsed(self) -> str:
        """``"cpu"`` or ``"gpu"``: where this model searches."""
        return "gpu" if self._delegate is not None else "cpu"

    @property
    def buildSummary(self) -> dict[str, Any]:
        """What the CPU engine built: dimension, id kind, and per partition the index kind,
        size, search breadth and the recall measured on held-out items at fit."""
        return json.loads(json.dumps(self._summary))

    def copy(self, extra: dict | None = None) -> ApproximateNearestNeighborsModel:
        that = super().copy(extra)
        that._set_state(self._item_df, self._index_df, self._summary, self._backend_reason)
        that._delegate = self._delegate
        return that

    def _transform(self, dataset: DataFrame) -> DataFrame:
        raise NotImplementedError("ApproximateNearestNeighborsModel does not transform; use "
                                  "kneighbors(query_df) or approxSimilarityJoin(query_df)")

    def kneighbors(self, query_df: DataFrame, sort_knn_df_by_query_id: bool = True
                   ) -> tuple[DataFrame, DataFrame, DataFrame]:
        """The k nearest items of each query.

        Returns ``(item_df_withid, query_df_withid, knn_df)`` as spark-rapids-ml does:
        the item and query DataFrames with their id columns (``unique_id`` added where
        idCol is unset) and ``knn_df(query_<idCol>, indices, distances)`` with one row per
        query, ``indices`` the item ids nearest first and ``distances`` the metric's values
        (``array<float>``; euclidean is the L2 distance, cosine is 1 - cosine similarity,
        inner_product the dot product, largest first). Fewer than k items: the list is
        padded with id ``2**63-1`` (null for string ids) and distance ``inf`` (``-inf``
        for inner_product). The CPU engine searches when ``kneighbors`` is called (a
        partition's search needs the driver to know first whether every executor had a
        local copy of it); ``knn_df`` keeps the found lists in the executors' storage and
        merges them on an action. With local copies off
        (``spark.synapseml_ext.nn.localIndexBytes=0``) or under Spark Connect 3.5, nothing
        runs until an action.
        """
        if self._delegate is not None:
            return self._delegate.kneighbors(query_df, sort_knn_df_by_query_id)
        if self._index_df is None:
            raise ValueError("this model has no index: fit it or load a saved one")
        queries = self._with_id(query_df, "query")
        query_kind = self._id_kind(queries.schema, "query")
        vector = self._vector_expr(queries.schema, "query")
        id_col = self._id_col_or_default()
        summary = self._summary
        prepared = queries.select(
            F.col(id_col).cast(tasks.spark_id_type(query_kind)).alias(tasks.ID),
            vector.alias(tasks.VEC))
        blocks = prepared.mapInArrow(
            tasks.make_block_fn({"id_kind": query_kind, "column": self.getInputCol(),
                                 "dim": summary["dim"]}),
            tasks.block_schema(query_kind))
        # The shuffle writes the blocks once (the query plan above it is not re-run per index
        # partition) and gathers them into a few groups; never through the driver.
        spark = queries.sparkSession
        groups = self.getNumQueryBlocks() or _query_groups(spark, summary["partitions"])
        cfg = {"item_kind": summary["id_kind"], "query_kind": query_kind,
               "metric": self.getMetric(), "k": self.getK(), "dim": summary["dim"],
               "search": self._search_overrides(), "token": summary.get("token"),
               "store_limit": _store_limit(spark)}
        stored = False  # whether the found lists are all in the executors' storage already
        if cfg["token"] and cfg["store_limit"] != 0 and not _is_connect(queries):
            found, stored = _search_local_first(spark, self._index_df,
                                                blocks.repartition(groups), cfg, summary,
                                                _index_tasks(spark, summary["parts"], groups))
        else:
            pairs = _index_meets_blocks(self._index_df, blocks.repartition(groups))
            found = pairs.mapInArrow(tasks.make_search_fn(cfg),
                                     tasks.found_schema(query_kind, summary["id_kind"]))
        # Stored lists are cheap to sample: ranged by query id, they are grouped for the
        # merge and sorted for knn_df by one shuffle instead of two. (Sampling lists not yet
        # found would run their search twice.)
        ranged = sort_knn_df_by_query_id and stored
        if ranged:
            found = found.repartitionByRange(tasks.FOUND_QID)
        # Always merged, even from one partition: the merge is also where a repeated query
        # id shows (more rows than index partitions).
        found = _merge_top_k(found, self.getK(), self.getMetric() != "inner_product",
                             summary["partitions"], query_kind)
        query_col = f"query_{id_col}"
        knn_df = found.select(F.col(tasks.FOUND_QID).alias(query_col), tasks.INDICES,
                              tasks.DISTANCES)
        if ranged:
            knn_df = knn_df.sortWithinPartitions(query_col)
        elif sort_knn_df_by_query_id:
            knn_df = knn_df.sort(query_col)
        return self._item_df, queries, knn_df

    def _search_overrides(self) -> dict[str, int]:
        """nprobe / ef_search set on the model after fit apply to the next search."""
        params = self._cpu_algo_params()
        knob = breadth_knob(self._cpu_algorithm())
        return {knob: params[knob]} if knob and knob in params else {}

    def approxSimilarityJoin(self, query_df: DataFrame, distCol: str = "distCol") -> DataFrame:
        """One row per (query, neighbour): ``item_df`` and ``query_df`` struct columns
        holding all columns of the item and query rows, and ``distCol``; as
        spark-rapids-ml's method (the generated ``unique_id`` is dropped from the structs
        when idCol is unset)."""
        if self._delegate is not None:
            return self._delegate.approxSimilarityJoin(query_df, distCol)
        id_col = self._id_col_or_default()
        item_df, queries, knn_df = self.kneighbors(query_df, sort_knn_df_by_query_id=False)
        pairs = knn_df.select(
            F.col(f"query_{id_col}").alias("__query_id"),
            F.explode(F.arrays_zip(tasks.INDICES, tasks.DISTANCES)).alias("__pair"),
        ).select("__query_id", F.col(f"__pair.{tasks.INDICES}").alias("__item_id"),
                 F.col(f"__pair.{tasks.DISTANCES}").alias(distCol))
        items = item_df.select(F.struct("*").alias("item_df"))
        query_rows = queries.select(F.struct("*").alias("query_df"))
        joined = (items.join(pairs, F.col(f"item_df.{id_col}") == F.col("__item_id"))
                  .join(query_rows, F.col("__query_id") == F.col(f"query_df.{id_col}")))
        if self.getIdCol() is not None:
            return joined.select("item_df", "query_df", distCol)
        return joined.select(F.col("item_df").dropFields(id_col).alias("item_df"),
                             F.col("query_df").dropFields(id_col).alias("query_df"), distCol)

    # -- persistence ---------------------------------------------------------------------

    def write(self) -> MLWriter:
        if self._delegate is not None:
            raise NotImplementedError(
                "a model fitted on the GPU backend wraps spark-rapids-ml's model, which cannot "
                "be saved; save the estimator instead, or fit with backend='cpu'")
        return _ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _ModelReader(cls)


def _query_groups(spark: SparkSession, index_partitions: int) -> int:
    """Default query groups: enough (index partition, group) tasks for every core, and no
    more, since each group reads every index partition once."""
    return max(1, math.ceil(_default_parallelism(spark) / max(1, index_partitions)))


def _index_tasks(spark: SparkSession, parts: list[int], groups: int) -> int:
    """Search tasks per query group with local copies: one per index partition, but no more
    than there are cores for (each task then searches a few partitions in turn, which saves
    a task's fixed costs per partition)."""
    return max(1, min(len(parts), math.ceil(_default_parallelism(spark) / max(1, groups))))


def _default_parallelism(spark: SparkSession) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        return int(spark.conf.get("spark.default.parallelism", "1") or 1)


def _is_connect(df: DataFrame) -> bool:
    """A Spark Connect DataFrame (whose 3.5 client cannot checkpoint)."""
    return type(df).__module__.startswith("pyspark.sql.connect")


def _store_limit(spark: SparkSession) -> int:
    try:
        text = spark.conf.get(local_store.LIMIT_CONF, None)
    except Exception:  # a Connect server that refuses the key: the default
        text = None
    return local_store.parse_limit(text)


def _by_part(index_df: DataFrame, partitions: int) -> DataFrame:
    """The index table with index partition p in shuffle partition p (one row per task, see
    :mod:`.placement`), kept on disk (not on the JVM heap, which the tasks need to pass index
    rows to Python; the OS page cache keeps hot partitions in memory anyway). Partitioned by
    the placement key so that the miss join, on the same key, needs no index shuffle."""
    return index_df.repartition(partitions, placement_key(F.col(tasks.PART), partitions)
                                ).persist(StorageLevel.DISK_ONLY)


def _search_local_first(spark: SparkSession, index_df: DataFrame, blocks: DataFrame,
                        cfg: dict[str, Any], summary: dict[str, Any], tasks_per_group: int
                        ) -> tuple[DataFrame, bool]:
    """Found rows of every (index partition, query block) pair, searched now: first with the
    executors' local index copies (the pairs carry partition numbers only), then, only for
    the blocks that found no copy, with the index bytes joined to them. Also whether all
    rows are in the executors' storage (no blocks missed, so no search is left to run)."""
    parts = summary["parts"]
    numbers = spark.range(len(parts), numPartitions=tasks_per_group).select(
        F.element_at(F.array(*[F.lit(p) for p in parts]), F.col("id").cast("int") + 1)
        .cast("int").alias(tasks.PART))
    pairs = numbers.crossJoin(blocks.hint("shuffle_replicate_nl"))
    query_kind, item_kind = cfg["query_kind"], cfg["item_kind"]
    searched = pairs.mapInArrow(tasks.make_local_search_fn(cfg),
                                tasks.local_found_schema(query_kind, item_kind))
    # Run now and keep the output in the executors' block managers (released with the
    # DataFrame): the driver must see which partitions missed before planning their
    # search, and any plan reading the index table would stream all of it through the JVM.
    missing = F.col(tasks.MISS_PART).isNotNull()
    with _DataErrors():
        searched = searched.localCheckpoint(eager=True)
        missed_parts = [row[0] for row in
                        searched.where(missing).select(tasks.MISS_PART).distinct().collect()]
    found = searched.where(F.col(tasks.FOUND_QID).isNotNull()).select(
        tasks.FOUND_QID, tasks.INDICES, tasks.DISTANCES)
    if not missed_parts:
        return found, True
    log.info("kneighbors: no local copy of index partition(s) %s on some executors; "
             "sending their bytes", sorted(missed_parts))
    # The index table is partitioned by placement key: joined on that key (one per partition
    # number), only the misses are shuffled. They are the hash side, so each index row comes
    # out followed by all its misses.
    partitions = summary["index_partitions"]
    missed = searched.where(missing).select(tasks.MISS_PART, tasks.QIDS, tasks.QVECS)
    with_bytes = index_df.where(F.col(tasks.PART).isin(missed_parts)).join(
        missed.hint("shuffle_hash"),
        placement_key(F.col(tasks.PART), partitions)
        == placement_key(F.col(tasks.MISS_PART), partitions))
    second = with_bytes.select(tasks.PART, tasks.IDS, tasks.INDEX, tasks.INFO, tasks.QIDS,
                               tasks.QVECS).mapInArrow(
        tasks.make_search_fn(cfg), tasks.found_schema(query_kind, item_kind))
    return found.unionByName(second), False


def _index_meets_blocks(index_df: DataFrame, blocks: DataFrame) -> DataFrame:
    """Every (index row, query block) pair, one task per (index partition, block partition)
    by a cartesian product (a broadcast would route one side via the driver).

    The task streams its index rows and buffers its blocks, in the order read, so an index
    row meets the group's first block before the others; only that pair keeps the index
    bytes, which therefore cross to Python once per index row and task.
    ``monotonically_increasing_id`` is the partition index << 33 plus the row's position in
    the partition: it numbers the blocks as the task reads them.
    """
    numbered = blocks.select("*", F.monotonically_increasing_id().alias("__block"))
    pairs = index_df.crossJoin(numbered.hint("shuffle_replicate_nl"))
    first = F.col("__block").bitwiseAND((1 << 33) - 1) == 0
    return pairs.select(tasks.PART, F.when(first, F.col(tasks.IDS)).alias(tasks.IDS),
                        F.when(first, F.col(tasks.INDEX)).alias(tasks.INDEX), tasks.INFO,
                        tasks.QIDS, tasks.QVECS)


def _merge_top_k(found: DataFrame, k: int, ascending: bool, index_partitions: int,
                 query_kind: str) -> DataFrame:
    """Global top-k per query from the per-partition lists (ties broken by item id); a query
    id met more than once (more than ``index_partitions`` lists) fails the job naming it."""
    zipped = found.select(tasks.FOUND_QID, F.explode(F.arrays_zip(
        tasks.DISTANCES, tasks.INDICES)).alias("__z"))
    top = zipped.groupBy(tasks.FOUND_QID).agg(
        F.slice(F.sort_array(F.collect_list("__z"), asc=ascending), 1, k).alias("__z"),
        F.count(F.lit(1)).alias("__n"))
    shown = F.col(tasks.FOUND_QID).cast("string")
    if query_kind == "string":
        shown = F.concat(F.lit("'"), shown, F.lit("'"))
    repeated = F.raise_error(F.concat(
        F.lit(f"{ERROR_PREFIX} query id "), shown,
        F.lit(" occurs more than once in the query DataFrame; idCol must identify each query "
              "uniquely")))
    merged = F.when(F.col("__n") > index_partitions * k, repeated).otherwise(F.col("__z"))
    return top.select(tasks.FOUND_QID, merged.alias("__z")).select(
        tasks.FOUND_QID, F.col(f"__z.{tasks.INDICES}").alias(tasks.INDICES),
        F.col(f"__z.{tasks.DISTANCES}").alias(tasks.DISTANCES))


def _num_partitions(df: DataFrame) -> int:
    try:
        return max(1, df.rdd.getNumPartitions())
    except Exception:  # Spark Connect has no RDDs
        return int(df.sparkSession.conf.get("spark.sql.shuffle.partitions", "200"))


def _summarise(infos: list[dict[str, Any]], column: str) -> dict[str, Any]:
    """Check that all partitions have one dimension; the model's summary of the build."""
    infos = sorted(infos, key=lambda i: -i["n"])
    dims = {i["dim"] for i in infos}
    if len(dims) > 1:
        first, other = infos[0], next(i for i in infos if i["dim"] != infos[0]["dim"])
        raise ValueError(
            f"{ERROR_PREFIX} item id {other['first_id']!r} has a {column!r} vector of dimension "
            f"{other['dim']} but item id {first['first_id']!r} has {first['dim']}; all vectors "
            "must have the same dimension")
    id_kind = "string" if isinstance(infos[0]["first_id"], str) else "long"
    keep = ("kind", "n", "params", "search", "calibration_recall", "reason", "seconds")
    return {"dim": infos[0]["dim"], "id_kind": id_kind, "partitions": len(infos),
            "items": sum(i["n"] for i in infos),
            "indexes": [{key: i[key] for key in keep} for i in infos]}


class _DataErrors:
    """Turn an executor's data error (an exception text starting with ``synapseml-ext:``)
    into a ``ValueError`` with that message on the driver."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None:
            return False
        match = re.search(re.escape(ERROR_PREFIX) + r"[^\n]*", str(error))
        if match and not isinstance(error, ValueError):
            raise ValueError(match.group(0)) from error
        return False


class _SavedDataErrors:
    """A saved table Spark cannot read (a damaged parquet footer or page, a missing file)
    as one line naming the model, instead of the reader's stack trace."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, ValueError) or ERROR_PREFIX in str(error):
            return False
        text = str(error)
        # The root cause (the last "Caused by:" of the Java trace: a checksum or decoding
        # error), else the Java exception's own message, not py4j's "An error occurred ...".
        causes = re.findall(r"Caused by: [\w.$]+: ([^\n]+)", text)
        cause = re.search(r"(?:Exception|Error): ([^\n]+)", text)
        reason = (causes[-1] if causes else cause.group(1) if cause
                  else text.strip().splitlines()[0] if text.strip() else "")
        raise ValueError(f"{ERROR_PREFIX} {self.where} cannot be read ({reason[:300]}): it is "
                         "damaged or incomplete; restore it from a copy, or fit and save the "
                         "model again") from error


def _read_saved(spark: SparkSession, path: str) -> DataFrame:
    """A saved parquet table, its page checksums verified (parquet writes them; Spark's
    reader skips the check unless asked, and object stores keep no ``.crc`` files)."""
    return spark.read.option("parquet.page.verify-checksum.enabled", "true").parquet(path)


def _executor_gpu_check(spark: SparkSession) -> tuple[str, str]:
    """backend='auto': gpu when spark-rapids-ml imports on the driver and, in a one-task
    probe job, spark-rapids-ml, cuVS and a GPU are present on an executor."""
    try:
        import spark_rapids_ml  # noqa: F401
    except ImportError:
        return "cpu", "spark-rapids-ml is not installed on the driver"
    row = (spark.range(1, numPartitions=1)
           .mapInPandas(tasks.gpu_probe, "ok boolean, reason string").head())
    if row is not None and row.ok:
        return "gpu", f"executors have {row.reason}"
    return "cpu", f"no GPU search on the executors ({row.reason if row else 'no answer'})"


class _ModelWriter(MLWriter):
    """metadata/ as DefaultParamsWriter writes it (plus the build summary), data/items and
    data/indexes as parquet."""

    def __init__(self, instance: ApproximateNearestNeighborsModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        model = self.instance
        DefaultParamsWriter.saveMetadata(model, path, self.sc,
                                         extraMetadata={"summary": model._summary})
        mode = "overwrite" if self.shouldOverwrite else "errorifexists"
        model._item_df.write.mode(mode).parquet(f"{path}/data/items")
        # In pieces (tasks.SAVE_CHUNK_BYTES), uncompressed: faiss' float data does not
        # compress, and parquet 1.13's snappy reader grows its input buffer one 4 KB step at a
        # time (PARQUET-2429), so the first read of a ~190 MB index row took 150 s per JVM
        # (2.3 s uncompressed; docs/ann.md).
        _save_chunks(model._index_df, model._summary["id_kind"]).write.mode(mode).options(
            **tasks.saved_index_options()).parquet(f"{path}/data/indexes")


class _ModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> ApproximateNearestNeighborsModel:
        where = f"the saved model at {path}"
        with _SavedDataErrors(where):
            metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        model = self.cls()
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        spark = SparkSession.builder.getOrCreate()
        summary = metadata["summary"]
        with _SavedDataErrors(where):
            indexes = _read_saved(spark, f"{path}/data/indexes")
            items = _read_saved(spark, f"{path}/data/items")
            if "parts" not in summary:  # saved before local index copies: the table's parts
                summary["parts"] = sorted(row[0] for row in indexes.select(tasks.PART).collect())
        # A token per load, never the saved one: a local copy made from other bytes under the
        # same token (the model saved earlier in this application, then altered) is not used.
        summary["token"] = local_store.new_token()
        partitions = summary.setdefault("index_partitions", max(summary["parts"]) + 1)
        if tasks.CHUNK in indexes.columns:
            indexes = _joined_chunks(indexes, summary, _store_limit(spark), path)
        indexes = _by_part(indexes, partitions)
        with _DataErrors(), _SavedDataErrors(where):
            # Read now, as fit builds now (the first search finds local copies); the join
            # checked each partition's digest, the driver checks that none is missing.
            found = [row[0] for row in indexes.select(tasks.PART).collect()]
            integrity.check_parts(found, summary["parts"], where)
            if "items" in summary and items.count() != summary["items"]:
                raise ValueError(f"{ERROR_PREFIX} {where} holds {items.count()} items where "
                                 f"{summary['items']} were saved: files of its data/items are "
                                 "missing; restore them from a copy, or fit and save the model "
                                 "again")
        model._set_state(items, indexes, summary, "loaded")
        return model


def _save_chunks(index_df: DataFrame, id_kind: str) -> DataFrame:
    """The index table as saved: each index row in pieces (ids and info on piece 0), so that
    no parquet value is larger than tasks.SAVE_CHUNK_BYTES."""
    return index_df.select(tasks.PART, tasks.IDS, tasks.INDEX, tasks.INFO).mapInArrow(
        tasks.make_save_chunks_fn({"chunk_bytes": tasks.SAVE_CHUNK_BYTES}),
        tasks.saved_index_schema(id_kind))


def _joined_chunks(pieces: DataFrame, summary: dict[str, Any], store_limit: int, path: str
                   ) -> DataFrame:
    """A saved table's pieces joined back into one index row per partition, each kept in
    the local store of the executor that joined it (as the build keeps its own)."""
    partitions = summary["index_partitions"]
    placed = (pieces.repartition(partitions, placement_key(F.col(tasks.PART), partitions))
              .sortWithinPartitions(tasks.PART, tasks.CHUNK)
              .select(tasks.PART, tasks.CHUNK, tasks.IDS, tasks.INDEX, tasks.INFO))
    cfg = {"token": summary["token"], "store_limit": store_limit,
           "digests": summary.get("digests"), "path": path}
    return placed.mapInArrow(tasks.make_join_chunks_fn(cfg),
                             tasks.index_schema(summary["id_kind"]))
