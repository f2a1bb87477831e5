"""`synapseml-ext serve`: TEI and OpenAI embedding APIs over real loopback HTTP.

The in-process servers share one loaded MiniLM (cpu, fp32) through the config's
``encoder_factory`` hook, so each extra server costs only uvicorn's start-up.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from synapseml_ext.engine import EncoderSpec, ModelLoadError, SentenceEncoder
from synapseml_ext.serve import ServeConfig, start_in_thread

from conftest import REPO
from helpers import cosines

pytestmark = pytest.mark.timeout(300)

TEXTS = ["The coffee was smooth and rich.", "Stale crackers in a crushed box",
         "short", "Dogs love these treats; mine begs for them every single morning!"]
PROMPTS = {"query": "query: "}
KEY = "s3cret-test-key-8d1f"


@pytest.fixture(scope="module")
def raw_encoder(minilm_dir) -> SentenceEncoder:
    """The servers' encoder (unnormalised, as the server wants it), model prompts added."""
    enc = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="fp32",
                                      normalize=False))
    files = dataclasses.replace(enc.model.files, prompts=PROMPTS)
    return SentenceEncoder(enc.spec, dataclasses.replace(enc.model, files=files))


@pytest.fixture(scope="module")
def reference(raw_encoder) -> SentenceEncoder:
    """``SentenceEncoder.encode`` as a user calls it: the model's own normalisation."""
    return SentenceEncoder(dataclasses.replace(raw_encoder.spec, normalize=None),
                           raw_encoder.model)


def _config(raw_encoder, minilm_dir, factory=None, **options) -> ServeConfig:
    def shared(config: ServeConfig) -> SentenceEncoder:
        return SentenceEncoder(raw_encoder.spec, raw_encoder.model)

    return ServeConfig(model=minilm_dir, runtime="cpu", precision="fp32",
                       encoder_factory=factory or shared, **options)


@pytest.fixture(scope="module")
def server(raw_encoder, minilm_dir):
    with start_in_thread(_config(raw_encoder, minilm_dir, max_wait_ms=20)) as handle:
        yield handle


@pytest.fixture(scope="module")
def strict_server(raw_encoder, minilm_dir):
    """API key required, no auto-truncation."""
    config = _config(raw_encoder, minilm_dir, api_key=KEY, auto_truncate=False)
    with start_in_thread(config) as handle:
        yield handle


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=_auth()).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and (not labels or ",".join(sorted((match.group(1) or "").split(","))) == want):
            total += float(match.group(2))
    return total


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_tei_embed_matches_the_encoder(server, reference, raw_encoder):
    response = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS})
    assert response.status_code == 200
    got = np.array(response.json(), dtype=np.float32)
    assert got.shape == (len(TEXTS), reference.dimension)
    assert cosines(got, reference.encode(TEXTS)).min() >= 0.9999  # order kept
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # One string still gives a list of one vector, as TEI does.
    single = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS[1]}).json()
    assert len(single) == 1 and cosines(np.array(single), reference.encode(TEXTS[1:2]))[0] > 0.9999
    raw = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS, "normalize": False}).json()
    np.testing.assert_allclose(raw, raw_encoder.encode(TEXTS), rtol=1e-3, atol=1e-4)


