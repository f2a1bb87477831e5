"""TensorRT without TensorRT: the engine cache (keys, lock, corrupt files), the profiles and
how batches are split to them, and the fp16 graph TensorRT is fed.

The cache is generic over bytes, so these tests pass real build and deserialize functions
(a JSON "plan" tagged with the runtime version that may read it) rather than objects that
pretend to be TensorRT.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from synapseml_ext.engine.batching import pad_batches, plan_batches
from synapseml_ext.engine.runtimes.tensorrt.engine_cache import MAGIC, EngineCache, engine_key
from synapseml_ext.engine.runtimes.tensorrt.profiles import (
    TRT_MAX_TOKENS,
    bucket_limits,
    plan_profiles,
    route,
    split_for_profiles,
)

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]

PARTS = {"build_version": 1, "graph": "g" * 24, "model": "m" * 24, "precision": "fp16",
         "profiles": [p.to_dict() for p in plan_profiles(256)],
         "compute_capability": "9.0", "tensorrt": "10.13.0", "strongly_typed": True}


def _plan(parts: dict) -> bytes:
    return json.dumps({"engine_for": parts["model"], "tensorrt": parts["tensorrt"]}).encode()


def _deserializer(tensorrt_version: str):
    """Like ``Runtime.deserialize_cuda_engine``: ``None`` for a plan of another version."""
    def deserialize(payload: bytes):
        plan = json.loads(payload)
        return plan if plan["tensorrt"] == tensorrt_version else None
    return deserialize


@pytest.fixture
def cache(tmp_path) -> EngineCache:
    return EngineCache(tmp_path / "shared" / "tensorrt", lock_dir=tmp_path / "locks")


# -- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("model", "x" * 24), ("graph", "h" * 24), ("precision", "fp32"),
    ("compute_capability", "8.6"), ("tensorrt", "10.14.1"), ("strongly_typed", False),
    ("profiles", [p.to_dict() for p in plan_profiles(512)]), ("build_version", 2),
])
def test_every_part_changes_the_key(field, value):
    assert engine_key({**PARTS, field: value}) != engine_key(PARTS)


def test_key_is_stable_and_order_free():
    shuffled = dict(reversed(list(PARTS.items())))
    assert engine_key(shuffled) == engine_key(PARTS)
    assert len(engine_key(PARTS)) == 32


# -- build once, reuse, rebuild what is bad --------------------------------------------------

def test_builds_once_then_loads(cache):
    builds = []

    def build():
        builds.append(1)
        return _plan(PARTS)

    engine, built = cache.get_or_build(PARTS, build, _deserializer("10.13.0"))
    assert built and engine["engine_for"] == "m" * 24
    engine, built = cache.get_or_build(PARTS, build, _deserializer("10.13.0"))
    assert not built and len(builds) == 1
    path = cache.path(engine_key(PARTS))
    header = json.loads(path.read_bytes().split(b"\n")[1])
    assert header["parts"] == PARTS and header["size"] == len(_plan(PARTS))
    assert json.loads((path.parent / f"{engine_key(PARTS)}.json").read_text())["sha256"]
    assert not list(path.parent.glob(".*.tmp"))  # no temporary files left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "bad_magic", "bad_header"])
def test_corrupt_file_is_detected_and_rebuilt(cache, damage, caplog):
    cache.get_or_build(PARTS, lambda: _plan(PARTS), _deserializer("10.13.0"))
    path = cache.path(engine_key(PARTS))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
    elif damage == "truncate":
        data = data[:-10]
    elif damage == "empty":
        data = bytearray()
    elif damage == "bad_magic":
        data[:len(MAGIC)] = b"X" * len(MAGIC)
    else:
        data = bytearray(MAGIC + b"{not json\n" + data.split(b"\n", 2)[2])
    path.write_bytes(bytes(data))
    assert cache.read(engine_key(PARTS)) is None
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        engine, built = cache.get_or_build(PARTS, lambda: _plan(PARTS), _deserializer("10.13.0"))
    assert built and engine["tensorrt"] == "10.13.0"
    assert "truncated or corrupt: rebuilding" in caplog.text
    assert cache.read(engine_key(PARTS)) is not None


def test_incompatible_plan_is_rebuilt(cache, caplog):
    """Intact bytes that this runtime cannot deserialise (None, or an exception) are rebuilt."""
    key = engine_key(PARTS)
    cache.write(key, _plan({**PARTS, "tensorrt": "8.6.1"}), PARTS)
    with caplog.at_level(logging.WARNING, logger="synapseml_ext"):
        engine, built = cache.get_or_build(PARTS, lambda: _plan(PARTS), _deserializer("10.13.0"))
    assert built and engine["tensorrt"] == "10.13.0"
    assert "not usable here: rebuilding" in caplog.text

    cache.write(key, b"\x00 not json at all", PARTS)
    engine, built = cache.get_or_build(PARTS, lambda: _plan(PARTS), _deserializer("10.13.0"))
    assert built and "does not load here" in caplog.text


def test_a_build_that_does_not_deserialise_is_an_error(cache):
    from synapseml_ext.engine.errors import EngineError

    with pytest.raises(EngineError, match="does not deserialise"):
        cache.get_or_build(PARTS, lambda: _plan({**PARTS, "tensorrt": "1.0"}),
                           _deserializer("10.13.0"))


def test_lock_is_local_while_the_cache_may_be_shared(cache, tmp_path):
    lock = cache.lock_path(engine_key(PARTS))
    assert lock.parent == tmp_path / "locks"
    other = EngineCache(tmp_path / "elsewhere", lock_dir=tmp_path / "locks")
    assert other.lock_path(engine_key(PARTS)) != lock


_WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from synapseml_ext.engine.runtimes.tensorrt.engine_cache import EngineCache
    root, locks, go, builds, parts = sys.argv[1:6]
    parts = json.loads(parts)
    while not os.path.exists(go):
        time.sleep(0.01)
    def build():
        with open(builds, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(1.5)  # long enough that the other process arrives while this one builds
        return json.dumps({"built_by": os.getpid()}).encode()
    engine, built = EngineCache(Path(root), lock_dir=Path(locks)).get_or_build(
        parts, build, lambda b: json.loads(b))
    print(json.dumps({"built": built, "engine": engine}))
""")


