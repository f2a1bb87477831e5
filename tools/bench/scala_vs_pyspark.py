"""Rows/s of a stage called from a Scala job vs from PySpark, in one run, on local[2].

    flock /tmp/bench.lock .venv/bin/python tools/bench/scala_vs_pyspark.py [--runtime auto]
    flock /tmp/bench.lock .venv/bin/python tools/bench/scala_vs_pyspark.py --stage knn

--stage knn: fit + kneighbors of ApproximateNearestNeighbors (ivfflat, k=10, backend cpu:
"auto" probes the executors for a GPU at each PySpark fit, and is the CPU engine from Scala)
on --items random clustered 64-dim vectors and --queries queries; the Scala stage runs the
PySpark stage in a driver-side Python process, which its cold run starts.

Both sides embed the same parquet input (the 1000 fine-food reviews as "Title: ...;
Content: ...", repartitioned to 2 partitions by id and cached) with the same Params, in a
fresh spark-submit JVM each; the Scala stage runs the PySpark stage (the same pandas UDF plan)
in a driver-side Python process, which its cold run starts. Each process runs once cold
(Python workers start, the model loads) and then --warm times, writing every column to
Spark's no-op sink. The sides
alternate (PySpark, Scala, Scala, PySpark) x --rounds to cancel drift; the table takes the
median warm run per side. Target: Scala/PySpark >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    REPO,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    seed_texts_from_csv,
)

SCALA_MAIN = "io.github.synapsemlext.bench.EmbedThroughput"
SCALA_KNN_MAIN = "io.github.synapsemlext.bench.KnnThroughput"


def pyspark_side(args: argparse.Namespace) -> None:
    """The PySpark half, run in its own spark-submit process (mirror of EmbedThroughput)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    spark = SparkSession.builder.appName("scala_vs_pyspark (PySpark)").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(args.input).repartition(args.partitions, F.col("id")).cache()
    rows = df.count()
    stage = HuggingFaceSentenceEmbedder(modelName=args.model, inputCol="data",
                                        outputCol="embeddings", runtime=args.runtime,
                                        cacheDir=args.cache_dir)
    seconds = []
    for _ in range(args.warm + 1):
        started = time.perf_counter()
        stage.transform(df).write.format("noop").mode("overwrite").save()
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"side": "pyspark", "rows": rows, "seconds": seconds}))
    spark.stop()


def pyspark_knn_side(args: argparse.Namespace) -> None:
    """The PySpark half of --stage knn (mirror of KnnThroughput)."""
    from pyspark.sql import SparkSession

    from synapseml_ext.nn import ApproximateNearestNeighbors

    spark = SparkSession.builder.appName("scala_vs_pyspark knn (PySpark)").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    items = spark.read.parquet(args.input).repartition(args.partitions).cache()
    queries = spark.read.parquet(args.queries_input).cache()
    rows = items.count() + queries.count()
    ann = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id", algorithm="ivfflat",
                                      backend="cpu", numPartitions=args.partitions)
    seconds = []
    for _ in range(args.warm + 1):
        started = time.perf_counter()
        ann.fit(items).kneighbors(queries)[2].write.format("noop").mode("overwrite").save()
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"side": "pyspark", "rows": rows, "seconds": seconds}))
    spark.stop()


