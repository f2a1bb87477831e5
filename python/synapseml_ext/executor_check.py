"""One tiny task, once per Spark application, that checks the executors can run our stages.

On a cluster, an executor Python without synapseml-ext, or of another minor version than the
driver's, fails the first real task with a trace of hundreds of lines (Spark's, py4j's and the
worker's). This probe runs first and turns each of those mistakes into one line naming the
fix. It runs only where the executors are other processes than this one: not on a local
master (driver and tasks share this interpreter and its packages, which the driver-side checks
already see) and not on Spark Connect (no SparkContext here to run it from).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from synapseml_ext import __version__
from synapseml_ext._spark import is_local_master, spark_context_of
from synapseml_ext.engine.errors import RuntimeUnavailableError, full_text

__all__ = ["ExecutorSetupError", "check_executors", "check_executors_of", "explain_failure"]

INSTALL_HINT = ("install the driver's version on every node: pip install 'synapseml-ext=="
                f"{__version__}' (or the init script of docs/install.md)")

_checked: set[str] = set()
_lock = threading.Lock()

# Spark's own message when a worker's Python differs from the driver's (3.5 and 4.x wording).
_MISMATCH = re.compile(r"Python in worker has different version:? ([\d.]+) than that in "
                       r"driver:? ([\d.]+)")


class ExecutorSetupError(RuntimeUnavailableError):
    """The executors cannot run the stages' Python tasks (package or Python version)."""


def check_executors_of(dataset: Any) -> None:
    """:func:`check_executors` for the application of ``dataset``; nothing on Spark Connect
    or where the SparkContext is out of reach (shared-access clusters)."""
    context = spark_context_of(dataset)
    if context is not None:
        check_executors(context)


def check_executors(spark_context: Any) -> None:
    """Run the probe once per application; raise :class:`ExecutorSetupError` in one line
    when the executors' Python lacks synapseml-ext, has another version of it, or is of
    another minor version than the driver's."""
    if is_local_master(spark_context.master):
        return
    key = spark_context.applicationId
    with _lock:
        if key in _checked:
            return
    # The Python the tasks run: PYSPARK_PYTHON as the driver saw it (spark-submit sets it
    # from spark.pyspark.python).
    python = str(spark_context.pythonExec)
    try:
        found = spark_context.parallelize([0], 1).mapPartitions(_probe()).collect()
    except Exception as error:  # the worker never ran the probe: say why, in one line
        raise ExecutorSetupError(explain_failure(error, python)) from None
    problem = _compare(found[0], python)
    if problem:
        raise ExecutorSetupError(problem)
    with _lock:
        _checked.add(key)


def _probe() -> Callable[[Iterator[Any]], Iterator[tuple]]:
    # A nested function, so that cloudpickle ships it by value: a reference to this module
    # would itself fail to unpickle where synapseml-ext is missing.
    def probe(_rows: Iterator[Any]) -> Iterator[tuple]:
        import sys

        try:
            import synapseml_ext

            yield tuple(sys.version_info[:2]), synapseml_ext.__version__, ""
        except Exception as error:
            yield tuple(sys.version_info[:2]), "", f"{type(error).__name__}: {error}"

    return probe


def _compare(found: tuple, python: str) -> str:
    executor_python, version, error = found
    where = f"the executors' Python ({python})"
    if error:
        return f"{where} cannot import synapseml-ext ({error}); {INSTALL_HINT}"
    if version != __version__:
        return (f"{where} has synapseml-ext {version}, the driver {__version__}; "
                f"{INSTALL_HINT}")
    if tuple(executor_python) != tuple(sys.version_info[:2]):  # Spark checks this first
        return _mismatch(".".join(map(str, executor_python)), python)
    return ""


def explain_failure(error: BaseException, python: str) -> str:
    """One line for a probe task that failed before running: a Python version mismatch, an
    executor Python that cannot start, or else the worker's last error line."""
    text = full_text(error)
    mismatch = _MISMATCH.search(text)
    if mismatch:
        return _mismatch(mismatch.group(1), python)
    if "Cannot run program" in text:
        return (f"the executors cannot start their Python ({python}): set spark.pyspark.python "
                "(or PYSPARK_PYTHON) to a Python with synapseml-ext installed on every node")
    last = _last_error_line(text)
    return (f"the executors could not run a Python task ({last}); check spark.pyspark.python "
            f"({python}) and {INSTALL_HINT}")


def _mismatch(worker: str, python: str) -> str:
    driver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return (f"the executors run Python {worker} ({python}) and the driver Python {driver}: "
            "PySpark needs the same minor version on both; set spark.pyspark.python (or "
            f"PYSPARK_PYTHON) to a Python {driver} with synapseml-ext installed")


def _last_error_line(text: str) -> str:
    # The worker's own exception line ("ModuleNotFoundError: ..."), else the first line.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line)]
    chosen = errors[-1] if errors else (lines[0] if lines else type(text).__name__)
    return chosen[:300]
