"""How many training points a coarse quantizer needs: recall of the engine's IVF-Flat scan
at fixed nprobe, for IVF indexes trained on different numbers of points per list, on the
cached latent set split into partitions as ``kneighbors`` splits it (no Spark; one thread,
like one search task). The top-k of every partition are merged per query and compared with
exact search.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ivf_training.py --partitions 4 \\
        --points 48,96,128 --nprobe 32,36
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# One BLAS thread, as in a search task (set before numpy loads OpenBLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import faiss_flat, recall
from ann_data import latent_set
from common import cpu_facts, matmul_gflops

K = 10


def trained_ivf(items: np.ndarray, points_per_list: int, niter: int, seed: int):
    import faiss

    from synapseml_ext.nn.index_build import default_nlist

    n, dim = items.shape
    nlist = default_nlist(n)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    ivf.cp.max_points_per_centroid = points_per_list
    ivf.cp.niter = niter
    ivf.cp.seed = seed
    sample = np.random.default_rng(seed).permutation(n)[: points_per_list * nlist]
    began = time.perf_counter()
    ivf.train(items[np.sort(sample)])
    trained = time.perf_counter() - began
    ivf.add(items)
    return ivf, trained


def merged_recall(indexes, rows, queries: np.ndarray, truth: np.ndarray, nprobe: int
                  ) -> tuple[float, float]:
    """Recall@K of the per-partition top-K merged per query, and the scan's seconds."""
    from synapseml_ext.nn.ivf_scan import list_major_search

    scores, labels, seconds = [], [], 0.0
    for ivf, part_rows in zip(indexes, rows, strict=True):
        began = time.perf_counter()
        found, raw = list_major_search(ivf, queries, K, nprobe, True)
        seconds += time.perf_counter() - began
        scores.append(np.where(found >= 0, raw, np.inf))
        labels.append(np.where(found >= 0, part_rows[np.maximum(found, 0)], -1))
    order = np.argsort(np.hstack(scores), axis=1)[:, :K]
    top = np.take_along_axis(np.hstack(labels), order, axis=1)
    return recall(top, truth), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1_010_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--points", default="48,96,128", help="training points per list")
    parser.add_argument("--niter", default="10", help="k-means iterations")
    parser.add_argument("--nprobe", default="32,36")
    args = parser.parse_args()
    import faiss

    print(cpu_facts(), f"fp32 matmul {matmul_gflops():.1f} GFLOP/s", flush=True)
    items, queries = latent_set(args.n)
    items, queries = np.ascontiguousarray(items), np.ascontiguousarray(queries)
    truth, _ = faiss_flat(items, queries, K)
    part = np.random.default_rng(0).integers(0, args.partitions, len(items))
    rows = [np.flatnonzero(part == p) for p in range(args.partitions)]
    for points in (int(v) for v in args.points.split(",")):
        for niter in (int(v) for v in args.niter.split(",")):
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            built = [trained_ivf(items[r], points, niter, seed=p) for p, r in enumerate(rows)]
            faiss.omp_set_num_threads(1)
            train_s = sum(t for _, t in built) / len(built)
            for nprobe in (int(v) for v in args.nprobe.split(",")):
                recall, scan_s = merged_recall([i for i, _ in built], rows, queries, truth,
                                               nprobe)
                print(f"points/list {points} niter {niter}: train {train_s:.1f} s/partition; "
                      f"nprobe {nprobe}: recall@{K} {recall:.4f}, scan {scan_s:.2f} s "
                      f"({args.partitions} partitions, 1 thread)", flush=True)


if __name__ == "__main__":
    main()
