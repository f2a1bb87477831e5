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

from pyspark.ml.util import DefaultParamsReader
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from synapseml_ext.bridge.protocol import stage_from_spec
from synapseml_ext.nn.persistence import ModelWriter
from synapseml_ext.nn.transform import output_schema

__all__ = ["OPS", "run"]

OPS = ("fit", "kneighbors", "approxSimilarityJoin", "transform", "transformSchema", "save",
       "load")
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
    session = SparkSession(sc, jsparkSession=frames[0].sparkSession()) if frames else None
    dfs = [DataFrame(frame, session) for frame in frames]
    if op == "fit":
        return _fit(stage, dfs[0])
    if op == "transformSchema" and not hasattr(stage, "_set_state"):  # the estimator's
        schema = StructType.fromJson(args["schema"])
        id_kind = stage._id_kind(schema, "item") if stage.getIdCol() is not None else "long"
        return json.dumps(output_schema(stage, schema, id_kind).jsonValue()), []
    model = _with_state(stage, dfs[0], dfs[1], args["state"])
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
    # "save": MLWriter.save on the JVM has checked and cleared the path
    ModelWriter(model, args.get("className")).save(args["path"])
    return "{}", []


def _checked(stage: Any) -> Any:
    """The stage with each explicitly set Param passed through its Python setter's checks,
    so a Scala caller gets the PySpark messages (e.g. an unknown algorithm)."""
    values = {param.name: value for param, value in stage._paramMap.items()}
    if values and hasattr(stage, "_set_checked"):
        stage._set_checked(**values)
    if stage.getOrDefault("backend") == "gpu":
        raise ValueError(GPU_FROM_SCALA)
    return stage


def _fit(estimator: Any, items: DataFrame) -> tuple[str, list[DataFrame]]:
    # "auto" runs the CPU engine from Scala: a GPU model is a spark-rapids-ml object that
    # only this process could hold, and the JVM model must survive a restart of it.
    estimator._choose_backend = lambda spark, id_kind: ("cpu", "called from Scala")
    model = estimator.fit(items)
    return _state(model), [model._item_df, model._index_df]


def _state(model: Any) -> str:
    return json.dumps({"summary": model._summary, "reason": model._backend_reason})


def _with_state(model: Any, items: DataFrame, indexes: DataFrame, state: dict[str, Any]) -> Any:
    if not hasattr(model, "_set_state"):
        raise ValueError(f"{type(model).__name__} is not a fitted model")
    model._set_state(items, indexes, state["summary"], state.get("reason", ""))
    return model


def _load(path: str, sc: Any) -> tuple[str, list[DataFrame]]:
    from synapseml_ext.nn.model import ApproximateNearestNeighborsModel

    SparkSession(sc, jsparkSession=sc._jvm.org.apache.spark.sql.SparkSession.active())
    model = ApproximateNearestNeighborsModel.load(path)
    metadata = DefaultParamsReader.loadMetadata(path, sc)
    state = json.loads(_state(model))
    state["metadata"] = {key: metadata[key] for key in
                         ("class", "uid", "paramMap", "defaultParamMap", "sparkVersion")
                         if key in metadata}
    state["metadata"]["timestamp"] = metadata.get("timestamp", 0)
    return json.dumps(state), [model._item_df, model._index_df]
