"""``ApproximateNearestNeighbors`` and its model: the Spark plumbing of k-NN search.

CPU engine (``backend="cpu"``), in Spark terms:

* ``fit``: items are hash-partitioned by id (so duplicated ids meet in one task), each
  partition builds one faiss index (``mapInArrow``), and the table of serialised indexes
  (one row per partition; with ``labelCol``, the items' labels too) is persisted and kept by
  the model: indexes are built once.
* ``kneighbors`` / ``transform``: the search plan of :mod:`.plan` (query blocks, a cartesian
  product of index partitions and query groups, the executors' local index copies first,
  the top-k lists merged per query); ``transform`` joins the lists back to the rows
  (:mod:`.transform`); with ``conditionerCol``, each partition is searched among the items
  whose label the query allows (:mod:`.filtered`).

GPU (``backend="gpu"``, or ``"auto"`` where the executors have spark-rapids-ml, cuVS and a
GPU): the fit is delegated to ``spark_rapids_ml.knn.ApproximateNearestNeighbors``.
Constructor keywords of spark-rapids-ml that are not our Params: :mod:`.dropin`; saving and
loading: :mod:`.persistence`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.util import DefaultParamsWritable, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from synapseml_ext._spark import is_connect
from synapseml_ext.contract.persistence import BridgedParamsReadable  # loads Scala-saved too
from synapseml_ext.executor_check import check_executors_of
from synapseml_ext.nn import build_task, dropin, gpu, integrity, local_store, plan, tables
from synapseml_ext.nn.engine import breadth_knob
from synapseml_ext.nn.persistence import EstimatorWriter, ModelReader, ModelWriter
from synapseml_ext.nn.placement import kept_in_place
from synapseml_ext.nn.schema import _SchemaMixin, materialized
from synapseml_ext.nn.task_config import BuildTask, LocalStore
from synapseml_ext.nn.transform import add_neighbors
from synapseml_ext.nn.vectors import ERROR_PREFIX, DataErrors, NoItemsError, VectorDataError

__all__ = ["ApproximateNearestNeighbors", "ApproximateNearestNeighborsModel"]

log = logging.getLogger("synapseml_ext.nn")


class ApproximateNearestNeighbors(Estimator, _SchemaMixin, BridgedParamsReadable,
                                  DefaultParamsWritable):
    """k approximate nearest neighbours of query vectors among item vectors.

    API-compatible with ``spark_rapids_ml.knn.ApproximateNearestNeighbors`` (its constructor
    keywords, ``kneighbors`` and ``approxSimilarityJoin``), plus a CPU engine: faiss indexes,
    one per item partition, built once at ``fit`` and saved with the model. The model also
    ``transform``s (``outputCol``, as SynapseML's ``KNNModel``) and filters by label
    (``labelCol`` / ``conditionerCol``, as ``ConditionalKNN``). See docs/ann.md.

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
                 inputCol: str | list[str] | None = None, idCol: str | None = None,
                 backend: str | None = None, numPartitions: int | None = None,
                 numQueryBlocks: int | None = None, inputCols: list[str] | None = None,
                 outputCol: str | None = None, labelCol: str | None = None,
                 conditionerCol: str | None = None, verbose: bool | int | None = None,
                 num_workers: int | None = None, float32_inputs: bool | None = None,
                 **kwargs: Any) -> None:
        """
        __init__(self, *, k=5, algorithm="ivfflat", metric="euclidean", algoParams=None,
                 inputCol=None, idCol=None, backend="auto", numPartitions=0, numQueryBlocks=0,
                 inputCols=None, outputCol="neighbors", labelCol=None, conditionerCol=None,
                 verbose=False, num_workers=None, float32_inputs=True, **kwargs)

        ``num_workers``, ``float32_inputs`` and ``**kwargs`` (``n_neighbors``,
        ``algo_params``, ``radius``) are spark-rapids-ml's keywords: see :mod:`.dropin`.
        """
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, k: int | None = None, algorithm: str | None = None,
                  metric: str | None = None, algoParams: dict[str, Any] | None = None,
                  inputCol: str | list[str] | None = None, idCol: str | None = None,
                  backend: str | None = None, numPartitions: int | None = None,
                  numQueryBlocks: int | None = None, inputCols: list[str] | None = None,
                  outputCol: str | None = None, labelCol: str | None = None,
                  conditionerCol: str | None = None, verbose: bool | int | None = None,
                  num_workers: int | None = None, float32_inputs: bool | None = None,
                  **kwargs: Any) -> ApproximateNearestNeighbors:
        """Sets params (``None`` leaves a Param unchanged)."""
        names = frozenset(param.name for param in self.params)
        return self._set_checked(**dropin.translate(self._input_kwargs, names))

    def write(self) -> MLWriter:
        return EstimatorWriter(self)

    def _fit(self, dataset: DataFrame, cpu_reason: str | None = None
             ) -> ApproximateNearestNeighborsModel:
        """``cpu_reason``: fit on the CPU engine for this reason, without the backend choice
        (:func:`.handover.fit_on_cpu`)."""
        with dropin.verbosity(self.getVerbose(), self.isSet(self.verbose)):
            return self._fit_logged(dataset, cpu_reason)

    def _fit_logged(self, dataset: DataFrame, cpu_reason: str | None
                    ) -> ApproximateNearestNeighborsModel:
        check_executors_of(dataset)
        items = self._with_id(dataset, "item", materialize=False)
        id_kind = self._id_kind(items.schema, "item")
        vector = self._vector_expr(items.schema, "item")
        label_kind = self._label_kind(items.schema)
        backend, reason = (("cpu", cpu_reason) if cpu_reason is not None
                           else self._choose_backend(dataset.sparkSession, id_kind))
        log.info("ApproximateNearestNeighbors: backend %s (%s)", backend, reason)
        if backend == "gpu":
            return self._fit_gpu(dataset, reason)
        if self.getIdCol() is None:  # generated ids must not change between fit and use
            items = materialized(items)
        return self._fit_cpu(items, id_kind, vector, label_kind, reason)

    # -- backend choice ------------------------------------------------------------------

    def _choose_backend(self, spark: SparkSession, id_kind: str) -> tuple[str, str]:
        requested = self.getBackend()
        if requested == "cpu":
            return "cpu", "backend='cpu'"
        unsupported = gpu.gpu_unsupported(self.getAlgorithm(), self.getMetric(), id_kind,
                                          filtered=self.getLabelCol() is not None)
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
                                   self.getAlgoParams(), self.getInputCol(), self.getIdCol(),
                                   num_workers=self.getNumPartitions() or None,
                                   verbose=self.getVerbose() if self.isSet(self.verbose)
                                   else None)
        delegate = gpu.rapids_estimator(kwargs).fit(dataset)
        model = ApproximateNearestNeighborsModel()
        model._delegate = delegate
        model._backend_reason = reason
        return self._copyValues(model)

    # -- CPU engine ----------------------------------------------------------------------

    def _fit_cpu(self, items: DataFrame, id_kind: str, vector: Column, label_kind: str | None,
                 reason: str) -> ApproximateNearestNeighborsModel:
        id_col = self._id_col_or_default()
        # numPartitions unset: one index per input partition, built where it is (no shuffle
        # of the vectors); set: the items hashed by id into that many.
        in_place = not self.getNumPartitions() and not is_connect(items)
        partitions = self.getNumPartitions() or _num_partitions(items)
        columns = [F.col(id_col).cast(tables.spark_id_type(id_kind)).alias(tables.ID),
                   vector.alias(tables.VEC)]
        if label_kind is not None:  # kept with the index: each partition filters its own
            columns.append(F.col(self.getLabelCol()).alias(tables.LABEL))
        prepared = items.select(*columns)
        if not in_place:
            prepared = prepared.repartition(partitions, tables.ID)
        token = local_store.new_token()
        cfg = BuildTask(id_kind, self._input_name(), self._cpu_algorithm(), self.getMetric(),
                        self._cpu_algo_params(), self.getK(), partitions,
                        LocalStore(token, plan.store_limit(items.sparkSession)),
                        label_kind, self.getLabelCol())
        # Kept where each task built its partition: the index bytes are never shuffled.
        indexes = kept_in_place(prepared.mapInArrow(build_task.make_build_fn(cfg),
                                                    tables.index_schema(id_kind, label_kind)))
        with DataErrors():
            rows = indexes.select(tables.PART, tables.INFO).collect()
        if not rows:
            indexes.unpersist()
            raise NoItemsError("the item DataFrame is empty: nothing to search")
        infos = [(row[0], json.loads(row[1])) for row in rows]
        summary = _summarise([info for _, info in infos], self._input_name())
        parts = sorted(part for part, _ in infos)
        if in_place:  # a task saw its own partition's ids only
            _check_unique_ids(indexes, id_kind)
        summary.update(token=token, parts=parts, index_partitions=max(partitions, parts[-1] + 1),
                       digests=integrity.digests_of(infos))
        if label_kind is not None:
            summary["label_kind"] = label_kind
        model = ApproximateNearestNeighborsModel()
        model._set_state(items, indexes, summary, reason)
        return self._copyValues(model)


