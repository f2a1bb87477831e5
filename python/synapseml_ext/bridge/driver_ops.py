"""The operations a Scala stage runs through the driver-side Python (:mod:`.driver`).

Each takes the Scala stage's persistence metadata (rebuilt into the Python stage exactly as
``load()`` would, its Params checked by the Python setters), the JVM ``Dataset`` objects, and
JSON arguments, and returns ``(json text, [DataFrame, ...])``. A Scala model holds no Python
object: its state is the fitted model's two tables and build summary, handed over on every
call, so a restarted Python process serves the same model.
"""

from __future__ import annotations

import json
from typing import Any

from pyspark.ml import Estimator, Model
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from synapseml_ext.contract.names import by_any_name
from synapseml_ext.contract.persistence import instance_from_metadata
from synapseml_ext.nn import handover
from synapseml_ext.nn.persistence import ModelWriter

__all__ = ["OPS", "run", "stage_from_spec"]

OPS = ("check", "fit", "kneighbors", "approxSimilarityJoin", "transform", "transformSchema",
       "save", "load")
GPU_FROM_SCALA = ("backend 'gpu' is not available from Scala: the GPU search delegates to "
                  "spark-rapids-ml, whose k-NN runs only from PySpark (its model is a Python "
                  "object); fit it from PySpark, or use backend 'cpu' or 'auto' (the CPU "
                  "engine from Scala)")


def run(op: str, spec: dict[str, Any], frames: list[Any], args: dict[str, Any],
        sc: Any) -> tuple[str, list[DataFrame]]:
    if op not in OPS:
        raise ValueError(f"unknown driver op {op!r}; expected one of: {', '.join(OPS)}")
    if op == "load":
        return _load(args["path"], sc)
    stage = _refuse_gpu(stage_from_spec(spec))
    if op == "check":  # before the JVM saves the Params: nothing invalid is written
        return "{}", []
    session = SparkSession(sc, jsparkSession=frames[0].sparkSession()) if frames else None
    dfs = [DataFrame(frame, session) for frame in frames]
    if isinstance(stage, Model):
        return _model_op(op, stage, dfs, args)
    if op == "transformSchema":
        return json.dumps(_schema_of(stage, StructType.fromJson(args["schema"])).jsonValue()), []
    if op == "fit" and isinstance(stage, Estimator):
        return _fit(stage, dfs[0])
    if op == "transform" and not isinstance(stage, Estimator):
        return "{}", [stage.transform(dfs[0])]
    raise ValueError(f"{type(stage).__name__} has no driver op {op!r}")


def stage_from_spec(spec: dict[str, Any]) -> Any:
    """The Python stage the spec's metadata describes (Scala or Python class name), each
    Param checked by its Python setter, so a Scala caller gets the PySpark messages."""
    bridged = by_any_name(spec["class"])
    if bridged is None:
        raise ValueError(f"no Python stage is bridged for class {spec['class']!r}")
    return instance_from_metadata(bridged.python_type(), spec, "the Scala stage's metadata")


def _refuse_gpu(stage: Any) -> Any:
    if stage.hasParam("backend") and stage.getOrDefault("backend") == "gpu":
        raise ValueError(GPU_FROM_SCALA)
    return stage


def _schema_of(stage: Any, schema: StructType) -> StructType:
    if isinstance(stage, Estimator):  # the schema the fitted model's transform gives
        return handover.output_schema_of(stage, schema)
    return stage.transformSchema(schema)


def _model_op(op: str, model: Any, dfs: list[DataFrame],
              args: dict[str, Any]) -> tuple[str, list[DataFrame]]:
    handover.restore(model, handover.FittedState.from_json(args["state"], dfs[0], dfs[1]))
    if op == "kneighbors":
        return "{}", list(model.kneighbors(dfs[2], bool(args.get("sort", True))))
    if op == "approxSimilarityJoin":
        return "{}", [model.approxSimilarityJoin(dfs[2], args.get("distCol", "distCol"))]
    if op == "transform":
        return "{}", [model.transform(dfs[2])]
    if op == "transformSchema":
        schema = StructType.fromJson(args["schema"])
        return json.dumps(handover.output_schema_of(model, schema).jsonValue()), []
    if op == "save":  # MLWriter.save on the JVM has checked and cleared the path
        ModelWriter(model, args.get("className")).save(args["path"])
        return "{}", []
    raise ValueError(f"{type(model).__name__} has no driver op {op!r}")


def _fit(estimator: Any, items: DataFrame) -> tuple[str, list[DataFrame]]:
    # "auto" runs the CPU engine from Scala: a GPU model is a spark-rapids-ml object that
    # only this process could hold, and the JVM model must survive a restart of it.
    state = handover.fit_on_cpu(estimator, items, "called from Scala")
    return state.to_json(), [state.items, state.indexes]


def _load(path: str, sc: Any) -> tuple[str, list[DataFrame]]:
    from synapseml_ext.nn.model import ApproximateNearestNeighborsModel

    SparkSession(sc, jsparkSession=sc._jvm.org.apache.spark.sql.SparkSession.active())
    reader = ApproximateNearestNeighborsModel.read()
    model = reader.load(path)
    metadata = reader.metadata  # read once, with the reader's one-line errors
    fitted = handover.state_of(model)
    state = fitted.as_dict()
    state["metadata"] = {key: metadata[key] for key in
                         ("class", "uid", "paramMap", "defaultParamMap", "sparkVersion")
                         if key in metadata}
    state["metadata"]["timestamp"] = metadata.get("timestamp", 0)
    return json.dumps(state), [fitted.items, fitted.indexes]
