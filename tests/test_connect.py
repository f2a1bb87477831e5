"""The embedder and the k-NN search through Spark Connect (Databricks shared/serverless
compute use Connect): the stages build their plans with the DataFrame API only, so they run
unchanged there.

Runs in a subprocess: a Connect session cannot share this process with the classic session
of the other tests. The Connect server is Spark's own, of the installed pyspark's line: on
Spark 4 it ships with pyspark; on 3.5 it comes from Maven Central
(org.apache.spark:spark-connect_2.12: the newest 3.5 build published there is 3.5.7, which
serves Spark 3.5.9).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyspark
import pytest

from conftest import REPO

pytestmark = pytest.mark.spark  # starts a Spark Connect server

# "" on Spark 4: the server's jar is among pyspark's own.
CONNECT_PACKAGE = ("org.apache.spark:spark-connect_2.12:3.5.7"
                   if pyspark.__version__.startswith("3.") else "")

CHILD = """
import json, os, sys
from pyspark.sql import SparkSession
builder = SparkSession.builder.remote("local[2]")
if sys.argv[3]:
    builder = builder.config("spark.jars.packages", sys.argv[3])
spark = builder.getOrCreate()
from synapseml_ext.hf import HuggingFaceSentenceEmbedder
df = spark.createDataFrame([(1, "desserts"), (2, None), (3, "")], "id int, text string")
emb = HuggingFaceSentenceEmbedder(modelName=sys.argv[1], inputCol="text", runtime="onnx",
                                  cacheDir=sys.argv[2])
rows = emb.transform(df).orderBy("id").collect()
result = {"session": type(spark).__module__,
          "rows": [[r.id, None if r.embeddings is None else len(r.embeddings)] for r in rows]}
try:
    emb.copy().setInputCol("nope").transform(df)
except Exception as e:
    result["error"] = str(e)
from synapseml_ext.nn import ApproximateNearestNeighbors
items = spark.createDataFrame([(i, [float(i), 0.0]) for i in range(6)], "id long, v array<float>")
model = ApproximateNearestNeighbors(k=2, algorithm="exact", inputCol="v", idCol="id",
                                    backend="cpu", numPartitions=2).fit(items)
queries = spark.createDataFrame([(10, [0.25, 0.0]), (11, [4.75, 0.0])], "id long, v array<float>")
result["knn"] = [[r.query_id, list(r.indices), [round(d, 4) for d in r.distances]]
                 for r in model.kneighbors(queries)[2].collect()]
print("RESULT " + json.dumps(result))
spark.stop()
"""


def test_embedder_and_knn_run_through_spark_connect(minilm_dir, cache_dir):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(REPO / "python"))
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    done = subprocess.run([sys.executable, "-c", CHILD, minilm_dir, cache_dir, CONNECT_PACKAGE],
                          env=env, capture_output=True, text=True, timeout=900)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, (done.stdout[-2000:], done.stderr[-4000:])
    result = json.loads(line[len("RESULT "):])
    assert result["session"] == "pyspark.sql.connect.session"
    assert result["rows"] == [[1, 384], [2, None], [3, 384]]
    assert "inputCol 'nope' not found; available columns: id, text" in result["error"]
    assert result["knn"] == [[10, [0, 1], [0.25, 0.75]], [11, [5, 4], [0.25, 0.75]]]
