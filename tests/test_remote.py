"""runtime="remote": the stage's client of embedding servers, against servers on loopback that
misbehave the ways real ones do (429 with Retry-After, 503, timeouts, dropped connections,
cut-off bodies)."""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections import Counter

import numpy as np
import pytest

from http_servers import running
from synapseml_ext.engine import EncoderSpec
from synapseml_ext.engine.errors import user_message
from synapseml_ext.remote import RemoteEncoder, RemoteEndpointError

DIM = 16
KEY = "sk-test-7f3a9c"  # the fault server's key; must never show in logs or saved stages


def vector(text: str) -> list[float]:
    v = np.random.RandomState(zlib.crc32(text.encode())).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


# What the n-th attempt of a batch gets, by the batch's first text: every kind of failure
# happens, each batch succeeds within 4 attempts (maxRetries=5 in the tests).
FAULT_PLANS = [
    [],
    ["429"],
    ["503", "drop"],
    ["slow", "429"],
    ["garbage", "503", "drop"],
    ["drop"],
]


class FaultServer:
    """A TEI- and OpenAI-shaped embedding server with deterministic vectors and scripted
    failures; counts every text it answered."""

    def __init__(self, *, faults: bool = True, always: str = "", key: str = "",
                 max_batch: int = 0, slow_seconds: float = 2.0) -> None:
        self.faults, self.always, self.key = faults, always, key
        self.max_batch, self.slow_seconds = max_batch, slow_seconds
        self.attempts: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.requests: list[tuple[str, dict]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, headers = scope["path"], dict(scope["headers"])
        if path == "/info":
            await _reply(send, 200, {"max_client_batch_size": self.max_batch or 32})
            return
        if self.key and headers.get(b"authorization") != f"Bearer {self.key}".encode():
            await _reply(send, 401, {"error": "bad or missing API key"})
            return
        request = json.loads(body)
        self.requests.append((path, request))
        texts = request["inputs"] if path.endswith("/embed") else request["input"]
        fault = self.always or self._fault(texts[0])
        if fault:
            self.failures[fault] += 1
            await _misbehave(send, fault, self.slow_seconds)
            return
        if self.max_batch and len(texts) > self.max_batch:
            await _reply(send, 413, {"error": f"batch size {len(texts)} > {self.max_batch}"})
            return
        self.served.update(texts)
        vectors = [vector(t) for t in texts]
        if path.endswith("/embed"):
            await _reply(send, 200, vectors)
        else:
            data = [{"object": "embedding", "index": i, "embedding": v}
                    for i, v in reversed(list(enumerate(vectors)))]  # any order: by index
            await _reply(send, 200, {"data": data, "usage": {"prompt_tokens": 3 * len(texts)}})

    def _fault(self, first_text: str) -> str:
        if not self.faults:
            return ""
        plan = FAULT_PLANS[zlib.crc32(first_text.encode()) % len(FAULT_PLANS)]
        attempt = self.attempts[first_text]
        self.attempts[first_text] += 1
        return plan[attempt] if attempt < len(plan) else ""


async def _reply(send, status: int, payload, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _misbehave(send, fault: str, slow_seconds: float) -> None:
    if fault == "429":
        await _reply(send, 429, {"error": "overloaded"}, [(b"retry-after", b"0")])
    elif fault == "503":
        await _reply(send, 503, {"error": "model is loading"})
    elif fault == "slow":
        await asyncio.sleep(slow_seconds)
        await _reply(send, 503, {"error": "too late"})
    elif fault == "garbage":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'[[0.1, 0.2'})
    elif fault == "drop":  # headers promise a body that never comes: the connection dies
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b"[[", "more_body": True})
        raise ConnectionResetError("dropped on purpose")


def _spec(url: str, **options) -> EncoderSpec:
    defaults = dict(model="test-model", runtime="remote", endpoint=url, batch_size=8,
                    max_concurrent_requests=4, request_timeout=0.5, max_retries=5)
    return EncoderSpec(**{**defaults, **options})


TEXTS = [f"review number {i}: {'tasty ' * (i % 7)}snack" for i in range(150)] + ["", "é 漢字"]


@pytest.mark.parametrize("api_format", ["tei", "openai"])
def test_faults_leave_the_output_identical_to_a_clean_run(api_format):
    server = FaultServer()
    with running(server) as url:
        endpoint = url + ("/v1" if api_format == "openai" else "")
        encoder = RemoteEncoder(_spec(endpoint, api_format=api_format))
        got = encoder.encode(TEXTS)
        encoder.close()
    assert got.shape == (len(TEXTS), DIM)
    np.testing.assert_array_equal(got, np.array([vector(t) for t in TEXTS], dtype=np.float32))
    assert set(server.failures) == {"429", "503", "slow", "garbage", "drop"}, server.failures
    # Each text answered exactly once: a failed attempt never reaches the output twice.
    assert server.served == Counter(TEXTS)
    assert encoder.stats.rows == len(TEXTS)
    if api_format == "openai":
        assert encoder.stats.tokens == 3 * len(TEXTS)
        assert all(path == "/v1/embeddings" and body["model"] == "test-model"
                   for path, body in server.requests)
    else:
        assert all(path == "/embed" and body["truncate"] is True
                   for path, body in server.requests)