def test_two_processes_build_once(tmp_path):
    go, builds = tmp_path / "go", tmp_path / "builds.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "trt"),
                               str(tmp_path / "locks"), str(go), str(builds), json.dumps(PARTS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    time.sleep(1.0)  # both interpreters started and waiting
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(builds.read_text().split()) == 1
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["engine"] == results[1]["engine"]  # the waiter loaded the builder's plan


# -- profiles and splitting --------------------------------------------------------------------

@pytest.mark.parametrize("max_seq, limits", [
    (512, [64, 128, 256, 512]), (256, [64, 128, 256]), (510, [64, 128, 256, 512]),
    (128, [64, 128]), (30, [32]), (8192, [1024, 2048, 4096, 8192]),
])
def test_length_buckets(max_seq, limits):
    assert bucket_limits(max_seq) == limits


@pytest.mark.parametrize("max_seq", [30, 128, 256, 512, 514])
def test_profiles_cover_every_width_without_gaps(max_seq):
    profiles = plan_profiles(max_seq)
    assert profiles[0].min_seq == 1 and profiles[-1].max_seq >= max_seq
    for lower, upper in itertools.pairwise(profiles):
        assert upper.min_seq == lower.max_seq + 1
    for p in profiles:
        (_, lo), (opt_rows, opt), (rows, hi) = p.shapes()
        assert lo <= opt <= hi and 1 <= opt_rows <= rows
        assert rows * hi <= TRT_MAX_TOKENS or rows == 1
    for width in range(1, profiles[-1].max_seq + 1):
        p = profiles[route(width, profiles)]
        assert p.min_seq <= width <= p.max_seq
        # the smallest bucket that fits
        assert all(q.max_seq < width for q in profiles[:route(width, profiles)])


def test_split_keeps_every_row_and_refuses_what_no_profile_fits():
    profiles = plan_profiles(256)
    pieces = split_for_profiles(1000, 256, profiles)
    assert {i for i, _, _ in pieces} == {len(profiles) - 1}
    covered = [r for _, start, stop in pieces for r in range(start, stop)]
    assert covered == list(range(1000))
    assert all(stop - start <= profiles[-1].max_rows for _, start, stop in pieces)
    with pytest.raises(ValueError, match="fits no TensorRT profile"):
        split_for_profiles(4, 264, profiles)


def test_real_batches_fit_the_profiles_untruncated(minilm_dir, review_texts):
    """The MiniLM tokenizer at maxSeqLength 256 on the reviews: every padded batch splits
    into profile-sized pieces, and no text loses tokens beyond maxSeqLength."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    full = tokenizer(review_texts)["input_ids"]
    ids = tokenizer(review_texts, truncation=True, max_length=256)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    assert (lengths == np.minimum([len(x) for x in full], 256)).all()
    assert (lengths == 256).any()  # some reviews are longer than maxSeqLength
    profiles = plan_profiles(256)
    seen = 0
    for batch in pad_batches(ids, lengths, plan_batches(lengths, 65536, 4096, 8), 0, 8):
        for index, start, stop in split_for_profiles(*batch.input_ids.shape, profiles):
            piece = batch.attention_mask[start:stop]
            assert piece.shape[0] <= profiles[index].max_rows
            seen += int(piece.sum())
    assert seen == lengths.sum()


# -- the fp16 graph TensorRT is fed ---------------------------------------------------------------

def test_fp16_graph_matches_sentence_transformers(minilm_dir, review_texts, st_reference,
                                                  cache_dir, tmp_path):
    """The fp16 ONNX graph derived from the onnx runtime's export (what a strongly typed
    TensorRT build parses), run by ONNX Runtime on the CPU over profile-sized pieces."""
    import onnxruntime as ort

    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.engine.encoder import _probe_batches
    from synapseml_ext.engine.runtimes.onnx_export import ensure_onnx
    from synapseml_ext.engine.runtimes.tensorrt.backend import fp16_graph

    from helpers import cosines

    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=cache_dir))
    loaded = encoder.model
    artifacts = ensure_onnx(loaded.files, _probe_batches(loaded.tokenizer, loaded.files),
                            cache_dir=cache_dir)
    graph = fp16_graph(artifacts.raw, tmp_path / "model.fp16.onnx")
    assert graph.stat().st_size < 0.6 * artifacts.raw.stat().st_size  # weights are fp16
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    texts = review_texts[:200]
    tokens = loaded.tokenize(texts)
    profiles = plan_profiles(loaded.files.max_seq_length, max_tokens=2048)
    out = np.empty((len(texts), 384), dtype=np.float32)
    for batch in pad_batches(tokens.ids, tokens.lengths,
                             plan_batches(tokens.lengths, 8192, 256, 8), loaded.pad_id, 8):
        for _, start, stop in split_for_profiles(*batch.input_ids.shape, profiles):
            feed = {"input_ids": batch.input_ids[start:stop],
                    "attention_mask": batch.attention_mask[start:stop]}
            out[batch.rows[start:stop]] = session.run(None, feed)[0]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    cos = cosines(out, st_reference[:200])
    assert cos.min() >= 0.999, cos.min()
