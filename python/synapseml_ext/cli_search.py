"""The ``search`` command: the k nearest rows of an ``embed`` table for each query.

Queries are texts (``--query``, a text file one per line, or a text column of csv, jsonl or
parquet), embedded with the model, runtime and precision that the table's
``_SYNAPSEML_EXT_OUTPUT`` marker records, or rows of another embeddings table. The search is
the project's stages: ``HuggingFaceSentenceEmbedder`` for the queries and
``ApproximateNearestNeighbors`` (cosine) fitted on the table, as the quickstart does.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from dataclasses import dataclass

from synapseml_ext import cli_io, cli_output
from synapseml_ext.engine.errors import UserInputError
from synapseml_ext.engine.spec import PRECISIONS, RUNTIMES

QUERY_FORMATS = {"txt": "text", "text": "text", **cli_io.FORMATS}
# One partition per part file, never split: row numbers follow the files (see numbered()).
ONE_FILE_PER_PARTITION = {"spark.sql.files.maxPartitionBytes": str(1 << 40),
                          "spark.sql.files.openCostInBytes": str(1 << 40)}
_FILE, _POS = "__synapseml_ext_file", "__synapseml_ext_pos"
_POSITION_BITS = 33  # monotonically_increasing_id(): partition << 33 | row in partition
TEXT_WIDTH, QUERY_WIDTH = 70, 40


@dataclass
class SearchPlan:
    """What ``search`` reads and writes, checked before Spark starts."""

    table: cli_io.InputPlan
    marker: dict | None
    text_col: str
    vector_col: str
    id_col: str | None          # None: the row number
    texts: list[str]            # --query texts, then the lines of a text --queries file
    queries: cli_io.InputPlan | None  # a csv, jsonl or parquet --queries
    queries_marker: dict | None
    output: cli_output.OutputPlan | None
    output_format: str


# -- before Spark --------------------------------------------------------------------------

def plan_search(args: Namespace) -> SearchPlan:
    """Check the table, the queries and --output; fill ``args.model``, ``args.runtime`` and
    ``args.precision`` from the table's marker where not given."""
    table, marker = _check_table(args)
    text_col = args.text_col or (marker or {}).get("text_col")
    vector_col = args.embeddings_col or (marker or {}).get("output_col")
    if not (text_col and vector_col):
        raise UserInputError(
            f"--table {args.table!r} has no {cli_output.MARKER} marker (it was not written by "
            "synapseml-ext embed): pass --text-col, --embeddings-col and --model")
    id_col = args.id_col or (marker or {}).get("id_col") or None
    columns = (marker or {}).get("columns")
    if columns:
        cli_io.check_columns(columns, {"--text-col": text_col, "--embeddings-col": vector_col,
                                "--id-col": id_col}, "--table")
    _resolve_encoder(args, marker)
    texts = list(args.query or [])
    queries, queries_marker = _check_queries(args, texts)
    if not texts and queries is None:
        raise UserInputError("no queries: pass --query TEXT (repeatable) or --queries FILE")
    if queries_marker and queries_marker.get("output_col") and not args.query_col:
        _check_same_model(args, marker, queries_marker)
    output = None
    fmt = cli_io.output_format(args.output, args.output_format) if args.output else ""
    if args.output:
        reads = [table, *([queries] if queries is not None else [])]
        output = cli_output.check_output(args.output, reads, args.overwrite)
    return SearchPlan(table, marker, text_col, vector_col, id_col, texts, queries,
                      queries_marker, output, fmt)


def _check_table(args: Namespace) -> tuple[cli_io.InputPlan, dict | None]:
    marker = cli_output.marker_at(args.table)
    fmt = cli_io.output_format(args.table, (marker or {}).get("format"))
    table = cli_io.check_input(args.table, fmt, "utf-8", flag="--table")
    if marker and marker.get("rows") == 0:
        raise UserInputError(f"--table {args.table!r} holds 0 rows (its {cli_output.MARKER} "
                             "marker): nothing to search; embed an input with rows first")
    return table, marker


