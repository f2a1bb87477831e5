"""How many inverted lists per partition: build seconds against search seconds at equal
recall, for the engine's IVF-Flat (``build_index`` as a fit task runs it, one thread) on
partitions of the cached latent set, with exact (flat) search beside it.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ivf_nlist.py --sizes 50000,125000 \\
        --factors 1,2,4 --queries 5000

Each row: nlist = factor * sqrt(n), nprobe tuned at build to recall 0.95 (the default), the
recall@10 of the held-out queries against exact search, build seconds, search seconds for
``--queries`` queries, and after how many queries the index has paid for its build against
flat search (build / (flat search - ivf search) per query).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import recall
from ann_data import latent_set
from common import cpu_facts, markdown_table, matmul_gflops

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="50000,125000", help="items per partition")
    parser.add_argument("--factors", default="1,2,4", help="nlist = factor * sqrt(n)")
    parser.add_argument("--points", default="96", help="training points per list")
    parser.add_argument("--queries", type=int, default=5000)
    args = parser.parse_args()

    import faiss

    from synapseml_ext.nn import index_build

    faiss.omp_set_num_threads(1)
    print(cpu_facts(), f"fp32 matmul 1 thread {matmul_gflops(threads=1):.1f} GFLOP/s",
          flush=True)
    sizes = [int(v) for v in args.sizes.split(",")]
    items, queries = latent_set(1_010_000, queries=10_000)
    queries = np.ascontiguousarray(queries[: args.queries])
    rows = []
    for n in sizes:
        part = np.ascontiguousarray(items[:n])
        flat = index_build.build_index(part, "exact", "euclidean", {}, K)
        began = time.perf_counter()
        _, truth = flat.search(queries, K)
        flat_s = time.perf_counter() - began
        rows.append([n, "flat", "-", "-", 1.0, round(flat.info.seconds, 2), round(flat_s, 2),
                     "-"])
        for points in (int(v) for v in args.points.split(",")):
            index_build.TRAIN_POINTS_PER_LIST = points
            for factor in (float(v) for v in args.factors.split(",")):
                nlist = round(factor * math.sqrt(n))
                built = index_build.build_index(part, "ivfflat", "euclidean", {"nlist": nlist}, K)
                began = time.perf_counter()
                _, found = built.search(queries, K)
                search_s = time.perf_counter() - began
                if built.order is not None:  # labels are insertion positions
                    found = np.where(found >= 0, built.order[np.maximum(found, 0)], -1)
                saved = (flat_s - search_s) / len(queries)
                pays = f"{built.info.seconds / saved:,.0f}" if saved > 0 else "never"
                rows.append([n, f"{factor:g}·√n = {nlist} ({points} pts/list)",
                             built.info.search["nprobe"], built.info.calibration_recall,
                             round(recall(found, truth), 4), round(built.info.seconds, 2),
                             round(search_s, 2), pays])
                print(rows[-1], flush=True)
    print(markdown_table(["items", "index", "nprobe", "calibration recall",
                          f"recall@{K}", "build s", f"search s ({args.queries} queries)",
                          "pays off after queries"],
                         rows))


if __name__ == "__main__":
    main()
