"""The tables passed between the driver's plan and the executors' ``mapInArrow`` tasks:
column names, their Spark and Arrow types, and what every task does first (read its rows,
take its share of the cores) or last (keep an index partition in the local store)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from synapseml_ext.engine.errors import ERROR_PREFIX

if TYPE_CHECKING:
    from synapseml_ext.nn.task_config import LocalStore

# Column names of the tables passed between stages (internal; users never see them).
ID, VEC = "__id", "__vec"
QIDS, QVECS = "__qids", "__qvecs"
# Filtered search only (the Scala mirror's tables never have them): an item's label and a
# query's allowed labels on the way in; a partition's labels in label order, and a block's
# allowed labels per query.
LABEL, COND = "__label", "__cond"
LABELS, QCONDS = "__labels", "__qconds"
PART, IDS, INDEX, INFO = "__part", "__ids", "__index", "__info"
FOUND_QID, INDICES, DISTANCES = "__qid", "indices", "distances"
# Query blocks a search task could not search (no local copy of its index partition).
MISS_PART = "__miss_part"

LONG_MAX = np.iinfo(np.int64).max


def spark_id_type(id_kind: str) -> str:
    return "bigint" if id_kind == "long" else "string"

def arrow_id_type(id_kind: str) -> Any:
    """The pyarrow type of ids of ``id_kind`` (long or string)."""
    import pyarrow as pa

    return pa.int64() if id_kind == "long" else pa.string()

def labelled(column: str, label_kind: str | None, depth: int = 1) -> str:
    """``, <column> array<...<label type>>`` for filtered search, else nothing."""
    if label_kind is None:
        return ""
    return f", {column} {'array<' * depth}{spark_id_type(label_kind)}{'>' * depth}"

def index_schema(id_kind: str, label_kind: str | None = None) -> str:
    """One row per item partition: its ids in label order, the serialised index, and what
    was built (JSON :class:`~synapseml_ext.nn.engine.BuildInfo` plus the first id); with
    labels, the items' labels in label order too."""
    return (f"{PART} int, {IDS} array<{spark_id_type(id_kind)}>, {INDEX} binary, "
            f"{INFO} string{labelled(LABELS, label_kind)}")

def block_schema(id_kind: str, label_kind: str | None = None) -> str:
    return (f"{QIDS} array<{spark_id_type(id_kind)}>, {QVECS} binary"
            f"{labelled(QCONDS, label_kind, 2)}")

def found_schema(query_kind: str, item_kind: str) -> str:
    return (f"{FOUND_QID} {spark_id_type(query_kind)}, {INDICES} array<{spark_id_type(item_kind)}>, "
            f"{DISTANCES} array<float>")

def local_found_schema(query_kind: str, item_kind: str, label_kind: str | None = None) -> str:
    """What a search from local index copies returns: found rows (the miss columns null)
    and miss rows (the query blocks of a partition this executor holds no copy of; the
    found columns null)."""
    return (f"{found_schema(query_kind, item_kind)}, {MISS_PART} int, "
            f"{QIDS} array<{spark_id_type(query_kind)}>, {QVECS} binary"
            f"{labelled(QCONDS, label_kind, 2)}")

def arrow_table(batches: Iterator[Any]):
    """A task's Arrow batches as one table (None when it got no rows)."""
    import pyarrow as pa

    batches = list(batches)
    if not batches or sum(b.num_rows for b in batches) == 0:
        return None
    return pa.Table.from_batches(batches)

def use_task_threads() -> None:
    """faiss threads = this task's share of the cores (``spark.task.cpus``)."""
    from synapseml_ext.engine.hardware import task_cpu_share
    from synapseml_ext.nn.engine import set_threads

    set_threads(task_cpu_share())

def binary_value(array: Any, row: int) -> Any:
    """Value ``row`` of a binary Arrow array as a view of its data buffer: a scalar's
    ``as_buffer()`` copies the value (pyarrow 26), hundreds of MB for an index partition."""
    import pyarrow as pa

    _, offsets, data = array.buffers()[:3]
    width = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    start, end = np.frombuffer(offsets, dtype=width)[array.offset + row: array.offset + row + 2]
    return pa.py_buffer(b"") if data is None else data.slice(int(start), int(end - start))

def binary_array(value: Any) -> Any:
    """A one-value binary Arrow array over the buffer ``value`` (not a copy of it)."""
    import pyarrow as pa

    if value.size > np.iinfo(np.int32).max:  # Spark's binary values have int32 offsets
        raise ValueError(f"{ERROR_PREFIX} an index partition of {value.size / 2**30:.1f} GiB "
                         "is more than one Spark value holds (2 GiB): raise numPartitions so "
                         "that each holds fewer items")
    offsets = pa.py_buffer(np.array([0, value.size], dtype=np.int32))
    return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, value])

def keep_locally(store: LocalStore, part: int, row: Any) -> bool:
    """Keep index partition ``part`` (a one-row index batch) in this executor's local store,
    where the plan uses local copies (``store.token`` set); True if the copy is there."""
    from synapseml_ext.nn import local_store

    return bool(store.token) and local_store.write(store.token, part, row, store.limit)


def task_name() -> str | None:
    """``stage.partition`` of the Spark task running this (None outside Spark)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return None if context is None else f"{context.stageId()}.{context.partitionId()}"