def _resolve_encoder(args: Namespace, marker: dict | None) -> None:
    """The queries are embedded as the table was: the marker's model, runtime and
    precision, unless given."""
    marker = marker or {}
    args.from_table = [k for k in ("model", "runtime", "precision")
                       if not getattr(args, k) and marker.get(k)]
    if not args.model:
        if not marker.get("model"):
            raise UserInputError(f"--table {args.table!r} does not record its model: pass "
                                 "--model with the model that embedded it")
        args.model = marker["model"]
    runtime, precision = marker.get("runtime"), marker.get("precision")
    args.runtime = args.runtime or (runtime if runtime in RUNTIMES else "auto")
    args.precision = args.precision or (precision if precision in PRECISIONS else "auto")
    if args.runtime == "remote" and not args.endpoint:
        raise UserInputError(f"--table {args.table!r} was embedded by an embedding server "
                             "(runtime=remote): pass --endpoint (and --api-format, "
                             "--api-key-env) of the same server to embed the queries")


def _check_queries(args: Namespace, texts: list[str]
                   ) -> tuple[cli_io.InputPlan | None, dict | None]:
    """A text --queries file is read into ``texts`` now; other formats are checked."""
    if not args.queries:
        return None, None
    local = cli_io._local(args.queries)
    marker = cli_output.marker_at(args.queries)
    fmt = args.queries_format or (marker or {}).get("format")
    if fmt is None and local and os.path.isdir(local):
        fmt = cli_io._format_from_name(args.queries, QUERY_FORMATS) or "parquet"
    plan = cli_io.check_input(args.queries, fmt, args.encoding, flag="--queries",
                              format_flag="--queries-format", formats=QUERY_FORMATS)
    cli_io.check_encoding(plan, args.encoding)
    if plan.fmt != "text":
        return plan, marker
    lines = []
    for path in plan.files:
        with open(path, encoding=args.encoding) as f:
            lines.extend(line.strip() for line in f)
    found = [line for line in lines if line]
    if not found:
        raise UserInputError(f"--queries {args.queries!r} holds no query (one per line)")
    texts.extend(found)
    return None, None


def _check_same_model(args: Namespace, marker: dict | None, queries_marker: dict) -> None:
    table_model = (marker or {}).get("model") or args.model
    theirs = queries_marker.get("model")
    if theirs and table_model and not _same_model(theirs, table_model):
        raise UserInputError(
            f"--queries {args.queries!r} holds embeddings of model {theirs!r} but --table "
            f"{args.table!r} holds embeddings of {table_model!r}: they cannot be compared; "
            "embed the queries with the table's model, or give them as texts with --query-col")


