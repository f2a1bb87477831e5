"""ApproximateNearestNeighbors on Spark: exact equals brute force, output shape and order as
spark-rapids-ml, save/load without rebuilding, recall of ivfflat on realistic data."""

from __future__ import annotations

import numpy as np
import pytest

from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

from helpers import read_events
from nn_data import brute_force, clustered_latent, knn_arrays, recall, vector_df

METRICS = ("euclidean", "sqeuclidean", "l2", "inner_product", "cosine")


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    return rng.standard_normal((900, 24)).astype(np.float32), rng.standard_normal(
        (40, 24)).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_equals_brute_force(spark, small, metric):
    items, queries = small
    model = ApproximateNearestNeighbors(k=7, algorithm="exact", metric=metric, inputCol="v",
                                        idCol="id", backend="cpu").fit(
        vector_df(spark, items, partitions=3))
    assert model.buildSummary["partitions"] == 3
    _, _, knn = model.kneighbors(vector_df(spark, queries, id_offset=10_000))
    qids, indices, distances = knn_arrays(knn)
    assert qids == list(range(10_000, 10_040))  # sorted by query id
    truth, truth_dist = brute_force(items, queries, 7, metric)
    assert indices == truth.tolist()
    np.testing.assert_allclose(distances, truth_dist, rtol=1e-4, atol=1e-4)
    # nearest first: ascending distances, descending similarities for inner_product
    steps = np.diff(distances, axis=1)
    assert (steps <= 1e-6).all() if metric == "inner_product" else (steps >= -1e-6).all()


@pytest.mark.parametrize("groups", [0, 1, 3])
def test_index_and_block_partitions_in_any_layout(spark, event_log, small, groups):
    """A task may hold several index rows (a loaded table packs small files into one
    partition) and several query blocks (queries from many partitions, one group): every
    index row gets its bytes once per task and meets every block."""
    items, queries = small
    model = ApproximateNearestNeighbors(k=5, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu", numPartitions=3,
                                        numQueryBlocks=groups).fit(vector_df(spark, items))
    packed = model.copy()
    packed._set_state(model._item_df, model._index_df.coalesce(1), model.buildSummary, "test")
    query_df = vector_df(spark, queries, partitions=4)
    truth, _ = brute_force(items, queries, 5, "euclidean")
    for searched in (model, packed):
        seen = len(read_events(event_log))
        qids, indices, _ = knn_arrays(searched.kneighbors(query_df)[2])
        assert qids == list(range(len(queries))) and indices == truth.tolist()
        events = read_events(event_log)[seen:]
        for part in range(3):
            loads = [e for e in events if e == {**e, "event": "nn_load", "partition": part}]
            searched_queries = sum(e["queries"] for e in events
                                   if e == {**e, "event": "nn_search", "partition": part})
            assert searched_queries == len(queries)  # each query met each index partition once
            # one load per task: at most one per query group (4 query blocks at most)
            assert 1 <= len(loads) <= (groups or 4)


