"""The seed quickstart's benchmark, on one machine: embed N rows with MiniLM, fit the ANN
stage, find k=5 neighbours of "desserts" and "disgusting", join back to the text.

    .venv/bin/python tools/bench/seed_quickstart.py [--sizes 100,1000,10000,100000]

Rows are built exactly as the seed builds them: the 1000 reviews as
"Title: <Summary>; Content: <Text>"; above 1000 rows the cross join of the reviews with
themselves concatenated as data + ". \\n" + data_, with an id, shuffled with seed 42, then
limited to N. Each size is timed step by step; beside ours the seed's own table (seconds):
6x A100 with TensorRT + RAPIDS, and Azure OpenAI embeddings + CPU KNN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    MINILM_FLOP_PER_TOKEN,
    cpu_facts,
    markdown_table,
    matmul_gflops,
)

SEED_GPU = {100: 51.72, 1000: 35.22, 10000: 68.22, 100000: 400.34}
SEED_OPENAI_CPU_KNN = {100: 8.71, 1000: 81.67, 10000: 914.65, 100000: 9892.0}
QUERIES = ("desserts", "disgusting")


def seed_rows(spark, csv: Path, n: int):
    from pyspark.sql import functions as F

    df = spark.read.options(inferSchema="True", delimiter=",", header=True,
                            multiLine=True, escape='"').csv(str(csv))
    df = df.withColumn("data", F.format_string("Title: %s; Content: %s",
                                               F.trim(df.Summary), F.trim(df.Text)))
    if n > 1000:
        pairs = df.select("data").crossJoin(df.select(F.col("data").alias("data_")))
        df = (pairs.select(F.concat(F.col("data"), F.lit(". \n"), F.col("data_")).alias("data"))
              .withColumn("id", F.monotonically_increasing_id())
              .orderBy(F.rand(42)))
    else:
        df = df.select("data").withColumn("id", F.monotonically_increasing_id())
    return df.limit(n)


def run_size(spark, csv: Path, n: int, model: str, cache_dir: str) -> dict:
    from pyspark.sql import functions as F

    from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    from synapseml_ext.nn import ApproximateNearestNeighbors

    times = {}
    started = time.perf_counter()
    df = seed_rows(spark, csv, n).repartition(spark.sparkContext.defaultParallelism).cache()
    df.count()
    times["load"] = time.perf_counter() - started

    step = time.perf_counter()
    embedder = HuggingFaceSentenceEmbedder(modelName=model, inputCol="data",
                                           outputCol="embeddings", cacheDir=cache_dir)
    embeddings = embedder.transform(df).select("id", "embeddings").cache()
    embeddings.count()
    queries = spark.createDataFrame(list(enumerate(QUERIES, start=1)), "id long, data string")
    query_embeddings = embedder.transform(queries).select("id", "embeddings").cache()
    query_embeddings.count()
    times["embed"] = time.perf_counter() - step

    step = time.perf_counter()
    knn_model = ApproximateNearestNeighbors(k=5).setInputCol("embeddings").setIdCol("id") \
        .fit(embeddings)
    _, _, knn_df = knn_model.kneighbors(query_embeddings)
    result = (
        knn_df.withColumn("zipped", F.explode(F.arrays_zip(F.col("indices"), F.col("distances"))))
        .select(F.col("query_id"), F.col("zipped.indices").alias("id"),
                F.col("zipped.distances").alias("distance"))
        .join(df, on="id", how="inner")
        .select("query_id", "id", "data", "distance")
    )
    rows = result.collect()
    times["ann fit + search + join"] = time.perf_counter() - step
    times["total"] = time.perf_counter() - started
    times["tokens per row"] = tokens_per_row(df, model)  # not timed
    assert len(rows) == 5 * len(QUERIES), len(rows)
    first = {r.query_id: r.data for r in sorted(rows, key=lambda r: r.distance)}
    times["top hit"] = {QUERIES[q - 1]: text[:80] for q, text in first.items()}
    for frame in (df, embeddings, query_embeddings):
        frame.unpersist()
    return times


def tokens_per_row(df, model: str, sample: int = 5000) -> float:
    """Mean tokens per row after truncation, over the first ``sample`` rows (shuffled rows,
    so a random sample): what the embedding's share of the matmul rate is computed from."""
    from transformers import AutoTokenizer

    from synapseml_ext.engine.encoder import tokenize
    from synapseml_ext.engine.model_files import cached_model_files

    texts = [r.data for r in df.select("data").limit(sample).collect()]
    files = cached_model_files(model)
    tokens = tokenize(AutoTokenizer.from_pretrained(str(files.transformer_dir)), files, texts)
    return float(tokens.lengths.mean()) if len(texts) else 0.0


def share(n: int, t: dict, bf16_gflops: float) -> float:
    """Embedding FLOP/s over the same-run 2-thread bf16 matmul rate (precision auto picks bf16
    on CPUs with AVX512-BF16 or AMX; MiniLM's FLOP per token as in common.py)."""
    return n * t["tokens per row"] / t["embed"] * MINILM_FLOP_PER_TOKEN / (bf16_gflops * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")

    from synapseml_ext._spark import bundled_model_dir, local_spark

    facts = cpu_facts()
    fp32, bf16 = matmul_gflops("float32", threads=2), matmul_gflops("bfloat16", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    spark = local_spark("local[2]", "seed quickstart benchmark",
                        conf={"spark.ui.showConsoleProgress": "false",
                              "spark.driver.memory": "6g"})
    model = bundled_model_dir()
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        results[n] = run_size(spark, args.csv, n, model, args.cache_dir)
        t = results[n]
        print(f"{n:>7} rows: total {t['total']:.1f}s (load {t['load']:.1f}, embed "
              f"{t['embed']:.1f}, ann+join {t['ann fit + search + join']:.1f}); top hits "
              f"{t['top hit']}", flush=True)
    spark.stop()

    header = ["rows", "load (s)", "embed (s)", "ANN fit + search + join (s)", "total (s)",
              "embed rows/s", "tokens/row", "share of bf16 matmul", "seed 6x A100 (s)", "seed OpenAI + CPU KNN (s)", "vs 6x A100"]
    rows = []
    for n, t in results.items():
        rows.append([f"{n:,}", round(t["load"], 1), round(t["embed"], 1),
                     round(t["ann fit + search + join"], 1), round(t["total"], 1),
                     round(n / t["embed"], 1), round(t["tokens per row"], 1),
                     f"{100 * share(n, t, bf16):.0f}%", SEED_GPU.get(n, "-"),
                     SEED_OPENAI_CPU_KNN.get(n, "-"),
                     f"{SEED_GPU[n] / t['total']:.2f}x" if n in SEED_GPU else "-"])
    print()
    print(markdown_table(header, rows))
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": {"fp32": fp32, "bf16": bf16},
                                         "sizes": results}, indent=2, default=str))
    print("\ndocs' plot: put the totals in tools/bench/results/figures.json (\"quickstart\"), "
          "then run tools/bench/plot_benchmarks.py")


if __name__ == "__main__":
    main()
