"""nlist through Spark: fit seconds, first and warm search seconds and recall@10 of our
ivfflat with nlist set to multiples of sqrt(n) and with the default, in one Spark run (the
same data and partitions as ann_cpu.py's 1M benchmark).

    flock /tmp/bench.lock .venv/bin/python tools/bench/ivf_nlist_spark.py --factors 2,4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import bench_spark, cached_parquet, faiss_flat, ours, recall
from ann_data import latent_set
from common import cpu_facts, matmul_gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1_010_000, help="items + queries")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--factors", default="2,4", help="nlist = factor * sqrt(items per "
                                                          "partition); the default runs last")
    args = parser.parse_args()
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")

    items, queries = latent_set(args.n, queries=args.queries)
    item_path, query_path = cached_parquet(f"latent_{args.n}_q{args.queries}", items, queries)
    print(json.dumps({**cpu_facts(), "fp32_gemm_gflops_2threads":
                      round(matmul_gflops(threads=2), 1)}), flush=True)
    truth, _ = faiss_flat(items, queries, 10)
    spark = bench_spark("ivf-nlist")
    per_partition = len(items) / args.partitions
    runs = [(f"nlist {round(float(f) * math.sqrt(per_partition))} ({f}·√n)",
             {"nlist": round(float(f) * math.sqrt(per_partition))})
            for f in args.factors.split(",") if f]
    for label, params in [*runs, ("default", None)]:
        res = ours(spark, item_path, query_path, 10, "ivfflat", args.partitions, len(queries),
                   algo_params=params, save=False)
        found = recall(res["found"], truth[res["qids"] - len(items)])
        print(label, json.dumps({
            "fit_s": round(res["fit_s"], 1), "first_search_s": round(res["search_s"], 2),
            "warm_search_s": round(res["sweep"][0]["search_s"], 2), "recall": round(found, 4),
            "indexes": [{**i["params"], **i["search"]} for i in res["indexes"]]}), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
