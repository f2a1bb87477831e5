"""Executor-local copies of index partitions, so that a search need not move them again.

Sending a persisted index partition from the JVM to a Python worker costs far more than the
search itself (1M x 384 items: ~5 s to ship 1.5 GB, against ~1 s to read it back from a local
file; docs/ann.md). So whoever holds an index partition in a Python worker (the build task,
or a search task that received its bytes) also writes it to a file on its executor's local
disk, and later searches on that executor read the file instead of receiving the bytes.

Files live under the executor's Spark local directory (``SPARK_LOCAL_DIRS``, which Spark
sets for its Python workers and deletes when the executor stops), so they never outlive
the application; outside Spark, under a per-user directory. The store directory is created
0700 and its files 0600, and a directory that is not ours alone (another owner, or writable
by others: someone else could swap an index file) is not used: the search then takes the
bytes. A copy is checked against the digest in its own info the first time a worker maps it. A partition is two files named by the model's index token (a random id drawn
at ``fit`` and saved with the model: one token, one content) and the partition number: the
faiss index as faiss writes it, which a search maps into memory (no copy: the OS page cache
holds it once for all the workers of the machine), and an Arrow file of its ids and build
info (and labels, for filtered search), written last, so that its presence means both are complete. Each is written under a
temporary name and renamed (workers of one executor may write the same partition at once);
partitions are evicted least-recently-used first when the store would pass its byte limit.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synapseml_ext.nn.tables import binary_value

log = logging.getLogger("synapseml_ext.nn")

# Spark conf key of the store's byte limit (read on the driver): 0 turns the store off; unset,
# the store may use half of the space its disk has free (plus what it already holds).
LIMIT_CONF = "spark.synapseml_ext.nn.localIndexBytes"
AUTO = -1
SUFFIX = ".arrow"   # ids and info; the index is beside it with INDEX_SUFFIX
INDEX_SUFFIX = ".faiss"
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def new_token() -> str:
    return uuid.uuid4().hex


def parse_limit(text: str | None) -> int:
    """The conf value as bytes (``0``, ``512m``, ``20g``...); unset or empty: automatic."""
    if text is None or not str(text).strip():
        return AUTO
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"{LIMIT_CONF} must be a byte count such as 0, 512m or 20g, got "
                         f"{text!r}")
    return int(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")


def root() -> Path:
    """The store directory: under the first Spark local dir of this executor (else a
    per-user name in the temporary directory, never one name shared by every user)."""
    local_dirs = os.environ.get("SPARK_LOCAL_DIRS", "")
    if local_dirs:
        return Path(local_dirs.split(",")[0]) / "synapseml-ext-nn"
    return Path(tempfile.gettempdir()) / f"synapseml-ext-nn-{os.geteuid()}"


def _private_root() -> Path | None:
    """:func:`root`, created 0700; None (store off) where it exists but is not ours alone."""
    directory = root()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as e:
        log.warning("local index store %s is not usable (%s): searches take the bytes",
                    directory, e)
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or \
            info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("local index store %s is not a directory owned by this user alone: not "
                    "used (searches take the bytes); remove it to let the store work",
                    directory)
        return None
    return directory


def path_for(token: str, part: int) -> Path:
    if not _TOKEN.match(token):
        raise ValueError(f"not an index token: {token!r}")
    return root() / f"{token}-{int(part)}{SUFFIX}"


def read(token: str, part: int) -> tuple[Any, Path] | None:
    """``(ids and info as a one-row pyarrow RecordBatch, path of the faiss index file)`` of
    partition ``part``; None if this executor has no copy."""
    import pyarrow as pa

    path = path_for(token, part)
    if not path.exists() or _private_root() is None:
        return None
    try:
        batch = pa.ipc.open_file(pa.memory_map(str(path))).get_batch(0)
        _check_once(path, batch)
        os.utime(path)  # recency for the eviction
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as e:
        # A damaged copy: drop it, the search takes the bytes (which were checked at load).
        log.warning("dropping damaged local index %s: %s", path, e)
        _remove(path)
        return None
    return batch, path.with_suffix(INDEX_SUFFIX)


# Copies this worker process has checked, by file identity -> digest. Python workers are
# reused, so a copy is hashed once per worker, not on every search.
_checked: dict[tuple[str, int, int, int], str] = {}


def _identity(index: Path, info: os.stat_result) -> tuple[str, int, int, int]:
    """Path, inode, size and change time: any write to the file changes the last."""
    return str(index), info.st_ino, info.st_size, info.st_ctime_ns


def _remember_written(path: Path, batch: Any) -> None:
    """The copy this worker just wrote from checked bytes needs no hashing when it reads it."""
    import json

    from synapseml_ext.nn.integrity import DIGEST

    expected = json.loads(batch.column("__info")[0].as_py()).get(DIGEST)
    if expected is not None:
        info = os.stat(path.with_suffix(INDEX_SUFFIX))
        _checked[_identity(path.with_suffix(INDEX_SUFFIX), info)] = expected


def _check_once(path: Path, batch: Any) -> None:
    """Raise ValueError unless the index file and ids match the digest in ``batch``'s info
    (copies written before digests were recorded carry none and are taken as they are)."""
    import json

    from synapseml_ext.nn.integrity import DIGEST, file_digest

    expected = json.loads(batch.column("__info")[0].as_py()).get(DIGEST)
    if expected is None:
        return
    index = path.with_suffix(INDEX_SUFFIX)
    info = os.stat(index)
    key = _identity(index, info)
    if _checked.get(key) == expected:
        return
    labels = batch.column("__labels")[0].values if "__labels" in batch.schema.names else None
    if file_digest(index, batch.column("__ids")[0].values, labels) != expected:
        raise ValueError("its index does not match the digest recorded at fit")
    _checked[key] = expected


def write(token: str, part: int, batch: Any, limit: int) -> bool:
    """Store the one-row ``batch`` (ids, index bytes, info columns) for partition ``part``
    unless the store is off (``limit`` 0) or the row cannot fit; True if the copy is there."""
    index = binary_value(batch.column("__index"), 0)
    return write_streamed(token, part, batch.drop_columns(["__index"]), index.size,
                          lambda sink: sink.write(index), limit)


def write_streamed(token: str, part: int, info_batch: Any, index_bytes: int,
                   fill: Callable[[Any], None], limit: int) -> bool:
    """:func:`write` of a partition whose ``index_bytes`` index bytes ``fill(sink)`` writes
    (in pieces: unpacked ones are never held whole); ``info_batch`` holds the rest of the
    row. An error other than the disk's from ``fill`` leaves no copy and is raised."""

    if limit == 0:
        return False
    path = path_for(token, part)
    if path.exists():
        return True
    if _private_root() is None:
        return False
    info_file = _arrow_file(info_batch)
    if not _make_room(path.parent, index_bytes + info_file.size, limit):
        log.info("local index store full: partition %d of %s not kept", part, token)
        return False
    try:
        _write_atomically(path.with_suffix(INDEX_SUFFIX), fill)
        _write_atomically(path, lambda sink: sink.write(info_file))
        _remember_written(path, info_batch)
    except OSError as e:  # a full disk must not fail the search: the bytes are at hand
        log.warning("could not keep index partition %d locally: %s", part, e)
        _remove(path)
        return False
    return True


