"""Bad inputs and settings of ApproximateNearestNeighbors get clear errors; the GPU backend
delegates to spark-rapids-ml with our Params."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from pyspark.errors import PythonException
from pyspark.sql.utils import CapturedException

from synapseml_ext.nn import ApproximateNearestNeighbors
from synapseml_ext.nn import model as nn_model
from synapseml_ext.nn.gpu import gpu_unsupported, rapids_kwargs

from nn_data import vector_df


def exact(**kwargs) -> ApproximateNearestNeighbors:
    return ApproximateNearestNeighbors(algorithm="exact", inputCol="v", idCol="id",
                                       backend="cpu", **kwargs)


@pytest.fixture(scope="module")
def items(spark):
    rng = np.random.default_rng(5)
    return vector_df(spark, rng.standard_normal((50, 8)).astype(np.float32))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, "k must be a positive integer"),
    ({"metric": "manhattan"}, "unknown metric 'manhattan'"),
    ({"algorithm": "lsh"}, "unknown algorithm 'lsh'"),
    ({"backend": "tpu"}, "unknown backend 'tpu'"),
    ({"algorithm": "ivfflat", "algoParams": {"nprobes": 3}}, "algoParams key 'nprobes'"),
    ({"algorithm": "ivfflat", "algoParams": {"nlist": -1}}, "must be a positive integer"),
    ({"algorithm": "ivfpq", "algoParams": {"n_bits": 20}}, "n_bits must be between 1 and 16"),
    ({"algoParams": {"target_recall": 1.5}}, r"must be a number in \(0, 1\]"),
])
def test_bad_params_raise_on_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ApproximateNearestNeighbors(inputCol="v", **kwargs)


def test_missing_and_mistyped_columns_fail_on_the_driver(spark, items):
    with pytest.raises(ValueError, match="inputCol 'vec' not found in the item DataFrame"):
        exact().setInputCol("vec").fit(items)
    with pytest.raises(ValueError, match="idCol 'key' not found in the item DataFrame"):
        exact().setIdCol("key").fit(items)
    with pytest.raises(ValueError, match="inputCol is not set"):
        ApproximateNearestNeighbors(backend="cpu").fit(items)
    with pytest.raises(TypeError, match="inputCol 'id' of the item DataFrame must be"):
        exact().setInputCol("id").fit(items)
    with pytest.raises(TypeError, match="idCol 'v' of the item DataFrame must be an integral"):
        exact().setIdCol("v").fit(items)
    model = exact().fit(items)
    with pytest.raises(ValueError, match="idCol 'id' not found in the query DataFrame"):
        model.kneighbors(items.withColumnRenamed("id", "qid"))
    with pytest.raises(ValueError, match="inputCol 'v' not found in the query DataFrame"):
        model.kneighbors(items.withColumnRenamed("v", "w"))
    with pytest.raises(ValueError, match="already has a column 'neighbors'; set outputCol"):
        model.transform(items.withColumn("neighbors", items.id))


def test_duplicate_ids(spark):
    df = spark.createDataFrame([(1, [0.0, 1.0]), (2, [1.0, 1.0]), (1, [2.0, 1.0])],
                               "id long, v array<float>").repartition(2)
    with pytest.raises(ValueError, match="item id 1 occurs 2 times"):
        exact().fit(df)
    strings = spark.createDataFrame([("a", [0.0, 1.0]), ("a", [1.0, 1.0])],
                                    "id string, v array<float>")
    with pytest.raises(ValueError, match="item id 'a' occurs 2 times"):
        exact().fit(strings)


def test_duplicate_ids_in_different_input_partitions(spark):
    # numPartitions unset builds each input partition where it is: the driver checks the
    # ids across partitions after the build.
    rows = [(0, i, [float(i), 1.0]) for i in range(6)] + [(1, 3, [9.0, 1.0]), (1, 7, [7.0, 1.0])]
    df = (spark.createDataFrame(rows, "shard int, id long, v array<float>")
          .repartitionByRange(2, "shard").select("id", "v"))
    assert sorted(map(sorted, df.rdd.glom().map(lambda p: [r.id for r in p]).collect())) == [
        [0, 1, 2, 3, 4, 5], [3, 7]]  # id 3 in both partitions
    with pytest.raises(ValueError, match="item id 3 occurs 2 times; idCol must identify"):
        exact().fit(df)


@pytest.mark.parametrize("partitions", [1, 3])
def test_duplicate_query_ids_name_the_id(spark, partitions):
    rng = np.random.default_rng(6)
    model = exact(k=2, numPartitions=partitions).fit(
        vector_df(spark, rng.standard_normal((40, 4)).astype(np.float32)))
    queries = spark.createDataFrame([(5, [0.0, 1.0, 0.0, 0.0]), (6, [1.0, 0.0, 0.0, 0.0]),
                                     (5, [0.0, 0.0, 1.0, 0.0])], "id long, v array<float>")
    with pytest.raises(Exception, match="query id 5 occurs more than once"):
        model.kneighbors(queries)[2].collect()
    strings = spark.createDataFrame([("q", [0.0, 1.0, 0.0, 0.0]), ("q", [1.0, 0.0, 0.0, 0.0])],
                                    "id string, v array<float>")
    with pytest.raises(Exception, match="query id 'q' occurs more than once"):
        model.kneighbors(strings)[2].collect()
    unique = queries.where("v[2] = 0")
    assert model.kneighbors(unique)[2].count() == 2


@pytest.mark.parametrize(("rows", "message"), [
    ([(1, [0.0, 1.0]), (7, [float("nan"), 1.0])], "item id 7 has a non-finite value"),
    ([(1, [0.0, 1.0]), (8, [float("inf"), 1.0])], "item id 8 has a non-finite value"),
    ([(1, [0.0, 1.0]), (9, [1.0, 2.0, 3.0])], "item id 9 has a 'v' vector of dimension 3"),
    ([(1, [0.0, 1.0]), (4, None)], "item id 4 has a null 'v' vector"),
    ([(1, [0.0, 1.0]), (None, [1.0, 1.0])], "null id"),
])
def test_bad_item_vectors_name_the_id(spark, rows, message):
    df = spark.createDataFrame(rows, "id long, v array<float>").coalesce(1)
    with pytest.raises(ValueError, match=message):
        exact().fit(df)


def test_mixed_dimensions_across_partitions(spark):
    rows = [(i, [1.0, float(i)]) for i in range(20)] + [(99, [1.0, 2.0, 3.0])]
    df = spark.createDataFrame(rows, "id long, v array<float>")
    with pytest.raises(ValueError, match="dimension"):
        exact(numPartitions=4).fit(df)


def test_empty_items(spark):
    with pytest.raises(ValueError, match="item DataFrame is empty"):
        exact().fit(spark.createDataFrame([], "id long, v array<float>"))


def test_bad_query_vectors_name_the_query_id(spark, items):
    model = exact().fit(items)
    queries = spark.createDataFrame([(5, [0.0] * 8), (6, [0.0] * 3)], "id long, v array<float>")
    # The search runs in kneighbors: the executor's data error comes back as a ValueError.
    with pytest.raises(ValueError,
                       match="query id 6 has a 'v' vector of dimension 3 but the items have 8"):
        model.kneighbors(queries)
    # With the local copies off the search is lazy: the error comes with the action.
    spark.conf.set("spark.synapseml_ext.nn.localIndexBytes", "0")
    try:
        _, _, knn = model.kneighbors(queries)
        with pytest.raises((PythonException, CapturedException),
                           match="query id 6 has a 'v' vector of dimension 3 but the items"):
            knn.collect()
    finally:
        spark.conf.unset("spark.synapseml_ext.nn.localIndexBytes")


def test_cagra_on_cpu_uses_hnsw(spark, items):
    model = ApproximateNearestNeighbors(algorithm="cagra", metric="sqeuclidean", inputCol="v",
                                        idCol="id", backend="cpu").fit(items)
    assert model.backendUsed == "cpu"
    assert model.buildSummary["items"] == 50


def test_auto_backend_is_cpu_without_gpus(spark, items):
    model = ApproximateNearestNeighbors(k=2, inputCol="v", idCol="id").fit(items)
    assert model.getBackend() == "auto" and model.backendUsed == "cpu"
    assert model.kneighbors(items)[2].count() == 50


def test_gpu_param_mapping():
    assert rapids_kwargs(7, "ivfpq", "cosine", {"nlist": 64, "M": 16, "target_recall": 0.9},
                         "emb", "id") == {
        "k": 7, "algorithm": "ivfpq", "metric": "cosine", "inputCol": "emb", "idCol": "id",
        "algoParams": {"nlist": 64, "M": 16}}
    assert "idCol" not in rapids_kwargs(5, "ivfflat", "euclidean", None, "emb", None)
    assert gpu_unsupported("ivfflat", "euclidean", "long") is None
    assert "integral ids" in gpu_unsupported("ivfflat", "euclidean", "string")
    assert "not offered" in gpu_unsupported("hnsw", "euclidean", "long")
    assert "sqeuclidean" in gpu_unsupported("cagra", "euclidean", "long")


def test_gpu_backend_without_gpu_search_on_the_executors_fails_at_fit(spark, items):
    """Not at the first search with a bare ModuleNotFoundError: cupy, as it did."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here: the executors may have a GPU search")
    ann = ApproximateNearestNeighbors(k=3, algorithm="ivfflat", inputCol="v", idCol="id",
                                      backend="gpu")
    with pytest.raises(ValueError, match=r"backend='gpu' cannot run on this cluster: .*cupy.*; "
                                         "use backend='cpu'") as e:
        ann.fit(items)
    assert "\n" not in str(e.value)


