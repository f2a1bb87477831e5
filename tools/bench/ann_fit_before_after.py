"""The k-NN fit of two versions of the code in one run: a git revision against the working
tree, on the clustered-latent vectors of ``ann_data.py``: recall@10 against exact search,
fit seconds, the peak and the after-fit bytes on Spark's local disk, the first and a warm
search.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_fit_before_after.py --before REV \
        [--n 1010000 --partitions 4]

Each measurement is a fresh Python process (a new JVM: Spark local[2], 6 GB heap, its own
``spark.local.dir``, which also holds the executors' local index copies) with PYTHONPATH on
that version's python/; the versions alternate (before, after, after, before) x --rounds and
the table takes the median per version. Local disk and the resident memory of the driver
process and of its whole process tree (JVM, Python workers) are sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import cached_parquet
from ann_data import CACHE, latent_set
from common import cpu_facts, markdown_table, matmul_gflops
from engine_before_after import checkout

# Runs in the measured version's process: only the API both versions share.
WORKER = """
import json, os, sys, threading, time
import numpy as np
items_path, queries_path, local_dir, partitions, out = sys.argv[1:6]

def disk_bytes():
    total = 0
    for root, _, files in os.walk(local_dir):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total

def rss_bytes():
    # (this Python driver's RSS, the RSS of it and every descendant: JVM, Python workers)
    parent, rss = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent[int(entry)], rss[int(entry)] = int(fields[1]), int(fields[21]) * 4096
            except (OSError, IndexError, ValueError):
                pass
    me, tree, frontier = os.getpid(), set(), {os.getpid()}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - tree
    return rss.get(me, 0), sum(rss.get(pid, 0) for pid in tree)

peak = [0]
peak_rss = [0, 0]
stop = threading.Event()
def sample():
    while not stop.wait(0.5):
        peak[0] = max(peak[0], disk_bytes())
        driver, tree = rss_bytes()
        peak_rss[0], peak_rss[1] = max(peak_rss[0], driver), max(peak_rss[1], tree)
threading.Thread(target=sample, daemon=True).start()

from synapseml_ext._spark import local_spark
from synapseml_ext.nn import ApproximateNearestNeighbors
spark = local_spark("local[2]", "ann-fit-before-after", conf={
    "spark.driver.memory": "6g", "spark.local.dir": local_dir,
    "spark.ui.showConsoleProgress": "false"})
items = spark.read.parquet(items_path)
queries = spark.read.parquet(queries_path).repartition(2)
began = time.perf_counter()
model = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id", backend="cpu",
                                    numPartitions=int(partitions)).fit(items)
fit_s = time.perf_counter() - began
fit_peak, after_fit = peak[0], disk_bytes()
def search():
    began = time.perf_counter()
    rows = model.kneighbors(queries)[2].collect()
    return time.perf_counter() - began, rows
first_s, rows = search()
warm_s, _ = search()
stop.set()
rows.sort(key=lambda r: r[0])
np.save(out, np.array([r[1] for r in rows]))
print(json.dumps({"fit_s": fit_s, "fit_peak_disk": fit_peak, "after_fit_disk": after_fit,
                  "peak_disk": max(peak[0], fit_peak), "first_s": first_s, "warm_s": warm_s,
                  "peak_driver_rss": peak_rss[0], "peak_tree_rss": peak_rss[1]}))
spark.stop()
"""


def measure(python_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    local_dir = Path(tempfile.mkdtemp(prefix="spark_local_", dir=CACHE))
    env = {**os.environ, "PYTHONPATH": str(python_dir), "SYNAPSEML_EXT_LOG_LEVEL": "WARNING"}
    try:
        done = subprocess.run([sys.executable, "-c", WORKER, str(args.items), str(args.queries),
                               str(local_dir), str(args.partitions), str(out)],
                              env=env, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{python_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def exact_truth(n: int, queries_n: int, items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each query's 10 nearest item ids (faiss IndexFlatL2), cached next to the data."""
    path = CACHE / f"latent_{n}_q{queries_n}_truth10.npy"
    if not path.exists():
        import faiss

        index = faiss.IndexFlatL2(items.shape[1])
        index.add(np.ascontiguousarray(items))
        np.save(path, index.search(np.ascontiguousarray(queries), 10)[1])
    return np.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--n", type=int, default=1_010_000, help="items + queries (ann_data)")
    parser.add_argument("--queries-n", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=0,
                        help="numPartitions (0: one index per input partition)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    items, queries = latent_set(args.n, queries=args.queries_n)  # generated once, cached
    args.items, args.queries = cached_parquet(f"latent_{args.n}_q{args.queries_n}", items,
                                              queries)
    print(json.dumps({**cpu_facts(), "matmul_fp32_gflops": round(matmul_gflops(), 1)}))
    here = Path(__file__).resolve().parents[2] / "python"
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        versions = {"before": checkout(args.before, Path(tmp)), "after": here}
        results: dict[str, list[dict]] = {"before": [], "after": []}
        found: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name in ("before", "after", "after", "before"):
                out = Path(tmp) / f"{name}.npy"
                result = measure(versions[name], args, out)
                found[name] = np.load(out)
                results[name].append(result)
                print(name, json.dumps(result), flush=True)
    truth = exact_truth(args.n, args.queries_n, items, queries)
    recalls = {name: float(np.mean([len(np.intersect1d(f, t)) / len(t)
                                    for f, t in zip(found[name], truth, strict=True)]))
               for name in found}
    rows = []
    for name in ("before", "after"):
        med = {key: statistics.median(r[key] for r in results[name]) for key in results[name][0]}
        rows.append([f"{name} ({args.before if name == 'before' else 'working tree'})",
                     f"{recalls[name]:.4f}",
                     f"{med['fit_s']:.1f}", f"{med['fit_peak_disk'] / 2**30:.2f}",
                     f"{med['after_fit_disk'] / 2**30:.2f}", f"{med['first_s']:.2f}",
                     f"{med['warm_s']:.2f}", f"{med['first_s'] / med['warm_s']:.2f}"])
    print(markdown_table(["version", "recall@10", "fit s", "peak disk in fit GB", "disk after fit GB",
                          "first search s", "warm search s", "first / warm"], rows))


if __name__ == "__main__":
    main()
