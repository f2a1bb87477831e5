"""The Python half of the Scala tests (scala/src/test/scala): ScalaTest suites run this with
the executors' Python ($PYSPARK_PYTHON) to compare the Scala stubs against the real Python
stage. Not a pytest module; each command prints one JSON document on stdout.

    messages CASES.json               Python's error message for each case (no Spark)
    reference IN.parquet OUT.parquet PARAMS.json   the PySpark stage's output
    persistence SCALA_SAVED PY_SAVE_TO PARAMS.json  load a Scala-saved stage, save a Python one
    nn_contract CASES.json            the k-NN setters' messages
    nn_reference ITEMS QUERIES OUT PARAMS.json      the PySpark k-NN stage's knn_df
    nn_persistence SCALA_MODEL QUERIES OUT PY_SAVE_TO PARAMS.json   search with a Scala-saved
                                      model; fit and save a Python one on the same items
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pyspark.sql.types import StructType

from synapseml_ext.hf import HuggingFaceSentenceEmbedder


def messages(cases_path: str) -> list:
    """Each case: {"params": {...}, "schema": <StructType json>} for transformSchema, or
    {"params": {...}} alone for the setters' value checks. Answer: the message or None."""
    out = []
    for case in json.loads(Path(cases_path).read_text()):
        try:
            stage = HuggingFaceSentenceEmbedder()
            stage._set_checked(**case["params"])
            if "schema" in case:
                stage.transformSchema(StructType.fromJson(case["schema"]))
            out.append(None)
        except (ValueError, TypeError) as e:
            out.append(str(e))
    return out


def _spark():
    from synapseml_ext._spark import local_spark

    return local_spark("local[2]", "scala-tests python side")


def reference(in_path: str, out_path: str, params_path: str) -> dict:
    spark = _spark()
    stage = HuggingFaceSentenceEmbedder(**json.loads(Path(params_path).read_text()))
    stage.transform(spark.read.parquet(in_path)).write.mode("overwrite").parquet(out_path)
    return {"written": out_path}


def persistence(scala_saved: str, python_save_to: str, params_path: str) -> dict:
    _spark()
    loaded = HuggingFaceSentenceEmbedder.load(scala_saved)
    stage = HuggingFaceSentenceEmbedder(**json.loads(Path(params_path).read_text()))
    stage.write().overwrite().save(python_save_to)
    return {"loaded": _describe(loaded), "saved": _describe(stage)}


def _describe(stage) -> dict:
    return {"uid": stage.uid,
            "set": {p.name: v for p, v in stage._paramMap.items()},
            "defaults": {p.name: v for p, v in stage._defaultParamMap.items()}}


def nn_contract(cases_path: str) -> dict:
    """The Python setters' message for each case (None where it is valid)."""
    from synapseml_ext.nn import ApproximateNearestNeighbors

    out = []
    for case in json.loads(Path(cases_path).read_text()):
        try:
            ApproximateNearestNeighbors()._set_checked(**case)
            out.append(None)
        except (ValueError, TypeError) as e:
            out.append(str(e))
    return {"messages": out}


def _knn_rows(knn) -> list:
    return [[r[0], list(r[1]), [float(d) for d in r[2]]] for r in knn.collect()]


def nn_reference(items_path: str, queries_path: str, out_path: str, params_path: str) -> dict:
    from synapseml_ext.nn import ApproximateNearestNeighbors

    spark = _spark()
    params = json.loads(Path(params_path).read_text())
    model = ApproximateNearestNeighbors(**params).fit(spark.read.parquet(items_path))
    knn = model.kneighbors(spark.read.parquet(queries_path))[2]
    Path(out_path).write_text(json.dumps(_knn_rows(knn)))
    return {"written": out_path, "summary": model.buildSummary}


def nn_persistence(scala_model: str, queries_path: str, out_path: str, python_save_to: str,
                   params_path: str) -> dict:
    from synapseml_ext.nn import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel

    spark = _spark()
    loaded = ApproximateNearestNeighborsModel.load(scala_model)
    loaded_estimator = ApproximateNearestNeighbors.load(scala_model + "-estimator")
    queries = spark.read.parquet(queries_path)
    Path(out_path).write_text(json.dumps(_knn_rows(loaded.kneighbors(queries)[2])))
    params = json.loads(Path(params_path).read_text())
    items = spark.read.parquet(params.pop("items"))
    model = ApproximateNearestNeighbors(**params).fit(items)
    model.write().overwrite().save(python_save_to)
    stage = ApproximateNearestNeighbors(**params)
    stage.write().overwrite().save(python_save_to + "-estimator")
    return {"loaded": {**_describe(loaded), "summary": loaded.buildSummary},
            "loadedEstimator": _describe(loaded_estimator),
            "saved": {**_describe(model), "summary": model.buildSummary,
                      "knn": _knn_rows(model.kneighbors(queries)[2])}}


COMMANDS = {"messages": messages, "reference": reference,
            "persistence": persistence, "nn_contract": nn_contract, "nn_reference": nn_reference,
            "nn_persistence": nn_persistence}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
