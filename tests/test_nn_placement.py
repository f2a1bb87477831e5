"""Index partition p sits in shuffle partition p: the placement keys follow Spark's own hash,
so each task of the index table (fit, save, the miss join) holds one index row; saved index
rows are uncompressed and in pieces, joined back at load."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from synapseml_ext.nn import (
    ApproximateNearestNeighbors,
    ApproximateNearestNeighborsModel,
    saved_tasks,
)
from synapseml_ext.nn.placement import placement_keys, spark_hash_int

from nn_data import vector_df


def test_hash_is_sparks(spark):
    values = [*range(-200, 200), 2**31 - 1, -(2**31), 123_456_789, -987_654_321]
    rows = spark.createDataFrame([(v,) for v in values], "v int").select(F.hash("v")).collect()
    assert [spark_hash_int(v) for v in values] == [row[0] for row in rows]


@pytest.mark.parametrize("partitions", [1, 2, 3, 8, 13, 64])
def test_keys_land_in_their_own_partition(partitions):
    keys = placement_keys(partitions)
    assert [spark_hash_int(key) % partitions for key in keys] == list(range(partitions))
    assert min(keys) >= 0


def _placed(index_df) -> dict[int, int]:
    rows = index_df.select("__part", F.spark_partition_id()).collect()
    return {row[0]: row[1] for row in rows}


def test_fitted_and_loaded_index_tables_hold_one_partition_per_task(spark, tmp_path):
    # Hashing the partition number itself put 0..7 into 5 of 8 partitions (3 in one).
    items = np.random.default_rng(2).standard_normal((400, 8)).astype(np.float32)
    model = ApproximateNearestNeighbors(k=3, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=8).fit(
        vector_df(spark, items))
    assert _placed(model._index_df) == {p: p for p in range(8)}
    model.save(str(tmp_path / "model"))
    # One index partition per file, written uncompressed (snappy's first read of a large row
    # is slow).
    files = sorted((tmp_path / "model" / "data" / "indexes").glob("*.parquet"))
    assert [pq.read_table(f).column("__part").unique().to_pylist() for f in files] == [
        [p] for p in range(8)]
    assert {pq.ParquetFile(f).metadata.row_group(0).column(c).compression
            for f in files for c in range(5)} == {"UNCOMPRESSED"}
    loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "model"))
    assert _placed(loaded._index_df) == {p: p for p in range(8)}


def test_the_fit_never_shuffles_index_bytes(spark):
    """The items are shuffled to their partitions once; each build task's index row stays
    where it was built (a second shuffle, of the index table, added the vectors' size again
    to the fit's local disk)."""
    import re

    items = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    model = ApproximateNearestNeighbors(k=3, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=4).fit(
        vector_df(spark, items))
    plan = model._index_df._jdf.queryExecution().executedPlan().toString()
    final = plan.split("== Initial Plan ==")[0]
    above_build, below_build = final.split("MapInArrow build")
    assert "Exchange" not in above_build
    assert re.search(r"Exchange hashpartitioning\(__id", below_build)


def test_by_default_each_input_partition_is_built_where_it_is(spark, tmp_path):
    """numPartitions unset keeps the input's partitions: no shuffle at all in the fit, one
    index per input partition, and the neighbours of a fit that hashes the items."""
    rng = np.random.default_rng(4)
    items, queries = rng.standard_normal((600, 8)), rng.standard_normal((20, 8))
    vector_df(spark, items, partitions=3).write.parquet(str(tmp_path / "items"))
    source = spark.read.parquet(str(tmp_path / "items"))
    estimator = ApproximateNearestNeighbors(k=4, algorithm="exact", inputCol="v", idCol="id",
                                            backend="cpu")
    model = estimator.fit(source)
    plan = model._index_df._jdf.queryExecution().executedPlan().toString()
    assert "Exchange" not in plan.split("== Initial Plan ==")[0]
    assert model.buildSummary["partitions"] == source.rdd.getNumPartitions()
    hashed = estimator.copy().setNumPartitions(2).fit(source)
    query_df = vector_df(spark, queries, id_offset=10_000)
    assert _search(model, query_df) == _search(hashed, query_df)


def _search(model, queries) -> list:
    return [tuple(row) for row in model.kneighbors(queries)[2].collect()]


def test_saved_index_rows_are_pieces_joined_back_at_load(spark, tmp_path, monkeypatch):
    # Parquet's writer buffers a whole value several times on the heap: two 770 MB index rows
    # ran a 6 GB heap out of memory. Saved in pieces of 4 kB here (the default is 64 MB).
    rng = np.random.default_rng(5)
    items = rng.standard_normal((3000, 8)).astype(np.float32)
    queries = vector_df(spark, rng.standard_normal((20, 8)).astype(np.float32), id_offset=10_000)
    model = ApproximateNearestNeighbors(k=4, algorithm="ivfflat", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=2,
                                        algoParams={"nlist": 8, "nprobe": 8}).fit(
        vector_df(spark, items))
    expected = _search(model, queries)
    monkeypatch.setattr(saved_tasks, "SAVE_CHUNK_BYTES", 4096)
    path = tmp_path / "model"
    model.save(str(path))
    saved = spark.read.parquet(str(path / "data" / "indexes"))
    sizes = {row[0]: row[1] for row in saved.groupBy("__part").agg(
        F.max(F.octet_length("__index")), F.count("*")).select("__part", "count(1)").collect()}
    assert set(sizes) == {0, 1} and min(sizes.values()) > 10
    assert saved.where("__chunk > 0 and (__ids is not null or __info is not null)").count() == 0
    assert saved.agg(F.max(F.octet_length("__index"))).first()[0] <= 4096
    # One row group per piece or two, not the whole partition buffered by the writer.
    files = sorted((path / "data" / "indexes").glob("*.parquet"))
    assert all(pq.ParquetFile(f).metadata.num_row_groups > 10 for f in files)
    assert max(pq.ParquetFile(f).metadata.row_group(g).num_rows for f in files
               for g in range(pq.ParquetFile(f).metadata.num_row_groups)) <= 2
    # Searched with the joined bytes, not the build's local copies.
    spark.conf.set("spark.synapseml_ext.nn.localIndexBytes", "0")
    try:
        loaded = ApproximateNearestNeighborsModel.load(str(path))
        assert _search(loaded, queries) == expected
        assert _placed(loaded._index_df) == {0: 0, 1: 1}
        # A table saved with one row per partition (before the pieces) still loads.
        model._index_df.write.mode("overwrite").parquet(str(path / "data" / "indexes"))
        assert _search(ApproximateNearestNeighborsModel.load(str(path)), queries) == expected
        # A missing piece is named.
        broken = tmp_path / "broken"
        model.save(str(broken))
        spark.read.parquet(str(broken / "data" / "indexes")).where(
            "not (__part = 1 and __chunk = 1)").write.parquet(str(tmp_path / "pieces"))
        shutil.rmtree(broken / "data" / "indexes")
        shutil.move(tmp_path / "pieces", broken / "data" / "indexes")
        with pytest.raises(ValueError, match="lacks piece 1 of index partition 1"):
            ApproximateNearestNeighborsModel.load(str(broken))
        # ... and so is a missing last piece (the count is in piece 0's info).
        broken = tmp_path / "broken-last"
        model.save(str(broken))
        last = spark.read.parquet(str(broken / "data" / "indexes")).where(
            "__part = 0").agg(F.max("__chunk")).first()[0]
        spark.read.parquet(str(broken / "data" / "indexes")).where(
            f"not (__part = 0 and __chunk = {last})").write.parquet(str(tmp_path / "pieces-2"))
        shutil.rmtree(broken / "data" / "indexes")
        shutil.move(tmp_path / "pieces-2", broken / "data" / "indexes")
        with pytest.raises(ValueError, match=f"lacks piece {last} of index partition 0"):
            ApproximateNearestNeighborsModel.load(str(broken))
    finally:
        spark.conf.unset("spark.synapseml_ext.nn.localIndexBytes")
