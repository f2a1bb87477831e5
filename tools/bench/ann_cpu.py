"""ANN on CPU, all methods in one run: recall@k against exact search, time, and memory.

    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_cpu.py --data latent --n 1010000
    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_cpu.py --data minilm --n 210000

Data (tools/bench/ann_data.py, cached outside the repo as .npy and as parquet for Spark):
``--n`` vectors of which the last ``--queries`` are the queries. Methods:

* faiss-flat-1proc: exact search in this process (faiss IndexFlat, all cores); also the truth.
* ours-exact: ApproximateNearestNeighbors(algorithm="exact") through Spark local[2].
* ours-ivfflat: ApproximateNearestNeighbors defaults (ivfflat, nlist ~ sqrt(n) and nprobe
  tuned at fit to 0.95 recall per partition) through Spark.
* "saved, loaded": ours-ivfflat saved with ``model.write().save``, loaded, and searched
  with the loaded model (fit column: save + load seconds; the save alone is printed). In
  the same application the loaded model finds the local copies, so it counts as warm.
* "loaded in a new process": that saved model loaded and searched twice by a new process
  (a new Spark application and JVM: no local index copies, so the first search receives
  the index bytes; fit column: load seconds; its RSS window holds both JVMs, this
  benchmark's idle one included).
* "again (warm)": each of ours searched a second time with the same model (the first search
  also reads the persisted indexes from disk); ``--sweep-nprobe`` adds warm ivfflat searches
  at other nprobe values. Warm rows are compared with exact's warm search.
* annoy-seed: the seed's method: Annoy index built on the driver, shipped with addFile,
  queried in mapPartitions.

Items reach Spark from parquet (never through the driver). Peak RSS is sampled every
0.2 s: this driver process, the JVM (driver + local executors) and the Python workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_data import CACHE, latent_set, minilm_set
from common import cpu_facts, markdown_table, matmul_gflops


class PeakRss:
    """Peak resident memory of this process, its JVM and the pyspark workers."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak = {"driver_py": 0, "jvm": 0, "workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            try:
                jvm = workers = 0
                for child in self.me.children(recursive=True):
                    rss = child.memory_info().rss
                    if "java" in child.name():
                        jvm += rss
                    else:
                        workers += rss
                now = {"driver_py": self.me.memory_info().rss, "jvm": jvm, "workers": workers}
            except psutil.Error:
                continue
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)

    def reset(self) -> None:
        self.peak = dict.fromkeys(self.peak, 0)

    def snapshot_gb(self) -> dict[str, float]:
        return {k: round(v / 2**30, 2) for k, v in self.peak.items()}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def to_parquet(vectors: np.ndarray, path: Path, id_offset: int = 0) -> Path:
    """(id, v array<float>) parquet written in chunks, cached next to the .npy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    dim = vectors.shape[1]
    schema = pa.schema([("id", pa.int64()), ("v", pa.list_(pa.float32()))])
    with pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, len(vectors), 50_000):
            chunk = np.ascontiguousarray(vectors[lo: lo + 50_000], dtype=np.float32)
            values = pa.array(chunk.ravel())
            offsets = pa.array(np.arange(0, len(chunk) * dim + 1, dim, dtype=np.int32))
            writer.write_table(pa.table({
                "id": pa.array(np.arange(id_offset + lo, id_offset + lo + len(chunk))),
                "v": pa.ListArray.from_arrays(offsets, values)}, schema=schema))
    tmp.replace(path)
    return path


def cached_parquet(tag: str, items: np.ndarray, queries: np.ndarray) -> tuple[Path, Path]:
    """Items and queries as parquet next to the cache (query ids follow the item ids)."""
    return (to_parquet(items, CACHE / f"{tag}_items.parquet"),
            to_parquet(queries, CACHE / f"{tag}_queries.parquet", id_offset=len(items)))


def bench_spark(name: str):
    """The benchmarks' Spark: local[2], a 6 GB driver (and local executors)."""
    from synapseml_ext._spark import local_spark

    return local_spark("local[2]", name, conf={
        "spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "4",
        "spark.ui.showConsoleProgress": "false"})


