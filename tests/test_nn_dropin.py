"""ApproximateNearestNeighbors as a drop-in: spark-rapids-ml's constructor keywords (each
accepted, with its meaning or a log line), several scalar input columns, ``transform`` (a
SynapseML KNN-style neighbours column, inside a Pipeline with the embedder, saved and
loaded), and filtered search (SynapseML's ConditionalKNN): exact equals brute force, the
approximate indexes' recall on the reviews' MiniLM embeddings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel
from synapseml_ext.nn import model as nn_model

from nn_data import brute_force, knn_arrays, review_embeddings, vector_df


def exact(**kwargs) -> ApproximateNearestNeighbors:
    return ApproximateNearestNeighbors(algorithm="exact", inputCol="v", idCol="id",
                                       backend="cpu", **kwargs)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(21)
    return (rng.standard_normal((600, 12)).astype(np.float32),
            rng.standard_normal((30, 12)).astype(np.float32))


# -- constructor keywords --------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"k": 7, "inputCol": "v"}, {"k": 7}),
    ({"n_neighbors": 7, "inputCol": "v"}, {"k": 7}),
    ({"algo_params": {"nlist": 8}, "inputCol": "v"}, {"algoParams": {"nlist": 8}}),
    ({"algorithm": "ivfpq", "metric": "cosine", "idCol": "id", "inputCol": "v"},
     {"algorithm": "ivfpq", "metric": "cosine", "idCol": "id"}),
    ({"inputCol": ["a", "b"]}, {"inputCols": ["a", "b"]}),
    ({"inputCols": ["a", "b"]}, {"inputCols": ["a", "b"]}),
    ({"verbose": True, "inputCol": "v"}, {"verbose": True}),
    ({"verbose": 3, "inputCol": "v"}, {"verbose": 3}),
    ({"num_workers": 1, "inputCol": "v"}, {"numPartitions": 1}),
    ({"float32_inputs": False, "inputCol": "v"}, {}),
    ({"radius": 2.0, "inputCol": "v"}, {}),
    ({"labelCol": "label", "inputCol": "v"}, {"labelCol": "label"}),
])
def test_spark_rapids_ml_keywords_are_accepted(spark, kwargs, expected):
    ours = ApproximateNearestNeighbors(**kwargs)
    for name, value in expected.items():
        assert ours.getOrDefault(name) == value, name
    srml = pytest.importorskip("spark_rapids_ml.knn")
    srml.ApproximateNearestNeighbors(**kwargs)  # the same call constructs there


def test_keywords_with_no_cpu_meaning_say_so(caplog):
    with caplog.at_level(logging.INFO, logger="synapseml_ext.nn"):
        ann = ApproximateNearestNeighbors(inputCol="v", num_workers=3, float32_inputs=False,
                                          radius=1.5)
    messages = [r.getMessage() for r in caplog.records]
    assert ann.getNumPartitions() == 3
    assert any(m.startswith("num_workers=3 sets numPartitions=3") for m in messages)
    assert any(m.startswith("float32_inputs=False is ignored") for m in messages)
    assert any(m.startswith("radius=1.5 is ignored") for m in messages)
    assert all("\n" not in m for m in messages)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"k": 3, "n_neighbors": 4}, ValueError, "'n_neighbors' is an alias of 'k'"),
    ({"num_workers": 2, "numPartitions": 3}, ValueError, "num_workers=2 and numPartitions=3"),
    ({"num_workers": 0}, ValueError, "num_workers must be a positive integer"),
    ({"verbose": 9}, TypeError, "verbose must be a bool or an integer between 0 and 6"),
    ({"nprobe": 3}, ValueError, "Unsupported param 'nprobe'"),
    ({"inputCol": "v", "inputCols": ["a"]}, ValueError, "not both"),
    ({"inputCol": ["a", "a"]}, ValueError, "inputCols must be distinct"),
])
def test_bad_keywords_are_one_line_errors(kwargs, error, message):
    with pytest.raises(error, match=message) as e:
        ApproximateNearestNeighbors(**kwargs)
    assert "\n" not in str(e.value)


def test_verbose_sets_the_log_level_for_the_call(spark, small, caplog):
    items, _ = small
    item_df = vector_df(spark, items[:50])
    before = logging.getLogger("synapseml_ext.nn").level
    for verbose, shown in ((0, False), (True, True)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="synapseml_ext.nn"):
            exact(verbose=verbose).fit(item_df)
        assert any("backend cpu" in r.getMessage() for r in caplog.records) == shown
    assert logging.getLogger("synapseml_ext.nn").level == before  # restored after each call


def test_gpu_delegate_gets_the_keywords_and_filters_stay_on_cpu(spark, small, monkeypatch):
    srml = pytest.importorskip("spark_rapids_ml.knn")
    monkeypatch.setattr(nn_model, "_executor_gpu_check", lambda s: ("gpu", "test: a GPU"))
    items, _ = small
    frame = spark.createDataFrame([(i, float(a), float(b)) for i, (a, b) in
                                   enumerate(items[:40, :2])], "id long, a double, b double")
    model = ApproximateNearestNeighbors(k=3, inputCol=["a", "b"], idCol="id", num_workers=1,
                                        verbose=True, backend="gpu").fit(frame)
    assert isinstance(model._delegate, srml.ApproximateNearestNeighborsModel)
    assert model._delegate.getInputCol() == ["a", "b"]
    assert model._delegate.getOrDefault("verbose") is True
    labelled = exact(labelCol="label").setBackend("gpu").fit(
        vector_df(spark, items[:40]).withColumn("label", F.lit(1)))
    assert labelled.backendUsed == "cpu"


# -- several scalar input columns ------------------------------------------------------


def test_list_input_columns_search_as_one_vector(spark, small, tmp_path):
    items, queries = small
    items, queries = items[:, :4], queries[:, :4]

    def scalar_frame(vectors, offset):  # one column per dimension, of mixed numeric types
        rows = [(offset + i, int(np.rint(v[0] * 100)), float(v[1]), float(v[2]), float(v[3]))
                for i, v in enumerate(vectors)]
        return spark.createDataFrame(rows, "id long, f0 int, f1 float, f2 double, f3 double")

    def as_used(vectors):  # what the columns hold: f0 is an int (x100)
        out = vectors.copy()
        out[:, 0] = np.rint(vectors[:, 0] * 100)
        return out

    ann = ApproximateNearestNeighbors(k=4, algorithm="exact", inputCol=["f0", "f1", "f2", "f3"],
                                      idCol="id", backend="cpu")
    assert ann.getInputCol() == ["f0", "f1", "f2", "f3"]
    model = ann.fit(scalar_frame(items, 0))
    qids, indices, _ = knn_arrays(model.kneighbors(scalar_frame(queries, 1000))[2])
    assert qids == list(range(1000, 1000 + len(queries)))
    assert indices == brute_force(as_used(items), as_used(queries), 4, "euclidean")[0].tolist()
    with pytest.raises(TypeError, match="inputCols column 'name' of the item DataFrame must be"):
        ann.copy().setInputCols(["f0", "name"]).fit(
            scalar_frame(items, 0).withColumn("name", F.lit("x")))
    with pytest.raises(ValueError, match="inputCols column 'f9' not found in the query"):
        model.copy().setInputCols(["f0", "f9"]).kneighbors(scalar_frame(queries, 0))
    # Persisted as a Param (the generated Scala stages have every Param too).
    model.save(str(tmp_path / "model"))
    loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "model"))
    assert loaded.getInputCol() == ["f0", "f1", "f2", "f3"]
    assert knn_arrays(loaded.kneighbors(scalar_frame(queries, 1000))[2])[1] == indices
    exact().save(str(tmp_path / "estimator"))
    assert _metadata(tmp_path / "estimator")["defaultParamMap"]["outputCol"] == "neighbors"
    assert _metadata(tmp_path / "model")["paramMap"]["inputCols"] == ["f0", "f1", "f2", "f3"]
    assert ApproximateNearestNeighbors.load(str(tmp_path / "estimator")).getOutputCol() == \
        "neighbors"


def _metadata(path: Path) -> dict:
    text = next((path / "metadata").glob("part-*")).read_text()
    return json.loads(text)


# -- transform -------------------------------------------------------------------------


def test_transform_adds_the_sorted_neighbours_of_kneighbors(spark, small):
    items, queries = small
    model = exact(k=5, metric="cosine").fit(vector_df(spark, items, partitions=3))
    query_df = vector_df(spark, queries, id_offset=500).withColumn("note", F.lit("kept"))
    out = model.transform(query_df)
    assert out.columns == ["id", "v", "note", "neighbors"]
    assert out.schema["neighbors"].dataType.simpleString() == \
        "array<struct<value:bigint,distance:float>>"
    rows = {r.id: r for r in out.collect()}
    assert len(rows) == len(queries) and {r.note for r in rows.values()} == {"kept"}
    qids, indices, distances = knn_arrays(model.kneighbors(query_df)[2])
    for qid, ids, dists in zip(qids, indices, distances, strict=True):
        assert [n.value for n in rows[qid].neighbors] == ids
        np.testing.assert_allclose([n.distance for n in rows[qid].neighbors], dists, rtol=1e-6)
        assert np.all(np.diff(dists) >= -1e-6)
    # outputCol and a param map; fewer items than k: the padding is not shown
    renamed = model.transform(query_df, {model.outputCol: "nn"})
    assert renamed.columns[-1] == "nn" and model.getOutputCol() == "neighbors"
    few = exact(k=5).fit(vector_df(spark, items[:3], id_type="string", partitions=1))
    shown = few.transform(vector_df(spark, queries[:2], id_type="string")).collect()
    assert [len(r.neighbors) for r in shown] == [3, 3]
    assert {n.value for n in shown[0].neighbors} == {"doc-0", "doc-1", "doc-2"}


class _Delegate:
    """spark-rapids-ml's model as transform uses it: getIdCol and kneighbors."""

    def __init__(self, model: ApproximateNearestNeighborsModel) -> None:
        self.model = model

    def getIdCol(self):
        return self.model.getIdCol()

    def kneighbors(self, query_df, sort_knn_df_by_query_id=True):
        return self.model.kneighbors(query_df, sort_knn_df_by_query_id)