class ApproximateNearestNeighborsModel(Model, _SchemaMixin, MLReadable, MLWritable):
    """The fitted k-NN search: ``kneighbors``, ``approxSimilarityJoin`` and ``transform``.

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
        """``dataset`` with every row and column, plus ``outputCol``: the row's k nearest items
        as ``array<struct<value: item id, distance: float>>``, nearest first (the ids and
        distances of ``kneighbors``; fewer than k entries only where fewer items, or fewer
        items with an allowed label, exist). Searches when called, as ``kneighbors``; the
        rows are joined back by a generated row id, so ``dataset`` must give the same rows
        when evaluated again (as for generated ids) and its row order is not kept."""
        with dropin.verbosity(self.getVerbose(), self.isSet(self.verbose)):
            return add_neighbors(self, dataset)

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
        runs until an action. With ``conditionerCol`` set (and a model fitted with
        ``labelCol``), each query's neighbours are items whose label is in its array.
        """
        if self._delegate is not None:
            return self._delegate.kneighbors(query_df, sort_knn_df_by_query_id)
        if self._index_df is None:
            raise ValueError("this model has no index: fit it or load a saved one")
        queries = self._with_id(query_df, "query")
        with dropin.verbosity(self.getVerbose(), self.isSet(self.verbose)):
            knn_df = plan.knn_frame(self, queries, self._id_col_or_default(),
                                    sort_knn_df_by_query_id)
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
            F.explode(F.arrays_zip(tables.INDICES, tables.DISTANCES)).alias("__pair"),
        ).select("__query_id", F.col(f"__pair.{tables.INDICES}").alias("__item_id"),
                 F.col(f"__pair.{tables.DISTANCES}").alias(distCol))
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
        return ModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return ModelReader(cls)


