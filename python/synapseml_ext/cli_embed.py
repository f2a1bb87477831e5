"""The ``embed`` job: the input read in order (its first ``--limit`` rows only, if asked), the
``--id-col`` checked, the texts embedded with progress in rows, the table written as parquet,
csv or jsonl and the closing line printed."""

from __future__ import annotations

import math
import os
import time
from argparse import Namespace

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType, StringType

from synapseml_ext import cli_io, cli_output
from synapseml_ext.cli_formats import read_input, write_table
from synapseml_ext.cli_progress import (
    ProgressStats,
    RowProgress,
    closing_line,
    make_progress_udf,
    resolve_mode,
)
from synapseml_ext.engine.errors import UserInputError

ROW = "__synapseml_ext_row"
PARTITION_BITS = 33  # monotonically_increasing_id(): partition index << 33 | row in partition
# Arrow batch bounds on CPU runtimes: a batch is the unit of progress, and the rows sorted by
# length together (smaller batches pad more: 128 rows ~6%, 512 ~2% on the reviews).
MIN_CHUNK, MAX_CHUNK = 128, 512


def embed(spark: SparkSession, args: Namespace, inputs: cli_io.InputPlan,
          output: cli_output.OutputPlan, fmt: str, model: str, started: float) -> int:
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    df = read_input(spark, inputs, args.encoding)
    embedder = HuggingFaceSentenceEmbedder(
        modelName=model, inputCol=args.text_col, outputCol=args.output_col,
        runtime=args.runtime, precision=args.precision, batchSize=args.batch_size,
        maxTokensPerBatch=args.max_tokens_per_batch, cacheDir=args.cache_dir,
        endpoint=args.endpoint, apiFormat=args.api_format, apiKeyEnv=args.api_key_env,
        maxConcurrentRequests=args.max_concurrent_requests,
    )
    check_columns(df, args)
    embedder.transformSchema(df.schema)  # what else the stage refuses: one line, no job
    df, total, partitions = _ordered_rows(df, args, spark.sparkContext.defaultParallelism)
    if args.id_col:
        check_unique_ids(df, args.id_col)
    spec = embedder.encoder_spec()
    chunk = _chunk_rows(spec.runtime, spark, total, partitions)
    if chunk:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk))

    stats = ProgressStats.create(spark.sparkContext)
    description = {"command": "embed", "input": os.path.abspath(args.input),
                   "text_col": args.text_col, "output_col": args.output_col, "model": model,
                   "format": fmt, "id_col": args.id_col or None, "limit": args.limit}
    every = float(os.environ.get("SYNAPSEML_EXT_PROGRESS_EVERY", "10"))
    with cli_output.staged_output(output, description) as temp, \
            RowProgress(resolve_mode(args.progress), total, stats, _channel_host(spark),
                        _model_name(args.model, model), every) as progress:
        embed_udf = make_progress_udf(spec.to_dict(), stats, progress.channel)
        out = df.withColumn(args.output_col, embed_udf(F.col(args.text_col)))
        schema = write_table(out, temp, fmt)
        value = stats.value
        ready = progress.first_ready()
        description.update(
            rows=value["rows"], nulls=value["nulls"], runtime=_one_or_all(value["runtime"]),
            precision=_one_or_all(value["precision"]), columns=schema.fieldNames(),
            schema=schema.jsonValue())
    print(closing_line(value["rows"], value["nulls"], value["tokens"], args.output, started,
                       ready, time.time(), value["runtime"], value["precision"]))
    return 0


def _ordered_rows(df: DataFrame, args: Namespace, cores: int) -> tuple[DataFrame, int, int]:
    """The rows to embed in input order, in enough partitions for every core; how many rows
    (counted per input partition: one pass over the input, no model) and partitions."""
    counts = {r["p"]: r["count"] for r in
              df.groupBy(F.spark_partition_id().alias("p")).count().collect()}
    total = sum(counts.values())
    wanted = args.partitions or cores
    limited = args.limit is not None and args.limit < total
    partitions = df.rdd.getNumPartitions()
    if not limited and partitions >= wanted:
        return df, total, partitions
    ranged = df.withColumn(ROW, F.monotonically_increasing_id())
    if limited:
        # The first rows in file order are a prefix of the row positions, so one bound
        # keeps exactly them (Spark's limit() keeps any rows, not the first ones).
        ranged = ranged.where(F.col(ROW) < first_rows_bound(counts, args.limit))
        total = args.limit
    # Range-partition on the row position: more partitions, same row order.
    ranged = ranged.repartitionByRange(wanted, ROW).sortWithinPartitions(ROW).drop(ROW)
    return ranged, total, wanted


