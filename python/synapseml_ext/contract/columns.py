"""Schema contracts of the stages: one declaration gives a stage's ``transformSchema`` checks
and messages (``ValueError``/``TypeError``, which a Scala caller gets as
``IllegalArgumentException``)."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml.param import Params
from pyspark.sql.types import DataType, StructField, StructType

__all__ = ["ColumnTransform", "InputColumn", "OutputColumn"]


@dataclass(frozen=True)
class InputColumn:
    """A column the stage reads: Param ``param`` names it, its type must be one of ``types``."""

    param: str
    types: tuple[DataType, ...]
    description: str  # "a string column": completes "must be ..."
    purpose: str      # "the text column to embed": completes "name ..."

    def check(self, stage: Params, schema: StructType) -> None:
        if not stage.isDefined(stage.getParam(self.param)):
            raise ValueError(f"{self.param} is not set: name {self.purpose}")
        column = stage.getOrDefault(self.param)
        names = schema.fieldNames()
        if column not in names:
            raise ValueError(f"{self.param} {column!r} not found; available columns: "
                             f"{', '.join(names) or '(none)'}")
        actual = schema[column].dataType
        if actual not in self.types:
            raise TypeError(f"{self.param} {column!r} must be {self.description}, "
                            f"got {actual.simpleString()}")


@dataclass(frozen=True)
class OutputColumn:
    """A column the stage appends: Param ``param`` names it; it must not exist yet."""

    param: str
    data_type: DataType
    nullable: bool = True

    def append(self, stage: Params, schema: StructType) -> StructType:
        column = stage.getOrDefault(self.param)
        if column in schema.fieldNames():
            raise ValueError(f"{self.param} {column!r} already exists in the DataFrame; choose "
                             f"another {self.param} or drop that column first")
        return StructType([*schema.fields, StructField(column, self.data_type, self.nullable)])


@dataclass(frozen=True)
class ColumnTransform:
    """A Transformer that maps one input column to one appended output column, row by row."""

    input: InputColumn
    output: OutputColumn

    def transform_schema(self, stage: Params, schema: StructType) -> StructType:
        self.input.check(stage, schema)
        return self.output.append(stage, schema)
