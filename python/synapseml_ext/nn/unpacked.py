"""Index rows of the persisted table (packed, :mod:`.packing`) kept in the executor's local
store unpacked frame by frame into the file, checked on the way: a worker never holds the
whole raw bytes beside the packed ones (a saved model's load held the pieces, the packed
and the raw bytes at once; a search miss the packed, the raw and faiss' copy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from synapseml_ext.nn import local_store, packing
from synapseml_ext.nn.integrity import PartitionDigest, partition_digest
from synapseml_ext.nn.tables import IDS, INDEX, LABELS, binary_value, keep_locally
from synapseml_ext.nn.task_config import LocalStore


def keep_unpacked(store: LocalStore, part: int, row: Any,
                  check: Callable[[str], None] | None = None) -> bool:
    """Keep the one-row index batch ``row`` (packed or raw) as partition ``part`` in the
    local store where the plan uses one; True if the copy is there. With ``check``, the
    digest of the raw bytes is passed to it, kept or not, and a copy is kept only once it
    returned (it raises where the digest is not the recorded one).
    :class:`~synapseml_ext.nn.packing.DamagedPackError` where the bytes do not unpack."""
    info, raw_bytes = packing.unpacked_info(row)
    if raw_bytes is None:  # saved before packing: the bytes are at hand
        if check is not None:
            check(partition_digest(binary_value(row.column(INDEX), 0), *_ids_and_labels(row)))
        return keep_locally(store, part, row)
    checked = False

    def frames() -> Iterator[np.ndarray]:
        nonlocal checked
        digest = PartitionDigest(raw_bytes)
        for frame in packing.raw_frames(binary_value(row.column(INDEX), 0), raw_bytes):
            digest.update(frame)
            yield frame
        if check is not None:
            check(digest.finish(*_ids_and_labels(row)))
        checked = True

    def fill(sink: Any) -> None:
        for frame in frames():
            sink.write(frame)

    kept = bool(store.token) and local_store.write_streamed(
        store.token, part, packing.info_row(row, info), raw_bytes, fill, store.limit)
    if check is not None and not checked:  # not written here (store off or full): hash only
        for _ in frames():
            pass
    return kept


def _ids_and_labels(row: Any) -> tuple[Any, Any]:
    labels = row.column(LABELS)[0].values if LABELS in row.schema.names else None
    return row.column(IDS)[0].values, labels
