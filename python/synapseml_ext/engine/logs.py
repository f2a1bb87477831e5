"""Logging on executors: one line per model load and per task, on the worker's stderr."""

from __future__ import annotations

import logging
import os
import sys

_configured = False


def configure_worker_logging() -> None:
    """Give the ``synapseml_ext`` logger a stderr handler in a Python worker that has none
    (Spark workers do not configure logging; stderr lands in the executor's log)."""
    global _configured  # process-wide logging setup, done once, not model state
    if _configured:
        return
    _configured = True
    logger = logging.getLogger("synapseml_ext")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("SYNAPSEML_EXT_LOG_LEVEL", "INFO").upper())
    logger.propagate = False


def log_task_throughput(encoder) -> None:
    stats = encoder.stats
    if stats.rows == 0 or stats.seconds <= 0:
        return
    logging.getLogger("synapseml_ext.hf").info(
        "embedded %d rows, %d tokens in %.2fs: %.1f rows/s, %.0f tokens/s (runtime=%s, "
        "precision=%s, padding %.0f%%)", stats.rows, stats.tokens, stats.seconds,
        stats.rows / stats.seconds, stats.tokens / stats.seconds, encoder.runtime,
        encoder.precision, 100.0 * (1 - stats.tokens / max(stats.padded_tokens, 1)))
