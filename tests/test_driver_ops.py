"""The driver-side operations a Scala stage runs (synapseml_ext.bridge.driver_ops), called
here as the JVM calls them: the Scala stage's metadata, JVM Datasets and JSON arguments.
The ScalaTest suites (KnnSuite, KnnDriverSuite, KnnPersistenceSuite) run them through the
real py4j process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synapseml_ext.bridge.driver_ops import GPU_FROM_SCALA, run

SCALA_ESTIMATOR = "io.github.synapsemlext.nn.ApproximateNearestNeighbors"
SCALA_MODEL = "io.github.synapsemlext.nn.ApproximateNearestNeighborsModel"


def _spec(cls: str, params: dict) -> dict:
    return {"class": cls, "uid": "ApproximateNearestNeighbors_0123", "paramMap": params,
            "defaultParamMap": {}, "sparkVersion": "3.5.9", "timestamp": 0}


@pytest.fixture
def frames(spark):
    rng = np.random.default_rng(3)
    items = spark.createDataFrame([(i, rng.normal(size=8).astype(float).tolist())
                                   for i in range(60)], "id long, v array<double>")
    return items, items.limit(7)


def test_fit_then_search_with_the_handed_over_state(spark, frames):
    items, queries = frames
    params = {"k": 3, "algorithm": "exact", "inputCol": "v", "idCol": "id"}
    text, (item_df, index_df) = run("fit", _spec(SCALA_ESTIMATOR, params), [items._jdf], {},
                                    spark.sparkContext)
    state = json.loads(text)
    assert state["summary"]["dim"] == 8 and state["reason"] == "called from Scala"
    args = {"state": state, "sort": True}
    _, (_, _, knn) = run("kneighbors", _spec(SCALA_MODEL, params),
                         [item_df._jdf, index_df._jdf, queries._jdf], args, spark.sparkContext)
    rows = knn.collect()
    assert [r["query_id"] for r in rows] == list(range(7))
    assert all(r["indices"][0] == r["query_id"] for r in rows)  # each finds itself first
    schema_text, _ = run("transformSchema", _spec(SCALA_MODEL, params),
                         [item_df._jdf, index_df._jdf],
                         {"state": state, "schema": queries.schema.jsonValue()},
                         spark.sparkContext)
    _, (found,) = run("transform", _spec(SCALA_MODEL, params),
                      [item_df._jdf, index_df._jdf, queries._jdf], {"state": state},
                      spark.sparkContext)
    assert json.loads(schema_text) == found.schema.jsonValue()


def test_params_are_checked_with_the_python_messages(spark, frames):
    items, _ = frames
    with pytest.raises(ValueError, match="algorithm 'annoy'"):
        run("fit", _spec(SCALA_ESTIMATOR, {"algorithm": "annoy", "inputCol": "v"}),
            [items._jdf], {}, spark.sparkContext)
    with pytest.raises(ValueError, match="backend 'gpu' is not available from Scala") as e:
        run("fit", _spec(SCALA_ESTIMATOR, {"backend": "gpu", "inputCol": "v"}), [items._jdf],
            {}, spark.sparkContext)
    assert str(e.value) == GPU_FROM_SCALA
    with pytest.raises(ValueError, match="unknown driver op 'explode'"):
        run("explode", {}, [], {}, spark.sparkContext)


def test_a_model_saved_under_the_scala_class_loads_on_both_sides(spark, frames, tmp_path):
    items, queries = frames
    params = {"k": 2, "algorithm": "exact", "inputCol": "v", "idCol": "id"}
    text, tables = run("fit", _spec(SCALA_ESTIMATOR, params), [items._jdf], {},
                       spark.sparkContext)
    path = str(tmp_path / "model")
    run("save", _spec(SCALA_MODEL, params), [t._jdf for t in tables],
        {"state": json.loads(text), "path": path, "className": SCALA_MODEL},
        spark.sparkContext)
    part = next(p for p in (tmp_path / "model" / "metadata").iterdir()
                if p.name.startswith("part-") and p.stat().st_size)
    metadata = json.loads(part.read_text())
    assert metadata["class"] == SCALA_MODEL  # so Spark's Scala readers (PipelineModel) find it
    loaded_text, _ = run("load", {}, [], {"path": path}, spark.sparkContext)
    loaded = json.loads(loaded_text)
    assert loaded["metadata"]["uid"] == "ApproximateNearestNeighbors_0123"
    assert loaded["metadata"]["paramMap"]["k"] == 2
    from synapseml_ext.nn import ApproximateNearestNeighborsModel

    model = ApproximateNearestNeighborsModel.load(path)
    assert model.kneighbors(queries)[2].count() == 7


SCALA_EMBEDDER = "io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder"


def test_the_embedder_runs_as_the_pyspark_stage(spark, minilm_dir, cache_dir, st_minilm):
    params = {"modelName": minilm_dir, "inputCol": "text", "outputCol": "vec", "runtime": "cpu",
              "precision": "fp32", "cacheDir": cache_dir}
    texts = spark.createDataFrame([(1, "desserts"), (2, None), (3, "disgusting")],
                                  "id int, text string")
    schema_text, _ = run("transformSchema", _spec(SCALA_EMBEDDER, params),
                         [], {"schema": texts.schema.jsonValue()}, spark.sparkContext)
    _, (out,) = run("transform", _spec(SCALA_EMBEDDER, params), [texts._jdf], {},
                    spark.sparkContext)
    assert json.loads(schema_text) == out.schema.jsonValue()
    rows = out.orderBy("id").collect()
    assert rows[1]["vec"] is None  # a null text, a null embedding
    want = st_minilm.encode(["desserts", "disgusting"], normalize_embeddings=True)
    got = np.array([rows[0]["vec"], rows[2]["vec"]])
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999


def test_the_embedder_params_are_checked_before_a_save_and_keys_not_echoed(spark):
    assert run("check", _spec(SCALA_EMBEDDER, {"apiKeyEnv": "TEI_API_KEY"}), [], {},
               spark.sparkContext) == ("{}", [])
    with pytest.raises(ValueError, match=r"^apiKeyEnv must be the NAME") as e:
        run("check", _spec(SCALA_EMBEDDER, {"apiKeyEnv": "sk-live-123"}), [], {},
            spark.sparkContext)
    assert "sk-live-123" not in str(e.value)
    with pytest.raises(ValueError, match="HuggingFaceSentenceEmbedder has no driver op 'fit'"):
        run("fit", _spec(SCALA_EMBEDDER, {}), [], {}, spark.sparkContext)
