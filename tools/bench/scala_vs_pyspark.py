"""Rows/s of the embedder called from a Scala job vs from PySpark, in one run, on local[2].

    flock /tmp/bench.lock .venv/bin/python tools/bench/scala_vs_pyspark.py [--runtime auto]

Both sides embed the same parquet input (the 1000 fine-food reviews as "Title: ...;
Content: ...", repartitioned to 2 partitions by id and cached) with the same Params, in a
fresh spark-submit JVM each, through the same executor function (hf.embedder.embed_batches)
under a scalar-iterator pandas UDF. Each process runs once cold (Python workers start, the
model loads) and then --warm times, writing every column to Spark's no-op sink. The sides
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
    if side == "scala":
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
    parser.add_argument("--side", choices=["pyspark"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "pyspark":
        pyspark_side(args)
        return

    import pandas as pd

    from synapseml_ext._spark import bundled_model_dir

    facts = cpu_facts()
    gemm = matmul_gflops("float32", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {gemm:.0f} GFLOP/s")
    jars = build_jars()
    texts = seed_texts_from_csv(args.csv)
    args.model = bundled_model_dir()
    args.input = str(Path(args.cache_dir) / "scala_vs_pyspark_input.parquet")
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": range(len(texts)), "data": texts}).to_parquet(args.input, index=False)

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
    print(f"\nScala/PySpark = {ratio:.3f} (target >= 0.95); runtime={args.runtime}, "
          f"{args.partitions} partitions, {2 * args.rounds * args.warm} warm runs per side")


if __name__ == "__main__":
    main()
