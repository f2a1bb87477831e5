"""Executor side of filtered search: the items' labels and the queries' allowed labels as
Arrow columns, validated (a null names its item or query), in the index's label order,
and as the per-query label sets :func:`synapseml_ext.nn.filtered.search` takes."""

from __future__ import annotations

from typing import Any

import numpy as np

from synapseml_ext.nn.vectors import VectorDataError, ids_to_numpy


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return pa.int64() if kind == "long" else pa.string()


def _first_null(values: Any) -> int:
    return int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])


def item_labels(column: Any, ids: Any, kind: str, label_col: str) -> Any:
    """A partition's labels (pyarrow, input order); a null label is an error naming the
    item (every item needs one: which sets would a null belong to?)."""
    labels = column.combine_chunks()
    if labels.null_count:
        raise VectorDataError(f"item id {ids[_first_null(labels)].as_py()!r} has a null "
                              f"{label_col!r} label; every item needs one for filtered search")
    return labels.cast(_arrow_type(kind))


def in_label_order(labels: Any, order: np.ndarray | None) -> Any:
    """One list value of ``labels`` in the index's label order (``order``: the input row of
    each label; None: as given)."""
    import pyarrow as pa

    ordered = labels if order is None else labels.take(pa.array(order))
    return pa.ListArray.from_arrays(pa.array([0, len(ordered)], pa.int32()), ordered)


def query_conditions(column: Any, ids: Any, kind: str, cond_col: str) -> Any:
    """The queries' allowed labels (list<label>, row order); a null set is an error naming
    the query (an empty array is the way to allow nothing)."""
    import pyarrow as pa

    conds = column.combine_chunks()
    if conds.null_count:
        raise VectorDataError(f"query id {ids[_first_null(conds)].as_py()!r} has a null "
                              f"{cond_col!r} (its allowed labels): give an array of labels "
                              "(empty: no neighbours)")
    return conds.cast(pa.list_(_arrow_type(kind)))


def allowed_sets(conds: Any, kind: str) -> list[np.ndarray]:
    """Each query's allowed labels as numpy (nulls inside a set match no item: dropped)."""
    if conds.values.null_count:
        dtype = np.int64 if kind == "long" else object
        return [np.array([v for v in row if v is not None], dtype=dtype)
                for row in conds.to_pylist()]
    offsets = conds.offsets.to_numpy()
    values = ids_to_numpy(conds.values, kind)
    return [values[offsets[i]: offsets[i + 1]] for i in range(len(conds))]