def _arrow_file(batch: Any) -> Any:
    """``batch`` as the bytes of an Arrow IPC file (so its size on disk is known up front)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def _write_atomically(path: Path, fill: Any) -> None:
    import pyarrow as pa

    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        # Created 0600 and exclusively: never through a name someone else placed.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        with pa.OSFile(str(temporary), "wb") as sink:
            fill(sink)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Drop a stored partition: its info file first (it marks the copy complete)."""
    path.unlink(missing_ok=True)
    path.with_suffix(INDEX_SUFFIX).unlink(missing_ok=True)


def _make_room(directory: Path, size: int, limit: int) -> bool:
    """Evict least recently used files until ``size`` more bytes fit under the limit."""
    files = []
    for entry in directory.glob(f"*{SUFFIX}"):
        try:
            stat = entry.stat()
            stored = stat.st_size + entry.with_suffix(INDEX_SUFFIX).stat().st_size
        except FileNotFoundError:  # evicted meanwhile by another worker
            continue
        files.append((stat.st_mtime, stored, entry))
    held = sum(file_size for _, file_size, _ in files)
    if limit == AUTO:
        limit = (shutil.disk_usage(directory).free + held) // 2
    if size > limit:
        _warn_full(limit)
        return False
    for _, file_size, entry in sorted(files, key=lambda f: f[0]):
        if held + size <= limit:
            break
        _warn_full(limit)
        _remove(entry)
        held -= file_size
    return held + size <= limit


_warned_full = False


def _warn_full(limit: int) -> None:
    """Once per worker: a full store makes every search send the bytes it could not keep
    (a 10M-item search took 146 s instead of 53 s), which users should hear about."""
    global _warned_full
    if not _warned_full:
        _warned_full = True
        log.warning("local index store at its limit (%.1f GB): index partitions are evicted "
                    "or not kept, so searches send their bytes again and run slower; keep 3x "
                    "the vectors free on spark.local.dir, or set "
                    "spark.synapseml_ext.nn.localIndexBytes", limit / 1e9)
