"""The CPU engine's search plan in Spark: query blocks, (index partition, query group) tasks
with the executors' local index copies first, the bytes joined only to the blocks that
missed, and the per-partition top-k lists merged per query. ``kneighbors`` and ``transform``
both run it (:func:`knn_frame`); docs/ann.md explains the choices.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from synapseml_ext._spark import is_connect
from synapseml_ext.nn import local_store, search_tasks, tables
from synapseml_ext.nn.placement import placement_key
from synapseml_ext.nn.task_config import BlockTask, LocalStore, SearchTask
from synapseml_ext.nn.vectors import ERROR_PREFIX, DataErrors

log = logging.getLogger("synapseml_ext.nn")


def knn_frame(model: Any, queries: DataFrame, id_col: str, sort: bool) -> DataFrame:
    """``knn_df(query_<id_col>, indices, distances)`` of the CPU ``model`` for ``queries``
    (which hold ``id_col``, the input column(s) and, when filtering, the conditionerCol)."""
    summary = model._summary
    query_kind = model._id_kind(queries.schema, "query", id_col)
    label_kind = summary.get("label_kind")
    conditions = model._conditioner_expr(queries.schema, label_kind)
    label_kind = label_kind if conditions is not None else None  # filter only when asked
    columns = [F.col(id_col).cast(tables.spark_id_type(query_kind)).alias(tables.ID),
               model._vector_expr(queries.schema, "query").alias(tables.VEC)]
    if conditions is not None:
        columns.append(conditions.alias(tables.COND))
    blocks = queries.select(*columns).mapInArrow(
        search_tasks.make_block_fn(BlockTask(query_kind, model._input_name(), summary["dim"],
                                             label_kind, model.getConditionerCol())),
        tables.block_schema(query_kind, label_kind))
    # The shuffle writes the blocks once (the query plan above it is not re-run per index
    # partition) and gathers them into a few groups; never through the driver.
    spark = queries.sparkSession
    groups = model.getNumQueryBlocks() or query_groups(spark, summary["partitions"])
    cfg = SearchTask(summary["id_kind"], query_kind, model.getMetric(), model.getK(),
                     summary["dim"], model._search_overrides(),
                     LocalStore(summary.get("token"), store_limit(spark)), label_kind)
    stored = False  # whether the found lists are all in the executors' storage already
    if cfg.store.token and cfg.store.limit != 0 and not is_connect(queries):
        found, stored = _search_local_first(spark, model._index_df, blocks.repartition(groups),
                                            cfg, summary,
                                            _index_tasks(spark, summary["parts"], groups))
    else:
        pairs = _index_meets_blocks(model._index_df, blocks.repartition(groups), summary,
                                    label_kind)
        found = pairs.mapInArrow(search_tasks.make_search_fn(cfg),
                                 tables.found_schema(query_kind, summary["id_kind"]))
    # Stored lists are cheap to sample: ranged by query id, they are grouped for the
    # merge and sorted for knn_df by one shuffle instead of two. (Sampling lists not yet
    # found would run their search twice.)
    ranged = sort and stored
    if ranged:
        found = found.repartitionByRange(tables.FOUND_QID)
    # Always merged, even from one partition: the merge is also where a repeated query
    # id shows (more rows than index partitions).
    found = _merge_top_k(found, model.getK(), model.getMetric() != "inner_product",
                         summary["partitions"], query_kind)
    query_col = f"query_{id_col}"
    knn_df = found.select(F.col(tables.FOUND_QID).alias(query_col), tables.INDICES,
                          tables.DISTANCES)
    if ranged:
        return knn_df.sortWithinPartitions(query_col)
    return knn_df.sort(query_col) if sort else knn_df


def query_groups(spark: SparkSession, index_partitions: int) -> int:
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


def store_limit(spark: SparkSession) -> int:
    try:
        text = spark.conf.get(local_store.LIMIT_CONF, None)
    except Exception:  # a Connect server that refuses the key: the default
        text = None
    return local_store.parse_limit(text)


def _search_local_first(spark: SparkSession, index_df: DataFrame, blocks: DataFrame,
                        cfg: SearchTask, summary: dict[str, Any], tasks_per_group: int
                        ) -> tuple[DataFrame, bool]:
    """Found rows of every (index partition, query block) pair, searched now: first with the
    executors' local index copies (the pairs carry partition numbers only), then, only for
    the blocks that found no copy, with the index bytes joined to them. Also whether all
    rows are in the executors' storage (no blocks missed, so no search is left to run)."""
    parts = summary["parts"]
    numbers = spark.range(len(parts), numPartitions=tasks_per_group).select(
        F.element_at(F.array(*[F.lit(p) for p in parts]), F.col("id").cast("int") + 1)
        .cast("int").alias(tables.PART))
    pairs = numbers.crossJoin(blocks.hint("shuffle_replicate_nl"))
    query_kind, item_kind = cfg.query_kind, cfg.item_kind
    searched = pairs.mapInArrow(search_tasks.make_local_search_fn(cfg),
                                tables.local_found_schema(query_kind, item_kind,
                                                         cfg.label_kind))
    # Run now and keep the output in the executors' block managers (released with the
    # DataFrame): the driver must see which partitions missed before planning their
    # search, and any plan reading the index table would stream all of it through the JVM.
    missing = F.col(tables.MISS_PART).isNotNull()
    with DataErrors():
        searched = searched.localCheckpoint(eager=True)
        missed_parts = [row[0] for row in
                        searched.where(missing).select(tables.MISS_PART).distinct().collect()]
    found = searched.where(F.col(tables.FOUND_QID).isNotNull()).select(
        tables.FOUND_QID, tables.INDICES, tables.DISTANCES)
    if not missed_parts:
        return found, True
    log.info("kneighbors: no local copy of index partition(s) %s on some executors; "
             "sending their bytes", sorted(missed_parts))
    # Only the missed partitions' index rows move, one per task (by placement key), with
    # their misses as the hash side, so each index row comes out followed by all its misses.
    partitions = summary["index_partitions"]
    query_columns = _query_columns(cfg.label_kind)
    missed = searched.where(missing).select(tables.MISS_PART, *query_columns)
    index_key = placement_key(F.col(tables.PART), partitions)
    miss_key = placement_key(F.col(tables.MISS_PART), partitions)
    with_bytes = (index_df.where(F.col(tables.PART).isin(missed_parts))
                  .repartition(partitions, index_key)
                  .join(missed.repartition(partitions, miss_key).hint("shuffle_hash"),
                        index_key == miss_key))
    second = with_bytes.select(*_index_columns(summary), *query_columns
                               ).mapInArrow(search_tasks.make_search_fn(cfg),
                                            tables.found_schema(query_kind, item_kind))
    return found.unionByName(second), False


