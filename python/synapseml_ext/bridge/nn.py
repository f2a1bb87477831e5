"""Bridge ops of the k-NN stages: the Scala ``ApproximateNearestNeighbors`` does the DataFrame
plumbing itself (repartition, cross join, top-k merge) and asks the executors' Python only
for the ``mapInArrow`` functions the PySpark stage runs (:mod:`synapseml_ext.nn.build_task`,
:mod:`~synapseml_ext.nn.search_tasks`, :mod:`~synapseml_ext.nn.saved_tasks`).

The spec is the Scala stage's metadata (rebuilt here into the Python stage, so algorithm
aliases, ``algoParams`` normalisation and search overrides are Python's own) plus, in
``bridge.facts``, what only the driver knows: the id kinds, the items' dimension, the
model's index token and the local store's byte limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

__all__ = ["OPS", "function", "struct_from_ddl"]

OPS = ("nn_build", "nn_block", "nn_search", "nn_search_local", "nn_save_chunks",
       "nn_join_chunks")

_ATOMS: dict[str, DataType] = {"int": IntegerType(), "bigint": LongType(),
                               "string": StringType(), "binary": BinaryType(),
                               "float": FloatType()}


def function(stage: Any, op: str, facts: dict[str, Any]) -> tuple[Callable, StructType]:
    """``(mapInArrow function, its output schema)`` for ``op`` of the rebuilt Python stage
    (the estimator for ``nn_build`` and the saved pieces' ops, the model for the search ops)."""
    from synapseml_ext.nn import build_task, local_store, saved_tasks, search_tasks, tables

    if op not in OPS:
        raise ValueError(f"unknown k-NN bridge op {op!r}; expected one of: {', '.join(OPS)}")
    store = {"token": facts.get("token"),
             "store_limit": int(facts.get("store_limit", local_store.AUTO))}
    if op == "nn_build":
        cfg = {"id_kind": facts["id_kind"], "column": stage.getInputCol(),
               "algorithm": stage._cpu_algorithm(), "metric": stage.getMetric(),
               "params": stage._cpu_algo_params(), "k": stage.getK(),
               "partitions": int(facts.get("partitions", 1)), **store}
        return (build_task.make_build_fn(cfg),
                struct_from_ddl(tables.index_schema(facts["id_kind"])))
    if op == "nn_save_chunks":  # the index table in pieces, for save()
        return (saved_tasks.make_save_chunks_fn({"chunk_bytes": int(facts["chunk_bytes"])}),
                struct_from_ddl(saved_tasks.saved_index_schema(facts["id_kind"])))
    if op == "nn_join_chunks":  # a saved table's pieces, joined back at load
        cfg = {**store, "digests": facts.get("digests"), "path": facts.get("path")}
        return (saved_tasks.make_join_chunks_fn(cfg),
                struct_from_ddl(tables.index_schema(facts["id_kind"])))
    if op == "nn_block":
        cfg = {"id_kind": facts["query_kind"], "column": stage.getInputCol(),
               "dim": facts["dim"]}
        return (search_tasks.make_block_fn(cfg),
                struct_from_ddl(tables.block_schema(facts["query_kind"])))
    found = struct_from_ddl(tables.found_schema(facts["query_kind"], facts["item_kind"]))
    cfg = {"item_kind": facts["item_kind"], "query_kind": facts["query_kind"],
           "metric": stage.getMetric(), "k": stage.getK(), "dim": facts["dim"],
           "search": stage._search_overrides(), **store}
    if op == "nn_search":
        return search_tasks.make_search_fn(cfg), found
    return (search_tasks.make_local_search_fn(cfg),
            struct_from_ddl(tables.local_found_schema(facts["query_kind"], facts["item_kind"])))


def struct_from_ddl(ddl: str) -> StructType:
    """The flat ``name type, ...`` schemas of :mod:`~synapseml_ext.nn.tables` as a StructType.

    pyspark's own DDL parser needs a JVM, which a Python worker does not have.
    """
    fields = []
    for column in ddl.split(","):
        name, type_text = column.split()
        fields.append(StructField(name, _data_type(type_text)))
    return StructType(fields)


def _data_type(text: str) -> DataType:
    if text.startswith("array<") and text.endswith(">"):
        return ArrayType(_data_type(text[len("array<"):-1]))
    if text not in _ATOMS:
        raise ValueError(f"no bridge type for {text!r}")
    return _ATOMS[text]
