"""k-NN at the size most users have: ours against SynapseML's CPU ``KNN``, one run.

    .venv/bin/pip install --no-deps synapseml==1.1.3   # SynapseML's Python wrappers
    flock /tmp/bench.lock .venv-spark35/bin/python tools/bench/knn_small.py

SynapseML 1.1.3's jar is built for Spark 3.5 / Scala 2.12, so this runs on the 3.5 line
(``.venv-spark35``); Spark fetches ``com.microsoft.azure:synapseml-core_2.12:1.1.3`` from
Maven Central on the first run. Data: ``--n`` latent-mixture vectors (tools/bench/ann_data.py,
L2-normalised like sentence embeddings), the last ``--queries`` of them the queries. Methods,
each fitted and searched in the same Spark application (local[2]):

* synapseml-knn: ``synapse.ml.nn.KNN`` (a ball tree built on the driver, broadcast, queried
  per row; its distance is the inner product, the same order as ours on unit vectors).
* ours-exact: ``ApproximateNearestNeighbors(algorithm="exact")``.
* ours-ivfflat: ``ApproximateNearestNeighbors()`` defaults.

Ours run with ``kneighbors`` and with ``transform`` (the drop-in for KNN's ``transform``);
SynapseML with ``transform``. Every search is collected on the driver. "total" is fit + the
first search, the cost of one job that builds and uses the index; "warm" searches the same
model again. Recall@k is against exact inner-product search in this process (faiss).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import cached_parquet, recall
from ann_data import latent_set
from common import cpu_facts, markdown_table, matmul_gflops

SYNAPSEML_JAR = "com.microsoft.azure:synapseml-core_2.12:1.1.3"


def spark_session():
    from synapseml_ext._spark import local_spark

    return local_spark("local[2]", "knn-small", conf={
        "spark.driver.memory": "6g", "spark.jars.packages": SYNAPSEML_JAR,
        "spark.ui.showConsoleProgress": "false"})


def exact_truth(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items))
    return index.search(np.ascontiguousarray(queries), k)[1]


def timed(fn):
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def synapseml_knn(spark, item_path: Path, query_path: Path, k: int) -> dict:
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F
    from synapse.ml.nn import KNN

    def features(path):
        return spark.read.parquet(str(path)).select(
            "id", array_to_vector("v").alias("features"))

    items, queries = features(item_path), features(query_path)
    knn = KNN().setFeaturesCol("features").setValuesCol("id").setOutputCol("nn").setK(k)
    model, fit_s = timed(lambda: knn.fit(items))

    def search():
        rows = (model.transform(queries).select("id", F.col("nn.value").alias("found"))
                .collect())
        return {r.id: list(r.found) for r in rows}

    found, first_s = timed(search)
    _, warm_s = timed(search)
    return {"fit_s": fit_s, "search_s": first_s, "warm_s": warm_s, "found": found}


def ours(spark, item_path: Path, query_path: Path, k: int, algorithm: str | None,
         via: str) -> dict:
    from pyspark.sql import functions as F

    from synapseml_ext.nn import ApproximateNearestNeighbors

    items = spark.read.parquet(str(item_path))
    queries = spark.read.parquet(str(query_path))
    stage = ApproximateNearestNeighbors(k=k, metric="inner_product", inputCol="v",
                                        idCol="id", outputCol="nn", backend="cpu")
    if algorithm:
        stage.setAlgorithm(algorithm)
    model, fit_s = timed(lambda: stage.fit(items))

    def search():
        if via == "transform":
            rows = (model.transform(queries).select("id", F.col("nn.value").alias("found"))
                    .collect())
            return {r.id: list(r.found) for r in rows}
        rows = model.kneighbors(queries)[2].collect()
        return {r.query_id: list(r.indices) for r in rows}

    found, first_s = timed(search)
    _, warm_s = timed(search)
    return {"fit_s": fit_s, "search_s": first_s, "warm_s": warm_s, "found": found,
            "partitions": model.buildSummary["partitions"],
            "kinds": sorted({i["kind"] for i in model.buildSummary["indexes"]})}


def report(facts: dict, results: dict[str, dict], n_items: int, dim: int, n_queries: int,
           k: int) -> str:
    """The run's facts and its table: seconds, recall, and ratios to SynapseML's KNN."""
    peer = results.get("synapseml-knn")
    header = ["method", f"recall@{k}", "fit s", "first search s", "total s",
              "warm search s", "total vs SynapseML KNN", "warm vs SynapseML KNN"]
    table = []
    for method, res in results.items():
        total = res["fit_s"] + res["search_s"]
        vs = f"{(peer['fit_s'] + peer['search_s']) / total:.1f}x" if peer else "-"
        warm = f"{peer['warm_s'] / res['warm_s']:.1f}x" if peer else "-"
        table.append([method, f"{res['recall']:.4f}", f"{res['fit_s']:.1f}",
                      f"{res['search_s']:.1f}", f"{total:.1f}", f"{res['warm_s']:.1f}", vs,
                      warm])
    head = (f"{n_items:,} x {dim} items, {n_queries:,} queries, k={k}; Spark "
            f"{facts['spark']} local[2]; {facts['cpu']} ({facts['cores']} cores; "
            f"{facts['flags']}); fp32 matmul {facts['fp32_gemm_gflops_2threads']} GFLOP/s")
    return head + "\n\n" + markdown_table(header, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=101_000, help="items + queries")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--methods", default="synapseml-knn,ours-exact,ours-ivfflat,"
                        "ours-exact-transform,ours-ivfflat-transform")
    parser.add_argument("--out", default="", help="write the table (.md) and figures (.json)")
    args = parser.parse_args()
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")

    items, queries = latent_set(args.n, queries=args.queries)
    item_path, query_path = cached_parquet(f"latent_{args.n}_q{args.queries}", items, queries)
    facts = {**cpu_facts(), "fp32_gemm_gflops_2threads": round(matmul_gflops(threads=2), 1)}
    print(json.dumps(facts), flush=True)
    truth = exact_truth(items, queries, args.k)

    spark = spark_session()
    facts["spark"] = spark.version
    results: dict[str, dict] = {}
    for method in args.methods.split(","):
        if method == "synapseml-knn":
            res = synapseml_knn(spark, item_path, query_path, args.k)
        else:
            _, algorithm, *via = method.split("-")
            res = ours(spark, item_path, query_path, args.k,
                       None if algorithm == "ivfflat" else algorithm,
                       via[0] if via else "kneighbors")
        found = res.pop("found")
        rows = np.array(sorted(found)) - len(items)
        res["recall"] = recall(np.array([found[q] for q in sorted(found)]), truth[rows])
        results[method] = res
        print(method, json.dumps(res), flush=True)
    spark.stop()

    text = report(facts, results, len(items), items.shape[1], len(queries), args.k)
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps({"facts": facts, "results": results},
                                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