def first_rows_bound(counts: dict[int, int], limit: int) -> int:
    """The row position (``monotonically_increasing_id``) below which lie exactly the first
    ``limit`` rows, given the rows of each input partition."""
    done = 0
    for part in sorted(counts):
        if done + counts[part] >= limit:
            return (part << PARTITION_BITS) + (limit - done)
        done += counts[part]
    return (max(counts, default=0) + 1) << PARTITION_BITS


def check_columns(df: DataFrame, args: Namespace) -> None:
    """The columns as the options name them: --text-col a text column, --id-col an integer or
    string one (what the k-NN search takes as ids), --output-col a new one."""
    cli_io.check_columns(df.columns, {"--text-col": args.text_col, "--id-col": args.id_col},
                         "--input")
    cli_io.check_new_column(df.columns, "--output-col", args.output_col, "--input")
    text_type = df.schema[args.text_col].dataType
    if not isinstance(text_type, StringType):
        raise UserInputError(f"--text-col {args.text_col!r} is a {text_type.simpleString()} "
                             "column of --input, not text: name the column that holds the texts")
    if not args.id_col:
        return
    id_type = df.schema[args.id_col].dataType
    if not isinstance(id_type, (IntegralType, StringType)):
        raise UserInputError(f"--id-col {args.id_col!r} is a {id_type.simpleString()} column; "
                             "ids must be integers or strings: choose another column")


def check_unique_ids(df: DataFrame, name: str) -> None:
    """Every row has an id and no two the same (a job over the ids, before the model runs)."""
    column = F.col(f"`{name}`")
    row = df.agg(F.count(F.lit(1)).alias("rows"), F.count(column).alias("ids"),
                 F.countDistinct(column).alias("distinct")).first()
    if row["ids"] < row["rows"]:
        raise UserInputError(f"--id-col {name!r} is empty (null) in {row['rows'] - row['ids']} "
                             "row(s): every row needs an id; fill them or choose another column")
    if row["distinct"] < row["ids"]:
        value, times = df.groupBy(column).count().where("count > 1").first()
        raise UserInputError(f"--id-col {name!r} is not unique: {value!r} appears {times} "
                             "times; choose a column whose values are unique")


def _chunk_rows(runtime: str, spark: SparkSession, total: int, partitions: int) -> int:
    """Rows per Arrow batch where the workers will embed on CPUs: about a quarter of a
    partition, between MIN_CHUNK and MAX_CHUNK; 0 (Spark's default) on GPUs and servers,
    where batches of 10,000 rows pass in about a second."""
    from synapseml_ext._spark import is_local_master

    if runtime not in ("cpu", "onnx"):
        if runtime != "auto" or not is_local_master(spark.sparkContext.master):
            return 0
        from synapseml_ext.engine.hardware import cuda_device_count

        if cuda_device_count():
            return 0
    per_partition = math.ceil(total / max(partitions, 1) / 4)
    return min(MAX_CHUNK, max(MIN_CHUNK, per_partition))


def _channel_host(spark: SparkSession) -> str | None:
    """Where the tasks can reach the driver: loopback in local mode, else the driver's
    host as Spark gives it to the executors."""
    from synapseml_ext._spark import is_local_master

    sc = spark.sparkContext
    if is_local_master(sc.master):
        return "127.0.0.1"
    return sc.getConf().get("spark.driver.host")


def _model_name(given: str, model: str) -> str:
    return given or f"all-MiniLM-L6-v2 (bundled, {model})"


def _one_or_all(values: set[str]) -> str | list[str] | None:
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else (ordered or None)
