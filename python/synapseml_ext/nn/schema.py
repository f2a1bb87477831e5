"""Driver-side checks and column expressions shared by the estimator and the model: ids,
the input vectors (one vector column or several scalar ones), the items' labels and the
queries' allowed labels (filtered search)."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegralType,
    StringType,
    StructType,
)

from synapseml_ext._spark import is_connect
from synapseml_ext.nn.params import _ApproximateNearestNeighborsParams, normalize_algo_params
from synapseml_ext.nn.tables import spark_id_type

log = logging.getLogger("synapseml_ext.nn")

GENERATED_ID = "unique_id"  # spark-rapids-ml's name for a generated id column


def materialized(numbered: DataFrame) -> DataFrame:
    """``numbered`` (rows given generated ids) computed once and kept in the executors'
    storage, released with the DataFrame.

    Generated ids are only stable within one evaluation: the search reads the rows once and
    a join back to them (``approxSimilarityJoin``, ``transform``) reads them again, and a
    plan that prunes columns differently on the two sides numbers them differently (a
    round-robin ``repartition`` sorts by the columns it sees), which paired queries with
    other queries' neighbours. A checkpoint cannot be recomputed, so a lost executor fails
    the job instead of renumbering; a Spark Connect 3.5 client, which cannot checkpoint,
    caches instead. An upstream embedder also runs once, not twice.
    """
    if is_connect(numbered):
        return numbered.persist()
    return numbered.localCheckpoint(eager=True)


def is_vector_type(data_type: Any) -> bool:
    """Whether the k-NN stages take a column of this type as inputCol: an array of floats or
    doubles, or an ML Vector."""
    if isinstance(data_type, ArrayType):
        return isinstance(data_type.elementType, (FloatType, DoubleType))
    return type(data_type).__name__ == "VectorUDT"


def _column_kind(data_type: Any) -> str | None:
    """"long" for integral, "string" for string columns (ids and labels), else None."""
    if isinstance(data_type, IntegralType):
        return "long"
    if isinstance(data_type, StringType):
        return "string"
    return None


class _SchemaMixin(_ApproximateNearestNeighborsParams):
    """Driver-side checks and column expressions shared by the estimator and the model."""

    def _id_col_or_default(self) -> str:
        return self.getIdCol() or GENERATED_ID

    def _with_id(self, df: DataFrame, what: str, materialize: bool = True) -> DataFrame:
        """``df`` with its id column: the idCol (which must exist) or a generated
        ``unique_id`` as spark-rapids-ml adds, computed once (see :func:`materialized`)
        unless ``materialize`` is false."""
        id_col = self.getIdCol()
        if id_col is None:
            if GENERATED_ID in df.columns:
                raise ValueError(f"the {what} DataFrame already has a column {GENERATED_ID!r} "
                                 "but idCol is not set; set idCol to use it as the id")
            numbered = df.select(F.monotonically_increasing_id().alias(GENERATED_ID), "*")
            return materialized(numbered) if materialize else numbered
        if id_col not in df.columns:
            raise ValueError(f"idCol {id_col!r} not found in the {what} DataFrame; available "
                             f"columns: {', '.join(df.columns) or '(none)'}")
        return df

    def _id_kind(self, schema: StructType, what: str, id_col: str | None = None) -> str:
        id_col = id_col or self._id_col_or_default()
        data_type = schema[id_col].dataType
        kind = _column_kind(data_type)
        if kind is None:
            raise TypeError(f"idCol {id_col!r} of the {what} DataFrame must be an integral or "
                            f"string column, got {data_type.simpleString()}")
        return kind

    def _vector_expr(self, schema: StructType, what: str) -> Column:
        """The input as ``array<float>``: inputCol (a vector or array column) or inputCols
        (numeric columns, one dimension each, as spark-rapids-ml assembles them)."""
        if self.isDefined(self.inputCols):
            return self._columns_expr(schema, what, self.getOrDefault(self.inputCols))
        if not self.isDefined(self.inputCol):
            raise ValueError("inputCol is not set: name the vector column to search")
        name = self.getOrDefault(self.inputCol)
        _require(schema, name, "inputCol", what)
        data_type = schema[name].dataType
        if isinstance(data_type, ArrayType) and is_vector_type(data_type):
            return F.col(name).cast("array<float>")
        if is_vector_type(data_type):
            from pyspark.ml.functions import vector_to_array

            return vector_to_array(F.col(name), "float32")
        raise TypeError(f"inputCol {name!r} of the {what} DataFrame must be array<float>, "
                        f"array<double> or a Vector column (or a list of numeric columns), got "
                        f"{data_type.simpleString()}")

    @staticmethod
    def _columns_expr(schema: StructType, what: str, names: list[str]) -> Column:
        for name in names:
            _require(schema, name, "inputCols column", what)
            data_type = schema[name].dataType
            if not isinstance(data_type, (IntegralType, FloatType, DoubleType)):
                raise TypeError(f"inputCols column {name!r} of the {what} DataFrame must be "
                                f"integral, float or double (one dimension each), got "
                                f"{data_type.simpleString()}; give a vector or array column "
                                "as inputCol=<name> instead")
        return F.array(*[F.col(name).cast("float") for name in names])

    def _label_kind(self, schema: StructType) -> str | None:
        """The items' label kind (long or string), None where labelCol is unset."""
        name = self.getLabelCol()
        if name is None:
            return None
        _require(schema, name, "labelCol", "item")
        kind = _column_kind(schema[name].dataType)
        if kind is None:
            raise TypeError(f"labelCol {name!r} of the item DataFrame must be an integral or "
                            f"string column, got {schema[name].dataType.simpleString()}")
        return kind

    def _conditioner_expr(self, schema: StructType, label_kind: str | None) -> Column | None:
        """The queries' allowed labels as ``array<label type>``; None where conditionerCol is
        unset (no filter)."""
        name = self.getConditionerCol()
        if name is None:
            return None
        if label_kind is None:
            raise ValueError(f"conditionerCol {name!r} is set but the model was fitted without "
                             "labelCol: fit with labelCol=<the items' label column> to filter")
        _require(schema, name, "conditionerCol", "query")
        data_type = schema[name].dataType
        if not (isinstance(data_type, ArrayType)
                and _column_kind(data_type.elementType) == label_kind):
            raise TypeError(f"conditionerCol {name!r} of the query DataFrame must be an array "
                            f"of the labels' type (array<{spark_id_type(label_kind)}>: the allowed "
                            f"labels), got {data_type.simpleString()}")
        return F.col(name).cast(f"array<{spark_id_type(label_kind)}>")

    def _cpu_algorithm(self) -> str:
        algorithm = self.getAlgorithm()
        if algorithm == "cagra":  # GPU-only graph index: the CPU engine's graph is HNSW
            log.warning("algorithm 'cagra' runs on GPUs only; the CPU engine uses 'hnsw'")
            return "hnsw"
        return algorithm

    def _cpu_algo_params(self) -> dict[str, Any]:
        algorithm = self._cpu_algorithm()
        params = self.getAlgoParams() if self.getAlgorithm() != "cagra" else None
        return normalize_algo_params(algorithm, params)


def _require(schema: StructType, name: str, param: str, what: str) -> None:
    if name not in schema.fieldNames():
        raise ValueError(f"{param} {name!r} not found in the {what} DataFrame; available "
                         f"columns: {', '.join(schema.fieldNames()) or '(none)'}")
