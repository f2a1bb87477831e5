"""A fitted model's proof of its own index partitions: a sha256 of each, recorded at fit.

The digest covers what a search answers from (the faiss index bytes, the ids in label
order and, for filtered search, the labels in label order), so a saved model whose index files were damaged, truncated or swapped is an error at
load, not a smaller or different answer; a local copy is checked against the digest its own
info carries the first time a worker maps it. Missing partitions are found by the driver,
which compares the partitions read with the list the summary recorded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synapseml_ext.nn.vectors import ERROR_PREFIX

DIGEST = "sha256"  # key of the digest in an index row's info, and of the summary's map
_CHUNK = 16 << 20


class PartitionDigest:
    """:func:`partition_digest` fed in order: the index bytes' size, its bytes in pieces,
    then the ids (and labels), so that unpacked bytes are hashed without being held whole."""

    def __init__(self, index_bytes: int) -> None:
        self._digest = hashlib.sha256()
        self._digest.update(int(index_bytes).to_bytes(8, "little"))

    def update(self, chunk: Any) -> None:
        self._digest.update(memoryview(chunk).cast("B"))

    def finish(self, ids: Any, labels: Any = None) -> str:
        _update_ids(self._digest, ids)
        if labels is not None:
            _update_ids(self._digest, labels)
        return self._digest.hexdigest()


def partition_digest(index: Any, ids: Any, labels: Any = None) -> str:
    """sha256 of an index partition: ``index`` its faiss bytes (anything with the buffer
    protocol), ``ids`` the pyarrow array of its ids in label order, ``labels`` its items'
    labels in label order (None without labels: the digest is then as before labels)."""
    view = memoryview(index).cast("B")
    digest = PartitionDigest(len(view))
    digest.update(view)
    return digest.finish(ids, labels)


def file_digest(index_path: Path, ids: Any, labels: Any = None) -> str:
    """:func:`partition_digest` of an index stored in a file (read in pieces, not mapped)."""
    digest = PartitionDigest(os.path.getsize(index_path))
    with open(index_path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.finish(ids, labels)


def _update_ids(digest: Any, ids: Any) -> None:
    import pyarrow as pa

    if pa.types.is_integer(ids.type):
        digest.update(ids.cast(pa.int64()).to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    else:  # strings: one unambiguous text of the list
        import json

        digest.update(json.dumps(ids.to_pylist()).encode("utf-8"))


def check_partition(part: int, actual: str, expected: str | None, where: str) -> None:
    """Raise the one-line data error when partition ``part``'s digest is not ``expected``
    (``None``: a model saved before digests were recorded, nothing to compare)."""
    if expected is not None and actual != expected:
        raise damaged_partition(part, where)


def damaged_partition(part: int, where: str) -> ValueError:
    """The one-line data error for index partition ``part`` whose bytes are damaged."""
    return ValueError(
        f"{ERROR_PREFIX} index partition {part} of {where} does not match the checksum "
        "recorded at fit: its index files are damaged or were altered; restore them from "
        "a copy, or fit and save the model again")


def check_parts(found: Iterable[int], recorded: Iterable[int], where: str) -> None:
    """Raise when partitions the model recorded at fit are missing from what was read."""
    missing = sorted(set(recorded) - set(found))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{ERROR_PREFIX} {where} lacks index partition(s) {shown} of the "
            f"{len(set(recorded))} recorded at fit: files of its data/indexes are missing; "
            "restore them from a copy, or fit and save the model again")


def digests_of(rows: Iterable[tuple[int, dict[str, Any]]]) -> dict[str, str]:
    """The summary's map ``{partition: digest}`` (JSON keys are strings) from (part, info)."""
    return {str(part): info[DIGEST] for part, info in rows}
