"""spark-rapids-ml's constructor keywords on our estimator, so that switching only changes the
import: its aliases are mapped onto our Params, and the knobs that mean nothing to the CPU
engine are accepted with one log line saying so.

``spark_rapids_ml.knn.ApproximateNearestNeighbors(**kwargs)`` takes its Spark Params (ours
too), cuML's names for some of them (``n_neighbors`` = k, ``algo_params`` = algoParams), the
cuML ``radius`` (unused by its ANN), and two attributes that are not Params:
``num_workers`` (GPUs, i.e. index partitions) and ``float32_inputs``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("synapseml_ext.nn")

# cuML's names of our Params (spark-rapids-ml raises when both spellings are given).
_ALIASES = {"n_neighbors": "k", "algo_params": "algoParams"}
# cuML keywords its ANN stores but never uses: accepted, logged once per construction.
_UNUSED = ("radius",)
# spark-rapids-ml's verbose level -> Python logging level (cuML's scale, 4/False = info).
_LEVELS = {0: logging.CRITICAL + 10, 1: logging.CRITICAL, 2: logging.ERROR, 3: logging.WARNING,
           4: logging.INFO, 5: logging.DEBUG, 6: logging.DEBUG}


def translate(kwargs: dict[str, Any], params: frozenset[str]) -> dict[str, Any]:
    """Constructor keywords -> our Params' keywords. ``params``: our Param names. Raises
    ``ValueError`` for a keyword neither we nor spark-rapids-ml take, or two spellings of one
    Param."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if key in _ALIASES:
            target = _ALIASES[key]
            if kwargs.get(target) is not None:
                raise ValueError(f"{key!r} is an alias of {target!r}, set one or the other")
            out[target] = value
        elif key == "num_workers":
            out.update(_num_workers(value, kwargs.get("numPartitions")))
        elif key == "float32_inputs":
            if value is not True:  # spark-rapids-ml warns the same and converts anyway
                log.warning("float32_inputs=%r is ignored: the CPU engine (like spark-rapids-ml "
                            "on GPUs) searches float32 vectors; other types are converted", value)
        elif key in _UNUSED:
            log.info("%s=%r is ignored: ApproximateNearestNeighbors does not use it (as in "
                     "spark-rapids-ml)", key, value)
        elif key in params:
            out.setdefault(key, value)
        else:
            raise ValueError(f"Unsupported param {key!r} (ApproximateNearestNeighbors takes: "
                             f"{', '.join(sorted(params | {'num_workers', 'float32_inputs', *_ALIASES}))})")
    return out


def _num_workers(value: Any, partitions: Any) -> dict[str, Any]:
    """spark-rapids-ml builds one index per worker (it coalesces the items to num_workers
    partitions): on the CPU engine that is numPartitions."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_workers must be a positive integer, got {value!r}")
    if partitions is not None and partitions != value:
        raise ValueError(f"num_workers={value} and numPartitions={partitions} disagree: both "
                         "are the number of index partitions; set one")
    log.info("num_workers=%d sets numPartitions=%d: the CPU engine builds one index per item "
             "partition (spark-rapids-ml one per GPU worker)", value, value)
    return {"numPartitions": value}


@contextlib.contextmanager
def verbosity(level: bool | int, explicit: bool) -> Iterator[None]:
    """The ``synapseml_ext.nn`` logger at spark-rapids-ml's ``verbose`` level for one call on
    the driver, when the user set it (the default leaves the logging configuration alone)."""
    if not explicit:
        yield
        return
    number = (5 if level else 4) if isinstance(level, bool) else level
    previous = log.level
    log.setLevel(_LEVELS[int(number)])
    try:
        yield
    finally:
        log.setLevel(previous)