@pytest.mark.parametrize("id_col", ["id", None])
def test_transform_of_a_gpu_model_uses_its_kneighbors(spark, small, id_col):
    items, queries = small
    cpu = exact(k=3).fit(vector_df(spark, items))
    inner = cpu.copy()
    if id_col is None:
        inner.clear(inner.idCol)
    wrapped = cpu.copy()
    wrapped._delegate = _Delegate(inner)
    query_df = vector_df(spark, queries).drop("id").withColumn("row", F.monotonically_increasing_id())
    expected = {r.row: [n.value for n in r.neighbors] for r in cpu.transform(query_df).collect()}
    got = {r.row: [n.value for n in r.neighbors] for r in wrapped.transform(query_df).collect()}
    assert got == expected and len(got) == len(queries)


def test_pipeline_embedder_then_neighbours_saved_and_loaded(spark, reviews, minilm_dir, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    summaries = reviews["Summary"].astype(str).head(40).tolist()
    items = spark.createDataFrame(list(enumerate(summaries)), "id long, text string")
    queries = spark.createDataFrame([(0, "delicious chocolate"), (1, "stale and rancid")],
                                    "qid long, text string")
    embedder = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="text",
                                           outputCol="embeddings", runtime="cpu")
    pipeline = Pipeline(stages=[embedder, ApproximateNearestNeighbors(
        k=3, algorithm="exact", metric="cosine", inputCol="embeddings", idCol="id",
        backend="cpu")])
    fitted = pipeline.fit(items)
    out = fitted.transform(queries)
    assert out.columns == ["qid", "text", "embeddings", "neighbors"]
    found = {r.qid: r for r in out.collect()}
    item_vectors = np.array([r.embeddings for r in embedder.transform(items).orderBy("id")
                             .collect()])
    query_vectors = np.array([found[q].embeddings for q in (0, 1)])
    truth, _ = brute_force(item_vectors, query_vectors, 3, "cosine")
    assert [[n.value for n in found[q].neighbors] for q in (0, 1)] == truth.tolist()
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    again = PipelineModel.load(str(tmp_path / "pipeline")).transform(queries)
    assert {r.qid: [n.value for n in r.neighbors] for r in again.collect()} == {
        q: [n.value for n in found[q].neighbors] for q in (0, 1)}


