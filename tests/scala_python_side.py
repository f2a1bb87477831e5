"""The Python half of the Scala tests (scala/src/test/scala): ScalaTest suites run this with
the executors' Python ($PYSPARK_PYTHON) to compare the Scala stubs against the real Python
stage. Not a pytest module; each command prints one JSON document on stdout.

    messages CASES.json               Python's error message for each case (no Spark)
    unpickle COMMAND.bin              what Spark's worker gets from a JVM-built command
    reference IN.parquet OUT.parquet PARAMS.json   the PySpark stage's output
    persistence SCALA_SAVED PY_SAVE_TO PARAMS.json  load a Scala-saved stage, save a Python one
"""

from __future__ import annotations

import json
import pickle
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


def unpickle(command_path: str) -> dict:
    function, return_type = pickle.loads(Path(command_path).read_bytes())
    return {"function": getattr(function, "__qualname__", repr(function)),
            "module": getattr(function, "__module__", None),
            "returnType": return_type.json()}


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


COMMANDS = {"messages": messages, "unpickle": unpickle, "reference": reference,
            "persistence": persistence}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