def _num_partitions(df: DataFrame) -> int:
    try:
        return max(1, df.rdd.getNumPartitions())
    except Exception:  # Spark Connect has no RDDs
        return int(df.sparkSession.conf.get("spark.sql.shuffle.partitions", "200"))


def _check_unique_ids(indexes: DataFrame, id_kind: str) -> None:
    """Every item id once across the index partitions (one small shuffle of the ids)."""
    ids = indexes.select(F.explode(tables.IDS).alias("__item_id"))
    with DataErrors():
        repeated = ids.groupBy("__item_id").count().where(F.col("count") > 1).head()
    if repeated is not None:
        indexes.unpersist()
        shown = repr(str(repeated[0])) if id_kind == "string" else int(repeated[0])
        raise VectorDataError(f"item id {shown} occurs {repeated[1]} times; idCol must "
                              "identify each item uniquely")


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


def _executor_gpu_check(spark: SparkSession) -> tuple[str, str]:
    """backend='auto': gpu when spark-rapids-ml imports on the driver and, in a one-task
    probe job, spark-rapids-ml, cuVS and a GPU are present on an executor."""
    try:
        import spark_rapids_ml  # noqa: F401
    except ImportError:
        return "cpu", "spark-rapids-ml is not installed on the driver"
    row = (spark.range(1, numPartitions=1)
           .mapInPandas(gpu.gpu_probe, "ok boolean, reason string").head())
    if row is not None and row.ok:
        return "gpu", f"executors have {row.reason}"
    return "cpu", f"no GPU search on the executors ({row.reason if row else 'no answer'})"
