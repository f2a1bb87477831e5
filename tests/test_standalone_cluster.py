"""The embedder on a standalone cluster (two executors in their own JVMs and Python workers)
gives what it gives in one process: rows, order and embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from synapseml_ext.engine import EncoderSpec, SentenceEncoder

from conftest import REPO
from helpers import cosines, read_events
from standalone import standalone_cluster

DRIVER = """
import json, sys
from pyspark.sql import SparkSession
master, model, cache, python, out = sys.argv[1:6]
spark = (SparkSession.builder.master(master).appName("standalone test")
         .config("spark.executor.cores", "1").config("spark.executor.memory", "1g")
         .config("spark.pyspark.python", python)
         .config("spark.executorEnv.PYTHONPATH", sys.argv[6])
         .config("spark.executorEnv.SYNAPSEML_EXT_EVENT_LOG", sys.argv[7])
         .config("spark.ui.enabled", "false").getOrCreate())
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


def test_embedder_on_a_two_executor_standalone_cluster(tmp_path, minilm_dir, cache_dir):
    events = tmp_path / "events.jsonl"
    out = tmp_path / "out.json"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(REPO / "python"),
               SPARK_LOCAL_IP="127.0.0.1")
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    with standalone_cluster(tmp_path / "cluster") as master:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, master, minilm_dir, cache_dir, sys.executable,
             str(out), str(REPO / "python"), str(events)],
            env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
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
