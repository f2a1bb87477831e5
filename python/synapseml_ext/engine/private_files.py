"""How the engine caches write: folders made 0700 and files 0600 from the start (whatever the
umask), files replaced atomically, folders and links removed without following a link, and
build locks that never follow a link planted at their name; a folder that cannot be written
is an ``EngineError`` that says which and what to do. Who may write them is
:mod:`.cache_trust`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from synapseml_ext.engine.cache_trust import _CLOEXEC, _NOFOLLOW, CACHE_ENV
from synapseml_ext.engine.errors import EngineError

log = logging.getLogger("synapseml_ext.engine")


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
