"""Index partition p sits in shuffle partition p: the placement keys follow Spark's own hash,
so each task of the index table (fit, save, the miss join) holds one index row; saved index
rows are uncompressed."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel
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
    # One index row per file, written uncompressed (snappy's first read of a large row is slow).
    files = sorted((tmp_path / "model" / "data" / "indexes").glob("*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [1] * 8
    assert {pq.ParquetFile(f).metadata.row_group(0).column(c).compression
            for f in files for c in range(4)} == {"UNCOMPRESSED"}
    loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "model"))
    assert _placed(loaded._index_df) == {p: p for p in range(8)}
