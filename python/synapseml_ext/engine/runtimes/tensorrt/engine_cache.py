"""A cache of serialised engines (TensorRT plans), safe to share between workers and nodes.

No tensorrt here: the runtime passes a ``build`` function (returns the plan's bytes) and a
``deserialize`` function (returns the engine, or ``None`` / raises when the bytes are not
usable here). That keeps keys, locking and corruption handling testable on any machine.

Layout: ``<cache>/tensorrt/<key>.engine``, one file: a magic line, a JSON header (the key's
parts, size and sha256 of the payload) and the payload. One file means one atomic
``os.replace``, so a reader on any node sees the old file or the new one, never a mix; that
holds on shared file systems (``/dbfs/...``, NFS) where a cluster builds once per GPU kind.
``<key>.json`` beside it repeats the header for people, and is never trusted.

The build lock is a file in this user's private cache on the node's local disk: concurrent
tasks on one node build once. File locks on FUSE mounts such as ``/dbfs`` are unreliable, so nodes do not
lock each other; two nodes racing both build and the last rename wins, which is still valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from synapseml_ext.engine import cache_roots, cache_trust, private_files
from synapseml_ext.engine.errors import EngineError

log = logging.getLogger("synapseml_ext.engine")

T = TypeVar("T")

MAGIC = b"SYNAPSEML-EXT-ENGINE 1\n"
LOCK_TIMEOUT_S = 3600


def engine_key(parts: dict) -> str:
    """A stable name for an engine: the hash of everything that decides its bytes and where
    they can run (model, graph, precision, profiles, GPU compute capability, TensorRT)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def local_lock_dir() -> Path:
    """Per user and private (0700), on local disk: no name another user can predict."""
    return cache_roots.lock_dir()


class EngineCache(Generic[T]):
    """Engines under ``root`` (usually ``<cacheDir>/tensorrt``)."""

    def __init__(self, root: Path, lock_dir: Path | None = None,
                 lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.lock_dir = lock_dir or local_lock_dir()
        self.lock_timeout_s = lock_timeout_s

    def path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def lock_path(self, key: str) -> Path:
        # Keyed by the cache directory too: two caches with the same key do not block each other.
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return self.lock_dir / f"{where}-{key}.lock"

    # -- reading and writing one file -----------------------------------------------------

    def read(self, key: str) -> tuple[bytes, dict] | None:
        """``(payload, header)`` when the file exists, may be trusted (this user's alone, or
        signed under the cache secret) and its size and sha256 match its header; ``None``
        otherwise."""
        return self._read(key)[0]

    def _read(self, key: str) -> tuple[tuple[bytes, dict] | None, str]:
        """The entry, or ``None`` and why not ('' when there is no file)."""
        try:
            with cache_trust.open_trusted(self.path(key)) as f:
                if f.readline() != MAGIC:
                    return None, "is truncated or corrupt"
                header = json.loads(f.readline().decode("utf-8"))
                payload = f.read()
            if len(payload) != header["size"] or \
                    hashlib.sha256(payload).hexdigest() != header["sha256"]:
                return None, "is truncated or corrupt"
        except FileNotFoundError:
            return None, ""
        except cache_trust.UntrustedEntry as e:
            return None, f"is not trusted ({e})"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, "is truncated or corrupt"
        # The payload's sha256 was just checked against its bytes: signing it signs them.
        if not cache_trust.signature_ok("tensorrt", key, header["sha256"],
                                        header.get("signature")):
            return None, f"is not signed with {cache_trust.SECRET_ENV}"
        return (payload, header), ""

    def write(self, key: str, payload: bytes, parts: dict, **extra) -> dict:
        """Store ``payload`` atomically in a 0600 file, signed when a cache secret is set;
        returns the header written."""
        digest = hashlib.sha256(payload).hexdigest()
        header = {"key": key, "parts": parts, "size": len(payload), "sha256": digest,
                  "created": time.time(), **extra}
        signature = cache_trust.sign("tensorrt", key, digest)
        if signature is not None:
            header["signature"] = signature
        private_files.make_private_dir(self.root)
        private_files.write_private(self.path(key), MAGIC,
                                  json.dumps(header, sort_keys=True).encode("utf-8") + b"\n",
                                  payload)
        try:
            private_files.write_private(self.root / f"{key}.json",
                                      json.dumps(header, indent=2).encode("utf-8"))
        except EngineError:  # the sidecar is for people only
            pass
        return header

    def discard(self, key: str) -> None:
        private_files.remove(self.path(key))
        private_files.remove(self.root / f"{key}.json")

    # -- the one entry point ---------------------------------------------------------------

    def get_or_build(
        self,
        parts: dict,
        build: Callable[[], bytes],
        deserialize: Callable[[bytes], T | None],
    ) -> tuple[T, bool]:
        """The engine for ``parts``: from the cache when its file is intact and deserialises
        here, else built (once per node, under the lock), stored and deserialised.

        Returns ``(engine, built)``. A file that fails its checksum or does not deserialise
        (corrupt, or written by an incompatible TensorRT), or that is not trusted (another
        user could have written it; unsigned or mis-signed under a cache secret) is never
        deserialised: it is discarded and rebuilt.
        """
        key = engine_key(parts)
        engine = self._load(key, deserialize, discard_bad=False)
        if engine is not None:
            return engine, False
        with private_files.private_lock(self.lock_path(key), self.lock_timeout_s):
            engine = self._load(key, deserialize, discard_bad=True)  # built meanwhile?
            if engine is not None:
                return engine, False
            started = time.perf_counter()
            payload = build()
            seconds = round(time.perf_counter() - started, 2)
            self.write(key, payload, parts, build_seconds=seconds)
            log.info("built engine %s in %.1fs (%d bytes) into %s", key, seconds, len(payload),
                     self.root)
            engine = deserialize(payload)
            if engine is None:
                raise EngineError(f"the engine just built for {key} does not deserialise")
            return engine, True

    def _load(self, key: str, deserialize: Callable[[bytes], T | None],
              discard_bad: bool) -> T | None:
        entry, problem = self._read(key)
        if entry is None:
            if discard_bad and problem:
                log.warning("engine file %s %s: rebuilding it", self.path(key), problem)
                self.discard(key)
            return None
        try:
            engine = deserialize(entry[0])
        except Exception as e:  # a plan from another TensorRT or GPU raises or returns None
            log.warning("engine file %s does not load here (%s)", self.path(key), e)
            engine = None
        if engine is None and discard_bad:
            log.warning("engine file %s is not usable here: rebuilding it", self.path(key))
            self.discard(key)
        return engine