def test_output_tuple_columns_and_types(spark, small):
    items, queries = small
    item_df = vector_df(spark, items)
    model = ApproximateNearestNeighbors(k=3, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu").fit(item_df)
    query_df = vector_df(spark, queries)
    item_out, query_out, knn = model.kneighbors(query_df)
    assert item_out.columns == ["id", "v"] and query_out.columns == ["id", "v"]
    assert [(f.name, f.dataType.simpleString()) for f in knn.schema.fields] == [
        ("query_id", "bigint"), ("indices", "array<bigint>"), ("distances", "array<float>")]
    assert knn.count() == len(queries)

    joined = model.approxSimilarityJoin(query_df, distCol="dist")
    assert joined.columns == ["item_df", "query_df", "dist"]
    assert joined.count() == 3 * len(queries)
    one = joined.where("query_df.id = 0").orderBy("dist").collect()
    _, knn_rows = None, knn.where("query_id = 0").head()
    assert [r.item_df.id for r in one] == list(knn_rows.indices)
    np.testing.assert_allclose([r.dist for r in one], knn_rows.distances, rtol=1e-6)


def test_generated_ids_and_string_ids(spark, small):
    items, queries = small
    no_id = vector_df(spark, items).drop("id")
    model = ApproximateNearestNeighbors(k=2, algorithm="exact", inputCol="v",
                                        backend="cpu").fit(no_id)
    item_out, query_out, knn = model.kneighbors(vector_df(spark, queries).drop("id"))
    assert item_out.columns[0] == "unique_id" and knn.columns[0] == "query_unique_id"
    # generated ids map back to the right vectors
    by_id = {r.unique_id: np.array(r.v) for r in item_out.collect()}
    queries_by_id = {r.unique_id: np.array(r.v) for r in query_out.collect()}
    for row in knn.collect():
        q = queries_by_id[row.query_unique_id]
        assert np.linalg.norm(by_id[row.indices[0]] - q) == pytest.approx(row.distances[0],
                                                                           rel=1e-4)
    joined = model.approxSimilarityJoin(vector_df(spark, queries).drop("id"))
    assert joined.schema["item_df"].dataType.names == ["v"]

    strings = ApproximateNearestNeighbors(k=4, algorithm="exact", inputCol="v", idCol="id",
                                          backend="cpu").fit(
        vector_df(spark, items, id_type="string"))
    _, _, knn = strings.kneighbors(vector_df(spark, queries, id_type="string"))
    qids, indices, _ = knn_arrays(knn)
    truth, _ = brute_force(items, queries, 4, "euclidean")
    assert qids == sorted(f"doc-{i}" for i in range(len(queries)))
    order = [int(q.split("-")[1]) for q in qids]
    assert indices == [[f"doc-{j}" for j in truth[i]] for i in order]


def test_generated_ids_pair_each_query_with_its_own_neighbours(spark, small):
    """idCol unset, round-robin repartitioned inputs with a column the search does not read:
    the search and the join back read different columns, which a round-robin shuffle sorts
    by, so ids generated per evaluation paired ~99% of the queries with other queries'
    neighbours. Both sides now read one materialised numbering."""
    items, queries = small
    model = ApproximateNearestNeighbors(k=3, algorithm="exact", inputCol="v",
                                        backend="cpu").fit(vector_df(spark, items, partitions=3))
    query_df = vector_df(spark, queries, partitions=3)
    truth, _ = brute_force(items, queries, 3, "euclidean")
    expected = {(q, int(i)) for q, row in enumerate(truth) for i in row}
    joined = model.approxSimilarityJoin(query_df).select("query_df.id", "item_df.id")
    assert {(r[0], r[1]) for r in joined.collect()} == expected
    item_out, query_out, knn = model.kneighbors(query_df)
    item_ids = dict(item_out.select("unique_id", "id").collect())
    query_ids = dict(query_out.select("unique_id", "id").collect())
    assert {(query_ids[r.query_unique_id], item_ids[i]) for r in knn.collect()
            for i in r.indices} == expected


def test_vector_udt_and_double_inputs(spark, small):
    from pyspark.ml.linalg import Vectors

    items, queries = small
    vec_items = spark.createDataFrame([(i, Vectors.dense(v.tolist())) for i, v in
                                       enumerate(items)], ["id", "features"])
    dbl_queries = spark.createDataFrame([(i, v.astype(float).tolist()) for i, v in
                                         enumerate(queries)], "id long, features array<double>")
    model = ApproximateNearestNeighbors(k=3, algorithm="exact", inputCol="features",
                                        idCol="id", backend="cpu").fit(vec_items)
    _, indices, _ = knn_arrays(model.kneighbors(dbl_queries)[2])
    assert indices == brute_force(items, queries, 3, "euclidean")[0].tolist()


def test_k_larger_than_items_pads(spark):
    items = np.eye(3, 4, dtype=np.float32)
    model = ApproximateNearestNeighbors(k=5, algorithm="exact", inputCol="v", idCol="id",
                                        backend="cpu").fit(vector_df(spark, items, partitions=2))
    _, indices, distances = knn_arrays(model.kneighbors(vector_df(spark, items[:1]))[2])
    assert indices[0][:3] == [0, 1, 2] and indices[0][3:] == [2**63 - 1] * 2
    assert np.isinf(distances[0][3:]).all() and np.isfinite(distances[0][:3]).all()


def test_save_load_same_neighbours_without_rebuild(spark, event_log, tmp_path):
    data = clustered_latent(12_060, dim=32, clusters=100)
    items, queries = data[:-60], data[-60:]
    estimator = ApproximateNearestNeighbors(k=10, algorithm="ivfflat", inputCol="v",
                                            idCol="id", backend="cpu",
                                            algoParams={"nlist": 50})
    estimator.save(str(tmp_path / "estimator"))
    loaded_estimator = ApproximateNearestNeighbors.load(str(tmp_path / "estimator"))
    assert loaded_estimator.getAlgoParams() == {"nlist": 50}
    assert loaded_estimator.getBackend() == "cpu" and loaded_estimator.getK() == 10

    builds_before = len(read_events(event_log, event="nn_build"))
    model = loaded_estimator.fit(vector_df(spark, items, partitions=2))
    assert len(read_events(event_log, event="nn_build")) == builds_before + 2
    summary = model.buildSummary
    assert {i["kind"] for i in summary["indexes"]} == {"ivfflat"}
    query_df = vector_df(spark, queries)
    first = knn_arrays(model.kneighbors(query_df)[2])
    again = knn_arrays(model.kneighbors(query_df)[2])  # searching again reuses the indexes
    model.save(str(tmp_path / "model"))
    loaded = ApproximateNearestNeighborsModel.load(str(tmp_path / "model"))
    reloaded = knn_arrays(loaded.kneighbors(query_df)[2])
    assert len(read_events(event_log, event="nn_build")) == builds_before + 2  # no rebuild
    assert first[1] == again[1] == reloaded[1]
    np.testing.assert_array_equal(first[2], reloaded[2])
    # a load draws its own token so executors never reuse copies of another model's bytes
    assert loaded.buildSummary["token"] != summary["token"]
    assert _without_token(loaded.buildSummary) == _without_token(summary)
    assert loaded.getAlgoParams() == {"nlist": 50}
    assert loaded.kneighbors(query_df)[0].count() == len(items)


def _without_token(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key != "token"}


def test_recall_defaults_and_tuned_ivfflat_on_clustered_latent(spark):
    """Defaults (nlist ~ sqrt(n), nprobe tuned at fit to 0.95 recall on held-out items)
    and an explicit setting, against brute force on overlapping clusters."""
    data = clustered_latent(40_300)  # queries from the same distribution as the items
    items, queries = data[:-300], data[-300:]
    item_df, query_df = vector_df(spark, items), vector_df(spark, queries)
    truth, _ = brute_force(items, queries, 10, "euclidean")

    defaults = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id",
                                           backend="cpu").fit(item_df)
    kinds = {i["kind"] for i in defaults.buildSummary["indexes"]}
    assert kinds == {"ivfflat"}, defaults.buildSummary
    _, indices, _ = knn_arrays(defaults.kneighbors(query_df)[2])
    default_recall = recall(indices, truth)

    tuned = ApproximateNearestNeighbors(k=10, inputCol="v", idCol="id", backend="cpu",
                                        algoParams={"nlist": 256, "nprobe": 48}).fit(item_df)
    _, indices, _ = knn_arrays(tuned.kneighbors(query_df)[2])
    tuned_recall = recall(indices, truth)
    assert default_recall >= 0.90, (default_recall, defaults.buildSummary)
    assert tuned_recall >= 0.95, tuned_recall


