"""Arrow columns of ids and vectors -> numpy, with errors that name the offending id (and
the driver-side context that turns such an executor error back into a ValueError)."""

from __future__ import annotations

from typing import Any

import numpy as np

# The prefix of every data error raised on an executor; the driver turns such a worker
# exception back into a ValueError with the same text.
from synapseml_ext.engine.errors import ERROR_PREFIX


class VectorDataError(ValueError):
    """A vector or id that the search cannot use (null, NaN/inf, wrong dimension, duplicate)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{ERROR_PREFIX} {message}")


class NoItemsError(ValueError):
    """``fit`` was given no item rows: there is nothing to search."""


def ids_to_numpy(ids, id_kind: str) -> np.ndarray:
    """int64 array for integral ids, object array of str for string ids."""
    if id_kind == "long":
        return ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return np.asarray(ids.to_pylist(), dtype=object)


def vectors_to_numpy(ids, vectors, what: str, column: str, dim: int | None = None
                     ) -> np.ndarray:
    """``[n, dim]`` float32 from an Arrow list<float> column.

    Raises :class:`VectorDataError` naming the first offending id for a null id or vector,
    vectors of different lengths (or not ``dim`` when given), and NaN/inf values.
    ``what`` is "item" or "query", ``column`` the inputCol (both for the message).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(vectors)
    if ids.null_count:
        row = _first_true(ids.is_null())
        raise VectorDataError(f"{what} row {row} has a null id; ids must be unique and non-null")
    if n == 0:
        return np.empty((0, dim or 0), dtype=np.float32)
    if vectors.null_count:
        row = _first_true(vectors.is_null())
        raise VectorDataError(f"{what} id {_id(ids, row)} has a null {column!r} vector")
    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    expected = int(lengths[0]) if dim is None else int(dim)
    wrong = np.flatnonzero(lengths != expected)
    if len(wrong):
        row = int(wrong[0])
        reference = (f"the items have {expected}" if dim is not None
                     else f"{what} id {_id(ids, 0)} has {expected}")
        raise VectorDataError(
            f"{what} id {_id(ids, row)} has a {column!r} vector of dimension {int(lengths[row])} "
            f"but {reference}; all vectors must have the same dimension")
    if expected == 0:
        raise VectorDataError(f"{what} id {_id(ids, 0)} has an empty {column!r} vector")
    flat = vectors.flatten()
    if flat.null_count:
        position = _first_true(flat.is_null())
        raise VectorDataError(f"{what} id {_id(ids, position // expected)} has a null element "
                              f"in its {column!r} vector")
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        row = position // expected
        raise VectorDataError(f"{what} id {_id(ids, row)} has a non-finite value "
                              f"({values[position]}) in its {column!r} vector; NaN and "
                              "infinity cannot be searched")
    return values.reshape(n, expected)


def _first_true(mask) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _id(ids, row: int) -> Any:
    value = ids[row].as_py()
    return repr(value) if isinstance(value, str) else value


class DataErrors:
    """Driver side: an executor's data error (an exception text starting with
    ``synapseml-ext:``) becomes a ``ValueError`` with that message."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        import re

        if error is None:
            return False
        match = re.search(re.escape(ERROR_PREFIX) + r"[^\n]*", str(error))
        if match and not isinstance(error, ValueError):
            raise ValueError(match.group(0)) from error
        return False
