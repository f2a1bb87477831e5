"""The fit's executor task: one item partition in, one index row out (validated ids and
vectors, the faiss index built and tuned by :mod:`.engine`, its digest), kept in the local
store as well."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from synapseml_ext.nn import labels as labels_mod
from synapseml_ext.nn import packing
from synapseml_ext.nn.integrity import DIGEST, partition_digest
from synapseml_ext.nn.tables import (
    ID,
    IDS,
    INDEX,
    INFO,
    LABEL,
    LABELS,
    PART,
    VEC,
    arrow_id_type,
    arrow_table,
    binary_array,
    keep_locally,
    use_task_threads,
)
from synapseml_ext.nn.task_config import BuildTask
from synapseml_ext.nn.vectors import VectorDataError, ids_to_numpy, vectors_to_numpy


def make_build_fn(cfg: BuildTask) -> Callable:
    """Executor: the whole item partition -> one index row (none for an empty partition),
    kept in the local index store (:mod:`.local_store`) where ``cfg.store`` names one."""

    def build(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        from synapseml_ext.engine.encoder import record_event
        from synapseml_ext.engine.logs import configure_worker_logging
        from synapseml_ext.nn import engine, index_build, index_tuning

        # Each copy of the partition is dropped once the next one exists (the input, the
        # vectors, the index, its bytes): while Spark sends the packed row the worker holds
        # 0.90x the raw partition beyond its input, where it held 2.07x
        # (tools/bench/ann_unpack_memory.py; the peak, 4.4x, is inside build_index).
        table = arrow_table(batches)
        if table is None:
            return
        configure_worker_logging()
        use_task_threads()
        ids = table.column(ID)
        ids_np = ids_to_numpy(ids, cfg.id_kind)
        _check_unique(ids_np)
        vectors = vectors_to_numpy(ids, table.column(VEC), "item", cfg.column)
        labels = (labels_mod.item_labels(table.column(LABEL), ids, cfg.label_kind,
                                         cfg.label_col) if cfg.label_kind else None)
        del table, ids
        context = TaskContext.get()
        part = context.partitionId() if context is not None else 0
        built = index_build.build_index(vectors, cfg.algorithm, cfg.metric, dict(cfg.params),
                                        index_tuning.calibration_k(cfg.k, cfg.partitions),
                                        seed=part)
        del vectors
        in_label_order = ids_np if built.order is None else ids_np[built.order]
        blob = engine.serialize(built)
        built_info, order = built.info, built.order
        del built
        id_type = arrow_id_type(cfg.id_kind)
        ids_row = pa.array([in_label_order.tolist()], pa.list_(id_type))
        labels_row = None if labels is None else labels_mod.in_label_order(labels, order)
        info = {**built_info.to_dict(), "first_id": _plain(ids_np[0]),
                DIGEST: partition_digest(blob, ids_row[0].values,
                                         None if labels_row is None else labels_row[0].values)}
        record_event("nn_build", partition=part, n=built_info.n, kind=built_info.kind,
                     search=built_info.search, recall=built_info.calibration_recall,
                     seconds=built_info.seconds)
        engine.log.info("partition %d: built %s index over %d items in %.2fs (%s, calibration "
                        "recall %s)", part, built_info.kind, built_info.n, built_info.seconds,
                        built_info.search or built_info.params, built_info.calibration_recall)
        columns = [pa.array([part], pa.int32()), ids_row, binary_array(pa.py_buffer(blob)),
                   pa.array([json.dumps(info)], pa.string())]
        del blob
        labelled = labels_row is not None
        row = pa.RecordBatch.from_arrays(columns + ([labels_row] if labelled else []),
                                         [PART, IDS, INDEX, INFO] + ([LABELS] if labelled else []))
        del columns
        keep_locally(cfg.store, part, row)
        packed = packing.packed_row(row)  # the table's copy: packed (the local one is mapped)
        del row  # not held while Spark sends the packed row
        yield packed

    return build


def _check_unique(ids: np.ndarray) -> None:
    """Duplicates within this task: all of them where the items were hashed by id, else the
    driver checks across partitions after the build."""
    if ids.dtype == object:
        uniques, counts = np.unique(ids.astype(str), return_counts=True)
    else:
        uniques, counts = np.unique(ids, return_counts=True)
    if len(uniques) != len(ids):
        dup = uniques[np.flatnonzero(counts > 1)[0]]
        shown = repr(str(dup)) if ids.dtype == object else int(dup)
        raise VectorDataError(f"item id {shown} occurs {int(counts[counts > 1][0])} times; "
                              "idCol must identify each item uniquely")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