def spark_submit(args: argparse.Namespace, side: str, jars: dict[str, Path]) -> dict:
    import pyspark

    python_path = os.pathsep.join(filter(None, [str(REPO / "python"),
                                                os.environ.get("PYTHONPATH")]))
    command = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
               "--master", f"local[{args.partitions}]",
               "--driver-memory", "2g",
               "--conf", "spark.ui.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false",
               "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", f"spark.executorEnv.PYTHONPATH={python_path}",
               "--conf", "spark.executorEnv.SYNAPSEML_EXT_LOG_LEVEL=WARNING"]
    if side == "scala" and args.stage == "knn":
        command += ["--jars", str(jars["main"]), "--class", SCALA_KNN_MAIN, str(jars["bench"]),
                    args.input, args.queries_input, "10", str(args.warm), str(args.partitions)]
    elif side == "pyspark" and args.stage == "knn":
        command += [__file__, "--side", "pyspark", "--stage", "knn", "--input", args.input,
                    "--queries-input", args.queries_input, "--warm", str(args.warm),
                    "--partitions", str(args.partitions)]
    elif side == "scala":
        command += ["--jars", str(jars["main"]), "--class", SCALA_MAIN, str(jars["bench"]),
                    args.input, args.model, args.runtime, args.cache_dir, str(args.warm),
                    str(args.partitions)]
    else:
        command += [__file__, "--side", "pyspark", "--input", args.input, "--model", args.model,
                    "--runtime", args.runtime, "--cache-dir", args.cache_dir,
                    "--warm", str(args.warm), "--partitions", str(args.partitions)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": python_path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("{"))
    return json.loads(line)


def build_jars() -> dict[str, Path]:
    subprocess.run([str(REPO / "sbt"), "package", "bench/package"], cwd=REPO, check=True,
                   stdin=subprocess.DEVNULL)
    return {"main": REPO / "target/scala-2.12/synapseml-ext_2.12-0.1.0.jar",
            "bench": REPO / "tools/bench/scala/target/scala-2.12/synapseml-ext-bench_2.12-0.1.0.jar"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--warm", type=int, default=3, help="warm runs per process")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of (PySpark, Scala, Scala, PySpark) processes")
    parser.add_argument("--stage", choices=["embed", "knn"], default="embed")
    parser.add_argument("--items", type=int, default=100_000, help="--stage knn: item vectors")
    parser.add_argument("--queries", type=int, default=5_000, help="--stage knn: queries")
    parser.add_argument("--side", choices=["pyspark"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--queries-input", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "pyspark":
        (pyspark_knn_side if args.stage == "knn" else pyspark_side)(args)
        return

    import pandas as pd

    from synapseml_ext._spark import bundled_model_dir

    facts = cpu_facts()
    gemm = matmul_gflops("float32", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {gemm:.0f} GFLOP/s")
    jars = build_jars()
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    if args.stage == "knn":
        write_knn_input(args)
    else:
        texts = seed_texts_from_csv(args.csv)
        args.model = bundled_model_dir()
        args.input = str(Path(args.cache_dir) / "scala_vs_pyspark_input.parquet")
        pd.DataFrame({"id": range(len(texts)), "data": texts}).to_parquet(args.input,
                                                                          index=False)

    runs: dict[str, list[dict]] = {"pyspark": [], "scala": []}
    for side in ("pyspark", "scala", "scala", "pyspark") * args.rounds:
        load = os.getloadavg()[0]
        result = spark_submit(args, side, jars)
        runs[side].append(result)
        print(f"{side}: cold {result['seconds'][0]:.1f}s, warm "
              + ", ".join(f"{s:.1f}s" for s in result["seconds"][1:])
              + f" (1-min load average before: {load:.2f})", flush=True)

    table, rates = [], {}
    for side, label in (("pyspark", "PySpark-called stage"), ("scala", "Scala-called stage")):
        warm = [s for r in runs[side] for s in r["seconds"][1:]]
        cold = [r["seconds"][0] for r in runs[side]]
        rows = runs[side][0]["rows"]
        rates[side] = rows / statistics.median(warm)
        table.append([label, rows, round(rates[side], 1), f"{statistics.median(warm):.2f}s",
                      f"{min(warm):.2f}s / {max(warm):.2f}s", f"{statistics.median(cold):.1f}s"])
    ratio = rates["scala"] / rates["pyspark"]
    for row in table:
        row.append(f"{rates['scala' if row[0].startswith('Scala') else 'pyspark'] / rates['pyspark']:.3f}")
    print()
    print(markdown_table(["caller", "rows", "rows/s (median warm)", "median warm run",
                          "fastest / slowest warm", "median cold run", "vs PySpark"], table))
    what = (f"k-NN fit + kneighbors, {args.items} items, {args.queries} queries"
            if args.stage == "knn" else f"runtime={args.runtime}")
    print(f"\nScala/PySpark = {ratio:.3f} (target >= 0.95); {what}, "
          f"{args.partitions} partitions, {2 * args.rounds * args.warm} warm runs per side")


def write_knn_input(args: argparse.Namespace) -> None:
    """Clustered random vectors (64 dims, 100 clusters) as parquet: items and queries."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 64)).astype(np.float32)
    for name, n, first in (("items", args.items, 0), ("queries", args.queries, 10**9)):
        vectors = centres[rng.integers(0, 100, n)] + 0.3 * rng.normal(size=(n, 64))
        path = Path(args.cache_dir) / f"scala_vs_pyspark_knn_{name}.parquet"
        pd.DataFrame({"id": np.arange(first, first + n),
                      "v": list(vectors.astype(np.float32))}).to_parquet(path, index=False)
        setattr(args, "input" if name == "items" else "queries_input", str(path))


if __name__ == "__main__":
    main()
