"""``ApproximateNearestNeighborsModel.transform``: each query row gets its k nearest items in
one column, as SynapseML's ``KNNModel`` adds them, so the model works as a Pipeline stage.

The rows get a private row id, the same search plan as ``kneighbors`` runs over that id, the
input columns (and the allowed labels when filtering), and the neighbour lists are joined
back to the rows by it: every input row and column is kept. The tagged rows are
materialised first (:func:`~synapseml_ext.nn.schema.materialized`), so both sides see the
same numbering.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from synapseml_ext.nn import plan, tables
from synapseml_ext.nn.schema import GENERATED_ID, materialized

ROW = "__synapseml_ext_row"  # the private row id the neighbour lists are joined back on


def add_neighbors(model: Any, dataset: DataFrame) -> DataFrame:
    """``dataset`` with ``outputCol``: array<struct<value: item id, distance: float>>,
    nearest first, k entries (fewer where fewer items, or fewer allowed items, exist)."""
    out_col = model.getOutputCol()
    for taken in (out_col, ROW):
        if taken in dataset.columns:
            raise ValueError(f"the DataFrame already has a column {taken!r}; set outputCol to "
                             "another name")
    tagged = materialized(dataset.select("*", F.monotonically_increasing_id().alias(ROW)))
    if model._delegate is not None:
        knn = _delegate_knn(model._delegate, tagged, _inputs(model))
    else:
        if model._index_df is None:
            raise ValueError("this model has no index: fit it or load a saved one")
        conditioner = model.getConditionerCol()
        columns = [ROW, *_inputs(model), *([conditioner] if conditioner else [])]
        knn = plan.knn_frame(model, tagged.select(*columns), ROW, sort=False)
        knn = knn.withColumnRenamed(f"query_{ROW}", ROW)
    found = knn.select(ROW, _neighbors(knn).alias(out_col))
    return tagged.join(found, ROW, "left").drop(ROW)


def output_schema(stage: Any, schema: StructType, id_kind: str) -> StructType:
    """The schema ``add_neighbors`` gives a DataFrame of ``schema`` for items with ids of
    ``id_kind`` (Scala's transformSchema, of the estimator and of the model)."""
    out_col = stage.getOutputCol()
    for taken in (out_col, ROW):
        if taken in schema.fieldNames():
            raise ValueError(f"the DataFrame already has a column {taken!r}; set outputCol to "
                             "another name")
    id_type = LongType() if id_kind == "long" else StringType()
    pair = StructType([StructField("value", id_type), StructField("distance", FloatType())])
    return StructType([*schema.fields, StructField(out_col, ArrayType(pair))])


def _inputs(model: Any) -> list[str]:
    value = model.getInputCol()
    return [value] if isinstance(value, str) else list(value)


def _neighbors(knn: DataFrame) -> Column:
    """indices + distances -> array<struct<value, distance>>, without the padding entries
    (infinite distance) that kneighbors adds where fewer than k items exist."""
    id_type = knn.schema[tables.INDICES].dataType.elementType.simpleString()
    pairs = F.arrays_zip(F.col(tables.INDICES), F.col(tables.DISTANCES)).cast(
        f"array<struct<value:{id_type},distance:float>>")
    return F.filter(pairs, lambda pair: F.abs(pair["distance"]) < F.lit(float("inf")))


def _delegate_knn(delegate: Any, tagged: DataFrame, inputs: list[str]) -> DataFrame:
    """spark-rapids-ml's kneighbors keyed by the row id: given as its idCol, or (idCol
    unset: it generates ``unique_id``) mapped back through the query rows it returns."""
    id_col = delegate.getIdCol()
    if id_col:
        queries = tagged.select(F.col(ROW).alias(id_col), *inputs)
        _, _, knn = delegate.kneighbors(queries, sort_knn_df_by_query_id=False)
        return knn.withColumnRenamed(f"query_{id_col}", ROW)
    _, with_id, knn = delegate.kneighbors(tagged.select(ROW, *inputs),
                                          sort_knn_df_by_query_id=False)
    rows = with_id.select(F.col(GENERATED_ID).alias(f"query_{GENERATED_ID}"), ROW)
    return knn.join(rows, f"query_{GENERATED_ID}").drop(f"query_{GENERATED_ID}")


def neighbour_rows(knn: DataFrame, query_col: str) -> DataFrame:
    """``knn_df`` of ``kneighbors`` as one row per neighbour: query_id, rank (1 first), id
    and distance; padding (fewer items than k) left out."""
    return (knn.select(F.col(query_col).alias("query_id"),
                       F.posexplode(F.arrays_zip("indices", "distances")))
            .select("query_id", (F.col("pos") + 1).alias("rank"),
                    F.col("col.indices").alias("id"), F.col("col.distances").alias("distance"))
            .where(F.col("id").isNotNull() & (F.col("distance") < float("inf"))))