def faiss_flat(items: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index = faiss.IndexFlatL2(items.shape[1])
    index.add(np.ascontiguousarray(items))
    _, labels = index.search(np.ascontiguousarray(queries), k)
    return labels, time.perf_counter() - started


def timed_search(model, queries) -> dict:
    """One whole kneighbors, collected: seconds, found ids and query ids."""
    began = time.perf_counter()
    rows = model.kneighbors(queries)[2].collect()
    return {"search_s": time.perf_counter() - began,
            "found": np.array([r.indices for r in rows]),
            "qids": np.array([r.query_id for r in rows])}


def ours(spark, item_path: Path, query_path: Path, k: int, algorithm: str, partitions: int,
         n_queries: int, algo_params: dict | None = None, sweep: list[int] = (),
         save: bool = True) -> dict:
    from synapseml_ext.nn import ApproximateNearestNeighbors

    items = spark.read.parquet(str(item_path))
    queries = spark.read.parquet(str(query_path)).repartition(2)
    started = time.perf_counter()
    model = ApproximateNearestNeighbors(k=k, algorithm=algorithm, inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=partitions,
                                        algoParams=algo_params).fit(items)
    fit_s = time.perf_counter() - started
    first = timed_search(model, queries)
    summary = model.buildSummary
    # Warm searches of the same model: the first search also pays for reading the persisted
    # indexes from disk and the workers' first imports. Then nprobe set on the fitted model
    # applies to the next search: the same indexes, searched wider or narrower than the
    # fit-time calibration chose.
    swept = []
    for nprobe in [None, *sweep]:
        if nprobe is not None:
            model.setAlgoParams({**(algo_params or {}), "nprobe": nprobe})
        swept.append({"nprobe": nprobe, **timed_search(model, queries)})
    if algorithm != "exact" and save:
        model.setAlgoParams(algo_params or {})
        swept.append(saved_and_loaded(model, queries))
    return {"fit_s": fit_s, **first, "sweep": swept,
            "summary": {k2: v for k2, v in summary.items() if k2 != "indexes"},
            "indexes": [{k2: i[k2] for k2 in ("kind", "n", "params", "search",
                                              "calibration_recall")}
                        for i in summary["indexes"]], "n_queries": n_queries}


def saved_and_loaded(model, queries) -> dict:
    """Save the model, load it and search with the loaded one: the persisted indexes at this
    scale (one index row of ~190 MB per partition). The same application: the loaded model
    keeps the token, so its search finds the executors' local copies. The saved model stays
    for :func:`searched_in_a_new_process` (``model_dir``)."""
    import tempfile

    from synapseml_ext.nn import ApproximateNearestNeighborsModel

    where = Path(tempfile.mkdtemp(prefix="ann_model_", dir=CACHE))
    began = time.perf_counter()
    model.write().overwrite().save(str(where))
    saved = time.perf_counter()
    loaded = ApproximateNearestNeighborsModel.load(str(where))
    searched = timed_search(loaded, queries)
    return {"nprobe": None, "save_s": saved - began, "model_dir": str(where),
            "load_s": time.perf_counter() - saved - searched["search_s"], **searched}


def searched_in_a_new_process(model_dir: str, query_path: Path) -> dict:
    """Load the saved model in a new process (a new JVM and Spark application: no local
    copies, nothing warmed up) and search twice; the found ids come back in an .npz file."""
    import subprocess

    out = Path(model_dir).with_suffix(".found.npz")
    done = subprocess.run([sys.executable, __file__, "--search-saved", model_dir,
                           "--query-path", str(query_path), "--found-out", str(out)],
                          check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as found:
        for i, search in enumerate(result["searches"]):
            search.update(found=found[f"found{i}"], qids=found[f"qids{i}"])
    out.unlink()
    return result


def loaded_rows(method: str, model_dir: str, query_path: Path, items: np.ndarray,
                truth: np.ndarray, rss: PeakRss) -> dict[str, dict]:
    """Result rows of the saved model searched in a new process (its RSS window counts the
    child's JVM and workers and this benchmark's idle JVM); the saved model is deleted
    afterwards."""
    import shutil

    try:
        result = searched_in_a_new_process(model_dir, query_path)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    rows = {}
    for i, search in enumerate(result["searches"]):
        name = (f"{method} loaded in a new process" if i == 0
                else f"{method} loaded in a new process, again (warm)")
        rows[name] = {"fit_s": result["load_s"] if i == 0 else 0.0,
                      "search_s": search["search_s"],
                      "recall": recall(search["found"], truth[search["qids"] - len(items)]),
                      "rss": rss.snapshot_gb() if i == 0 else {}}
        print(name, json.dumps(rows[name]), flush=True)
    return rows


def search_saved(model_dir: str, query_path: str, found_out: str) -> None:
    """The child of :func:`searched_in_a_new_process`."""
    from synapseml_ext.nn import ApproximateNearestNeighborsModel

    spark = bench_spark("ann-bench-loaded")
    queries = spark.read.parquet(query_path).repartition(2)
    began = time.perf_counter()
    model = ApproximateNearestNeighborsModel.load(model_dir)
    load_s = time.perf_counter() - began
    searches = [timed_search(model, queries) for _ in range(2)]
    spark.stop()
    np.savez(found_out, **{f"{key}{i}": s[key] for i, s in enumerate(searches)
                           for key in ("found", "qids")})
    print(json.dumps({"load_s": load_s,
                      "searches": [{"search_s": s["search_s"]} for s in searches]}))


def annoy_seed(spark, items: np.ndarray, query_path: Path, k: int, trees: int,
               search_k: int) -> dict:
    """The seed's method: build on the driver, addFile, query in mapPartitions."""
    from annoy import AnnoyIndex
    from pyspark import SparkFiles

    started = time.perf_counter()
    index = AnnoyIndex(items.shape[1], "euclidean")
    for i, vector in enumerate(items):
        index.add_item(i, vector)
    index.build(trees, n_jobs=-1)
    path = CACHE / f"annoy_{len(items)}_{trees}.ann"
    index.save(str(path))
    index.unload()
    spark.sparkContext.addFile(str(path))
    built = time.perf_counter()
    dim, name = items.shape[1], path.name

    def search(rows):
        from annoy import AnnoyIndex as Index

        local = Index(dim, "euclidean")
        local.load(SparkFiles.get(name))
        for row in rows:
            yield row.id, local.get_nns_by_vector(row.v, k, search_k=search_k)

    queries = spark.read.parquet(str(query_path)).repartition(2)
    out = queries.rdd.mapPartitions(search).collect()
    searched = time.perf_counter()
    return {"fit_s": built - started, "search_s": searched - built,
            "qids": np.array([r[0] for r in out]), "found": [r[1] for r in out]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", choices=("latent", "minilm"), default="latent")
    parser.add_argument("--n", type=int, default=1_010_000, help="items + queries")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=0,
                        help="item partitions = indexes; 0: one per ~192 MB of vectors, at "
                             "least 2 (1M x 384 -> 8)")
    parser.add_argument("--methods", default="faiss-flat-1proc,ours-ivfflat,ours-exact,annoy-seed")
    parser.add_argument("--annoy-trees", type=int, default=50)
    parser.add_argument("--annoy-search-k", type=int, default=-1)
    parser.add_argument("--sweep-nprobe", default="",
                        help="after ours-ivfflat's two default searches, search the same model "
                             "again with each of these nprobe values (comma-separated; a value "
                             "repeated is timed again, on a row of its own)")
    parser.add_argument("--no-save", action="store_true",
                        help="skip saving, loading and searching the saved ivfflat model")
    parser.add_argument("--out", default="")
    parser.add_argument("--search-saved", default="", help=argparse.SUPPRESS)
    parser.add_argument("--query-path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--found-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search_saved:  # the child process of searched_in_a_new_process
        search_saved(args.search_saved, args.query_path, args.found_out)
        return
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    methods = args.methods.split(",")

    if args.data == "latent":
        items, queries = latent_set(args.n, queries=args.queries)
    else:
        items, queries = minilm_set(args.n, queries=args.queries)
    if args.partitions == 0:
        args.partitions = max(2, -(-items.nbytes // (192 << 20)))
    item_path, query_path = cached_parquet(f"{args.data}_{args.n}_q{args.queries}", items,
                                           queries)
    print(f"data {args.data}: items {items.shape}, queries {queries.shape}", flush=True)
    facts = {**cpu_facts(), "fp32_gemm_gflops_2threads": round(matmul_gflops(threads=2), 1)}
    print(json.dumps(facts), flush=True)

    rss = PeakRss()
    truth, flat_s = faiss_flat(items, queries, args.k)
    results: dict[str, dict] = {"faiss-flat-1proc": {"fit_s": 0.0, "search_s": flat_s,
                                                     "recall": 1.0,
                                                     "rss": rss.snapshot_gb()}}
    print(f"faiss-flat-1proc: {flat_s:.1f}s", flush=True)
    # Note: this process keeps the vectors (for faiss-flat and the Annoy build), so its RSS
    # is not the driver cost of our stage; the JVM column is (driver + local executors).
    spark = bench_spark("ann-bench")
    for method in methods:
        if method == "faiss-flat-1proc":
            continue
        rss.reset()
        if method in ("ours-exact", "ours-ivfflat"):
            sweep = ([int(v) for v in args.sweep_nprobe.split(",") if v]
                     if method == "ours-ivfflat" else [])
            res = ours(spark, item_path, query_path, args.k, method.split("-")[1],
                       args.partitions, len(queries), sweep=sweep, save=not args.no_save)
        elif method == "annoy-seed":
            res = annoy_seed(spark, items, query_path, args.k, args.annoy_trees,
                             args.annoy_search_k)
        else:
            raise SystemExit(f"unknown method {method}")
        rows = res["qids"] - len(items)
        res["recall"] = recall(res.pop("found"), truth[rows])
        res.pop("qids")
        sweep = res.pop("sweep", [])
        res["rss"] = rss.snapshot_gb()
        results[method] = res
        print(method, json.dumps({k: v for k, v in res.items()}, default=str), flush=True)
        times: Counter[int] = Counter()
        for point in sweep:
            point_rows = point.pop("qids") - len(items)
            if "save_s" in point:  # fit column: save + load seconds
                name = f"{method} saved, loaded, searched (warm)"
            elif point["nprobe"] is None:
                name = f"{method} again (warm)"
            else:  # an nprobe searched again gets a row of its own
                times[point["nprobe"]] += 1
                again = f", {times[point['nprobe']]}" if times[point["nprobe"]] > 1 else ""
                name = f"{method} nprobe={point['nprobe']} (warm{again})"
            results[name] = {"fit_s": point.get("save_s", 0.0) + point.get("load_s", 0.0),
                             "search_s": point["search_s"],
                             "recall": recall(point.pop("found"), truth[point_rows]), "rss": {}}
            if "save_s" in point:
                results[name]["save_s"] = point["save_s"]
            print(name, json.dumps(results[name]), flush=True)
            if "model_dir" in point:
                rss.reset()
                results.update(loaded_rows(method, point["model_dir"], query_path, items,
                                           truth, rss))
    spark.stop()

    # First searches compare with exact's first search, warm ones with exact's warm search.
    exact_first = results.get("ours-exact", {}).get("search_s")
    exact_warm = results.get("ours-exact again (warm)", {}).get("search_s")
    header = ["method", "recall@10", "fit/build s", "search s", "queries/s",
              "search vs ours-exact", "peak RSS GB driver-py / JVM / py-workers"]
    table = []
    for method, res in results.items():
        qps = len(queries) / res["search_s"]
        exact_search = exact_warm if "(warm" in method else exact_first
        ratio = f"{exact_search / res['search_s']:.1f}x" if exact_search else "-"
        r = res["rss"]
        memory = f"{r['driver_py']} / {r['jvm']} / {r['workers']}" if r else "-"
        table.append([method, round(res["recall"], 4), round(res["fit_s"], 1),
                      round(res["search_s"], 1), round(qps, 1), ratio, memory])
    text = markdown_table(header, table)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "cpu": facts,
                                              "results": results}, indent=1, default=str)
                                  + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
