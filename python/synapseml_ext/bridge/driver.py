"""The driver-side Python a Scala stage calls: ``python -m synapseml_ext.bridge.driver``.

The JVM (``org.apache.spark.sql.synapsemlext.PythonDriver``) opens a py4j gateway with a
secret and starts this process with ``PYSPARK_GATEWAY_PORT`` / ``PYSPARK_GATEWAY_SECRET`` set,
as ``spark-submit`` starts a Python application. This process attaches to the JVM's
SparkContext, registers a :class:`DriverCalls` object, and then runs the PySpark stage's own
``fit`` / ``kneighbors`` / ``approxSimilarityJoin`` / ``transform`` / ``save`` / ``load`` for
every call, handing the JVM back its ``Dataset`` objects: one implementation, whichever
language calls it. It exits when the JVM closes its stdin (the JVM stopped or died).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from typing import Any

from synapseml_ext.bridge import driver_ops

__all__ = ["DriverCalls", "main"]


class DriverCalls:
    """What the JVM calls (py4j proxy of the Scala trait ``DriverCalls``)."""

    class Java:
        implements = ["org.apache.spark.sql.synapsemlext.DriverCalls"]

    def __init__(self, gateway: Any, sc: Any) -> None:
        self._gateway, self._sc = gateway, sc

    def call(self, op: str, spec_json: str, frames: Any, args_json: str) -> Any:
        """``[status, text, *frames]``: status ``"ok"`` or the Python exception's class name
        (the JVM turns ValueError/TypeError into IllegalArgumentException), text the result's
        JSON or the exception's one-line message."""
        try:
            text, results = driver_ops.run(op, json.loads(spec_json), list(frames),
                                           json.loads(args_json), self._sc)
            items = ["ok", text, *(frame._jdf for frame in results)]
        except (ValueError, TypeError) as error:  # the user's mistake: IllegalArgumentException
            items = ["ValueError", _one_line(error)]
        except Exception as error:  # unexpected: one line back, the trace to the log
            items = [type(error).__name__, _one_line(error)]
            traceback.print_exc(file=sys.stderr)
        out = self._gateway.jvm.java.util.ArrayList()
        for item in items:
            out.add(item)
        return out


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    java = getattr(error, "java_exception", None)
    if java is not None:  # a Py4JJavaError: the JVM exception's own message
        text = str(java.getMessage() or java.toString())
    return text or type(error).__name__


def main() -> None:
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import ensure_callback_server_started, launch_gateway
    from pyspark.sql import SparkSession

    gateway = launch_gateway()  # attaches to the JVM named by PYSPARK_GATEWAY_PORT
    jvm = gateway.jvm
    jsc = jvm.org.apache.spark.api.java.JavaSparkContext(
        jvm.org.apache.spark.SparkContext.getOrCreate())
    sc = SparkContext(gateway=gateway, jsc=jsc, conf=SparkConf(_jvm=jvm, _jconf=jsc.getConf()))
    # The first Python SparkSession sets the JVM's default session: adopt the job's own now,
    # before a call on another session could replace it.
    SparkSession(sc)
    # Ctrl-C in a Scala shell reaches this process too (one process group); the JVM cancels.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ensure_callback_server_started(gateway)
    jvm.org.apache.spark.sql.synapsemlext.PythonDriver.register(DriverCalls(gateway, sc),
                                                                os.getpid())
    # The JVM holds our stdin open for as long as it lives: EOF means it stopped or died.
    threading.Thread(target=_exit_on_eof, daemon=True).start()
    threading.Event().wait()


def _exit_on_eof() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    main()
