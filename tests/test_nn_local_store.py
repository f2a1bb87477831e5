"""Executor-local index copies: what the store keeps and evicts, and that a search reads the
copies when they are there and the index bytes when they are not, with the same results."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from synapseml_ext.nn import (
    ApproximateNearestNeighbors,
    ApproximateNearestNeighborsModel,
    local_store,
)

from helpers import read_events
from nn_data import brute_force, knn_arrays, vector_df

TOKEN = "0123456789abcdef0123456789abcdef"


def _row(part: int, size: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([part], pa.int32()), pa.array([[1, 2, 3]], pa.list_(pa.int64())),
         pa.array([bytes([part]) * size], pa.binary()), pa.array(['{"n": 3}'])],
        ["__part", "__ids", "__index", "__info"])


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path},/elsewhere")
    return tmp_path / "synapseml-ext-nn"


def test_write_then_read_maps_the_index_file(store_root):
    assert local_store.read(TOKEN, 0) is None
    assert local_store.write(TOKEN, 0, _row(0, 1000), local_store.AUTO)
    ids_and_info, index_path = local_store.read(TOKEN, 0)
    assert ids_and_info.column("__ids").to_pylist() == [[1, 2, 3]]
    assert ids_and_info.column("__info").to_pylist() == ['{"n": 3}']
    assert "__index" not in ids_and_info.schema.names
    assert index_path.read_bytes() == bytes([0]) * 1000
    assert index_path.parent == store_root  # under the first Spark local dir
    assert not [p for p in store_root.iterdir() if p.name.startswith(".")]  # no temporaries


def test_store_off_and_rows_larger_than_the_limit_are_not_kept(store_root):
    assert not local_store.write(TOKEN, 0, _row(0, 1000), 0)
    assert not local_store.write(TOKEN, 1, _row(1, 5000), 4000)
    assert local_store.read(TOKEN, 0) is None and local_store.read(TOKEN, 1) is None


def test_least_recently_used_partitions_are_evicted_first(store_root):
    limit = 3 * 1000 + 3 * 1500  # three partitions with room to spare for their info files
    for part in range(3):
        assert local_store.write(TOKEN, part, _row(part, 1000), limit)
        time.sleep(0.02)
    assert local_store.read(TOKEN, 0) is not None  # partition 0 is now the most recent
    assert local_store.write(TOKEN, 3, _row(3, 1000), limit)
    kept = [part for part in range(4) if local_store.read(TOKEN, part) is not None]
    assert kept == [0, 2, 3]


def test_a_full_store_warns_once_naming_the_fix(store_root, caplog, monkeypatch):
    monkeypatch.setattr(local_store, "_warned_full", False)
    limit = 2 * 1000 + 2 * 1500
    with caplog.at_level("WARNING", logger="synapseml_ext.nn"):
        for part in range(4):  # the third and fourth evict: one warning
            assert local_store.write(TOKEN, part, _row(part, 1000), limit)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "evicted or not kept" in warnings[0]
    assert "spark.synapseml_ext.nn.localIndexBytes" in warnings[0]


def test_a_row_larger_than_the_limit_is_refused_while_other_copies_are_held(store_root):
    limit = 4000
    assert local_store.write(TOKEN, 0, _row(0, 100), limit)
    assert not local_store.write(TOKEN, 1, _row(1, 5000), limit)
    assert local_store.read(TOKEN, 1) is None
    assert local_store.read(TOKEN, 0) is not None  # nothing evicted for a row that cannot fit


def test_a_damaged_copy_is_dropped(store_root):
    local_store.write(TOKEN, 0, _row(0, 10), local_store.AUTO)
    local_store.path_for(TOKEN, 0).write_bytes(b"not arrow")
    assert local_store.read(TOKEN, 0) is None
    assert not local_store.path_for(TOKEN, 0).exists()
    assert not local_store.path_for(TOKEN, 0).with_suffix(local_store.INDEX_SUFFIX).exists()


@pytest.mark.parametrize("text, expected", [(None, -1), ("", -1), ("0", 0), ("512m", 512 << 20),
                                            ("20g", 20 << 30), ("1gb", 1 << 30), ("100", 100)])
def test_limit_conf_values(text, expected):
    assert local_store.parse_limit(text) == expected


def test_limit_conf_refuses_other_text():
    with pytest.raises(ValueError, match="localIndexBytes"):
        local_store.parse_limit("lots")


def test_tokens_are_checked():
    with pytest.raises(ValueError, match="token"):
        local_store.path_for("../etc", 0)


def _worker_store_root(spark) -> str:
    import pandas as pd

    def where(batches):
        for _ in batches:
            yield pd.DataFrame({"root": [str(local_store.root())]})

    return spark.range(1, numPartitions=1).mapInPandas(where, "root string").head()[0]


def _shuffles(knn_df) -> list[str]:
    """The partitionings of the shuffles in ``knn_df``'s physical plan above the search."""
    import re

    plan = knn_df._jdf.queryExecution().executedPlan().toString()
    return re.findall(r"Exchange (\w+)\((?:__qid|query_id)\b", plan)