def test_gpu_backend_delegates_to_spark_rapids_ml(spark, items, monkeypatch):
    """Up to where a GPU is needed (the executors' probe is answered as a GPU cluster's
    would be): the spark-rapids-ml estimator is built with our Params and fitted (its fit is
    lazy); the search then needs cuVS on the executors."""
    srml = pytest.importorskip("spark_rapids_ml.knn",
                               reason="spark-rapids-ml is not installed in this environment")
    monkeypatch.setattr(nn_model, "_executor_gpu_check",
                        lambda spark: ("gpu", "executors have 1 GPU(s)"))
    ann = ApproximateNearestNeighbors(k=3, algorithm="ivfflat", metric="euclidean",
                                      algoParams={"nlist": 4, "nprobe": 2}, inputCol="v",
                                      idCol="id", backend="gpu")
    model = ann.fit(items)
    assert model.backendUsed == "gpu"
    delegate = model._delegate
    assert isinstance(delegate, srml.ApproximateNearestNeighborsModel)
    assert (delegate.getK(), delegate.getAlgorithm(), delegate.getMetric(),
            delegate.getAlgoParams(), delegate.getIdCol(), delegate.getInputCol()) == (
        3, "ivfflat", "euclidean", {"nlist": 4, "nprobe": 2}, "id", "v")
    assert delegate.cuml_params["n_neighbors"] == 3
    with pytest.raises(NotImplementedError, match="spark-rapids-ml's model"):
        model.save("/tmp/never-written")
    # String ids are beyond spark-rapids-ml: the CPU engine takes over.
    strings = items.selectExpr("cast(id as string) as id", "v")
    assert ann.fit(strings).backendUsed == "cpu"
