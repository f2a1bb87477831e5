"""The index table's copy of each partition's faiss bytes, packed: byte-shuffled float32
words compressed with zstd.

The executors' local copies stay raw (faiss maps them); the persisted table, which a
search reads only for partitions an executor holds no copy of, and which ``save()``
writes, holds the packed bytes. Measured on 2 cores here: embeddings whose four bytes
are split into four planes compress to 0.70 of their size (MiniLM on the reviews) and
0.84 (the ANN benchmark's synthetic vectors) at ~750 MB/s a core, where zstd on the plain
bytes gets 0.80 / 0.92 and snappy nothing. The local disk a fitted model holds goes from
two raw copies to one raw and one packed. Rows saved before packing carry no codec and
are read as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from synapseml_ext.nn.tables import INDEX, INFO, binary_array, binary_value

CODEC = "codec"  # key of an index row's info: how its index bytes are packed (absent: raw)
RAW_BYTES = "raw_bytes"  # and the size of the raw bytes
SHUFFLED_ZSTD = "shuffle4-zstd"
# Raw bytes per zstd frame: bounds the memory packing and unpacking add to the index's.
FRAME_BYTES = 16 << 20
_LENGTH = np.dtype("<u8")  # each frame is prefixed by its compressed length


class DamagedPackError(ValueError):
    """Packed index bytes that do not unpack (cut off or altered)."""


def pack(raw: Any) -> bytearray:
    """``raw`` (faiss bytes, anything with the buffer protocol) packed."""
    import pyarrow as pa

    data = np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8)
    out = bytearray()
    for lo in range(0, len(data), FRAME_BYTES):
        frame = pa.compress(_shuffled(data[lo: lo + FRAME_BYTES]), codec="zstd", asbytes=True)
        out += np.array([len(frame)], _LENGTH).tobytes()
        out += frame
    return out


def unpack(packed: Any, raw_bytes: int) -> Any:
    """The raw bytes of ``packed`` (a pyarrow buffer) as a pyarrow buffer of ``raw_bytes``."""
    import pyarrow as pa

    out = np.empty(raw_bytes, dtype=np.uint8)
    at = 0
    for frame in raw_frames(packed, raw_bytes):
        out[at: at + len(frame)] = frame
        at += len(frame)
    return pa.py_buffer(out)


def raw_frames(packed: Any, raw_bytes: int) -> Iterator[np.ndarray]:
    """The raw bytes of ``packed`` (a pyarrow buffer of :func:`pack`'s) in order, one frame
    (at most :data:`FRAME_BYTES`) at a time; :class:`DamagedPackError` where they do not
    unpack to ``raw_bytes``."""
    import pyarrow as pa

    data = np.frombuffer(memoryview(packed).cast("B"), dtype=np.uint8)
    at = 0
    for lo in range(0, raw_bytes, FRAME_BYTES):
        try:
            size = int(np.frombuffer(data[at: at + _LENGTH.itemsize], _LENGTH)[0])
            at += _LENGTH.itemsize
            frame = data[at: at + size]
            at += size
            length = min(FRAME_BYTES, raw_bytes - lo)
            plain = pa.decompress(frame, decompressed_size=length, codec="zstd")
        except (IndexError, ValueError, OSError, pa.ArrowException) as e:
            raise DamagedPackError(f"packed index bytes do not unpack: {e}") from e
        yield _unshuffled(np.frombuffer(plain, dtype=np.uint8))
    if at != len(data):
        raise DamagedPackError(f"packed index bytes: {len(data) - at} bytes past the last frame")


def _shuffled(chunk: np.ndarray) -> np.ndarray:
    """The chunk's whole 4-byte words as four byte planes (first bytes, second bytes, ...),
    then its tail: a float32's exponent bytes are alike across values, so they compress."""
    words = len(chunk) // 4 * 4
    planes = chunk[:words].reshape(-1, 4).T.ravel()
    return np.concatenate([planes, chunk[words:]])


def _unshuffled(chunk: np.ndarray) -> np.ndarray:
    words = len(chunk) // 4 * 4
    return np.concatenate([chunk[:words].reshape(4, -1).T.ravel(), chunk[words:]])


def packed_row(row: Any) -> Any:
    """The one-row index batch ``row`` (raw bytes) with its index bytes packed and its info
    saying so."""
    import pyarrow as pa

    raw = binary_value(row.column(INDEX), 0)
    info = {**json.loads(row.column(INFO)[0].as_py()), CODEC: SHUFFLED_ZSTD,
            RAW_BYTES: raw.size}
    return _with(row, binary_array(pa.py_buffer(pack(raw))), info)


def raw_row(row: Any) -> Any:
    """The one-row index batch ``row`` with raw index bytes and an info without the codec
    (``row`` itself where it was not packed); :class:`DamagedPackError` where they do not
    unpack."""
    info, raw_bytes = unpacked_info(row)
    if raw_bytes is None:
        return row
    return _with(row, binary_array(unpack(binary_value(row.column(INDEX), 0), raw_bytes)), info)


def unpacked_info(row: Any) -> tuple[dict[str, Any], int | None]:
    """The info of the one-row index batch ``row`` without the codec, and the size of its
    raw index bytes where they are packed (None: they are raw)."""
    info = json.loads(row.column(INFO)[0].as_py())
    codec = info.pop(CODEC, None)
    if codec is None:
        return info, None
    if codec != SHUFFLED_ZSTD:
        raise DamagedPackError(f"index bytes packed as {codec!r}, which this version cannot "
                               "read: use the synapseml-ext version that fitted the model")
    return info, int(info.pop(RAW_BYTES))


def info_row(row: Any, info: dict[str, Any]) -> Any:
    """The one-row index batch ``row`` without its index bytes, with ``info``."""
    return _with(row.drop_columns([INDEX]), None, info)


def _with(row: Any, index: Any, info: dict[str, Any]) -> Any:
    import pyarrow as pa

    names = row.schema.names
    columns = [index if name == INDEX else
               pa.array([json.dumps(info)], pa.string()) if name == INFO else row.column(name)
               for name in names]
    return pa.RecordBatch.from_arrays(columns, names)
