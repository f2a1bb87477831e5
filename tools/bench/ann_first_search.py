"""Where a fitted k-NN model's first search loses time against a warm one: the index (its
local copies, mapped at search) or the application (the JVM's and the Python workers' first
run of the search plan). One process per order, on the clustered-latent vectors of
``ann_data.py`` (1M items, 10k queries, k=10, local[2], 6 GB heap):

* ``plain``: fit, then the queries searched three times;
* ``warmed``: fit, a search of other queries (2,000 of the items), then the queries three
  times.

If the queries' first search in ``warmed`` is as fast as the warm ones, what the plain first
search loses is the application's first search, whatever its queries.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_first_search.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import cached_parquet
from ann_data import CACHE, latent_set
from common import cpu_facts, markdown_table, matmul_gflops

WORKER = """
import json, sys, time
from synapseml_ext._spark import local_spark
from synapseml_ext.nn import ApproximateNearestNeighbors
items_path, queries_path, local_dir, order = sys.argv[1:5]
spark = local_spark("local[2]", "ann-first-search", conf={
    "spark.driver.memory": "6g", "spark.local.dir": local_dir,
    "spark.ui.showConsoleProgress": "false"})
items = spark.read.parquet(items_path)
queries = spark.read.parquet(queries_path)
began = time.perf_counter()
model = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id", backend="cpu").fit(items)
times = {"fit": time.perf_counter() - began}
def search(frame):
    began = time.perf_counter()
    model.kneighbors(frame.repartition(2))[2].collect()
    return time.perf_counter() - began
if order == "warmed":
    times["other queries"] = search(items.limit(2000))
times["queries"] = [search(queries) for _ in range(3)]
print(json.dumps(times))
spark.stop()
"""


def run(order: str, items: str, queries: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="spark_local_", dir=CACHE) as local_dir:
        env = {**os.environ, "SYNAPSEML_EXT_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "python")}
        done = subprocess.run([sys.executable, "-c", WORKER, items, queries, local_dir, order],
                              env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{order} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_010_000, help="items + queries (ann_data)")
    parser.add_argument("--queries-n", type=int, default=10_000)
    args = parser.parse_args()
    items, queries = latent_set(args.n, queries=args.queries_n)  # generated once, cached
    items_path, queries_path = cached_parquet(f"latent_{args.n}_q{args.queries_n}", items,
                                              queries)
    del items, queries
    print(json.dumps({**cpu_facts(), "matmul_fp32_gflops": round(matmul_gflops(), 1)}))
    rows = []
    for order in ("plain", "warmed"):
        times = run(order, str(items_path), str(queries_path))
        first, *warm = times["queries"]
        other = times.get("other queries")
        rows.append([order, f"{times['fit']:.1f}", "-" if other is None else f"{other:.2f}",
                     f"{first:.2f}", " / ".join(f"{t:.2f}" for t in warm)])
    print(markdown_table(["order", "fit s", "other queries first s", "queries: first search s",
                          "queries: next two s"], rows))


if __name__ == "__main__":
    main()
