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

This module holds the checks (owners, modes, signatures); where the caches live is
:mod:`.cache_roots`, and how their files are written and locked, :mod:`.private_files`.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

SECRET_ENV = "SYNAPSEML_EXT_CACHE_SECRET"
# Named here, beside the secret, because both the cache roots and the write errors cite it.
CACHE_ENV = "SYNAPSEML_EXT_CACHE"
_DOMAIN = b"synapseml-ext cache signature v1"
_POSIX = hasattr(os, "geteuid")  # Windows reports no owners: there only signatures count
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


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
