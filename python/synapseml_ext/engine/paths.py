"""Where the engine keeps exported graphs, engines and verdicts."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    """``cache_dir`` if given, else ``$SYNAPSEML_EXT_CACHE``, else the user cache directory.

    A shared path (``/dbfs/...``, NFS) lets every node of a cluster reuse one export.
    """
    chosen = cache_dir or os.environ.get("SYNAPSEML_EXT_CACHE", "")
    if chosen:
        return Path(os.path.expanduser(chosen))
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("synapseml-ext"))
