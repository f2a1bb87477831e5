"""Where a CPU k-NN search's fixed cost goes: the part of ``kneighbors`` that does not shrink
with nprobe. One fitted ivfflat model on the cached latent set, then, in one run:

* ship: the persisted index partitions sent from the JVM to Python workers and dropped;
* ship + deserialize: the same, each partition also turned back into a faiss index;
* search nprobe=1: a whole ``kneighbors`` at the narrowest search, with the search tasks'
  own load and search seconds (from the event log, summed over tasks).

    flock /tmp/bench.lock .venv/bin/python tools/bench/ann_floor.py --n 1010000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_cpu import bench_spark, cached_parquet
from ann_data import latent_set
from common import cpu_facts, matmul_gflops

EVENTS = Path(tempfile.gettempdir()) / "synapseml-ext-ann-floor.jsonl"


def drop_indexes(batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from synapseml_ext.nn import tables

    size = 0
    for batch in batches:
        size += pc.sum(pc.binary_length(batch.column(tables.INDEX))).as_py() or 0
    yield pa.RecordBatch.from_arrays([pa.array([size])], ["n"])


def load_indexes(batches: Iterator[Any]) -> Iterator[Any]:
    import numpy as np
    import pyarrow as pa

    from synapseml_ext.nn import engine, packing, tables
    from synapseml_ext.nn.integrity import DIGEST

    loaded = 0
    for batch in batches:
        for row in range(batch.num_rows):
            raw = packing.raw_row(batch.slice(row, 1))  # the table's bytes are packed
            info = json.loads(raw.column(tables.INFO)[0].as_py())
            info.pop("first_id", None)
            info.pop(DIGEST, None)
            blob = np.frombuffer(tables.binary_value(raw.column(tables.INDEX), 0), dtype=np.uint8)
            engine.deserialize(blob, engine.BuildInfo.from_dict(info))
            loaded += 1
    yield pa.RecordBatch.from_arrays([pa.array([loaded])], ["n"])


def timed(label: str, action: Callable[[], Any]) -> None:
    EVENTS.unlink(missing_ok=True)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    tasks: dict[str, list[float]] = {}
    if EVENTS.exists():
        for line in EVENTS.read_text().splitlines():
            event = json.loads(line)
            if event["event"] in ("nn_load", "nn_search"):
                tasks.setdefault(event["event"], []).append(event["seconds"])
    summed = {name: f"{len(s)} x, {sum(s):.2f} s" for name, s in tasks.items()}
    print(f"{label}: wall {wall:.2f} s {summed}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1_010_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    os.environ["SYNAPSEML_EXT_EVENT_LOG"] = str(EVENTS)
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    items, queries = latent_set(args.n, queries=args.queries)
    item_path, query_path = cached_parquet(f"latent_{args.n}_q{args.queries}", items, queries)
    print(json.dumps({**cpu_facts(),
                      "fp32_gemm_gflops_2threads": round(matmul_gflops(threads=2), 1)}))

    from synapseml_ext.nn import ApproximateNearestNeighbors

    spark = bench_spark("ann-floor")
    item_df = spark.read.parquet(str(item_path))
    query_df = spark.read.parquet(str(query_path)).repartition(2)
    started = time.perf_counter()
    model = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id", backend="cpu",
                                        numPartitions=args.partitions).fit(item_df)
    print(f"fit: {time.perf_counter() - started:.1f} s", flush=True)
    index_df = model._index_df
    for attempt in ("cold", "warm"):
        timed(f"ship indexes to Python ({attempt})",
              lambda: index_df.mapInArrow(drop_indexes, "n long").collect())
    timed("ship + deserialize", lambda: index_df.mapInArrow(load_indexes, "n long").collect())
    nprobe = model.buildSummary["indexes"][0]["search"].get("nprobe")
    timed(f"kneighbors, fit-time nprobe ({nprobe})",
          lambda: model.kneighbors(query_df)[2].collect())
    model.setAlgoParams({"nprobe": 1})
    for attempt in (1, 2):
        timed(f"kneighbors nprobe=1 ({attempt})", lambda: model.kneighbors(query_df)[2].collect())
    spark.stop()


if __name__ == "__main__":
    main()
