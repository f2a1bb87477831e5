"""Where the engine keeps exported graphs, engines and verdicts."""

from __future__ import annotations

from pathlib import Path

from synapseml_ext.engine.cache_roots import open_cache_root


def cache_root(cache_dir: str = "") -> Path:
    """``cache_dir`` if given, else ``$SYNAPSEML_EXT_CACHE``, else this user's private cache.

    A shared path (``/dbfs/...``, NFS) lets every node of a cluster reuse one export; it is
    used only when no one else can write it or ``SYNAPSEML_EXT_CACHE_SECRET`` signs its
    entries (:mod:`synapseml_ext.engine.cache_trust`).
    """
    return open_cache_root(cache_dir)
