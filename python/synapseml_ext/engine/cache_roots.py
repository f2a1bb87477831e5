"""Where the engine caches live: the cache root for a ``cacheDir`` (else
``$SYNAPSEML_EXT_CACHE``, else this user's private cache), used only when it passes the trust
model of :mod:`.cache_trust`, otherwise replaced by the private cache with one warning; the
private cache itself (a temporary folder when it cannot be made private); its build locks;
and verified private copies of entries read from a shared file system.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from contextlib import suppress
from pathlib import Path

from synapseml_ext.engine.cache_trust import (
    CACHE_ENV,
    SECRET_ENV,
    secret,
    sha256_file,
    why_entry_untrusted,
    why_untrusted,
)
from synapseml_ext.engine.errors import EngineError
from synapseml_ext.engine.private_files import _open_tmp, make_private_dir

log = logging.getLogger("synapseml_ext.engine")

# Folders of a cache root that the caches write into (checked with the root).
SUBDIRS = ("onnx", "tensorrt", "precision")
# Mount points of Databricks, Synapse and Fabric file systems that every user of a workspace
# may be able to write.
SHARED_PREFIXES = ("/dbfs", "/Volumes", "/Workspace", "/mnt", "/synfs", "/lakehouse")
SHARED_FS_TYPES = ("fuse", "nfs", "cifs", "smb", "9p", "ceph", "glusterfs", "lustre", "gpfs")
_HEX64 = re.compile(r"[0-9a-f]{64}")

_warned: set[str] = set()
_fallback: Path | None = None


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:  # one warning per path and process, not one per model load
        _warned.add(key)
        log.warning(message, *args)


def private_root() -> Path:
    """This user's own cache folder (platformdirs), 0700. When it cannot be made private (not
    owned by this user, an unsafe folder above it, not writable), a fresh temporary folder
    for this process, with one warning."""
    global _fallback  # one private temporary folder per process, not model state
    if _fallback is not None:
        return _fallback
    from platformdirs import user_cache_dir

    root = Path(user_cache_dir("synapseml-ext"))
    try:
        make_private_dir(root)
        problem = _tighten(root)
    except EngineError as e:
        problem = str(e)
    if not problem:
        return root
    _fallback = Path(tempfile.mkdtemp(prefix="synapseml-ext-cache-"))
    atexit.register(shutil.rmtree, _fallback, True)
    _warn_once(f"default:{root}", "the default cache %s is not private (%s): this process uses "
               "%s and rebuilds what it needs; fix that folder or set %s to a directory only "
               "you can write", root, problem, _fallback, CACHE_ENV)
    return _fallback


def _tighten(root: Path) -> str:
    """Our own default cache made 0700 (a folder from an older version may be 0775);
    returns what is still wrong."""
    for p in (root, *(root / s for s in (*SUBDIRS, "locks", "verified"))):
        with suppress(OSError):
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(p, 0o700)
    return why_untrusted(root) or _why_subdirs(root, (*SUBDIRS, "locks", "verified"))


def _why_subdirs(root: Path, names: tuple[str, ...]) -> str:
    for name in names:
        if os.path.lexists(root / name):
            problem = why_entry_untrusted(root / name)
            if problem:
                return problem
    return ""


def lock_dir() -> Path:
    """Build locks: on this node's disk, in this user's private cache (no shared /tmp name)."""
    return make_private_dir(private_root() / "locks")


def open_cache_root(cache_dir: str = "") -> Path:
    """The cache root to use for ``cache_dir`` (else ``$SYNAPSEML_EXT_CACHE``, else the
    private default), created 0700 if missing.

    Without a secret, a chosen root that others could change is ignored with one warning and
    the private default is used; a root that only looks shared gets one warning that a
    cacheDir is a trust boundary. ``EngineError`` when a missing root cannot be created."""
    chosen = cache_dir or os.environ.get(CACHE_ENV, "")
    if not chosen:
        return private_root()
    path = Path(os.path.abspath(os.path.expanduser(chosen)))
    make_private_dir(path)
    if secret() is not None:
        return path  # entries are signed and checked: owners and modes do not matter
    problem = why_untrusted(path) or _why_subdirs(path, SUBDIRS)
    if problem:
        fallback = private_root()
        _warn_once(f"untrusted:{path}", "cacheDir %s is not used: %s. A cacheDir is a trust "
                   "boundary (TensorRT engines are executable code), so this worker uses its "
                   "private cache %s instead. Fix: a directory only you can write (chmod 700), "
                   "or, for a shared cache, set %s (e.g. spark.executorEnv.%s="
                   "{{secrets/<scope>/<key>}}) so entries are signed and checked",
                   path, problem, fallback, SECRET_ENV, SECRET_ENV)
        return fallback
    if looks_shared(path):
        _warn_once(f"shared:{path}", "cacheDir %s looks like a shared file system: a cacheDir "
                   "is a trust boundary (TensorRT engines are executable code) and whoever can "
                   "write it decides what runs here. Set %s (e.g. spark.executorEnv.%s="
                   "{{secrets/<scope>/<key>}}) so entries are signed and checked",
                   path, SECRET_ENV, SECRET_ENV)
    return path


def looks_shared(path: Path) -> bool:
    """On a Databricks/Synapse/Fabric mount, or on a FUSE or network file system."""
    text = str(path)
    if any(text == p or text.startswith(p + "/") for p in SHARED_PREFIXES):
        return True
    return _fs_type(os.path.realpath(path)).startswith(SHARED_FS_TYPES)


def _fs_type(path: str) -> str:
    """The type of the file system holding ``path`` (longest mount point), from /proc/mounts."""
    best, kind = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:  # no /proc (macOS, Windows): the prefixes above decide
        return ""
    return kind


def private_copy(source: Path, sha256: str) -> Path | None:
    """``source`` copied into this user's private cache if its bytes hash to ``sha256``, else
    ``None``: what is then loaded is exactly what was checked, whatever happens to ``source``
    (on a shared file system) meanwhile. Copies are kept by content and reused."""
    if not _HEX64.fullmatch(sha256):
        return None
    folder = make_private_dir(private_root() / "verified")
    dest = folder / f"{sha256}{source.suffix}"
    with suppress(OSError):
        if not why_entry_untrusted(dest) and sha256_file(dest) == sha256:
            return dest
    fd, tmp = _open_tmp(dest)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            return None
        os.replace(tmp, dest)
        return dest
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
