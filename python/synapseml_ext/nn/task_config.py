"""What the driver hands each k-NN executor task: frozen, typed and picklable, so a task
function closes over plain values and never over the stage.

One dataclass per task kind; the byte limits default to the production sizes, which
only tests lower.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from synapseml_ext.nn import local_store

# Sizes in bytes (Arrow and Spark rows are limited to 2 GB, and a block or piece is one value).
BLOCK_BYTES = 32 << 20    # query vectors in one block row
SEARCH_BYTES = 64 << 20   # query vectors searched together (the list-major scan likes more)
MISS_BYTES = 256 << 20    # query vectors in one miss row (each carries its index bytes later)


@dataclass(frozen=True)
class LocalStore:
    """Where a task keeps index partitions on its executor (:mod:`.local_store`); no
    ``token``: the plan keeps no local copies."""

    token: str | None = None
    limit: int = local_store.AUTO


@dataclass(frozen=True)
class BuildTask:
    """One item partition -> one index row."""

    id_kind: str
    column: str                   # the vector column, named in data errors
    algorithm: str
    metric: str
    params: Mapping[str, Any]     # normalised algoParams
    k: int
    partitions: int
    store: LocalStore = LocalStore()
    label_kind: str | None = None
    label_col: str | None = None


@dataclass(frozen=True)
class BlockTask:
    """One query partition -> block rows, validated against the items' dimension."""

    id_kind: str
    column: str
    dim: int
    label_kind: str | None = None  # set: blocks carry each query's allowed labels
    cond_col: str | None = None
    block_bytes: int = BLOCK_BYTES


@dataclass(frozen=True)
class SearchTask:
    """(index partition, query block) rows -> each query's top k in that partition."""

    item_kind: str
    query_kind: str
    metric: str
    k: int
    dim: int
    search: Mapping[str, Any] = field(default_factory=dict)  # nprobe / ef_search overrides
    store: LocalStore = LocalStore()
    label_kind: str | None = None
    search_bytes: int = SEARCH_BYTES
    miss_bytes: int = MISS_BYTES


@dataclass(frozen=True)
class JoinChunksTask:
    """A saved index table's pieces -> one checked index row per partition."""

    path: str                               # the saved model, named in errors
    digests: Mapping[str, str] | None        # {part: sha256}; None before digests were saved
    store: LocalStore = LocalStore()