def test_openai_embeddings_match_and_count_tokens(server, reference):
    body = {"input": TEXTS, "model": "my-model"}
    out = httpx.post(f"{server.url}/v1/embeddings", json=body).json()
    assert out["object"] == "list" and out["model"] == "my-model"
    assert [d["index"] for d in out["data"]] == list(range(len(TEXTS)))
    got = np.array([d["embedding"] for d in out["data"]], dtype=np.float32)
    expected = reference.encode(TEXTS)
    assert cosines(got, expected).min() >= 0.9999
    tokens = int(reference.model.tokenize(TEXTS).lengths.sum())
    assert out["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    b64 = httpx.post(f"{server.url}/v1/embeddings",
                     json={**body, "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                        for d in b64["data"]])
    np.testing.assert_array_equal(decoded, got)

    short = httpx.post(f"{server.url}/v1/embeddings", json={"input": TEXTS, "dimensions": 64})
    cut = np.array([d["embedding"] for d in short.json()["data"]])
    assert cut.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    assert cosines(cut, expected[:, :64]).min() >= 0.9999
    for bad in (0, reference.dimension + 1, True):
        response = httpx.post(f"{server.url}/v1/embeddings",
                              json={"input": "x", "dimensions": bad})
        assert response.status_code == 422 and "dimensions" in response.json()["error"]


def test_empty_string_is_a_valid_input(server, reference):
    response = httpx.post(f"{server.url}/embed", json={"inputs": ["", "x"]})
    assert response.status_code == 200
    assert cosines(np.array(response.json()), reference.encode(["", "x"])).min() >= 0.9999


@pytest.mark.parametrize("content", [
    b'{"inputs": ["a", null]}', b'{"inputs": []}', b'{"inputs": 3}', b'{"inputs": [1, 2]}',
    b'{"inputs": "a", "normalize": "yes"}', b'{"nothing": 1}', b"{not json", b'["a"]',
    b'{"inputs": "\xff"}',  # not UTF-8
])
def test_malformed_requests_are_422_json(server, content):
    response = httpx.post(f"{server.url}/embed", content=content,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "validation" and "\n" not in body["error"]


def test_openai_shape_is_checked_too(server):
    for body in ({"input": [[1, 2, 3]]}, {"input": "a", "encoding_format": "int8"}, {}):
        response = httpx.post(f"{server.url}/v1/embeddings", json=body)
        assert response.status_code == 422, body


def test_too_many_inputs_is_413(server):
    response = httpx.post(f"{server.url}/embed", json={"inputs": ["a"] * 33})
    assert response.status_code == 413
    assert "max_client_batch_size (32)" in response.json()["error"]


def test_truncation(server, strict_server, reference):
    long_text = "word " * 400
    # Default: truncated silently, like the Spark stage and sentence-transformers.
    got = httpx.post(f"{server.url}/embed", json={"inputs": [long_text]}).json()
    assert cosines(np.array(got), reference.encode([long_text]))[0] >= 0.9999
    # --no-auto-truncate: 413 naming the limit, unless the request asks for truncation.
    refused = httpx.post(f"{strict_server.url}/embed", json={"inputs": ["ok", long_text]},
                         headers=_auth())
    assert refused.status_code == 413 and "256 tokens" in refused.json()["error"]
    assert httpx.post(f"{strict_server.url}/v1/embeddings", json={"input": long_text},
                      headers=_auth()).status_code == 413
    cut = httpx.post(f"{strict_server.url}/embed", headers=_auth(),
                     json={"inputs": [long_text], "truncate": True})
    assert cut.status_code == 200
    # Exactly at the limit is not over it.
    at_limit = " ".join(["word"] * (reference.max_seq_length - 2))
    assert reference.model.tokenize([at_limit]).lengths[0] == reference.max_seq_length
    assert httpx.post(f"{strict_server.url}/embed", json={"inputs": at_limit},
                      headers=_auth()).status_code == 200


def test_prompt_name(server, reference):
    got = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS[:2], "prompt_name": "query"})
    expected = reference.encode(["query: " + t for t in TEXTS[:2]])
    assert cosines(np.array(got.json()), expected).min() >= 0.9999
    unknown = httpx.post(f"{server.url}/embed", json={"inputs": "a", "prompt_name": "doc"})
    assert unknown.status_code == 422 and "query" in unknown.json()["error"]


def test_prompt_name_needs_prompts_in_the_pooled_tokens(raw_encoder, minilm_dir):
    files = dataclasses.replace(raw_encoder.model.files, include_prompt=False)
    loaded = dataclasses.replace(raw_encoder.model, files=files)
    config = _config(raw_encoder, minilm_dir,
                     factory=lambda cfg: SentenceEncoder(raw_encoder.spec, loaded))
    with start_in_thread(config) as handle:
        response = httpx.post(f"{handle.url}/embed", json={"inputs": "a", "prompt_name": "query"})
    assert response.status_code == 422 and "excludes prompt tokens" in response.json()["error"]


def test_api_key(strict_server, caplog):
    caplog.set_level(logging.DEBUG)
    url = strict_server.url
    for headers in ({}, _auth("wrong"), {"Authorization": KEY}):
        response = httpx.post(f"{url}/embed", json={"inputs": "a"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error_type"] == "unauthorized" and KEY not in response.text
    assert httpx.get(f"{url}/info").status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200  # probes need no key
    assert httpx.post(f"{url}/embed", json={"inputs": "a"}, headers=_auth()).status_code == 200
    assert httpx.get(f"{url}/info", headers=_auth()).status_code == 200
    assert KEY not in caplog.text and KEY not in repr(strict_server.service.config)


def test_info_and_metrics(server, reference):
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"].endswith("model")
    assert {k: info[k] for k in ("max_concurrent_requests", "max_input_length",
                                 "max_client_batch_size", "auto_truncate", "dimension",
                                 "runtime", "precision", "normalize")} == {
        "max_concurrent_requests": 512, "max_input_length": 256, "max_client_batch_size": 32,
        "auto_truncate": True, "dimension": 384, "runtime": "cpu", "precision": "fp32",
        "normalize": True}
    assert info["max_batch_tokens"] == 256 * 256 and info["version"]
    assert info["prompt_names"] == ["query"]

    url = server.url
    before = {name: _metric(url, name) for name in (
        "synapseml_ext_inputs_total", "synapseml_ext_tokens_total",
        "synapseml_ext_engine_calls_total", "synapseml_ext_engine_call_texts_count")}
    ok = _metric(url, "synapseml_ext_requests_total", route="/embed", status="200")
    httpx.post(f"{url}/embed", json={"inputs": TEXTS})
    httpx.post(f"{url}/embed", json={"inputs": []})
    assert _metric(url, "synapseml_ext_requests_total", route="/embed", status="200") == ok + 1
    assert _metric(url, "synapseml_ext_requests_total", route="/embed", status="422") >= 1
    after = {name: _metric(url, name) for name in before}
    assert after["synapseml_ext_inputs_total"] == before["synapseml_ext_inputs_total"] + 4
    tokens = reference.model.tokenize(TEXTS).lengths.sum()
    assert after["synapseml_ext_tokens_total"] == before["synapseml_ext_tokens_total"] + tokens
    assert after["synapseml_ext_engine_calls_total"] == before["synapseml_ext_engine_calls_total"] + 1
    assert after["synapseml_ext_engine_call_texts_count"] == (
        before["synapseml_ext_engine_call_texts_count"] + 1)
    text = httpx.get(f"{url}/metrics").text
    assert "synapseml_ext_queue_depth 0.0" in text
    assert 'synapseml_ext_request_duration_seconds_count{route="/embed"}' in text


def test_concurrent_requests_share_engine_calls(server, reference):
    texts = [f"review number {i}: {TEXTS[i % len(TEXTS)]}" for i in range(32)]
    calls = _metric(server.url, "synapseml_ext_engine_calls_total")

    async def send_all() -> list[list[list[float]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/embed", json={"inputs": t}) for t in texts))
        assert all(r.status_code == 200 for r in responses)
        return [r.json()[0] for r in responses]

    got = np.array(asyncio.run(send_all()))
    used = _metric(server.url, "synapseml_ext_engine_calls_total") - calls
    assert 1 <= used < len(texts) / 2, used
    assert cosines(got, reference.encode(texts)).min() >= 0.9999  # each answer is its own


class _Gate:
    """Blocks the engine until released, and tells when a call is inside it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def encoder(self, raw_encoder) -> SentenceEncoder:
        enc = SentenceEncoder(raw_encoder.spec, raw_encoder.model)
        real = enc.encode_tokens

        def blocked(tokens):
            self.entered.set()
            assert self.release.wait(60)
            return real(tokens)

        enc.encode_tokens = blocked
        return enc


def _wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_full_queue_is_429_and_shutdown_drains(raw_encoder, minilm_dir):
    gate = _Gate()
    config = _config(raw_encoder, minilm_dir, factory=lambda cfg: gate.encoder(raw_encoder),
                     max_concurrent_requests=2, max_wait_ms=0)
    handle = start_in_thread(config)
    try:
        url, batcher = handle.url, handle.service.batcher
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(httpx.post, f"{url}/embed", json={"inputs": "one"}, timeout=60)
            assert gate.entered.wait(20)
            second = pool.submit(httpx.post, f"{url}/embed", json={"inputs": "two"}, timeout=60)
            _wait_until(lambda: batcher.in_flight == 2 and batcher.queued == 1)
            refused = httpx.post(f"{url}/embed", json={"inputs": "three"})
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error_type"] == "overloaded"
            # A graceful stop answers the request in the engine and the one queued.
            stopping = pool.submit(handle.stop)
            _wait_until(lambda: handle.server.should_exit)
            time.sleep(0.3)
            gate.release.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
            stopping.result()
        assert batcher.engine_calls == 2 and batcher.in_flight == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)
    finally:
        gate.release.set()
        if handle.thread.is_alive():
            handle.stop()


def test_health_is_503_while_loading(raw_encoder, minilm_dir):
    loaded = threading.Event()

    def slow_load(config: ServeConfig) -> SentenceEncoder:
        assert loaded.wait(60)
        return SentenceEncoder(raw_encoder.spec, raw_encoder.model)

    with start_in_thread(_config(raw_encoder, minilm_dir, factory=slow_load),
                         wait_ready=False) as handle:
        health = httpx.get(f"{handle.url}/health")
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        busy = httpx.post(f"{handle.url}/embed", json={"inputs": "a"})
        assert busy.status_code == 503 and busy.json()["error_type"] == "unavailable"
        loaded.set()
        handle.wait()
        assert httpx.get(f"{handle.url}/health").json() == {"status": "ok"}
        assert httpx.post(f"{handle.url}/embed", json={"inputs": "a"}).status_code == 200


def test_failed_load_is_reported(raw_encoder, minilm_dir):
    def broken(config: ServeConfig) -> SentenceEncoder:
        raise ModelLoadError("the weights are corrupt")

    with pytest.raises(RuntimeError, match="the weights are corrupt"):
        start_in_thread(_config(raw_encoder, minilm_dir, factory=broken))


def test_non_finite_vectors_are_an_error_not_nulls(raw_encoder, minilm_dir):
    def nan_model(config: ServeConfig) -> SentenceEncoder:
        encoder = SentenceEncoder(raw_encoder.spec, raw_encoder.model)
        encoder.encode_tokens = lambda tokens: np.full((len(tokens.ids), 384), np.nan, "f4")
        return encoder

    with start_in_thread(_config(raw_encoder, minilm_dir, factory=nan_model)) as handle:
        for route, body in (("/embed", {"inputs": ["a"]}), ("/v1/embeddings", {"input": "a"})):
            response = httpx.post(f"{handle.url}{route}", json=body)
            assert response.status_code == 500, response.text
            assert response.json()["error_type"] == "backend"
            assert "non-finite" in response.json()["error"]


# ---------------------------------------------------------------------------------------
# The command


def _cli(*args: str, **env: str) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(REPO / "python"), HF_HUB_OFFLINE="1", **env)
    environment.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    return subprocess.Popen([sys.executable, "-m", "synapseml_ext.cli", "serve", *args],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_cli_serves_and_stops_on_sigterm(minilm_dir):
    proc = _cli("--model", minilm_dir, "--runtime", "cpu", "--precision", "fp32",
                "--port", "0", "--api-key-env", "SERVE_TEST_KEY", SERVE_TEST_KEY=KEY)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no ready line in 120s"
        line = proc.stdout.readline()
        match = re.fullmatch(r"synapseml-ext: serving (.+) \(runtime=cpu, precision=fp32, "
                             r"dim=384\) on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        url = match.group(2)
        vectors = httpx.post(f"{url}/embed", json={"inputs": ["a", "b"]}, headers=_auth())
        assert vectors.status_code == 200 and len(vectors.json()) == 2
        assert httpx.post(f"{url}/embed", json={"inputs": "a"}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert KEY not in out + err and "Traceback" not in err


def _one_line_error(proc: subprocess.Popen, fragment: str) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synapseml-ext: error: "), err
    assert fragment in lines[0], lines[0]


def test_cli_missing_model_is_one_line():
    _one_line_error(_cli("--model", "/no/such/dir"), "/no/such/dir")


def test_cli_port_in_use_is_one_line(minilm_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line_error(_cli("--model", minilm_dir, "--port", str(port)), f"{port}")


def test_cli_api_key_env_must_be_set(minilm_dir):
    _one_line_error(_cli("--model", minilm_dir, "--api-key-env", "SERVE_TEST_UNSET_KEY"),
                    "SERVE_TEST_UNSET_KEY")