def test_batches_follow_the_servers_limit_and_a_413_halves_them():
    server = FaultServer(faults=False, max_batch=5)
    with running(server) as url:
        # /info says 5: batchSize 8 is capped at the server's limit.
        assert RemoteEncoder(_spec(url)).encode(TEXTS[:23]).shape == (23, DIM)
        assert max(len(body["inputs"]) for _, body in server.requests) == 5
        # OpenAI servers have no /info: 413 halves the batch until it fits.
        server.requests.clear()
        encoder = RemoteEncoder(_spec(url + "/v1", api_format="openai"))
        got = encoder.encode(TEXTS[:23])
        assert max(len(body["input"]) for _, body in server.requests) == 8
        server.requests.clear()
        again = encoder.encode(TEXTS[:23])  # the smaller batch is remembered
    np.testing.assert_array_equal(got, np.array([vector(t) for t in TEXTS[:23]], np.float32))
    np.testing.assert_array_equal(again, got)
    assert max(len(body["input"]) for _, body in server.requests) <= 5


@pytest.mark.parametrize("status", ["503", "slow", "drop"])
def test_exhausted_retries_are_one_line_naming_endpoint_and_cause(status):
    with running(FaultServer(always=status, slow_seconds=0.5)) as url:
        encoder = RemoteEncoder(_spec(url + "/embed?api-version=1", max_retries=2,
                                      request_timeout=0.2))
        with pytest.raises(RemoteEndpointError) as caught:
            encoder.encode(["a", "b"])
    message = str(caught.value)
    assert "\n" not in message and message.startswith("synapseml-ext:")
    assert f"{url}/embed failed 3 times in a row" in message
    assert "api-version" not in message  # the query (it can hold keys) stays out
    cause = {"503": "HTTP 503: model is loading", "slow": "no response within 0.2s",
             "drop": "RemoteProtocolError"}[status]
    assert cause in message


