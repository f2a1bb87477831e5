"""Python-worker memory of the fit's build task (``build_task.make_build_fn``: an item
partition in, its packed index row out) and of the two paths that unpack a packed index
partition: ``load()`` joining a saved model's pieces (``saved_tasks.make_join_chunks_fn``)
and a search task that receives a partition's bytes (a miss:
``search_tasks._LoadedIndex.load``, with the local index store on, its default, and off), for
a git revision against the working tree, in one run.

    .venv/bin/python tools/bench/ann_unpack_memory.py --before REV [--items 400000]

One partition (ivfflat by default) of ``--items`` x 384 unit vectors is built once (the working tree's
build task) and cut into a saved model's pieces; each measurement is a fresh Python process
with PYTHONPATH on that version's python/, which reads the pieces (or the packed row) into
memory as Spark hands them to a worker, then runs the path with a local index store in a
temporary directory. It prints the peak resident memory the path adds above the input it was
handed (``VmHWM`` after resetting it), and what stays after it, anonymous and file-backed
(the mapped local copy: page cache, shared by the workers of a machine), as multiples of
the partition's raw bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_facts, markdown_table
from engine_before_after import checkout

REPO = Path(__file__).resolve().parents[2]

# Runs in the measured version's process: only the API both versions share.
WORKER = """
import json, os, sys
import pyarrow as pa
path, kind, store_dir, algorithm, params = sys.argv[1:6]
os.environ["SPARK_LOCAL_DIRS"] = store_dir
from synapseml_ext.nn import build_task, saved_tasks, search_tasks
from synapseml_ext.nn.task_config import BuildTask, JoinChunksTask, LocalStore, SearchTask

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

with pa.OSFile(path) as source:  # into memory, as a worker receives its batch
    table = pa.ipc.open_file(source).read_all()
batches = table.to_batches()
del table
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) from here on: imports and the read peaked higher
before, anon, mapped = status("VmRSS"), status("RssAnon"), status("RssFile")
store = LocalStore(None if kind == "miss-no-store" else "0" * 32, -1)
if kind == "build":  # the items as Spark hands them: list<float>, 10,000 rows a batch
    cfg = BuildTask("long", "v", algorithm, "l2", json.loads(params), 10, 1, store=store)
    out = list(build_task.make_build_fn(cfg)(iter(batches)))
elif kind == "load":
    out = list(saved_tasks.make_join_chunks_fn(JoinChunksTask(path, None, store))(iter(batches)))
else:
    assert len(batches) == 1
    loaded = search_tasks._LoadedIndex(SearchTask("long", "long", "l2", 10, 384, store=store))
    loaded.load(0, batches[0], 0)
peak = status("VmHWM")
print(json.dumps({"added": peak - before, "anon": status("RssAnon") - anon,
                  "file": status("RssFile") - mapped}))
"""


def build(items: int, algorithm: str, params: dict, into: Path) -> tuple[Path, Path, Path, int]:
    """One partition's items (as a build task receives them), its packed index row and its
    saved pieces, as Arrow files."""
    import pyarrow as pa

    sys.path.insert(0, str(REPO / "python"))
    from synapseml_ext.nn import build_task, saved_tasks
    from synapseml_ext.nn.task_config import BuildTask

    vectors = np.random.default_rng(0).standard_normal((items, 384), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(items, dtype=np.int64)),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 384)], ["__id", "__vec"])
    items_table = pa.table({"__id": batch.column(0), "__vec": pa.ListArray.from_arrays(
        pa.array(np.arange(0, items * 384 + 1, 384, dtype=np.int32)), batch.column(1).flatten())})
    del vectors
    cfg = BuildTask("long", "v", algorithm, "l2", params, 10, 1)
    row = next(build_task.make_build_fn(cfg)(iter([batch])))
    raw = json.loads(row.column("__info")[0].as_py())["raw_bytes"]
    pieces = pa.Table.from_batches(list(saved_tasks.make_save_chunks_fn(
        saved_tasks.SAVE_CHUNK_BYTES)(iter([row]))))
    paths = into / "items.arrow", into / "row.arrow", into / "pieces.arrow"
    tables = items_table, pa.Table.from_batches([row]), pieces
    for path, table in zip(paths, tables, strict=True):
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=10_000 if table is items_table else None)
    return *paths, raw


def measure(python_dir: Path, data: Path, kind: str, work: Path, args: argparse.Namespace
            ) -> dict[str, int]:
    with tempfile.TemporaryDirectory(dir=work) as store:
        env = {**os.environ, "PYTHONPATH": str(python_dir), "SYNAPSEML_EXT_LOG_LEVEL": "ERROR"}
        done = subprocess.run([sys.executable, "-c", WORKER, str(data), kind, store,
                               args.algorithm, args.params], env=env,
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python_dir} {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--items", type=int, default=400_000)
    parser.add_argument("--algorithm", default="ivfflat", help="exact | ivfflat | hnsw ...")
    parser.add_argument("--params", default='{"nlist": 256, "nprobe": 16}',
                        help="algoParams as JSON")
    args = parser.parse_args()
    print(cpu_facts())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        items, row, pieces, raw = build(args.items, args.algorithm, json.loads(args.params),
                                        work)
        versions = {args.before: checkout(args.before, work / "before"),
                    "working tree": REPO / "python"}
        rows = []
        for label, python_dir in versions.items():
            found = [measure(python_dir, data, kind, work, args) for data, kind in (
                (items, "build"), (pieces, "load"), (row, "miss"), (row, "miss-no-store"))]
            rows.append([label] + [f"{m['added'] / raw:.2f}x ({m['anon'] / raw:.2f}x / "
                                   f"{m['file'] / raw:.2f}x)" for m in found])
        print(f"\none {args.algorithm} partition: {args.items} x 384 float32, "
              f"{raw / 2**20:.0f} MiB raw, "
              f"{pieces.stat().st_size / 2**20:.0f} MiB saved pieces")
        print("peak resident memory the path added, as a multiple of the raw partition "
              "(after it: anonymous / file-backed, i.e. mapped, pages added)")
        print(markdown_table(["version", "fit's build task", "load() joining the pieces",
                              "search miss",
                              "search miss, local store off"], rows))


if __name__ == "__main__":
    main()
