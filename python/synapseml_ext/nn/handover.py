"""A fitted CPU-engine model as plain state, for a caller that holds no Python object
between calls (the Scala stages, through :mod:`synapseml_ext.bridge.driver_ops`): fit,
hand the state over, and rebuild the model from it on the next call."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql.types import StructType

from synapseml_ext.nn.model import ApproximateNearestNeighbors, ApproximateNearestNeighborsModel
from synapseml_ext.nn.transform import output_schema

__all__ = ["FittedState", "fit_on_cpu", "output_schema_of", "restore", "state_of"]


@dataclass(frozen=True)
class FittedState:
    """A fitted model apart from its Params: the item and index tables, the build summary
    (JSON-safe), and why it runs where it runs."""

    items: DataFrame
    indexes: DataFrame
    summary: dict[str, Any]
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON-safe part (summary and reason), for a caller to extend before sending."""
        return {"summary": self.summary, "reason": self.reason}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @staticmethod
    def from_json(state: dict[str, Any], items: DataFrame, indexes: DataFrame) -> FittedState:
        """``state``: what :meth:`to_json` wrote, parsed."""
        return FittedState(items, indexes, state["summary"], state.get("reason", ""))


def fit_on_cpu(estimator: ApproximateNearestNeighbors, items: DataFrame, reason: str
               ) -> FittedState:
    """Fit on the CPU engine without the backend choice (a GPU model is a spark-rapids-ml
    object, which a caller holding no Python object cannot keep)."""
    return state_of(estimator._fit(items, cpu_reason=reason))


def state_of(model: ApproximateNearestNeighborsModel) -> FittedState:
    if model._item_df is None or model._index_df is None:
        raise ValueError("only a model fitted on the CPU engine (or loaded) has state to hand "
                         "over")
    return FittedState(model._item_df, model._index_df, model._summary, model._backend_reason)


def restore(model: ApproximateNearestNeighborsModel, state: FittedState
            ) -> ApproximateNearestNeighborsModel:
    """``model`` (its Params already set) searching the tables of ``state``."""
    model._set_state(state.items, state.indexes, state.summary, state.reason)
    return model


def output_schema_of(stage: ApproximateNearestNeighbors | ApproximateNearestNeighborsModel,
                     schema: StructType) -> StructType:
    """The schema ``transform`` gives a DataFrame of ``schema``: for an estimator, that of
    the model it would fit on items of ``schema``."""
    if isinstance(stage, ApproximateNearestNeighbors):
        id_kind = stage._id_kind(schema, "item") if stage.getIdCol() is not None else "long"
    else:
        id_kind = stage._summary.get("id_kind", "long")
    return output_schema(stage, schema, id_kind)
