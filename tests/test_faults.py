"""Faults during a job do not change its output: a SIGKILLed Python worker (the task is
retried), a lost executor on a two-worker standalone cluster (its tasks run again
elsewhere), a damaged cache entry (rebuilt). Every row comes back once, in order, with the
same bytes as a run without the fault."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from synapseml_ext.engine import EncoderSpec, SentenceEncoder

from conftest import REPO
from standalone import standalone_cluster

pytestmark = pytest.mark.slow

# argv: master, model, cache, out, started-flag. Runs the same embedding twice: a clean run,
# then (after writing the flag, when the test's killer strikes) the run under the fault.
DRIVER = """
import json, os, sys
from pathlib import Path
from pyspark.sql import SparkSession
master, model, cache, out, flag = sys.argv[1:6]
spark = (SparkSession.builder.master(master).appName("fault test")
         .config("spark.executor.cores", "1").config("spark.executor.memory", "1g")
         .config("spark.pyspark.python", sys.executable)
         .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
         .config("spark.task.maxFailures", "4")
         .config("spark.ui.enabled", "false").getOrCreate())
from synapseml_ext.hf import HuggingFaceSentenceEmbedder
texts = [None if i % 101 == 0 else f"review {i}: " + ("the cake was sweet and rich " * (1 + i % 7))
         for i in range(1600)]
df = spark.sparkContext.parallelize(list(enumerate(texts)), 8).toDF("id long, text string")
emb = HuggingFaceSentenceEmbedder(modelName=model, inputCol="text", runtime="onnx", cacheDir=cache,
                                  batchSize=16)
clean = [(r.id, r.embeddings) for r in emb.transform(df).collect()]
Path(flag).write_text("started")
faulty = [(r.id, r.embeddings) for r in emb.transform(df).collect()]
json.dump({"clean": clean, "faulty": faulty}, open(out, "w"))
spark.stop()
"""


def _run_with_killer(tmp_path: Path, master: str, model: str, cache: str, victims) -> dict:
    """Run DRIVER; once its second run starts, SIGKILL one process that ``victims()`` names."""
    out, flag = tmp_path / "out.json", tmp_path / "started"
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, master, model, cache, str(out),
                               str(flag)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    killed: list[str] = []

    def killer() -> None:
        deadline = time.time() + 600
        while not flag.exists() and driver.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # into the second run's tasks
        while driver.poll() is None and not killed and time.time() < deadline:
            for proc in victims(driver.pid):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(" ".join(proc.cmdline()[:3]) or str(proc.pid))
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue
                break
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    _stdout, stderr = driver.communicate(timeout=900)
    thread.join(timeout=5)
    assert driver.returncode == 0, stderr[-4000:]
    assert killed, "the fault was never injected: the job ended before the killer struck"
    return json.loads(out.read_text())


def _python_workers(root_pid: int) -> list[psutil.Process]:
    """Forked Python workers (children of a pyspark.daemon) under ``root_pid``'s JVMs."""
    found = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            parent = proc.parent()
            if parent is not None and "pyspark.daemon" in " ".join(parent.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _assert_same(result: dict) -> None:
    clean, faulty = result["clean"], result["faulty"]
    assert [row[0] for row in faulty] == list(range(1600))
    assert faulty == clean  # bitwise: the same floats in the same rows


def test_a_killed_python_worker_is_retried_with_identical_output(tmp_path, minilm_dir,
                                                                  cache_dir):
    # local[N,F]: local mode retries a task only when F (its maxFailures) is given
    result = _run_with_killer(tmp_path, "local[2,4]", minilm_dir, cache_dir, _python_workers)
    _assert_same(result)


def _executor_jvms() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "CoarseGrainedExecutorBackend" in " ".join(p.info["cmdline"] or [])]


def test_a_lost_executor_on_a_standalone_cluster_gives_identical_output(tmp_path, minilm_dir,
                                                                         cache_dir):
    with standalone_cluster(tmp_path / "cluster") as master:
        result = _run_with_killer(tmp_path, master, minilm_dir, cache_dir,
                                  lambda _pid: _executor_jvms()[:1])
    _assert_same(result)


def test_a_damaged_cache_entry_is_rebuilt_with_identical_output(tmp_path, minilm_dir,
                                                                 review_texts):
    spec = EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=str(tmp_path))
    texts = review_texts[:64]
    before = SentenceEncoder(spec).encode(texts)
    graphs = sorted(tmp_path.glob("onnx/*/model*.onnx"))
    assert graphs
    for graph in graphs:  # flip bytes in the middle of every graph of the entry
        data = bytearray(graph.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        graph.write_bytes(bytes(data))
    after = SentenceEncoder(spec).encode(texts)
    np.testing.assert_array_equal(after, before)
