"""The CLI's tables: csv, jsonl and parquet inputs read by Spark, and the parquet, csv or jsonl
directories that ``embed`` and ``search`` write (and that ``search`` reads back)."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    MapType,
    StringType,
    StructType,
)

from synapseml_ext.cli_io import InputPlan
from synapseml_ext.engine.errors import UserInputError
from synapseml_ext.nn.schema import is_vector_type

# Python codec names that Java spells differently (Spark's readers take Java charset names).
_JAVA_CHARSETS = {"iso8859-1": "ISO-8859-1", "utf-8-sig": "UTF-8", "mac-roman": "x-MacRoman"}
VECTOR = "array<float>"


def read_input(spark: SparkSession, inputs: InputPlan, encoding: str = "utf-8",
               schema: StructType | None = None) -> DataFrame:
    """``inputs`` as a DataFrame, rows in file order (csv: header, quoted newlines)."""
    name = codecs.lookup(encoding).name
    charset = _JAVA_CHARSETS.get(name, name)
    if inputs.fmt == "parquet":
        return spark.read.parquet(inputs.path)
    reader = spark.read.option("encoding", charset)
    if schema is not None:  # our own outputs: their types as written, not inferred
        reader = reader.schema(schema)
    if inputs.fmt == "csv":
        return (reader.option("header", True).option("multiLine", True).option("escape", '"')
                .csv(inputs.path))
    if charset.lower() != "utf-8":
        reader = reader.option("lineSep", "\n")  # Spark needs it for other line-mode charsets
    return reader.json(inputs.path)


def for_csv(df: DataFrame) -> DataFrame:
    """``df`` with its array, struct and map columns (the embedding) as JSON strings: csv has
    no nested types, and JSON keeps every float32 digit."""
    return df.select([F.to_json(F.col(f"`{f.name}`")).alias(f.name) if _nested(f.dataType)
                      else F.col(f"`{f.name}`") for f in df.schema.fields])


def _nested(data_type: DataType) -> bool:
    return isinstance(data_type, (ArrayType, StructType, MapType))


def write_table(df: DataFrame, path: Path, fmt: str) -> StructType:
    """Write ``df`` into the new directory ``path`` as parquet, csv (with a header row, nested
    columns as JSON) or jsonl; the schema written."""
    if fmt == "csv":
        df = for_csv(df)
        # escape='"' doubles quotes as RFC 4180 says (Spark's default escapes with a backslash).
        df.write.option("header", True).option("escape", '"').csv(str(path))
    elif fmt == "jsonl":
        df.write.option("ignoreNullFields", False).json(str(path))
    else:
        df.write.parquet(str(path))
    return df.schema


def schema_from_marker(marker: dict | None) -> StructType | None:
    """The schema an output of ours was written with (recorded in its marker)."""
    text = (marker or {}).get("schema")
    if not text:
        return None
    return StructType.fromJson(json.loads(text) if isinstance(text, str) else text)


def as_vectors(df: DataFrame, name: str, where: str = "--table") -> Column:
    """Column ``name`` as the k-NN stage takes it: a JSON array string (csv) parsed to
    ``array<float>``, an array of floats or doubles, or an ML Vector; any other type is a
    one-line error naming ``--embeddings-col``."""
    data_type = df.schema[name].dataType
    column = F.col(f"`{name}`")
    if isinstance(data_type, StringType):
        return F.from_json(column, VECTOR)
    if is_vector_type(data_type):
        return column
    raise UserInputError(f"--embeddings-col {name!r} is a {data_type.simpleString()} column "
                         f"of {where}, not an array of floats: name the column that holds the "
                         "embeddings")
