"""The stages on a standalone cluster (two executors in their own JVMs and Python workers)
give what they give in one process: the embedder's rows, order and embeddings; the k-NN
search's neighbours, wherever its tasks ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synapseml_ext import __version__
from synapseml_ext.engine import EncoderSpec, SentenceEncoder

from conftest import REPO
from helpers import cosines, read_events
from standalone import standalone_cluster

pytestmark = pytest.mark.spark  # starts a standalone cluster

# Every driver script starts with this: a session on the cluster whose executors run this
# Python with the package and the event log; argv: master, python, out, PYTHONPATH, events.
SESSION = """
import json, sys
from pyspark.sql import SparkSession
master, python, out, path, events = sys.argv[1:6]
spark = (SparkSession.builder.master(master).appName("standalone test")
         .config("spark.executor.cores", "1").config("spark.executor.memory", "1g")
         .config("spark.pyspark.python", python)
         .config("spark.executorEnv.PYTHONPATH", path)
         .config("spark.executorEnv.SYNAPSEML_EXT_EVENT_LOG", events)
         .config("spark.ui.enabled", "false").getOrCreate())
"""

DRIVER = SESSION + """
model, cache = sys.argv[6:8]
from synapseml_ext.hf import HuggingFaceSentenceEmbedder
texts = [None if i % 97 == 0 else f"review {i}: the cake was sweet" if i % 2 else f"review {i}: stale chips"
         for i in range(800)]
df = spark.sparkContext.parallelize(list(enumerate(texts)), 4).toDF("id long, text string")
emb = HuggingFaceSentenceEmbedder(modelName=model, inputCol="text", runtime="onnx", cacheDir=cache)
rows = emb.transform(df).collect()
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
json.dump({"ids": [r.id for r in rows], "texts": [r.text for r in rows],
           "embeddings": [r.embeddings for r in rows], "executors": executors}, open(out, "w"))
spark.stop()
"""


def _run_on_cluster(tmp_path: Path, driver: str, *args: str, python: str = sys.executable,
                    path: str = str(REPO / "python")) -> tuple[dict, Path]:
    """Run ``driver`` against a fresh two-executor cluster whose executors run ``python``
    with ``path`` as PYTHONPATH: (its JSON output, event log)."""
    events = tmp_path / "events.jsonl"
    out = tmp_path / "out.json"
    env = dict(os.environ, PYSPARK_PYTHON=python, PYTHONPATH=str(REPO / "python"),
               SPARK_LOCAL_IP="127.0.0.1")
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    with standalone_cluster(tmp_path / "cluster") as master:
        done = subprocess.run(
            [sys.executable, "-c", driver, master, python, str(out), path, str(events),
             *args],
            env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text()), events


def test_embedder_on_a_two_executor_standalone_cluster(tmp_path, minilm_dir, cache_dir):
    result, events = _run_on_cluster(tmp_path, DRIVER, minilm_dir, cache_dir)
    assert result["executors"] == 2
    assert result["ids"] == list(range(800))
    nulls = [i for i, e in enumerate(result["embeddings"]) if e is None]
    assert nulls == [i for i in range(800) if i % 97 == 0]
    present = [i for i in range(800) if i % 97]
    expected = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=cache_dir)
                               ).encode([result["texts"][i] for i in present])
    got = np.array([result["embeddings"][i] for i in present], dtype=np.float32)
    assert cosines(got, expected).min() >= 0.9999
    # One load per executor's Python worker, each in its own process.
    loads = read_events(events, event="load")
    assert 1 <= len(loads) <= 4 and len({e["pid"] for e in loads}) == len(loads)


KNN_DRIVER = SESSION + """
import numpy as np
from synapseml_ext.nn import ApproximateNearestNeighbors
rng = np.random.default_rng(3)
items = rng.standard_normal((3000, 12)).astype(np.float32)
queries = rng.standard_normal((60, 12)).astype(np.float32)
item_df = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(items)], "id long, v array<float>")
query_df = spark.createDataFrame([(i, v.tolist()) for i, v in enumerate(queries)], "id long, v array<float>")
model = ApproximateNearestNeighbors(k=4, algorithm="exact", inputCol="v", idCol="id", backend="cpu",
                                    numPartitions=3).fit(item_df)
searches = [[r.indices for r in model.kneighbors(query_df)[2].collect()] for _ in range(4)]
dist = ((queries[:, None, :] - items[None, :, :]) ** 2).sum(-1)
truth = np.argsort(dist, axis=1, kind="stable")[:, :4].tolist()
json.dump({"searches": searches, "truth": truth}, open(out, "w"))
spark.stop()
"""


def test_knn_on_a_two_executor_standalone_cluster(tmp_path):
    """Each executor keeps the index partitions it built or received; a search task on an
    executor without a copy gets the bytes instead: results never depend on where tasks ran."""
    result, events = _run_on_cluster(tmp_path, KNN_DRIVER)
    for found in result["searches"]:
        assert found == result["truth"]
    loads = read_events(events, event="nn_load")
    # Every search loads each of the 3 partitions once, from a local copy or from its bytes.
    assert len(loads) == 4 * 3
    assert {e["source"] for e in loads} <= {"local", "bytes"}
    for part in range(3):
        assert sum(e["partition"] == part for e in loads) == 4


BARE_DRIVER = SESSION + """
from synapseml_ext.hf import HuggingFaceSentenceEmbedder
from synapseml_ext.nn import ApproximateNearestNeighbors
model, = sys.argv[6:7]
texts = spark.createDataFrame([("a",)], "text string")
vectors = spark.createDataFrame([(1, [0.0, 1.0])], "id long, v array<float>")
errors = []
for attempt in (lambda: HuggingFaceSentenceEmbedder(modelName=model, inputCol="text").transform(texts),
                lambda: ApproximateNearestNeighbors(inputCol="v", idCol="id", k=1).fit(vectors)):
    try:
        attempt()
        errors.append(None)
    except Exception as e:
        errors.append([type(e).__name__, str(e)])
json.dump({"errors": errors}, open(out, "w"))
spark.stop()
"""


def test_executors_without_the_package_fail_at_the_first_stage_in_one_line(tmp_path,
                                                                          minilm_dir,
                                                                          monkeypatch):
    """The executors run the base interpreter of this venv, without synapseml-ext: the
    embedder's transform and the k-NN fit each fail on the driver in one line naming the
    install, not with the worker's trace from the first task."""
    bare = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if subprocess.run([bare, "-c", "import synapseml_ext"], capture_output=True,
                      env={}).returncode == 0:
        pytest.skip(f"{bare} has synapseml-ext installed: no bare Python to run executors on")
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the workers' daemons pass theirs on
    result, _ = _run_on_cluster(tmp_path, BARE_DRIVER, minilm_dir, python=bare, path="")
    for kind, message in result["errors"]:
        assert kind == "ExecutorSetupError"
        assert message == (
            f"synapseml-ext: the executors' Python ({bare}) cannot import synapseml-ext "
            "(ModuleNotFoundError: No module named 'synapseml_ext'); install the driver's "
            f"version on every node: pip install 'synapseml-ext=={__version__}' (or the init "
            "script of docs/install.md)")
