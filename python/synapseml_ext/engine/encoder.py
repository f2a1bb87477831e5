"""The Spark-free sentence encoder: texts in, float32 embeddings out, input order kept."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from synapseml_ext.engine.batching import TokenBatch, iter_batches, pad_batches, plan_batches
from synapseml_ext.engine.errors import ModelLoadError, UserInputError
from synapseml_ext.engine.hardware import cuda_device_count, task_cpu_share, torch_installed
from synapseml_ext.engine.model_files import ModelFiles, cached_model_files
from synapseml_ext.engine.probe import probe_texts
from synapseml_ext.engine.runtimes import Backend, choose_runtime, load_backend
from synapseml_ext.engine.spec import EncoderSpec

log = logging.getLogger("synapseml_ext.engine")


class Tokenized:
    """Token ids of a list of texts, truncated, unpadded."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


@dataclass
class LoadedModel:
    """The heavy part of an encoder, shared by encoders that differ only in light options
    (prompt, normalisation, batch sizes)."""

    files: ModelFiles
    tokenizer: Callable[..., Any]  # a transformers tokenizer
    backend: Backend
    reason: str
    load_seconds: float
    dimension: int

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        return tokenize(self.tokenizer, self.files, texts)

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return int(pad) if pad is not None else 0


def tokenize(tokenizer: Callable[..., Any], files: ModelFiles, texts: Sequence[str]) -> Tokenized:
    """Token ids of ``texts`` as the model sees them: lower-cased where the model says so,
    truncated at its max_seq_length, unpadded."""
    if files.do_lower_case:
        texts = [t.lower() for t in texts]
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=files.max_seq_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return Tokenized(encoded["input_ids"])


@dataclass
class EncodeStats:
    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: EncodeStats) -> None:
        self.rows += other.rows
        self.tokens += other.tokens
        self.padded_tokens += other.padded_tokens
        self.seconds += other.seconds