# -- filtered search (ConditionalKNN) ------------------------------------------------------


def _allowed(count: int, labels: list, seed: int) -> list[list]:
    rng = np.random.default_rng(seed)
    sets = [sorted(rng.choice(labels, size=rng.integers(1, 4), replace=False).tolist())
            for _ in range(count)]
    sets[0] = []  # nothing allowed: no neighbours
    return sets


def _filtered_truth(items, labels, queries, allowed, k, metric):
    """Per query, the positions of its k nearest items among those it allows."""
    rows = []
    for query, ok in zip(queries, allowed, strict=True):
        members = np.flatnonzero(np.isin(labels, ok))
        found, _ = brute_force(items[members], query[None, :], min(k, len(members)), metric)
        rows.append(members[found[0]].tolist() if len(members) else [])
    return rows


@pytest.mark.parametrize("label_type", ["int", "string"])
def test_filtered_exact_equals_brute_force(spark, small, label_type):
    items, queries = small
    labels = np.arange(len(items)) % 5
    names = labels if label_type == "int" else np.array([f"L{v}" for v in labels])
    item_df = vector_df(spark, items, partitions=3).withColumn(
        "label", (F.col("id") % 5) if label_type == "int" else F.concat(F.lit("L"), F.col("id") % 5))
    values = sorted(set(names.tolist()))
    allowed = _allowed(len(queries), values, seed=3)
    condition_type = "bigint" if label_type == "int" else "string"
    query_df = vector_df(spark, queries, id_offset=1000).join(spark.createDataFrame(
        [(1000 + i, a) for i, a in enumerate(allowed)], f"id long, allowed array<{condition_type}>"),
        "id")
    model = exact(k=6, labelCol="label", conditionerCol="allowed").fit(item_df)
    qids, indices, distances = knn_arrays(model.kneighbors(query_df)[2])
    truth = _filtered_truth(items, names, queries, allowed, 6, "euclidean")
    assert qids == list(range(1000, 1000 + len(queries)))
    assert [ids[: len(t)] for ids, t in zip(indices, truth, strict=True)] == truth
    assert indices[0] == [2**63 - 1] * 6 and np.isinf(distances[0]).all()  # empty set
    shown = {r.id: [n.value for n in r.neighbors] for r in model.transform(query_df).collect()}
    assert [shown[q] for q in qids] == truth


