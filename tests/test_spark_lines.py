"""Models saved on one Spark line load on the other and give the same answers: the embedder
and a fitted k-NN model (its index partitions included), saved by Spark 3.5 and loaded by
Spark 4, and the reverse.

Each side runs in its own interpreter: this one and the other line's (`make setup` builds
.venv with the newest pyspark and .venv-spark35 with pyspark 3.5 in front of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyspark
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

# argv: mode (save | load), model directory, folder, cache. Prints RESULT <json>.
CHILD = """
import json, sys
import numpy as np
import pyspark
from synapseml_ext._spark import local_spark
from synapseml_ext.hf import HuggingFaceSentenceEmbedder
from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

mode, model_dir, folder, cache = sys.argv[1:5]
spark = local_spark("local[2]", "spark lines", conf={"spark.ui.enabled": "false"})
rng = np.random.default_rng(5)
items = rng.standard_normal((3000, 24)).astype(np.float32)
queries = rng.standard_normal((50, 24)).astype(np.float32)
def frame(array):
    return spark.createDataFrame([(i, [float(x) for x in v]) for i, v in enumerate(array)],
                                 "id long, v array<float>")
texts = spark.createDataFrame([(1, "chocolate cake"), (2, None), (3, "rancid nuts")],
                              "id long, text string")
if mode == "save":
    embedder = HuggingFaceSentenceEmbedder(modelName=model_dir, inputCol="text", runtime="onnx",
                                           cacheDir=cache, batchSize=8)
    model = ApproximateNearestNeighbors(k=5, inputCol="v", idCol="id", algorithm="ivfflat",
                                        numPartitions=2, algoParams={"nlist": 16, "nprobe": 16}
                                        ).fit(frame(items))
    embedder.write().overwrite().save(folder + "/embedder")
    model.write().overwrite().save(folder + "/knn")
else:
    embedder = HuggingFaceSentenceEmbedder.load(folder + "/embedder")
    model = ApproximateNearestNeighborsModel.load(folder + "/knn")
vectors = [None if r.embeddings is None else list(r.embeddings)
           for r in embedder.transform(texts).orderBy("id").collect()]
knn = [[r.query_id, list(r.indices), list(r.distances)]
       for r in model.kneighbors(frame(queries))[2].orderBy("query_id").collect()]
print("RESULT " + json.dumps({"spark": pyspark.__version__, "vectors": vectors, "knn": knn,
                              "batch": embedder.getBatchSize()}))
spark.stop()
"""


def _other_line_python() -> str | None:
    """The interpreter of the other Spark line, if this checkout has one."""
    chosen = os.environ.get("SYNAPSEML_EXT_OTHER_LINE_PYTHON")
    if chosen:
        return chosen
    venv = ".venv" if pyspark.__version__.startswith("3.") else ".venv-spark35"
    candidate = REPO / venv / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def _run(python: str, mode: str, model: str, folder: Path, cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), PYSPARK_PYTHON=python,
               SPARK_LOCAL_IP="127.0.0.1")
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    done = subprocess.run([python, "-c", CHILD, mode, model, str(folder), cache], env=env,
                          capture_output=True, text=True, timeout=900)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, (done.stdout[-2000:], done.stderr[-4000:])
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("direction", ["saved here, loaded there", "saved there, loaded here"])
def test_models_cross_spark_lines(tmp_path, minilm_dir, cache_dir, direction):
    other = _other_line_python()
    if other is None:
        pytest.skip("no interpreter of the other Spark line: `make setup` builds .venv-spark35")
    here = sys.executable
    writer, reader = (here, other) if direction.startswith("saved here") else (other, here)
    saved = _run(writer, "save", minilm_dir, tmp_path, cache_dir)
    loaded = _run(reader, "load", minilm_dir, tmp_path, cache_dir)
    # really two lines
    assert saved["spark"].split(".")[0] != loaded["spark"].split(".")[0], (saved["spark"],
                                                                           loaded["spark"])
    assert loaded["batch"] == 8
    assert loaded["vectors"][1] is None and saved["vectors"][1] is None
    for a, b in [(saved["vectors"][i], loaded["vectors"][i]) for i in (0, 2)]:
        a, b = np.asarray(a), np.asarray(b)
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999
    assert [row[:2] for row in loaded["knn"]] == [row[:2] for row in saved["knn"]]
    np.testing.assert_allclose([row[2] for row in loaded["knn"]],
                               [row[2] for row in saved["knn"]], rtol=1e-5)
