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
from synapseml_ext.nn.persistence import ModelWriter
from synapseml_ext.nn.transform import output_schema

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
    stage = _checked(stage_from_spec(spec))
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
    """The Python stage the spec's metadata describes (Scala or Python class name)."""
    bridged = by_any_name(spec["class"])
    if bridged is None:
        raise ValueError(f"no Python stage is bridged for class {spec['class']!r}")
    return instance_from_metadata(bridged.python_type(), spec, "the Scala stage's metadata")


def _checked(stage: Any) -> Any:
    """The stage with each explicitly set Param passed through its Python setter's checks,
    so a Scala caller gets the PySpark messages (e.g. an unknown algorithm)."""
    values = {param.name: value for param, value in stage._paramMap.items()}
    if values and hasattr(stage, "_set_checked"):
        stage._set_checked(**values)
    if stage.hasParam("backend") and stage.getOrDefault("backend") == "gpu":
        raise ValueError(GPU_FROM_SCALA)
    return stage


def _schema_of(stage: Any, schema: StructType) -> StructType:
    if isinstance(stage, Estimator):  # the schema the fitted model's transform gives
        id_kind = stage._id_kind(schema, "item") if stage.getIdCol() is not None else "long"
        return output_schema(stage, schema, id_kind)
    return stage.transformSchema(schema)


def _model_op(op: str, model: Any, dfs: list[DataFrame],
              args: dict[str, Any]) -> tuple[str, list[DataFrame]]:
    model._set_state(dfs[0], dfs[1], args["state"]["summary"], args["state"].get("reason", ""))
    if op == "kneighbors":
        return "{}", list(model.kneighbors(dfs[2], bool(args.get("sort", True))))
    if op == "approxSimilarityJoin":
        return "{}", [model.approxSimilarityJoin(dfs[2], args.get("distCol", "distCol"))]
    if op == "transform":
        return "{}", [model.transform(dfs[2])]
    if op == "transformSchema":
        schema = StructType.fromJson(args["schema"])
        return json.dumps(output_schema(model, schema, model._summary.get("id_kind", "long"))
                          .jsonValue()), []
    if op == "save":  # MLWriter.save on the JVM has checked and cleared the path
        ModelWriter(model, args.get("className")).save(args["path"])
        return "{}", []
    raise ValueError(f"{type(model).__name__} has no driver op {op!r}")


def _fit(estimator: Any, items: DataFrame) -> tuple[str, list[DataFrame]]:
    # "auto" runs the CPU engine from Scala: a GPU model is a spark-rapids-ml object that
    # only this process could hold, and the JVM model must survive a restart of it.
    estimator._choose_backend = lambda spark, id_kind: ("cpu", "called from Scala")
    model = estimator.fit(items)
    return _state(model), [model._item_df, model._index_df]


def _state(model: Any) -> str:
    return json.dumps({"summary": model._summary, "reason": model._backend_reason})


def _load(path: str, sc: Any) -> tuple[str, list[DataFrame]]:
    from synapseml_ext.nn.model import ApproximateNearestNeighborsModel

    SparkSession(sc, jsparkSession=sc._jvm.org.apache.spark.sql.SparkSession.active())
    reader = ApproximateNearestNeighborsModel.read()
    model = reader.load(path)
    metadata = reader.metadata  # read once, with the reader's one-line errors
    state = json.loads(_state(model))
    state["metadata"] = {key: metadata[key] for key in
                         ("class", "uid", "paramMap", "defaultParamMap", "sparkVersion")
                         if key in metadata}
    state["metadata"]["timestamp"] = metadata.get("timestamp", 0)
    return json.dumps(state), [model._item_df, model._index_df]