def test_labels_travel_with_the_index_bytes_and_local_copies(spark, event_log, small):
    """A copy kept by an unfiltered search (which received the bytes) still has the labels a
    later filtered search needs; with the local store off, the bytes carry them too."""
    import os

    from synapseml_ext.nn import local_store
    from test_nn_local_store import _sources, _worker_store_root

    from helpers import read_events

    items, queries = small
    labels = np.arange(len(items)) % 4
    model = exact(k=4, labelCol="label", numPartitions=3).fit(
        vector_df(spark, items).withColumn("label", F.col("id") % 4))
    allowed = [[1], [0, 3], [2]] * 10
    query_df = vector_df(spark, queries).join(spark.createDataFrame(
        list(enumerate(allowed)), "id long, allowed array<bigint>"), "id")
    filtered = model.copy().setConditionerCol("allowed")
    truth = _filtered_truth(items, labels, queries, allowed, 4, "euclidean")
    token, root = model.buildSummary["token"], _worker_store_root(spark)
    for name in os.listdir(root):
        if name.startswith(token):
            os.remove(os.path.join(root, name))
    seen = len(read_events(event_log))
    assert knn_arrays(model.kneighbors(query_df)[2])[1] == \
        brute_force(items, queries, 4, "euclidean")[0].tolist()  # unfiltered: all items
    assert _sources(event_log, seen) == ["bytes"] * 3
    seen = len(read_events(event_log))
    assert knn_arrays(filtered.kneighbors(query_df)[2])[1] == truth
    assert _sources(event_log, seen) == ["local"] * 3
    spark.conf.set(local_store.LIMIT_CONF, "0")
    try:
        assert knn_arrays(filtered.kneighbors(query_df)[2])[1] == truth
    finally:
        spark.conf.unset(local_store.LIMIT_CONF)


