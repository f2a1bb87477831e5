"""HuggingFaceSentenceEmbedder on local Spark: rows, order, nulls, errors, persistence."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from safetensors.numpy import save_file

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine.errors import ModelLoadError, RuntimeUnavailableError, user_message
from synapseml_ext.hf import HuggingFaceSentenceEmbedder

from helpers import cosines, read_events


@pytest.fixture(scope="module")
def embedder(minilm_dir, cache_dir):
    return HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="text",
                                       outputCol="embeddings", runtime="onnx",
                                       cacheDir=cache_dir)


@pytest.fixture(scope="module")
def onnx_encoder(minilm_dir, cache_dir):
    return SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=cache_dir))


def test_synapseml_keyword_constructor_works_unchanged(minilm_dir):
    # The seed quickstart's call, and SynapseML's habit of passing None for unset arguments.
    emb = HuggingFaceSentenceEmbedder(modelName="sentence-transformers/all-MiniLM-L6-v2",
                                      inputCol="data", outputCol="embeddings", runtime="cpu")
    assert (emb.getModelName(), emb.getInputCol(), emb.getRuntime()) == (
        "sentence-transformers/all-MiniLM-L6-v2", "data", "cpu")
    emb = HuggingFaceSentenceEmbedder(inputCol="data", outputCol="e", runtime=None,
                                      batchSize=None, modelName=minilm_dir)
    assert emb.getRuntime() == "auto" and not emb.isSet(emb.runtime)
    assert emb.getBatchSize() == 256
    assert emb.setBatchSize(64).getBatchSize() == 64


def test_rows_order_ids_and_values_kept_over_partitions(spark, embedder, onnx_encoder,
                                                         review_texts):
    summaries = [t.split(";")[0] for t in review_texts]
    rows = [(i, summaries[i % len(summaries)] + f" #{i}", float(i)) for i in range(6000)]
    df = spark.sparkContext.parallelize(rows, 7).toDF("id long, text string, extra double")
    out = embedder.transform(df)
    assert out.columns == ["id", "text", "extra", "embeddings"]
    got = out.collect()
    assert len(got) == 6000
    assert [r.id for r in got] == list(range(6000))
    assert all(r.extra == float(r.id) for r in got)
    sample = [0, 1, 2999, 5998, 5999]
    expected = onnx_encoder.encode([got[i].text for i in sample])
    assert cosines(np.array([got[i].embeddings for i in sample]), expected).min() >= 0.9999


def test_nulls_empty_long_and_non_ascii_text(spark, embedder, onnx_encoder, st_minilm):
    texts = [None, "", "a" * 100_000 + " end", "東京は日本の首都です。🔥", "Crème brûlée, ½ price!",
             "مرحبا بالعالم", None, "desserts"]
    df = spark.createDataFrame(list(enumerate(texts)), "id int, text string").coalesce(1)
    got = embedder.transform(df).orderBy("id").collect()
    assert len(got) == len(texts)
    assert got[0].embeddings is None and got[6].embeddings is None
    present = [i for i, t in enumerate(texts) if t is not None]
    vectors = np.array([got[i].embeddings for i in present], dtype=np.float32)
    assert np.isfinite(vectors).all() and vectors.shape == (len(present), 384)
    reference = st_minilm.encode([texts[i] for i in present])
    assert cosines(vectors, reference).min() >= 0.9999
    # The empty string is the model's embedding of "", not a null and not zeros.
    np.testing.assert_allclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)


def test_model_loads_once_per_worker_across_transforms(spark, minilm_dir, tmp_path,
                                                       event_log):
    emb = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="text", runtime="cpu",
                                      precision="fp32", cacheDir=str(tmp_path))
    df = spark.createDataFrame([(f"text {i}",) for i in range(400)], "text string").repartition(4)
    for _ in range(2):
        assert emb.transform(df).count() == 400
        assert len(emb.transform(df).collect()) == 400
    loads = read_events(event_log, event="load", cache_dir=str(tmp_path))
    pids = [e["pid"] for e in loads]
    assert pids, "no model load was recorded"
    assert len(pids) == len(set(pids)), f"a worker loaded the model twice: {pids}"
    assert len(set(pids)) <= 2  # local[2]: two reused Python workers


def test_driver_side_errors_name_the_problem(spark, embedder):
    df = spark.createDataFrame([(1, "x", 2)], "id int, text string, n int")
    with pytest.raises(ValueError, match=r"inputCol 'missing' not found; available columns: id, text, n"):
        embedder.copy().setInputCol("missing").transform(df)
    with pytest.raises(TypeError, match=r"inputCol 'n' must be a string column, got int"):
        embedder.copy().setInputCol("n").transform(df)
    with pytest.raises(ValueError, match=r"outputCol 'id' already exists"):
        embedder.copy().setOutputCol("id").transform(df)
    with pytest.raises(ValueError, match=r"unknown runtime 'gpu'; expected one of: cpu, onnx"):
        HuggingFaceSentenceEmbedder(inputCol="text", runtime="gpu")
    with pytest.raises(ValueError, match="unknown runtime 'tpu'"):
        embedder.copy().setRuntime("tpu")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        HuggingFaceSentenceEmbedder(inputCol="text", precision="int4")
    with pytest.raises(ValueError, match="batchSize must be a positive integer, got 0"):
        HuggingFaceSentenceEmbedder(inputCol="text", batchSize=0)
    with pytest.raises(ValueError, match="maxTokensPerBatch must be an integer >= 0, got -5"):
        embedder.copy().setMaxTokensPerBatch(-5)
    with pytest.raises(ValueError, match="inputCol is not set"):
        HuggingFaceSentenceEmbedder().transform(df)
    # Raised while building the plan: no Spark job ran.
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup())
    with pytest.raises(ValueError):
        embedder.copy().setInputCol("nope").transform(df)
    assert len(tracker.getJobIdsForGroup()) == before


def test_transform_schema(spark, embedder):
    df = spark.createDataFrame([("x",)], "text string")
    schema = embedder.transformSchema(df.schema)
    assert schema.simpleString() == "struct<text:string,embeddings:array<float>>"
    assert embedder.transform(df).schema.simpleString() == schema.simpleString()


def test_explicit_gpu_runtime_fails_clearly_without_gpu(spark, minilm_dir, tmp_path):
    from synapseml_ext.engine.hardware import cuda_device_count

    if cuda_device_count():
        pytest.skip("this machine has a GPU")
    emb = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="text", runtime="cuda",
                                      cacheDir=str(tmp_path))
    df = spark.createDataFrame([("x",)], "text string")
    # local[2]: the driver is the executor, so transform() itself says what is missing and
    # the extra that installs it, in one line, before any job.
    with pytest.raises(RuntimeUnavailableError,
                       match=r"runtime='cuda' needs an NVIDIA GPU and none is usable here: .*"
                             r"Use runtime='cpu', 'onnx' or 'auto'.*"
                             r"pip install 'synapseml-ext\[gpu\]'") as e:
        emb.transform(df)
    assert "\n" not in str(e.value)


def test_model_problems_fail_at_transform_in_one_line(spark, tmp_path):
    df = spark.createDataFrame([("x",)], "text string")
    tracker = spark.sparkContext.statusTracker()
    before = len(tracker.getJobIdsForGroup())
    for model, message in [(str(tmp_path / "missing"), "does not exist: pass a directory"),
                           (str(tmp_path), "does not hold a usable model")]:
        emb = HuggingFaceSentenceEmbedder(modelName=model, inputCol="text", runtime="onnx")
        with pytest.raises(ModelLoadError, match=message) as e:
            emb.transform(df)
        assert str(e.value).startswith("synapseml-ext: ") and "\n" not in str(e.value)
    assert len(tracker.getJobIdsForGroup()) == before  # no job ran


def test_executor_model_errors_are_recognisable(spark, minilm_dir, tmp_path):
    # A well-formed weights file of another model passes every driver check; loading fails
    # where the model loads (transformers alone would fill the gaps with random weights).
    damaged = tmp_path / "damaged"
    shutil.copytree(minilm_dir, damaged, copy_function=os.symlink)
    (damaged / "model.safetensors").unlink()
    save_file({"classifier.weight": np.zeros((2, 4), np.float32)},
              str(damaged / "model.safetensors"))
    emb = HuggingFaceSentenceEmbedder(modelName=str(damaged), inputCol="text", runtime="onnx",
                                      cacheDir=str(tmp_path / "cache"))
    df = spark.createDataFrame([("x",)], "text string")
    out = emb.transform(df)
    with pytest.raises(Exception) as e:  # Spark wraps it (PythonException or Py4JJavaError)
        out.collect()
    assert user_message(e.value) == (
        f"the weights in {damaged} lack 101 tensor(s) the model needs (embeddings.LayerNorm.bias, "
        "embeddings.LayerNorm.weight, embeddings.position_embeddings.weight, ...): the weights "
        "file is damaged or belongs to another model; copy or download the model again")


def test_save_load_round_trip_and_pipeline(spark, embedder, tmp_path):
    embedder = embedder.copy().setBatchSize(32).setPrompt("passage: ").setNormalize(True)
    path = str(tmp_path / "embedder")
    embedder.save(path)
    loaded = HuggingFaceSentenceEmbedder.load(path)
    assert loaded.uid == embedder.uid
    for param in ("modelName", "runtime", "batchSize", "prompt", "cacheDir", "inputCol"):
        assert loaded.getOrDefault(param) == embedder.getOrDefault(param)
    assert loaded.getNormalize() is True
    assert not loaded.isSet(loaded.precision) and loaded.getPrecision() == "auto"

    df = spark.createDataFrame([("chocolate cake",), ("rancid nuts",)], "text string")
    pipeline = Pipeline(stages=[embedder])
    model = pipeline.fit(df)
    model.write().overwrite().save(str(tmp_path / "pipeline"))
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    a = np.array([r.embeddings for r in model.transform(df).collect()])
    b = np.array([r.embeddings for r in reloaded.transform(df).collect()])
    assert cosines(a, b).min() >= 0.99999


def test_param_map_copy_path(spark, embedder):
    df = spark.createDataFrame([("x",)], "text string")
    out = embedder.transform(df, {embedder.outputCol: "vec"})
    assert out.columns == ["text", "vec"]
    assert embedder.getOutputCol() == "embeddings"  # the stage itself is unchanged


def test_streaming_dataframe(spark, embedder, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "part.csv").write_text("text\nchocolate cake\nrancid nuts\n")
    stream = spark.readStream.schema("text string").option("header", True).csv(str(source))
    query = (embedder.transform(stream).writeStream.format("memory")
             .queryName("embedded_stream").start())
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    rows = spark.sql("select * from embedded_stream").collect()
    assert sorted(r.text for r in rows) == ["chocolate cake", "rancid nuts"]
    assert all(len(r.embeddings) == 384 for r in rows)


def test_doctest_example(spark, minilm_dir, cache_dir, tmp_path):
    import doctest

    import synapseml_ext.hf.embedder as module

    globs = {"spark": spark, "model_dir": minilm_dir, "temp_path": str(tmp_path)}
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module.HuggingFaceSentenceEmbedder, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


def test_empty_dataframe(spark, embedder):
    df = spark.createDataFrame([], "text string")
    assert embedder.transform(df).collect() == []