def _same_model(a: str, b: str) -> bool:
    if os.path.isdir(a) and os.path.isdir(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


# -- Spark ---------------------------------------------------------------------------------

def search(spark, args: Namespace, plan: SearchPlan, started: float) -> int:
    from pyspark.sql import functions as F

    from synapseml_ext.cli_formats import write_table
    from synapseml_ext.nn import ApproximateNearestNeighbors
    from synapseml_ext.nn.transform import neighbour_rows
    from synapseml_ext.nn.vectors import NoItemsError

    items = _items(spark, plan)
    # Planned before the fit: a --queries column error is one line before the index build.
    queries, embed_stats = _queries(spark, args, plan)
    try:
        model = ApproximateNearestNeighbors(k=args.k, metric="cosine", algorithm=args.algorithm,
                                            inputCol="vec", idCol="id").fit(items)
    except NoItemsError:  # every row's --embeddings-col is null or not JSON of a vector
        raise UserInputError(
            f"no row of --table has an embedding in --embeddings-col {plan.vector_col!r} (an "
            "array of floats, or its JSON text): name the column that holds the embeddings"
        ) from None
    queries = queries.persist()  # embedded once: searched, joined and counted
    count = queries.count()
    _, _, knn = model.kneighbors(queries.select(F.col("query_id").alias("id"), "vec"))
    found = neighbour_rows(knn, "query_id")
    result = (found.join(items.select("id", "text"), on="id")
              .join(queries.select("query_id", "query"), on="query_id")
              .select("query_id", "query", "rank", "id", "distance", "text")
              .orderBy("query_id", "rank"))
    where = ""
    if plan.output is not None:
        description = {"command": "search", "table": os.path.abspath(args.table),
                       "k": args.k, "model": args.model, "format": plan.output_format}
        with cli_output.staged_output(plan.output, description) as temp:
            schema = write_table(result, temp, plan.output_format)
            description["columns"] = schema.fieldNames()
            description["schema"] = schema.jsonValue()
        where = f" into {args.output}"
    else:
        print(format_results(result.toPandas()))
    queries.unpersist()
    items_searched = model.buildSummary.get("items", "the")
    queries_word = "query" if count == 1 else "queries"
    k_said = f"k={args.k}"
    if isinstance(items_searched, int) and items_searched < args.k:
        k_said += f": the table holds fewer items, so each query gets {items_searched}"
    print(f"searched {items_searched} items for {count} {queries_word} ({k_said}){where} in "
          f"{time.time() - started:.1f}s [{_how_embedded(embed_stats)}]")
    return 0


def _how_embedded(stats) -> str:
    if stats is None:
        return "queries given as embeddings"
    value = stats.value
    return (f"queries embedded with runtime={'/'.join(sorted(value['runtime'])) or '-'}, "
            f"precision={'/'.join(sorted(value['precision'])) or '-'}")


def _items(spark, plan: SearchPlan):
    """The table as (id, text, vec), rows without an embedding (null texts) left out."""
    from pyspark.sql import functions as F

    from synapseml_ext.cli_formats import as_vectors, read_input, schema_from_marker

    df = read_input(spark, plan.table, schema=schema_from_marker(plan.marker))
    cli_io.check_columns(df.columns, {"--text-col": plan.text_col, "--embeddings-col": plan.vector_col,
                               "--id-col": plan.id_col}, "--table")
    vec = as_vectors(df, plan.vector_col)
    if plan.id_col is None:
        df = numbered(df, "__row")
        ident = F.col("__row")
    else:
        _check_id_type(df, plan.id_col)
        ident = F.col(f"`{plan.id_col}`")
    items = (df.select(ident.alias("id"), F.col(f"`{plan.text_col}`").alias("text"),
                       vec.alias("vec"))
             .where(F.col("vec").isNotNull()))
    return items


def _check_id_type(df, name: str) -> None:
    from pyspark.sql.types import IntegralType, StringType

    data_type = df.schema[name].dataType
    if not isinstance(data_type, (IntegralType, StringType)):
        raise UserInputError(f"--id-col {name!r} is a {data_type.simpleString()} column; ids "
                             "must be integers or strings: choose another column")


def _queries(spark, args: Namespace, plan: SearchPlan):
    """(query_id, query, vec) of every query and the stats of their embedding (``None``
    where all were precomputed). Query ids follow the order given: the --query texts, then
    the rows of --queries."""
    from pyspark.sql import functions as F

    from synapseml_ext.cli_formats import as_vectors, read_input, schema_from_marker

    texts = spark.createDataFrame(list(enumerate(plan.texts)), "query_id long, query string")
    vectors = None
    if plan.queries is not None:
        df = read_input(spark, plan.queries, args.encoding,
                        schema=schema_from_marker(plan.queries_marker))
        columns = df.columns
        df = numbered(df, "__row").withColumn("query_id", F.col("__row") + len(plan.texts))
        marker = plan.queries_marker or {}
        vector_col = marker.get("output_col") or plan.vector_col
        if not args.query_col and vector_col in columns:  # a table of embeddings
            text_col = marker.get("text_col") or plan.text_col
            text = (F.col(f"`{text_col}`") if text_col in columns
                    else F.lit(None).cast("string"))
            vectors = df.select("query_id", text.alias("query"),
                                as_vectors(df, vector_col, "--queries").alias("vec"))
        else:
            column = _query_column(df, columns, args, plan)
            texts = texts.unionByName(df.select("query_id", F.col(f"`{column}`").alias("query"))
                                      .where(F.col("query").isNotNull()))
    stats = None
    parts = [] if vectors is None else [vectors]
    if plan.texts or vectors is None:
        embedded, stats = _embed_texts(spark, args, texts)
        parts.insert(0, embedded)
    queries = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    return queries, stats


def _query_column(df, columns: list[str], args: Namespace, plan: SearchPlan) -> str:
    """--query-col, else the table's text column, ``query`` or ``text``, else the only
    string column of --queries."""
    from pyspark.sql.types import StringType

    if args.query_col:
        cli_io.check_columns(columns, {"--query-col": args.query_col}, "--queries")
        return args.query_col
    for name in ((plan.queries_marker or {}).get("text_col"), plan.text_col, "query", "text"):
        if name and name in columns:
            return name
    strings = [f.name for f in df.schema.fields
               if f.name in columns and isinstance(f.dataType, StringType)]
    if len(strings) == 1:
        return strings[0]
    raise UserInputError(f"cannot tell which column of --queries {args.queries!r} holds the "
                         f"queries: pass --query-col (columns: {', '.join(columns)})")


def _embed_texts(spark, args: Namespace, texts):
    """(query_id, query, vec) of the query texts, embedded as the table was."""
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    from synapseml_ext.hf.embedder import EmbedStatsAccumulator

    embedder = HuggingFaceSentenceEmbedder(
        modelName=args.model, inputCol="query", outputCol="vec", runtime=args.runtime,
        precision=args.precision, cacheDir=args.cache_dir, endpoint=args.endpoint,
        apiFormat=args.api_format, apiKeyEnv=args.api_key_env,
        maxConcurrentRequests=args.max_concurrent_requests)
    stats = EmbedStatsAccumulator.create(spark.sparkContext)
    # The CLI's one use of the stage's counting transform: which runtime the queries got.
    return embedder._transform_with_stats(texts, stats), stats


def numbered(df, name: str):
    """``df`` with column ``name``: each row's position in the files (0 first), following
    the part files in name order, as ``embed`` wrote them, and the rows within each. Needs
    the session's ONE_FILE_PER_PARTITION settings; checked."""
    from pyspark.sql import functions as F

    low = (1 << _POSITION_BITS) - 1
    marked = df.select("*", F.col("_metadata.file_name").alias(_FILE),
                       F.monotonically_increasing_id().alias(_POS))
    files = (marked.groupBy(_FILE)
             .agg(F.count(F.lit(1)).alias("rows"),
                  F.min(F.shiftright(_POS, _POSITION_BITS)).alias("first"),
                  F.max(F.shiftright(_POS, _POSITION_BITS)).alias("last"))
             .collect())
    partitions = [r["first"] for r in files]
    if any(r["first"] != r["last"] for r in files) or len(set(partitions)) != len(files):
        raise UserInputError("cannot number the rows in file order (a file was split or "
                             "shared across tasks): pass --id-col with an id column")
    offsets, done = {}, 0
    for r in sorted(files, key=lambda r: r[_FILE]):
        offsets[r[_FILE]], done = done, done + r["rows"]
    mapping = F.create_map(*[F.lit(x) for pair in offsets.items() for x in pair])
    position = mapping[F.col(_FILE)] + F.col(_POS).bitwiseAND(F.lit(low))
    return marked.select(*[F.col(f"`{c}`") for c in df.columns], position.alias(name))


def format_results(table) -> str:
    """The results as a text table: query, rank, id, distance and the item's text, each
    text on one line and shortened."""
    rows = [(_short(q, QUERY_WIDTH), str(rank), str(ident), f"{max(dist, 0.0):.4f}",
             _short(t, TEXT_WIDTH))
            for q, rank, ident, dist, t in table[["query", "rank", "id", "distance", "text"]]
            .itertuples(index=False)]
    header = ("query", "rank", "id", "distance", "text")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    right = (False, True, True, True, False)

    def line(cells) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def _short(text, width: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."
