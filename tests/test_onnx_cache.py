"""The ONNX export cache: built once, reused, keyed by model content, corrupt files rebuilt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine.model_files import read_model_files
from synapseml_ext.engine.runtimes.onnx_export import export_key, load_artifacts

from helpers import cosines
from tiny_models import build_tiny_model


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "onnx").iterdir() if p.is_dir() and not p.name.startswith("."))


def test_export_is_cached_and_keyed_by_model_content(tmp_path, minilm_dir):
    model_a = build_tiny_model(tmp_path / "a", minilm_dir, seed=1)
    model_b = build_tiny_model(tmp_path / "b", minilm_dir, seed=2)
    cache = tmp_path / "cache"
    first = SentenceEncoder(EncoderSpec(model=model_a, runtime="onnx", cache_dir=str(cache)))
    (entry,) = _entries(cache)
    meta = json.loads((entry / "meta.json").read_text())
    assert set(meta["files"]) == {"model.onnx", "model.ort.onnx"}
    assert meta["probe_min_cosine"]["model.onnx"] >= 0.9999
    mtime = (entry / "model.onnx").stat().st_mtime_ns

    second = SentenceEncoder(EncoderSpec(model=model_a, runtime="onnx", cache_dir=str(cache)))
    assert (entry / "model.onnx").stat().st_mtime_ns == mtime  # reused, not re-exported
    texts = ["cached graphs", "are reused"]
    assert cosines(first.encode(texts), second.encode(texts)).min() >= 0.999999

    SentenceEncoder(EncoderSpec(model=model_b, runtime="onnx", cache_dir=str(cache)))
    assert len(_entries(cache)) == 2  # other weights, other key
    files_a, files_b = read_model_files(model_a), read_model_files(model_b)
    assert export_key(files_a, 0) != export_key(files_b, 0)
    # A copy of the same model elsewhere has the same key: a shared cache serves every node.
    import shutil

    shutil.copytree(model_a, tmp_path / "copy")
    assert export_key(read_model_files(str(tmp_path / "copy")), 0) == export_key(files_a, 0)


def test_corrupt_or_truncated_export_is_rebuilt(tmp_path, minilm_dir):
    model = build_tiny_model(tmp_path / "m", minilm_dir)
    cache = tmp_path / "cache"
    texts = ["a corrupt cache", "must not be used"]
    expected = SentenceEncoder(EncoderSpec(model=model, runtime="onnx",
                                           cache_dir=str(cache))).encode(texts)
    (entry,) = _entries(cache)
    graph = entry / "model.ort.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated write, e.g. a killed worker
    assert load_artifacts(entry) is None
    again = SentenceEncoder(EncoderSpec(model=model, runtime="onnx", cache_dir=str(cache)))
    assert load_artifacts(entry) is not None
    assert cosines(again.encode(texts), expected).min() >= 0.999999
    (entry / "meta.json").write_text("{not json")
    SentenceEncoder(EncoderSpec(model=model, runtime="onnx", cache_dir=str(cache)))
    assert load_artifacts(entry) is not None


CHILD = """
import sys, json, logging
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from synapseml_ext.engine import EncoderSpec, SentenceEncoder
enc = SentenceEncoder(EncoderSpec(model=sys.argv[1], runtime="onnx", cache_dir=sys.argv[2]))
print(json.dumps(enc.encode(["two processes"]).tolist()))
"""


def test_concurrent_workers_export_once(tmp_path, minilm_dir):
    model = build_tiny_model(tmp_path / "m", minilm_dir)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, model, str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    logs = "".join(err for _, err in outputs)
    assert logs.count("synapseml_ext.engine exported ") == 1, logs[-3000:]
    vectors = [np.array(json.loads(out)) for out, _ in outputs]
    assert cosines(vectors[0], vectors[1]).min() >= 0.999999
    assert len(_entries(cache)) == 1
    assert not [p for p in (cache / "onnx").iterdir() if p.name.endswith(".tmp")]
