"""Delegation to ``spark_rapids_ml.knn.ApproximateNearestNeighbors`` (cuVS on GPUs).

spark-rapids-ml is imported only when a GPU fit is asked for; the driver never needs it
otherwise. Its estimator takes the same Param names as ours, so the mapping is mostly the
identity: ``target_recall`` (ours) is dropped, and settings it cannot run are reported by
:func:`gpu_unsupported` so that the caller can fall back to the CPU engine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("synapseml_ext.nn")

# spark-rapids-ml's ApproximateNearestNeighbors accepts these algorithms only.
GPU_ALGORITHMS = ("ivfflat", "ivfpq", "cagra")
# algoParams keys that only our CPU engine understands.
CPU_ONLY_KEYS = ("target_recall",)


def gpu_unsupported(algorithm: str, metric: str, id_kind: str, filtered: bool = False
                    ) -> str | None:
    """Why spark-rapids-ml cannot run these settings, or None when it can."""
    if filtered:
        return "filtered search (labelCol / conditionerCol) is not offered by spark-rapids-ml"
    if algorithm not in GPU_ALGORITHMS:
        return f"algorithm {algorithm!r} is not offered by spark-rapids-ml ({', '.join(GPU_ALGORITHMS)})"
    if algorithm == "cagra" and metric != "sqeuclidean":
        return "spark-rapids-ml's cagra needs metric='sqeuclidean'"
    if id_kind != "long":
        return "spark-rapids-ml's ANN accepts only integral ids"
    return None


def rapids_kwargs(k: int, algorithm: str, metric: str, algo_params: dict[str, Any] | None,
                  input_col: str | list[str], id_col: str | None, *,
                  num_workers: int | None = None, verbose: bool | int | None = None
                  ) -> dict[str, Any]:
    """Constructor keywords for ``spark_rapids_ml.knn.ApproximateNearestNeighbors``
    (``input_col`` a list: its multi-column input; ``num_workers``: our numPartitions where
    set, one index per GPU worker there)."""
    kwargs: dict[str, Any] = {"k": k, "algorithm": algorithm, "metric": metric,
                              "inputCol": input_col}
    if num_workers:
        kwargs["num_workers"] = num_workers
    if verbose is not None:
        kwargs["verbose"] = verbose
    params = {key: value for key, value in (algo_params or {}).items()
              if key not in CPU_ONLY_KEYS}
    dropped = sorted(set(algo_params or {}) - set(params))
    if dropped:
        log.warning("algoParams %s apply to the CPU engine only; not passed to spark-rapids-ml",
                    dropped)
    kwargs["algoParams"] = params or None
    if id_col is not None:
        kwargs["idCol"] = id_col
    return kwargs


def rapids_estimator(kwargs: dict[str, Any]):
    """The spark-rapids-ml estimator (imports spark_rapids_ml here, on the driver)."""
    try:
        from spark_rapids_ml.knn import ApproximateNearestNeighbors
    except ImportError as e:
        raise ImportError(
            "backend='gpu' delegates to spark-rapids-ml, which is not installed on the driver; "
            "install it with: pip install 'synapseml-ext[rapids]' (the cluster also needs RAPIDS "
            "cuVS and NVIDIA GPUs), or use backend='cpu'") from e
    return ApproximateNearestNeighbors(**kwargs)


def gpu_probe(_batches: Iterator[Any]) -> Iterator[Any]:
    """Executor: can spark-rapids-ml's ANN run here (spark_rapids_ml, cuVS, cupy and a GPU)?"""
    import pandas as pd

    try:
        import cupy
        import cuvs.neighbors  # noqa: F401
        import spark_rapids_ml.knn  # noqa: F401

        count = cupy.cuda.runtime.getDeviceCount()
        ok, reason = count > 0, f"{count} GPU(s) with spark-rapids-ml and cuVS"
    except Exception as e:  # ImportError, or CUDA errors where no driver/GPU is present
        ok, reason = False, f"{type(e).__name__}: {e}"
    yield pd.DataFrame({"ok": [ok], "reason": [reason[:500]]})
