"""Who may write the engine caches, and how a cache entry proves where it came from.

The trust model, for ONNX exports, TensorRT engines (native code) and precision verdicts:

- A directory or entry is trusted when only this process's user can change it: it is owned by
  the effective user and writable by no one else, and every folder above it is owned by this
  user or root and not writable by others (unless sticky, like /tmp). Links are not followed
  unless this user or root owns them.
- Without ``SYNAPSEML_EXT_CACHE_SECRET``, an untrusted ``cacheDir`` is ignored with one warning
  (this user's private cache is used instead) and an untrusted entry is never loaded: it is
  rebuilt. With the secret, every entry carries an HMAC-SHA256 signature under it, an unsigned
  or mis-signed entry is never loaded, and owners and modes no longer matter: that is how a
  cache on a file system without owners (DBFS, ABFS, S3 FUSE, /Volumes) is shared safely.
- Everything written is 0600 (directories 0700); build locks live in the private cache, on
  local disk, and a link planted at a lock's name is removed, never followed.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import hmac
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from synapseml_ext.engine.errors import EngineError

log = logging.getLogger("synapseml_ext.engine")

SECRET_ENV = "SYNAPSEML_EXT_CACHE_SECRET"
CACHE_ENV = "SYNAPSEML_EXT_CACHE"
# Folders of a cache root that the caches write into (checked with the root).
SUBDIRS = ("onnx", "tensorrt", "precision")
# Mount points of Databricks, Synapse and Fabric file systems that every user of a workspace
# may be able to write.
SHARED_PREFIXES = ("/dbfs", "/Volumes", "/Workspace", "/mnt", "/synfs", "/lakehouse")
SHARED_FS_TYPES = ("fuse", "nfs", "cifs", "smb", "9p", "ceph", "glusterfs", "lustre", "gpfs")
_DOMAIN = b"synapseml-ext cache signature v1"
_POSIX = hasattr(os, "geteuid")  # Windows reports no owners: there only signatures count
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HEX64 = re.compile(r"[0-9a-f]{64}")

_warned: set[str] = set()
_fallback: Path | None = None


class UntrustedEntry(Exception):  # noqa: N818 - reads as "raise UntrustedEntry(why)"
    """An entry someone other than this user could have written (the message says why)."""


# -- the secret and signatures ----------------------------------------------------------------

def secret() -> bytes | None:
    value = os.environ.get(SECRET_ENV, "")
    return value.encode("utf-8") if value else None


def sign(kind: str, name: str, digest: str) -> str | None:
    """HMAC-SHA256 (hex) of an entry's kind, name and content digest; ``None`` without a
    secret. Binding the name stops a signed entry being passed off as another one."""
    key = secret()
    if key is None:
        return None
    blob = b"\0".join([_DOMAIN, kind.encode(), name.encode(), digest.encode()])
    return hmac.new(key, blob, hashlib.sha256).hexdigest()


def signature_ok(kind: str, name: str, digest: str, signature: object) -> bool:
    """True when no secret is set (owners and modes decide) or ``signature`` matches."""
    expected = sign(kind, name, digest)
    if expected is None:
        return True
    return isinstance(signature, str) and hmac.compare_digest(expected, signature)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- owners and modes -------------------------------------------------------------------------

def _why_stat(path: Path, st: os.stat_result) -> str:
    """Why ``st`` (of an entry or cache folder) is not this user's alone; '' when it is."""
    if not _POSIX:
        return ""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _why_chain(path: Path) -> str:
    euid = os.geteuid()
    for p in (*reversed(path.parents), path):
        try:
            st = os.lstat(p)
        except OSError as e:
            return f"{p} cannot be checked ({e.strerror})"
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (euid, 0):
                return f"{p} is a symbolic link owned by uid {st.st_uid}"
            continue  # its target is checked in the resolved pass
        if p == path:
            return _why_stat(p, st)
        if st.st_uid not in (euid, 0):
            return f"{p} is owned by uid {st.st_uid}, not by this user or root"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{p} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def why_untrusted(path: Path) -> str:
    """Why someone other than this user (or root) could change ``path`` or what it holds;
    '' when no one can. Checks ``path`` and every folder above it, as written and resolved."""
    if not _POSIX:
        return ""
    literal = Path(os.path.abspath(path))
    return _why_chain(literal) or _why_chain(Path(os.path.realpath(literal)))


def is_trusted(path: Path) -> bool:
    return not why_untrusted(path)


def why_entry_untrusted(path: Path) -> str:
    """For a file or folder inside a cache entry: '' when it may be used in place."""
    try:
        return _why_stat(path, os.lstat(path))
    except OSError as e:
        return f"{path} cannot be checked ({e.strerror})"


@contextmanager
def open_trusted(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading without following a link; ``UntrustedEntry`` unless it is
    a regular file that this user alone can write (or a secret will check its signature).
    Checked on the open descriptor, so the bytes read are those of the file checked."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UntrustedEntry(f"{path} is a symbolic link") from e
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedEntry(f"{path} is not a regular file")
        problem = "" if secret() is not None else _why_stat(path, st)
        if problem:
            raise UntrustedEntry(problem)
        yield f


# -- private directories and files ------------------------------------------------------------

def not_writable(where: Path, error: OSError) -> EngineError:
    reason = error.strerror or str(error)
    return EngineError(f"cacheDir {where} is not writable ({reason}): pass a writable cacheDir "
                       f"or set {CACHE_ENV} to a directory you can write")


def make_private_dir(path: Path) -> Path:
    """``path`` with its missing folders created 0700; ``EngineError`` when it cannot be."""
    missing = []
    p = Path(path)
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise not_writable(d.parent, e) from e
    if not os.path.isdir(path):
        raise not_writable(Path(path), OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    return Path(path)


def _open_tmp(path: Path) -> tuple[int, Path]:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    try:
        return os.open(tmp, flags, 0o600), tmp  # 0600 from the start, whatever the umask
    except OSError as e:
        raise not_writable(path.parent, e) from e


def write_private(path: Path, *chunks: bytes) -> None:
    """``chunks`` written to ``path`` as a 0600 file, atomically (temporary name, fsync,
    rename); ``EngineError`` naming the folder when it cannot be written."""
    fd, tmp = _open_tmp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise not_writable(path.parent, e) from e
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def make_private(folder: Path) -> None:
    """Files under ``folder`` 0600 and folders 0700 (for files other code wrote there)."""
    for dirpath, _, filenames in os.walk(folder):
        for target, mode in ((dirpath, 0o700), *((os.path.join(dirpath, n), 0o600)
                                                 for n in filenames)):
            with suppress(OSError):  # FUSE may not support chmod: signatures cover those
                os.chmod(target, mode)


def remove(path: Path) -> None:
    """Remove a file, link or folder tree at ``path`` (a link itself, never its target)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            os.unlink(path)


# -- where the caches live --------------------------------------------------------------------

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


# -- locks and verified copies ----------------------------------------------------------------

@contextmanager
def private_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (in a private folder) that never follows a link
    planted at its name; ``EngineError`` after ``timeout`` seconds."""
    make_private_dir(path.parent)
    try:
        import fcntl
    except ImportError:  # Windows: per-user profile folders, no links to plant
        from filelock import FileLock

        with FileLock(str(path), timeout=timeout):
            yield
        return
    flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise not_writable(path.parent, e) from e
        log.warning("removed a symbolic link planted at the lock %s", path)
        remove(path)  # the link itself, never its target
        fd = os.open(path, flags, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"waited {timeout:.0f}s for the build lock {path}: another process is "
                        "still building this entry (delete the file if no process is)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
