"""Where index rows live: index partition ``p`` in shuffle partition ``p``, one row per task.

Repartitioning the index table by the partition number itself spreads it badly, because Spark
hashes the key (Murmur3, seed 42) before taking it modulo the partition count: the numbers
0..7 land in 5 of 8 partitions, three of them in one, and 0..1 both land in partition 1. A
task then carries several index rows of up to ~1.5 GB each, and writing them with ``save``
ran a 6 GB driver out of memory (1M x 384 items in 8 partitions).

So rows that must be spread one per task are repartitioned by a *placement key* instead:
for each partition number ``p`` the smallest non-negative int whose Spark hash lands in
partition ``p``, computed here with Spark's own hash function (Murmur3_x86_32.hashInt, which
``hash(int)`` calls). The fit's index table needs none of it: task p builds index partition
p and the table is kept where it was built (:func:`kept_in_place`); the pieces of a saved
table and a search's misses (with the few index rows they need) are placed this way.
"""

from __future__ import annotations

from functools import lru_cache

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_MASK = 0xFFFFFFFF
SPARK_HASH_SEED = 42


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def spark_hash_int(value: int, seed: int = SPARK_HASH_SEED) -> int:
    """Spark's ``hash(value)`` of an int column: Murmur3 x86 32-bit of the 4-byte int."""
    k1 = (value & _MASK) * 0xCC9E2D51 & _MASK
    k1 = _rotl(k1, 15) * 0x1B873593 & _MASK
    h1 = _rotl((seed & _MASK) ^ k1, 13)
    h1 = (h1 * 5 + 0xE6546B64) & _MASK
    h1 ^= 4  # the input's length in bytes
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & _MASK
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


@lru_cache(maxsize=64)
def placement_keys(partitions: int) -> tuple[int, ...]:
    """``keys[p]``: the smallest non-negative int that Spark's hash partitioning into
    ``partitions`` partitions sends to partition ``p``."""
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < partitions:
        keys.setdefault(spark_hash_int(candidate) % partitions, candidate)
        candidate += 1
    return tuple(keys[p] for p in range(partitions))


def placement_key(part: Column, partitions: int) -> Column:
    """The placement key of the partition numbers in ``part`` (0 <= part < partitions)."""
    keys = F.array(*[F.lit(key) for key in placement_keys(partitions)])
    return F.element_at(keys, part + 1)


def kept_in_place(index_df: DataFrame) -> DataFrame:
    """The index table as its tasks wrote it (index partition p from task p), kept on disk
    where it was built: no shuffle of index bytes. (On disk, not on the JVM heap, which the
    tasks need to pass index rows to Python; the OS page cache keeps hot partitions in
    memory anyway.)"""
    from pyspark import StorageLevel

    return index_df.persist(StorageLevel.DISK_ONLY)


def by_part(index_df: DataFrame, partitions: int) -> DataFrame:
    """The index table with index partition p in shuffle partition p (one row per task),
    kept on disk: for tables read as saved before pieces, whose file splits may hold
    several index rows each."""
    return kept_in_place(index_df.repartition(partitions,
                                              placement_key(F.col("__part"), partitions)))
