"""The executor probe's one-line errors (the standalone cluster test runs the probe for real,
with an executor Python that lacks the package)."""

from __future__ import annotations

import sys

import pytest

from synapseml_ext import __version__, executor_check
from synapseml_ext.executor_check import ExecutorSetupError, check_executors, explain_failure

DRIVER = f"{sys.version_info[0]}.{sys.version_info[1]}"


class FakeContext:
    """A SparkContext whose one probe task returns ``found`` or raises ``error``."""

    def __init__(self, master: str, found: tuple | None = None, error: Exception | None = None,
                 app: str = "app-1") -> None:
        self.master, self.applicationId, self.pythonExec = master, app, "/opt/py/bin/python"
        self.found, self.error, self.jobs = found, error, 0

    def parallelize(self, data, slices):
        return self

    def mapPartitions(self, fn):  # pyspark's name
        self.fn = fn
        return self

    def collect(self):
        self.jobs += 1
        if self.error is not None:
            raise self.error
        return [self.found] if self.found is not None else list(self.fn(iter([0])))


@pytest.fixture(autouse=True)
def _fresh():
    executor_check._checked.clear()
    yield
    executor_check._checked.clear()


def test_a_local_master_runs_no_probe():
    context = FakeContext("local[2]", error=AssertionError("no job expected"))
    check_executors(context)
    assert context.jobs == 0


def test_a_healthy_cluster_is_probed_once_per_application():
    context = FakeContext("spark://h:7077")  # the probe itself runs here: same Python, package
    check_executors(context)
    check_executors(context)
    assert context.jobs == 1
    other = FakeContext("spark://h:7077", app="app-2")
    check_executors(other)
    assert other.jobs == 1


@pytest.mark.parametrize("found, expected", [
    (((3, 11), "", "ModuleNotFoundError: No module named 'synapseml_ext'"),
     "the executors' Python (/opt/py/bin/python) cannot import synapseml-ext "
     "(ModuleNotFoundError: No module named 'synapseml_ext'); install the driver's version on "
     f"every node: pip install 'synapseml-ext=={__version__}'"),
    ((sys.version_info[:2], "0.0.1", ""),
     f"the executors' Python (/opt/py/bin/python) has synapseml-ext 0.0.1, the driver "
     f"{__version__}"),
])
def test_a_missing_or_other_version_of_the_package_is_one_line_naming_the_install(found,
                                                                                  expected):
    context = FakeContext("yarn", found=found)
    with pytest.raises(ExecutorSetupError) as info:
        check_executors(context)
    message = str(info.value)
    assert expected in message and "\n" not in message
    check_executors(FakeContext("yarn", found=(sys.version_info[:2], __version__, "")))


@pytest.mark.parametrize("spark_text", [
    # pyspark 4.x and 3.5 wording of the worker's own check
    "[PYTHON_VERSION_MISMATCH] Python in worker has different version: 3.10 than that in "
    "driver: {d}, PySpark cannot run with different minor versions.",
    "Python in worker has different version 3.10 than that in driver {d}, PySpark cannot run "
    "with different minor versions.",
])
def test_a_python_version_mismatch_names_both_versions_and_the_setting(spark_text):
    trace = "org.apache.spark.SparkException: Job aborted\n" * 50 + spark_text.format(d=DRIVER)
    message = explain_failure(RuntimeError(trace), "/usr/bin/python3.10")
    assert message == (
        f"the executors run Python 3.10 (/usr/bin/python3.10) and the driver Python {DRIVER}: "
        "PySpark needs the same minor version on both; set spark.pyspark.python (or "
        f"PYSPARK_PYTHON) to a Python {DRIVER} with synapseml-ext installed")


def test_a_python_that_cannot_start_and_any_other_failure_are_one_line():
    cannot = RuntimeError('java.io.IOException: Cannot run program "/nope/python": error=2, '
                          "No such file or directory\n\tat java.lang.ProcessBuilder.start")
    assert explain_failure(cannot, "/nope/python").startswith(
        "the executors cannot start their Python (/nope/python): set spark.pyspark.python")
    other = RuntimeError("Job aborted\nTraceback (most recent call last):\n  File x\n"
                         "ImportError: libgomp.so.1: cannot open shared object file\n\tat a.b")
    message = explain_failure(other, "python3")
    assert "\n" not in message
    assert message.startswith("the executors could not run a Python task (ImportError: "
                              "libgomp.so.1: cannot open shared object file); check "
                              "spark.pyspark.python (python3)")


def test_the_probe_runs_where_the_package_is_missing():
    # Shipped by value: a reference to this module would itself fail to unpickle there.
    import os
    import subprocess
    from pathlib import Path

    import pyspark
    from pyspark import cloudpickle

    lib = Path(pyspark.__file__).parent / "python" / "lib"
    bare = ("import pickle, sys; sys.path[:0] = sys.argv[1:]; "
            "print(next(pickle.loads(sys.stdin.buffer.read())(iter([0]))))")
    # -S: no site-packages, so only pyspark's own zips (as a worker gets them) are importable
    done = subprocess.run([sys.executable, "-S", "-c", bare, *map(str, lib.glob("*.zip"))],
                          input=cloudpickle.dumps(executor_check._probe()), capture_output=True,
                          check=True, env={k: v for k, v in os.environ.items()
                                           if k != "PYTHONPATH"})
    assert done.stdout.decode().strip() == (
        f"({tuple(sys.version_info[:2])}, '', \"ModuleNotFoundError: No module named "
        "'synapseml_ext'\")")