@pytest.fixture(scope="module")
def review_sentence_vectors(reviews, minilm_dir, cache_dir):
    """Real all-MiniLM-L6-v2 embeddings of the fine-food reviews' sentences."""
    import re

    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    sentences = sorted({s.strip() for text in reviews["Text"].astype(str)
                        for s in re.split(r"(?<=[.!?])\s+|<br\s*/?>", text)
                        if len(s.split()) >= 3})
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="fp32",
                                          cache_dir=cache_dir))
    return encoder.encode(sentences)


def test_recall_on_real_minilm_sentences(spark, review_sentence_vectors):
    vectors = review_sentence_vectors
    assert len(vectors) > 3000
    items, queries = vectors[:-300], vectors[-300:]
    item_df = vector_df(spark, items)
    query_df = vector_df(spark, queries, id_offset=len(items))
    truth, _ = brute_force(items, queries, 10, "cosine")
    # nlist forces IVF on these small partitions; nprobe is chosen at fit for 0.95 recall
    auto = ApproximateNearestNeighbors(k=10, metric="cosine", inputCol="v", idCol="id",
                                       backend="cpu", algoParams={"nlist": 40}).fit(item_df)
    _, indices, distances = knn_arrays(auto.kneighbors(query_df)[2])
    auto_recall = recall(indices, truth)
    tuned = ApproximateNearestNeighbors(k=10, metric="cosine", inputCol="v", idCol="id",
                                        backend="cpu", algoParams={"nlist": 40, "nprobe": 20}
                                        ).fit(item_df)
    tuned_recall = recall(knn_arrays(tuned.kneighbors(query_df)[2])[1], truth)
    assert auto_recall >= 0.90, (auto_recall, auto.buildSummary)
    assert tuned_recall >= 0.95, tuned_recall
    assert (distances >= -1e-6).all() and (distances <= 2 + 1e-6).all()  # 1 - cosine


def test_doctest_example(spark, tmp_path):
    import doctest

    import synapseml_ext.nn.model as module

    globs = {"spark": spark, "temp_path": str(tmp_path),
             "ApproximateNearestNeighborsModel": ApproximateNearestNeighborsModel}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module.ApproximateNearestNeighbors, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def test_inside_a_pipeline_with_save_load(spark, small, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    items, queries = small
    pipeline = Pipeline(stages=[ApproximateNearestNeighbors(k=3, algorithm="exact",
                                                            inputCol="v", idCol="id",
                                                            backend="cpu")])
    fitted = pipeline.fit(vector_df(spark, items))
    fitted.save(str(tmp_path / "pipeline"))
    stage = PipelineModel.load(str(tmp_path / "pipeline")).stages[0]
    assert isinstance(stage, ApproximateNearestNeighborsModel)
    _, indices, _ = knn_arrays(stage.kneighbors(vector_df(spark, queries))[2])
    assert indices == brute_force(items, queries, 3, "euclidean")[0].tolist()
