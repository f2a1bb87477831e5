"""How the k-NN fit and search grow with the number of items: the working tree's
``ApproximateNearestNeighbors`` (defaults, cpu engine) on the clustered-latent vectors of
``ann_data.py`` at each ``--sizes`` (items), 10,000 queries, k=10, ``local[2]`` with a 6 GB
heap: fit seconds, peak and after-fit local disk, the first and a warm search, the peak
resident memory of the Python driver and of its whole process tree, and recall@10 against
an exact scan on the first ``--truth-queries`` queries.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_scaling.py --free-disk \
        [--sizes 1000000 5000000 10000000] [--partitions 0]

Each size runs in a fresh process (``ann_fit_before_after.measure``). The vectors are
generated once and cached (``latent_set``: 10M x 384 float32 is 15.4 GB as .npy and again as
parquet; ``--free-disk`` keeps only the parquet). The local index copies may use half of the
disk's free space (the default of ``spark.synapseml_ext.nn.localIndexBytes``): with less free
than 2x the vectors, copies are evicted and searches send index bytes instead. Writes ``results/ann_scaling.{md,json}``; ``plot_benchmarks.py`` draws the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import cached_parquet
from ann_data import CACHE, latent_set
from ann_fit_before_after import measure
from common import cpu_facts, markdown_table, matmul_gflops, save_results

GIB = 2**30
DIM = 384  # latent_set's default


def exact_truth(items: np.ndarray, queries: np.ndarray, k: int = 10,
                block: int = 1_000_000) -> np.ndarray:
    """Each query's k nearest item ids by an exact scan, one block of items at a time, so
    the items (memory-mapped) never sit in memory whole."""
    import faiss

    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for lo in range(0, len(items), block):
        index = faiss.IndexFlatL2(items.shape[1])
        index.add(np.ascontiguousarray(items[lo: lo + block]))
        d, i = index.search(np.ascontiguousarray(queries), k)
        both_d = np.concatenate([best_d, d], axis=1)
        both_i = np.concatenate([best_i, i + lo], axis=1)
        order = np.argsort(both_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(both_d, order, axis=1)
        best_i = np.take_along_axis(both_i, order, axis=1)
    return best_i


def dataset(n: int, queries_n: int, truth_queries: int, free_disk: bool
            ) -> tuple[Path, Path, np.ndarray]:
    """(items parquet, queries parquet, each truth query's 10 nearest ids), generated once
    and cached; ``free_disk`` deletes the .npy once the parquet and the truth are written."""
    tag = f"latent_{n}_q{queries_n}"
    items_path = CACHE / f"{tag}_items.parquet"
    queries_path = CACHE / f"{tag}_queries.parquet"
    truth_path = CACHE / f"latent_{n}_q{truth_queries}_truth10.npy"
    if not (items_path.exists() and queries_path.exists() and truth_path.exists()):
        items, queries = latent_set(n, queries=queries_n)
        cached_parquet(tag, items, queries)
        np.save(truth_path, exact_truth(items, queries[:truth_queries]))
        if free_disk:
            Path(items.filename).unlink()
    return items_path, queries_path, np.load(truth_path)


def table_of(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The results table: header and rows."""
    rows = [[f"{r['items']:,}", f"{r['vector_bytes'] / GIB:.1f}", f"{r['recall']:.4f}",
             f"{r['fit_s']:.1f}",
             f"{r['fit_peak_disk'] / GIB:.2f} ({r['fit_peak_disk'] / r['vector_bytes']:.2f}x)",
             f"{r['after_fit_disk'] / GIB:.2f} ({r['after_fit_disk'] / r['vector_bytes']:.2f}x)",
             f"{r['first_s']:.1f}", f"{r['warm_s']:.1f}", f"{r['first_s'] / r['warm_s']:.2f}",
             f"{r['peak_driver_rss'] / GIB:.2f}", f"{r['peak_tree_rss'] / GIB:.2f}"]
            for r in runs]
    return (
        ["items", "vectors GiB", "recall@10", "fit s", "peak disk in fit GiB",
         "disk after fit GiB", "first search s", "warm search s", "first / warm",
         "driver RSS GiB", "all processes RSS GiB"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1_000_000, 5_000_000, 10_000_000], help="items")
    parser.add_argument("--queries-n", type=int, default=10_000)
    parser.add_argument("--truth-queries", type=int, default=1_000,
                        help="recall is measured on the first this-many queries")
    parser.add_argument("--partitions", type=int, default=0,
                        help="numPartitions (0, the default: one index per input partition)")
    parser.add_argument("--free-disk", action="store_true",
                        help="delete each size's .npy once its parquet and truth exist (a 10M "
                             "fit needs the disk: 2x its 15.4 GB of vectors)")
    args = parser.parse_args()
    facts = {**cpu_facts(), "matmul_fp32_gflops": round(matmul_gflops(), 1)}
    print(json.dumps(facts), flush=True)
    here = Path(__file__).resolve().parents[2] / "python"
    runs = []
    for size in args.sizes:
        args.items, args.queries, truth = dataset(size + args.queries_n, args.queries_n,
                                                  args.truth_queries, args.free_disk)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            out = Path(tmp) / "found.npy"
            result = measure(here, args, out)
            found = np.load(out)[: args.truth_queries]
        recall = float(np.mean([len(np.intersect1d(f, t)) / len(t)
                                for f, t in zip(found, truth, strict=True)]))
        run = {"items": size, "vector_bytes": size * DIM * 4, "recall": recall,
               **result}
        print(json.dumps(run), flush=True)
        runs.append(run)
    table = markdown_table(*table_of(runs))
    print(table)
    save_results("ann_scaling", table + "\n", {"facts": facts, "queries": args.queries_n,
                                                "partitions": args.partitions, "runs": runs})


if __name__ == "__main__":
    main()