def _query_columns(label_kind: str | None) -> list[str]:
    """A block's columns: ids, vectors (and allowed labels when filtering)."""
    return [tables.QIDS, tables.QVECS] + ([tables.QCONDS] if label_kind else [])


def _index_columns(summary: dict[str, Any]) -> list[str]:
    """An index row's columns a search reads: all of them (a labelled model's labels even
    when not filtering, since the search keeps a local copy of the row it received)."""
    return [tables.PART, tables.IDS, tables.INDEX, tables.INFO] + (
        [tables.LABELS] if summary.get("label_kind") else [])


def _index_meets_blocks(index_df: DataFrame, blocks: DataFrame, summary: dict[str, Any],
                        label_kind: str | None) -> DataFrame:
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
    heavy = [c for c in _index_columns(summary) if c not in (tables.PART, tables.INFO)]
    return pairs.select(tables.PART, *[F.when(first, F.col(c)).alias(c) for c in heavy],
                        tables.INFO, *_query_columns(label_kind))


def _merge_top_k(found: DataFrame, k: int, ascending: bool, index_partitions: int,
                 query_kind: str) -> DataFrame:
    """Global top-k per query from the per-partition lists (ties broken by item id); a query
    id met more than once (more than ``index_partitions`` lists) fails the job naming it."""
    zipped = found.select(tables.FOUND_QID, F.explode(F.arrays_zip(
        tables.DISTANCES, tables.INDICES)).alias("__z"))
    top = zipped.groupBy(tables.FOUND_QID).agg(
        F.slice(F.sort_array(F.collect_list("__z"), asc=ascending), 1, k).alias("__z"),
        F.count(F.lit(1)).alias("__n"))
    shown = F.col(tables.FOUND_QID).cast("string")
    if query_kind == "string":
        shown = F.concat(F.lit("'"), shown, F.lit("'"))
    repeated = F.raise_error(F.concat(
        F.lit(f"{ERROR_PREFIX} query id "), shown,
        F.lit(" occurs more than once in the query DataFrame; idCol must identify each query "
              "uniquely")))
    merged = F.when(F.col("__n") > index_partitions * k, repeated).otherwise(F.col("__z"))
    return top.select(tables.FOUND_QID, merged.alias("__z")).select(
        tables.FOUND_QID, F.col(f"__z.{tables.INDICES}").alias(tables.INDICES),
        F.col(f"__z.{tables.DISTANCES}").alias(tables.DISTANCES))