class SentenceEncoder:
    """Encodes texts with one sentence-transformers model on one runtime.

    >>> enc = SentenceEncoder(EncoderSpec(model="/path/to/all-MiniLM-L6-v2", runtime="onnx"))
    >>> enc.encode(["a sentence", "another one"]).shape        # doctest: +SKIP
    (2, 384)
    """

    def __init__(self, spec: EncoderSpec, loaded: LoadedModel | None = None) -> None:
        self.spec = spec
        self.model = loaded if loaded is not None else load_model(spec)
        files = self.model.files
        self.normalize = files.normalize if spec.normalize is None else spec.normalize
        self.prompt = effective_prompt(spec, files)
        if spec.truncate_dim > self.model.dimension:
            raise UserInputError(
                f"truncateDim={spec.truncate_dim} is more than the model's dimension "
                f"({self.model.dimension}): use a value up to {self.model.dimension}, or 0")
        self.stats = EncodeStats()

    @property
    def max_tokens(self) -> int:
        """Padded tokens per model call: ``maxTokensPerBatch``, else the runtime's own (the
        GPU runtimes learn theirs from memory use, so it is read per batch)."""
        return self.spec.max_tokens_per_batch or self.model.backend.default_max_tokens

    @property
    def runtime(self) -> str:
        return self.model.backend.runtime

    @property
    def precision(self) -> str:
        return self.model.backend.precision

    @property
    def max_seq_length(self) -> int:
        return self.model.files.max_seq_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)``; row ``i`` is the embedding of ``texts[i]``."""
        started = time.perf_counter()
        return self._encode_tokens(self._tokenize(texts), started)

    def encode_many(self, chunks: Iterable[Sequence[str]]) -> Iterator[np.ndarray]:
        """:meth:`encode` of each chunk in turn (a Spark task's Arrow batches).

        On the GPU runtimes the next chunk is tokenized on a background thread while the
        current one computes, so the GPU does not wait for the CPU between chunks; the
        chunks are still read from ``chunks`` on the calling thread, one ahead.
        """
        if not self.model.backend.overlaps_batches:
            for texts in chunks:
                yield self.encode(texts)
            return
        source = iter(chunks)
        with ThreadPoolExecutor(1, thread_name_prefix="synapseml-ext-tokenize") as pool:

            def tokenize_next() -> Future | None:
                texts = next(source, None)
                return None if texts is None else pool.submit(self._tokenize, texts)

            pending = tokenize_next()
            while pending is not None:
                started = time.perf_counter()
                tokens = pending.result()
                pending = tokenize_next()
                yield self._encode_tokens(tokens, started)

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        """Token ids of ``texts`` (the spec's prompt in front, truncated at max_seq_length);
        ``.lengths`` holds the counts. Feed them to :meth:`encode_tokens`."""
        return self._tokenize(texts)

    def encode_tokens(self, tokens: Tokenized) -> np.ndarray:
        """:meth:`encode` of texts already tokenized by :meth:`tokenize`."""
        return self._encode_tokens(tokens, time.perf_counter())

    def _tokenize(self, texts: Sequence[str]) -> Tokenized:
        prompt = self.prompt
        if len(texts) == 0:
            return Tokenized([])
        return self.model.tokenize([prompt + t for t in texts] if prompt else texts)

    def _encode_tokens(self, tokens: Tokenized, started: float) -> np.ndarray:
        if len(tokens.ids) == 0:
            return np.empty((0, self.dimension), dtype=np.float32)
        out, padded = self._run(tokens)
        self.stats.add(EncodeStats(len(tokens.ids), int(tokens.lengths.sum()), padded,
                                   time.perf_counter() - started))
        return out

    def batches(self, tokens: Tokenized) -> Iterator[TokenBatch]:
        """The padded model calls for ``tokens``, cut lazily (see :func:`iter_batches`)."""
        backend = self.model.backend
        plan = iter_batches(tokens.lengths, lambda: self.max_tokens, self.spec.batch_size,
                            backend.pad_multiple, backend.max_pad_waste,
                            backend.min_batch_tokens)
        return pad_batches(tokens.ids, tokens.lengths, plan, self.model.pad_id,
                           backend.pad_multiple)

    def _run(self, tokens: Tokenized) -> tuple[np.ndarray, int]:
        backend = self.model.backend
        # A runtime that overlaps batches (cuda) pads and launches the next batch while the
        # current one computes; the others run them one by one.
        results = backend.run_pipelined(self.batches(tokens))
        out: np.ndarray | None = None
        padded = 0
        for batch, vectors in results:
            if self.spec.truncate_dim:  # Matryoshka: the leading dimensions, then normalise
                vectors = vectors[:, :self.spec.truncate_dim]
            if out is None:
                out = np.empty((len(tokens.ids), vectors.shape[1]), dtype=np.float32)
            out[batch.rows] = vectors
            padded += batch.input_ids.size
        assert out is not None  # encode() handles the empty input
        if self.normalize and len(out):
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out, padded

    @property
    def dimension(self) -> int:
        return self.spec.truncate_dim or self.model.dimension

    def count_tokens(self, texts: Sequence[str]) -> int:
        return int(self.model.tokenize(texts).lengths.sum())


def load_model(spec: EncoderSpec) -> LoadedModel:
    """Resolve files, tokenizer, runtime and precision for ``spec`` and load the weights."""
    if not torch_installed():  # expected on an ONNX-only worker: not worth transformers' warning
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoTokenizer

    started = time.perf_counter()
    files = cached_model_files(spec.model, spec.max_seq_length, spec.revision)
    if files.needs_remote_code and not spec.trust_remote_code:
        raise ModelLoadError(
            f"model {spec.model!r} ships its own Python code (auto_map in its config.json), "
            "which runs only with trustRemoteCode=true: set it if you trust the model's source")
    files = replace(files, trust_remote_code=spec.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(str(files.transformer_dir),
                                              trust_remote_code=spec.trust_remote_code)
    check_tokenizer_vocabulary(len(tokenizer), files)
    threads = spec.num_threads or task_cpu_share()
    choice = choose_runtime(spec.runtime, spec.precision, gpus=cuda_device_count())
    prompt = effective_prompt(spec, files)
    prompt_length = _prompt_length(tokenizer, prompt) if not files.include_prompt else 0
    probe = _probe_batches(tokenizer, files)
    backend = load_backend(files, choice, num_threads=threads, cache_dir=spec.cache_dir,
                           prompt_length=prompt_length, min_cosine=spec.min_cosine, probe=probe)
    smallest = probe[-1]
    dimension = backend.run(smallest.input_ids[:1], smallest.attention_mask[:1]).shape[1]
    seconds = time.perf_counter() - started
    loaded = LoadedModel(files, tokenizer, backend, choice.reason, seconds, int(dimension))
    log.info(
        "synapseml-ext loaded %s: runtime=%s precision=%s device=%s threads=%d (%s) in %.1fs, "
        "pid %d", files.root.name, backend.runtime, backend.precision, backend.device,
        backend.num_threads, choice.reason, seconds, os.getpid())
    record_event("load", model=str(files.root), runtime=backend.runtime,
                 precision=backend.precision, threads=backend.num_threads,
                 reason=choice.reason, seconds=round(seconds, 3), cache_dir=spec.cache_dir)
    return loaded


def check_tokenizer_vocabulary(tokens: int, files: ModelFiles) -> None:
    """Refuse a tokenizer that lost its vocabulary file: transformers then builds one of a few
    special tokens, every word becomes the unknown token and the vectors are noise, silently.
    Vocabularies may fall short of the embedding table (padded to a multiple of 64 or so),
    never by half."""
    if files.vocab_size and tokens < files.vocab_size // 2:
        raise ModelLoadError(
            f"model {str(files.transformer_dir)!r}: its tokenizer has {tokens} tokens but the "
            f"model has {files.vocab_size} (config.json vocab_size): the tokenizer's vocabulary "
            "file (tokenizer.json, vocab.txt, sentencepiece.bpe.model, ...) is missing or "
            "damaged; copy the complete model directory")


def effective_prompt(spec: EncoderSpec, files: ModelFiles) -> str:
    """The text put before every input, as sentence-transformers' ``encode`` picks it:
    ``prompt``, else the model's prompt named ``promptName``, else the model's default one."""
    if spec.prompt:
        return spec.prompt
    name = spec.prompt_name or files.default_prompt_name
    if not name:
        return ""
    if name not in files.prompts:
        known = ", ".join(repr(p) for p in sorted(files.prompts)) or "none"
        raise UserInputError(f"promptName={name!r} is not one of the model's prompts "
                             f"(config_sentence_transformers.json has: {known})")
    return files.prompts[name]


def _prompt_length(tokenizer, prompt: str) -> int:
    if not prompt:
        return 0
    # The prompt's tokens without the trailing special token, as sentence-transformers counts.
    return max(0, len(tokenizer(prompt)["input_ids"]) - 1)


def _probe_batches(tokenizer, files: ModelFiles) -> list[TokenBatch]:
    texts = probe_texts()
    ids = tokenizer(list(texts), truncation=True, max_length=files.max_seq_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    plan = plan_batches(lengths, max_tokens=2048, max_rows=8)
    return list(pad_batches(ids, lengths, plan, pad))


# ---------------------------------------------------------------------------------------
# One model per Python worker


class ModelCache:
    """Loaded models of this process, least recently used first out.

    Spark reuses Python workers across tasks (``spark.python.worker.reuse``, on by default),
    so a model loaded by one task serves every later task and ``transform()`` call in the
    same worker. Keyed by the options that change the loaded weights; light options
    (prompt, normalisation, batch sizes) share one entry.
    """

    _lock = threading.Lock()
    _models: OrderedDict[tuple, LoadedModel] = OrderedDict()
    max_models = int(os.environ.get("SYNAPSEML_EXT_MAX_MODELS", "2"))

    @classmethod
    def get(cls, spec: EncoderSpec) -> LoadedModel:
        key = cls.key(spec)
        with cls._lock:
            loaded = cls._models.get(key)
            if loaded is not None:
                cls._models.move_to_end(key)
                return loaded
            loaded = load_model(spec)
            cls._models[key] = loaded
            while len(cls._models) > cls.max_models:
                cls._models.popitem(last=False)
            return loaded

    @staticmethod
    def key(spec: EncoderSpec) -> tuple:
        light = replace(spec, normalize=None, batch_size=1, max_tokens_per_batch=0,
                        truncate_dim=0)
        files_need_prompt = _prompt_changes_weights(spec)
        if not files_need_prompt:
            light = replace(light, prompt="", prompt_name="")
        key = tuple(sorted(light.to_dict().items()))
        if spec.runtime in ("cuda", "tensorrt", "auto"):
            # A worker reused by a task that Spark gave another GPU loads onto that GPU.
            from synapseml_ext.engine.device import task_gpu_context

            key += (("task_gpus", task_gpu_context()[0]),)
        return key

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls._models.clear()


def _prompt_changes_weights(spec: EncoderSpec) -> bool:
    if not (spec.prompt or spec.prompt_name):
        return False
    try:
        return not cached_model_files(spec.model, spec.max_seq_length, spec.revision).include_prompt
    except Exception:
        return True


def get_encoder(spec: EncoderSpec) -> SentenceEncoder:
    """An encoder for ``spec`` on the model cached in this process (loaded on first use).
    ``runtime="remote"`` has no model here: :func:`synapseml_ext.encoders.get_encoder`."""
    if spec.runtime == "remote":
        raise ValueError("runtime='remote' runs no model in this process: use "
                         "synapseml_ext.encoders.get_encoder")
    return SentenceEncoder(spec, ModelCache.get(spec))


def record_event(event: str, **fields) -> None:
    """Append a JSON line to ``$SYNAPSEML_EXT_EVENT_LOG`` when set: a trace of model loads
    across worker processes, for diagnostics and tests."""
    path = os.environ.get("SYNAPSEML_EXT_EVENT_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