def test_filtered_search_errors(spark, small):
    items, queries = small
    item_df = vector_df(spark, items[:60]).withColumn("label", F.col("id") % 3)
    query_df = vector_df(spark, queries[:4])
    unlabelled = exact(conditionerCol="allowed").fit(vector_df(spark, items[:60]))
    with pytest.raises(ValueError, match="model was fitted without labelCol"):
        unlabelled.kneighbors(query_df.withColumn("allowed", F.array(F.lit(1))))
    model = exact(labelCol="label", conditionerCol="allowed").fit(item_df)
    with pytest.raises(ValueError, match="conditionerCol 'allowed' not found in the query"):
        model.kneighbors(query_df)
    with pytest.raises(TypeError, match=r"must be an array of the labels' type \(array<bigint>"):
        model.kneighbors(query_df.withColumn("allowed", F.array(F.lit("a"))))
    nulls = query_df.withColumn("allowed", F.when(F.col("id") == 2, F.lit(None))
                                .otherwise(F.array(F.lit(1))).cast("array<int>"))
    with pytest.raises(ValueError, match=r"query id 2 has a null 'allowed' \(its allowed labels\)"):
        model.kneighbors(nulls)[2].collect()
    with pytest.raises(ValueError, match="item id 7 has a null 'label' label"):
        exact(labelCol="label").fit(item_df.withColumn(
            "label", F.when(F.col("id") == 7, F.lit(None)).otherwise(F.col("label"))))


@pytest.fixture(scope="module")
def review_set(reviews, review_texts, minilm_dir):
    """The 1000 reviews' MiniLM embeddings (cached), their Score as the label: 800 items,
    200 held-out queries allowing 1-3 random scores each."""
    vectors = review_embeddings(review_texts, minilm_dir)
    scores = reviews["Score"].to_numpy(np.int64)
    order = np.random.default_rng(7).permutation(len(vectors))
    items, queries = order[200:], order[:200]
    allowed = [*_allowed(len(queries), [1, 2, 3, 4, 5], seed=7)[1:], [5]]
    truth = _filtered_truth(vectors[items], scores[items], vectors[queries], allowed, 10,
                            "cosine")
    return vectors, scores, items, queries, allowed, [items[t].tolist() for t in truth]


def test_filtered_recall_on_minilm_reviews(spark, review_set, tmp_path):
    vectors, scores, items, queries, allowed, truth = review_set
    import pandas as pd

    item_df = spark.createDataFrame(pd.DataFrame({
        "id": items, "v": list(vectors[items]), "score": scores[items]}),
        "id long, v array<float>, score int").repartition(2)
    query_df = spark.createDataFrame(pd.DataFrame({
        "id": np.arange(len(queries)), "v": list(vectors[queries]), "allowed": allowed}),
        "id long, v array<float>, allowed array<int>")
    results = {}
    for name, settings in {"default": {}, "ivfflat": {"algoParams": {"nlist": 16}},
                           "hnsw": {"algorithm": "hnsw", "algoParams": {"M": 16}}}.items():
        model = ApproximateNearestNeighbors(
            k=10, metric="cosine", inputCol="v", idCol="id", backend="cpu", labelCol="score",
            conditionerCol="allowed", **settings).fit(item_df)
        _, indices, _ = knn_arrays(model.kneighbors(query_df)[2])
        results[name] = _tie_aware_recall(vectors, queries, indices, truth)
        if name == "ivfflat":
            kinds = {i["kind"] for i in model.buildSummary["indexes"]}
            assert kinds == {"ivfflat"}, model.buildSummary
            model.save(str(tmp_path / "labelled"))
            loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "labelled"))
            assert knn_arrays(loaded.kneighbors(query_df)[2])[1] == indices
    assert results["default"] == 1.0, results  # 400-item partitions: searched exactly
    assert results["ivfflat"] >= 0.95 and results["hnsw"] >= 0.95, results


def _tie_aware_recall(vectors, queries, found: list[list[int]], truth: list[list[int]]
                      ) -> float:
    """Share of the true k nearest found, where an item as near as the k-th true one counts
    (the reviews hold duplicates: equal vectors, equal distances, either id is right)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    hits = 0
    for query, got, true in zip(queries, found, truth, strict=True):
        distance = 1.0 - unit.astype(np.float64) @ unit[query].astype(np.float64)
        got = [i for i in got if i != 2**63 - 1]
        limit = distance[true].max() + 1e-6 if true else -np.inf
        hits += min(len(true), int((distance[got] <= limit).sum()))
    return hits / sum(len(t) for t in truth)