def test_api_key_is_sent_from_the_named_variable_and_never_logged(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    server = FaultServer(key=KEY)
    with running(server) as url:
        with pytest.raises(RemoteEndpointError, match="TEST_EMBED_KEY is not set"):
            RemoteEncoder(_spec(url, api_key_env="TEST_EMBED_KEY")).encode(["x"])
        monkeypatch.setenv("TEST_EMBED_KEY", "wrong")
        with pytest.raises(RemoteEndpointError, match="HTTP 401: bad or missing API key; check"):
            RemoteEncoder(_spec(url, api_key_env="TEST_EMBED_KEY")).encode(["x"])
        monkeypatch.setenv("TEST_EMBED_KEY", KEY)
        got = RemoteEncoder(_spec(url, api_key_env="TEST_EMBED_KEY")).encode(TEXTS[:40])
    np.testing.assert_array_equal(got, np.array([vector(t) for t in TEXTS[:40]], np.float32))
    assert "retry" in caplog.text  # the faults were logged...
    assert KEY not in caplog.text  # ...and the key was not


def test_options_are_checked_without_echoing_a_key():
    with pytest.raises(ValueError, match="runtime='remote' needs endpoint"):
        EncoderSpec(model="m", runtime="remote")
    with pytest.raises(ValueError, match="without credentials"):
        EncoderSpec(model="m", runtime="remote", endpoint="https://user:pw@host/v1")
    with pytest.raises(ValueError) as caught:
        EncoderSpec(model="m", runtime="remote", endpoint="http://h", api_key_env="sk-live-123")
    assert "NAME of an environment variable" in str(caught.value)
    assert "sk-live-123" not in str(caught.value)
    with pytest.raises(ValueError, match="server runs its own precision"):
        EncoderSpec(model="m", runtime="remote", endpoint="http://h", precision="bf16")
    with pytest.raises(ValueError, match="unknown apiFormat"):
        EncoderSpec(model="m", runtime="remote", endpoint="http://h", api_format="grpc")


# ---------------------------------------------------------------------------------------
# The Spark stage


def test_stage_over_a_faulty_server_keeps_rows_order_and_nulls(spark, tmp_path):
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    rows = [(i, None if i % 11 == 0 else TEXTS[i]) for i in range(len(TEXTS))]
    df = spark.createDataFrame(rows, "id int, text string").repartition(3)
    server = FaultServer()
    with running(server) as url:
        stage = HuggingFaceSentenceEmbedder(
            inputCol="text", outputCol="emb", runtime="remote", endpoint=url,
            apiKeyEnv="SOME_KEY_NAME", batchSize=8, requestTimeout=0.5)
        stage.save(str(tmp_path / "stage"))
        loaded = HuggingFaceSentenceEmbedder.load(str(tmp_path / "stage"))
        loaded.setApiKeyEnv("")
        before = [(r.id, r.text) for r in df.collect()]
        out = loaded.transform(df).collect()
    assert [(r.id, r.text) for r in out] == before
    for r in out:
        if r.text is None:
            assert r.emb is None
        else:
            np.testing.assert_array_equal(np.array(r.emb, np.float32), vector(r.text))
    assert server.served == Counter(t for _, t in rows if t is not None)
    saved = "".join(p.read_text() for p in (tmp_path / "stage").rglob("part-*"))
    assert '"apiKeyEnv":"SOME_KEY_NAME"' in saved and KEY not in saved


def test_stage_failure_is_one_line_for_the_user(spark):
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    df = spark.createDataFrame([("a",), ("b",)], "text string")
    with running(FaultServer(always="503")) as url:
        stage = HuggingFaceSentenceEmbedder(inputCol="text", runtime="remote", endpoint=url,
                                            maxRetries=1)
        with pytest.raises(Exception) as caught:
            stage.transform(df).collect()
    message = user_message(caught.value)
    assert message is not None and "failed 2 times in a row, last with HTTP 503" in message


def test_stage_unreachable_endpoint_fails_on_the_driver(spark):
    from http_servers import free_port
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    df = spark.createDataFrame([("a",)], "text string")
    stage = HuggingFaceSentenceEmbedder(inputCol="text", runtime="remote",
                                        endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RemoteEndpointError, match="cannot reach the embedding server"):
        stage.transform(df)


# ---------------------------------------------------------------------------------------
# Against our own server (synapseml-ext serve), the same model and precision on both sides


@pytest.fixture(scope="module")
def our_server(minilm_dir, cache_dir):
    from synapseml_ext.serve import ServeConfig, start_in_thread

    config = ServeConfig(model=minilm_dir, runtime="onnx", precision="fp32", cache_dir=cache_dir,
                         num_threads=0)
    with start_in_thread(config) as handle:
        yield handle.url


def test_stage_through_our_server_matches_the_local_runtime(spark, reviews, review_texts,
                                                            minilm_dir, cache_dir, our_server):
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    from helpers import cosines

    frame = reviews.assign(data=review_texts)[["data"]].head(500).reset_index()
    df = spark.createDataFrame(frame).repartition(2)
    local = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="data", runtime="onnx",
                                        precision="fp32", cacheDir=cache_dir)
    remote = HuggingFaceSentenceEmbedder(modelName=minilm_dir, inputCol="data",
                                         runtime="remote", endpoint=our_server)
    want = local.transform(df).select("index", "embeddings").toPandas()
    got = remote.transform(df).select("index", "embeddings").toPandas()
    assert got["index"].tolist() == want["index"].tolist()  # every row, same order
    a, b = np.stack(got["embeddings"]), np.stack(want["embeddings"])
    assert a.shape == b.shape == (500, 384)
    assert cosines(a, b).min() >= 0.9999


def test_openai_format_through_our_server(minilm_dir, cache_dir, our_server):
    from synapseml_ext.engine import SentenceEncoder

    texts = TEXTS[:40]
    encoder = RemoteEncoder(EncoderSpec(model="minilm", runtime="remote", api_format="openai",
                                        endpoint=our_server + "/v1", batch_size=16))
    got = encoder.encode(texts)
    want = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", precision="fp32",
                                       cache_dir=cache_dir)).encode(texts)
    assert np.min(np.sum(got * want, axis=1)) >= 0.9999  # both unit length (MiniLM normalises)
    assert encoder.stats.tokens > len(texts)


@pytest.mark.spark
def test_cli_embed_through_our_server(tmp_path, minilm_dir, our_server):
    import subprocess
    import sys

    import pandas as pd

    csv = tmp_path / "in.csv"
    pd.DataFrame({"text": TEXTS[:30]}).to_csv(csv, index=False)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "synapseml_ext.cli", "embed", "--input", str(csv), "--text-col",
         "text", "--output", str(out), "--runtime", "remote", "--endpoint", our_server,
         "--model", minilm_dir], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "runtime=remote" in done.stdout
    got = pd.read_parquet(out)
    assert got["text"].tolist() == TEXTS[:30]
    missing = subprocess.run(
        [sys.executable, "-m", "synapseml_ext.cli", "embed", "--input", str(csv), "--text-col",
         "text", "--output", str(tmp_path / "out2"), "--runtime", "remote"],
        capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "synapseml-ext: error: runtime='remote' needs endpoint: the embedding server's URL, "
        "e.g. http://tei-host:8080 (apiFormat='tei') or https://host/v1 (apiFormat='openai')"]
