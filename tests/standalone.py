"""A Spark standalone cluster on loopback (a master and two one-core workers), started with
pyspark's own ``spark-class``: separate executor JVMs and Python workers, as on a real cluster."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"Spark master did not open port {port}")


@contextmanager
def standalone_cluster(work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "2g"):
    """Yield the master URL of a running standalone cluster; stop it afterwards."""
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    port = _free_port()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        procs.append(subprocess.Popen(
            [_spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(_free_port())],
            env=env, stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT))
        _wait_for_port(port, 60)
        url = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            procs.append(subprocess.Popen(
                [_spark_class(), "org.apache.spark.deploy.worker.Worker", url,
                 "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                 "--webui-port", str(_free_port()), "--work-dir", str(work_dir / f"worker{i}")],
                env=env, stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:  # both workers registered with the master
            text = (logs / "master.log").read_text(errors="replace")
            if text.count("Registering worker") >= workers:
                break
            time.sleep(0.5)
        else:
            raise TimeoutError("Spark workers did not register:\n" + text[-3000:])
        yield url
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