def _sources(event_log, seen: int) -> list[str]:
    return sorted(e["source"] for e in read_events(event_log)[seen:] if e["event"] == "nn_load")


def test_search_reads_local_copies_else_the_bytes_with_the_same_results(spark, event_log,
                                                                          tmp_path):
    rng = np.random.default_rng(5)
    items = rng.standard_normal((1200, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    model = ApproximateNearestNeighbors(k=6, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=3).fit(
        vector_df(spark, items))
    query_df = vector_df(spark, queries, partitions=2)
    truth, _ = brute_force(items, queries, 6, "euclidean")
    token = model.buildSummary["token"]
    root = _worker_store_root(spark)
    assert set(os.listdir(root)) >= {f"{token}-{p}{s}" for p in range(3)
                                     for s in (".arrow", ".faiss")}

    def search() -> tuple[np.ndarray, list[str]]:
        seen = len(read_events(event_log))
        _, indices, distances = knn_arrays(model.kneighbors(query_df)[2])
        assert indices == truth.tolist()
        return distances, _sources(event_log, seen)

    seen = len(read_events(event_log))
    distances, sources = search()  # the build kept a copy of every partition
    assert sources == ["local"] * 3
    # local[2]: the 3 partitions are searched by 2 tasks (one of them searches 2 in turn)
    searched = [e for e in read_events(event_log)[seen:] if e["event"] == "nn_search"]
    assert sorted(e["partition"] for e in searched) == [0, 1, 2]
    assert len({e["task"] for e in searched}) == 2
    # Found lists all stored: one range shuffle by query id groups them for the merge and
    # sorts knn_df (no hash shuffle for the grouping).
    assert _shuffles(model.kneighbors(query_df)[2]) == ["rangepartitioning"]
    for name in os.listdir(root):
        if name.startswith(token):
            os.remove(os.path.join(root, name))
    cold, sources = search()  # no copies: the bytes come with the misses, and are kept
    assert sources == ["bytes"] * 3
    np.testing.assert_array_equal(cold, distances)
    assert search()[1] == ["local"] * 3

    spark.conf.set(local_store.LIMIT_CONF, "0")
    try:  # store off: every search receives the bytes, nothing is written
        for name in os.listdir(root):
            if name.startswith(token):
                os.remove(os.path.join(root, name))
        off, sources = search()
        assert sources == ["bytes"] * 3
        # Nothing stored (the search runs on an action): grouped by hash, then sorted.
        assert sorted(_shuffles(model.kneighbors(query_df)[2])) == [
            "hashpartitioning", "rangepartitioning"]
        np.testing.assert_array_equal(off, distances)
        assert not [name for name in os.listdir(root) if name.startswith(token)]
    finally:
        spark.conf.unset(local_store.LIMIT_CONF)

    model.save(str(tmp_path / "model"))
    assert not [name for name in os.listdir(root) if name.startswith(token)]
    loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "model"))
    # A token per load: copies of other bytes under the saved token are never taken for it.
    loaded_token = loaded.buildSummary["token"]
    assert loaded_token != token
    # The load joined the saved pieces of each partition and kept a copy, as the build does.
    assert set(os.listdir(root)) >= {f"{loaded_token}-{p}{s}" for p in range(3)
                                     for s in (".arrow", ".faiss")}
    seen = len(read_events(event_log))
    assert knn_arrays(loaded.kneighbors(query_df)[2])[1] == truth.tolist()
    assert _sources(event_log, seen) == ["local"] * 3
