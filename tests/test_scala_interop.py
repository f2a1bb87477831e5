"""The Scala side end to end, the way users run it: the jar built with ./sbt, a Scala job
(scala/examples) run with pyspark's own bin/spark-submit, executors running this checkout's
Python package; results compared with the PySpark stage on the same rows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest

from synapseml_ext import __version__
from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.hf import HuggingFaceSentenceEmbedder

from conftest import REPO, seed_texts
from helpers import cosines
from standalone import standalone_cluster

pytestmark = [pytest.mark.slow, pytest.mark.scala]

SCALA_APP = "io.github.synapsemlext.examples.EmbedReviews"


@pytest.fixture(scope="module")
def jars() -> tuple[Path, Path]:
    """The jar of the installed pyspark's line (synapseml-ext_2.12 for Spark 3.5, _2.13 for
    Spark 4) and the example job, built by ./sbt (incremental after the first)."""
    if shutil.which("java") is None:
        pytest.skip("no java on the PATH: the Scala side cannot be built here")
    spark4 = not pyspark.__version__.startswith("3.")
    scala = "2.13" if spark4 else "2.12"
    line = ["-Dsynapsemlext.sparkLine=4.0"] if spark4 else []
    subprocess.run([str(REPO / "sbt"), *line, "package", "examples/package"], cwd=REPO,
                   check=True, stdin=subprocess.DEVNULL, timeout=1200)
    main = REPO / "target" / f"scala-{scala}" / f"synapseml-ext_{scala}-{__version__}.jar"
    app = REPO / "scala" / "examples" / "target" / f"scala-{scala}" / \
        f"synapseml-ext-examples_{scala}-{__version__}.jar"
    assert main.exists() and app.exists()
    return main, app


def spark_submit(jars: tuple[Path, Path], *app_args: str, master: str = "local[2]",
                 conf: dict[str, str] | None = None, app: str = SCALA_APP,
                 expect_failure: bool = False, both: bool = False) -> str | tuple[str, str]:
    """Runs the Scala job with pyspark's spark-submit; returns its stdout (its stderr when
    ``expect_failure``, both when ``both``)."""
    main, app_jar = jars
    python_path = os.pathsep.join(filter(None, [str(REPO / "python"),
                                                os.environ.get("PYTHONPATH")]))
    extra = [arg for key, value in (conf or {}).items() for arg in ("--conf", f"{key}={value}")]
    command = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
               "--master", master, *extra,
               "--conf", "spark.ui.enabled=false",
               "--conf", f"spark.pyspark.python={sys.executable}",
               "--conf", f"spark.executorEnv.PYTHONPATH={python_path}",
               "--jars", str(main), "--class", app, str(app_jar), *app_args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable,
                               "SPARK_LOCAL_IP": "127.0.0.1"})
    if expect_failure:
        assert done.returncode != 0, done.stdout
        return done.stderr
    assert done.returncode == 0, f"spark-submit failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    return (done.stdout, done.stderr) if both else done.stdout


def test_scala_job_embeds_the_reviews_like_the_pyspark_stage(spark, jars, reviews, minilm_dir,
                                                            cache_dir, tmp_path):
    csv = tmp_path / "reviews.csv"
    reviews.to_csv(csv, index=False)
    out = tmp_path / "scala.parquet"
    stdout, stderr = spark_submit(jars, "--input", str(csv), "--output", str(out), "--model",
                                  minilm_dir, "--runtime", "onnx", "--cache-dir", cache_dir,
                                  both=True)
    assert "EmbedReviews: 1000 rows" in stdout
    # The stage ran in one driver-side Python, which ended with the job's JVM.
    started = re.findall(r"synapseml-ext: driver-side Python \S+ \(pid (\d+)\) attached", stderr)
    assert len(started) == 1, stderr[-3000:]
    assert _gone(int(started[0]))

    scala = spark.read.parquet(str(out)).toPandas()
    # Same rows in the same order, every input column kept, the seed's text built in Scala.
    assert scala.columns.tolist() == [*reviews.columns, "data", "embeddings"]
    assert scala["Unnamed: 0"].astype(int).tolist() == reviews["Unnamed: 0"].tolist()
    assert scala["data"].tolist() == seed_texts(reviews)

    embedder = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="data",
                                           runtime="onnx", cacheDir=cache_dir)
    frame = spark.createDataFrame(scala[["Unnamed: 0", "data"]].rename(
        columns={"Unnamed: 0": "id"}))
    pyspark_rows = embedder.transform(frame).toPandas()
    assert pyspark_rows["id"].tolist() == scala["Unnamed: 0"].tolist()
    got = np.stack(scala["embeddings"].to_numpy())
    want = np.stack(pyspark_rows["embeddings"].to_numpy())
    assert got.shape == want.shape == (1000, 384)
    assert cosines(got, want).min() >= 0.9999


def _gone(pid: int, wait_s: float = 10.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_stage_saved_by_pyspark_runs_in_scala_and_scala_saves_it_back(spark, jars, reviews,
                                                                      minilm_dir, cache_dir,
                                                                      tmp_path):
    stage = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="data", runtime="onnx",
                                        cacheDir=cache_dir, batchSize=16, normalize=False,
                                        prompt="passage: ")
    from_python = tmp_path / "from-python"
    from_scala = tmp_path / "from-scala"
    stage.save(str(from_python))
    csv = tmp_path / "few.csv"
    reviews.head(24).to_csv(csv, index=False)
    out = tmp_path / "out.parquet"
    spark_submit(jars, "--input", str(csv), "--output", str(out), "--stage", str(from_python),
                 "--save-stage", str(from_scala))

    back = HuggingFaceSentenceEmbedder.load(str(from_scala))
    assert back.uid == stage.uid
    assert {p.name: v for p, v in back._paramMap.items()} == \
        {p.name: v for p, v in stage._paramMap.items()}
    assert {p.name: v for p, v in back._defaultParamMap.items()} == \
        {p.name: v for p, v in stage._defaultParamMap.items()}
    assert back.getNormalize() is False and not back.isSet(back.precision)

    # The Scala job ran the stage with those Params: no normalisation, the prompt applied.
    scala = spark.read.parquet(str(out)).toPandas()
    frame = spark.createDataFrame(scala[["data"]])
    want = np.stack(stage.transform(frame).toPandas()["embeddings"].to_numpy())
    got = np.stack(scala["embeddings"].to_numpy())
    assert cosines(got, want).min() >= 0.9999
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


def test_scala_stage_with_the_remote_runtime_calls_our_server(spark, jars, reviews, minilm_dir,
                                                             cache_dir, tmp_path):
    """runtime="remote" from Scala: the executors call `synapseml-ext serve` over loopback."""
    from synapseml_ext.serve import ServeConfig, start_in_thread

    csv = tmp_path / "few.csv"
    reviews.head(40).to_csv(csv, index=False)
    config = ServeConfig(model=minilm_dir, runtime="onnx", precision="fp32", cache_dir=cache_dir)
    with start_in_thread(config) as server:
        stage = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="data",
                                            runtime="remote", endpoint=server.url, batchSize=8)
        stage.save(str(tmp_path / "stage"))
        out = tmp_path / "out.parquet"
        spark_submit(jars, "--input", str(csv), "--output", str(out), "--stage",
                     str(tmp_path / "stage"))
        calls = server.service.batcher.engine_calls
    assert calls >= 1  # the vectors came from the server, not a model on the executors
    scala = spark.read.parquet(str(out)).toPandas()
    assert len(scala) == 40
    want = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", precision="fp32",
                                       cache_dir=cache_dir)).encode(scala["data"].tolist())
    assert cosines(np.stack(scala["embeddings"].to_numpy()), want).min() >= 0.9999


def test_scala_job_on_a_two_executor_standalone_cluster(spark, jars, reviews, minilm_dir,
                                                        cache_dir, tmp_path):
    # Separate executor JVMs, each starting its own Python workers from what the driver sent.
    few = reviews.head(240).rename(columns={"Unnamed: 0": "id"})
    source = tmp_path / "reviews.parquet"
    spark.createDataFrame(few).repartition(4).write.parquet(str(source))
    out = tmp_path / "out.parquet"
    with standalone_cluster(tmp_path / "cluster") as master:
        stdout = spark_submit(jars, "--input", str(source), "--output", str(out),
                              "--model", minilm_dir, "--runtime", "onnx",
                              "--cache-dir", cache_dir, master=master,
                              conf={"spark.executor.cores": "1",
                                    "spark.executor.memory": "1g"})
    assert "EmbedReviews: 240 rows" in stdout
    scala = spark.read.parquet(str(out)).toPandas().sort_values("id")
    assert scala["id"].tolist() == few["id"].tolist()
    assert scala["data"].tolist() == seed_texts(few)
    expected = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx",
                                           cache_dir=cache_dir)).encode(scala["data"].tolist())
    got = np.stack(scala["embeddings"].to_numpy())
    assert cosines(got, expected).min() >= 0.9999
    # Both executors ran the Python stage (their Python workers log to the executor's stderr).
    logs = sorted((tmp_path / "cluster").glob("worker*/app-*/*/stderr"))
    ran = {log.parts[-4] for log in logs if "synapseml-ext loaded model" in log.read_text()}
    assert ran == {"worker0", "worker1"}, [log.read_text()[-1500:] for log in logs]


def test_scala_job_embeds_and_finds_nearest_reviews(spark, jars, reviews, minilm_dir, cache_dir,
                                                    tmp_path):
    """Both stages from Scala: exact k-NN over the embeddings the job wrote equals brute force,
    and the model it saved searches in PySpark with the same answer."""
    from synapseml_ext.nn import ApproximateNearestNeighborsModel

    csv = tmp_path / "reviews.csv"
    reviews.head(120).to_csv(csv, index=False)
    out, saved = tmp_path / "out", tmp_path / "knn-model"
    stdout = spark_submit(jars, "--input", str(csv), "--output", str(out), "--model", minilm_dir,
                          "--runtime", "onnx", "--cache-dir", cache_dir, "--k", "4",
                          "--algorithm", "exact", "--save-model", str(saved),
                          app="io.github.synapsemlext.examples.NearestReviews")
    assert "NearestReviews: 120 queries, k=4, algorithm=exact" in stdout

    embedded = spark.read.parquet(str(out / "embedded")).toPandas().sort_values("id")
    vectors = np.stack(embedded["embeddings"].to_numpy()).astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine_distance = 1.0 - unit @ unit.T
    ids = embedded["id"].to_numpy()
    knn = spark.read.parquet(str(out / "knn")).toPandas().sort_values("query_id")
    assert knn["query_id"].tolist() == ids.tolist()
    for row, (indices, distances) in enumerate(zip(knn["indices"], knn["distances"],
                                                       strict=True)):
        # exact search: the true k smallest distances (ids may swap only within float32 ties)
        true_k = np.sort(cosine_distance[row])[:4]
        np.testing.assert_allclose(distances, true_k, atol=1e-5)
        position = {int(i): p for p, i in enumerate(ids)}
        found = cosine_distance[row, [position[int(i)] for i in indices]]
        np.testing.assert_allclose(found, distances, atol=1e-5)
        assert indices[0] == ids[row] or distances[0] < 1e-5  # each review finds itself

    model = ApproximateNearestNeighborsModel.load(str(saved))
    again = model.kneighbors(spark.read.parquet(str(out / "embedded")))[2].toPandas()
    assert again["query_id"].tolist() == knn["query_id"].tolist()
    assert [list(x) for x in again["indices"]] == [list(x) for x in knn["indices"]]


def test_scala_knn_with_a_missing_driver_python_fails_in_one_line(jars, reviews, minilm_dir,
                                                                 cache_dir, tmp_path):
    """The k-NN stages start a Python on the driver: one that does not exist is named, with
    the setting that fixes it, and the job ends instead of hanging."""
    csv = tmp_path / "reviews.csv"
    reviews.head(20).to_csv(csv, index=False)
    stderr = spark_submit(jars, "--input", str(csv), "--output", str(tmp_path / "out"),
                          "--model", minilm_dir, "--runtime", "onnx", "--cache-dir", cache_dir,
                          "--algorithm", "exact", conf={
                              "spark.pyspark.driver.python": "/nonexistent/python3"},
                          app="io.github.synapsemlext.examples.NearestReviews",
                          expect_failure=True)
    line = next(x for x in stderr.splitlines() if "cannot run the driver-side Python" in x)
    assert "'/nonexistent/python3'" in line
    assert "set spark.pyspark.driver.python (or PYSPARK_DRIVER_PYTHON)" in line
