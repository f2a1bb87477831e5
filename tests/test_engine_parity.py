"""The engine reproduces sentence-transformers itself (cosine), per runtime and architecture."""

from __future__ import annotations

import numpy as np
import pytest

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine.hardware import choose_cpu_precision, cpu_flags

from helpers import cosines
from tiny_models import build_tiny_model


@pytest.mark.parametrize("runtime", ["cpu", "onnx"])
def test_minilm_matches_sentence_transformers_on_real_reviews(
    runtime, minilm_dir, cache_dir, review_texts, st_reference
):
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime=runtime, precision="fp32",
                                          cache_dir=cache_dir))
    out = encoder.encode(review_texts)
    assert out.shape == (1000, 384) and out.dtype == np.float32
    cos = cosines(out, st_reference)
    assert cos.min() >= 0.9999, f"{runtime}: minimum cosine {cos.min():.6f}"
    # Normalised like the model's Normalize module says.
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_bf16_stays_close_to_fp32_on_real_reviews(minilm_dir, cache_dir, review_texts,
                                                   st_reference):
    precision, reason = choose_cpu_precision(cpu_flags())
    if precision != "bf16":
        pytest.skip(f"this CPU has no bf16 hardware ({reason}); bf16 would be emulated")
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="bf16",
                                          cache_dir=cache_dir))
    assert encoder.precision == "bf16"
    cos = cosines(encoder.encode(review_texts), st_reference)
    print(f"bf16 vs fp32 sentence-transformers: min {cos.min():.6f}, mean {cos.mean():.7f}")
    assert cos.min() >= 0.999


TEXTS = [
    "",
    "desserts",
    "  leading and trailing spaces  ",
    "query: what is the capital of france",
    "Das Wetter in Berlin ist heute sonnig, aber kalt.",
    "東京は日本の首都です。 emoji 🔥😋",
    "word " * 400,
]


@pytest.mark.parametrize(
    "arch, pooling, dense, normalize",
    [
        ("bert", "cls", True, False),
        ("bert", ("mean", "max"), False, True),
        ("bert", "mean_sqrt_len_tokens", False, False),
        ("bert", "weightedmean", False, True),
        ("bert", "lasttoken", False, True),
        ("xlm-roberta", "mean", False, True),
        ("xlm-roberta", "cls", True, True),
    ],
)
@pytest.mark.parametrize("runtime", ["cpu", "onnx"])
def test_tiny_architectures_match_sentence_transformers(
    tmp_path, minilm_dir, cache_dir, arch, pooling, dense, normalize, runtime
):
    from sentence_transformers import SentenceTransformer

    path = build_tiny_model(tmp_path / "model", minilm_dir, arch=arch, pooling=pooling,
                            dense=dense, normalize=normalize)
    expected = SentenceTransformer(path, device="cpu").encode(TEXTS)
    encoder = SentenceEncoder(EncoderSpec(model=path, runtime=runtime, precision="fp32",
                                          cache_dir=cache_dir))
    out = encoder.encode(TEXTS)
    assert out.shape == expected.shape
    cos = cosines(out, expected)
    assert cos.min() >= 0.9999, f"{arch}/{pooling}/{runtime}: {cos}"
    if not normalize:  # magnitudes too, not just directions
        np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-4)


def test_prompt_and_normalize_override_match_sentence_transformers(tmp_path, minilm_dir,
                                                                    cache_dir):
    from sentence_transformers import SentenceTransformer

    path = build_tiny_model(tmp_path / "e5like", minilm_dir, arch="bert", pooling="mean",
                            normalize=True)
    st = SentenceTransformer(path, device="cpu")
    queries = ["how much sugar is in honey", "capital of france"]
    expected = st.encode(queries, prompt="query: ")
    encoder = SentenceEncoder(EncoderSpec(model=path, runtime="onnx", prompt="query: ",
                                          cache_dir=cache_dir))
    assert cosines(encoder.encode(queries), expected).min() >= 0.9999
    raw = SentenceEncoder(EncoderSpec(model=path, runtime="cpu", precision="fp32",
                                      normalize=False, cache_dir=cache_dir)).encode(queries)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_max_seq_length_override_truncates(minilm_dir, cache_dir, st_minilm):
    long_text = "the cake was wonderful and sweet " * 100
    short = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="cpu", precision="fp32",
                                        max_seq_length=16, cache_dir=cache_dir))
    assert short.max_seq_length == 16
    st_minilm.max_seq_length = 16
    try:
        expected = st_minilm.encode([long_text])
    finally:
        st_minilm.max_seq_length = 256
    assert cosines(short.encode([long_text]), expected).min() >= 0.9999


def test_output_order_and_batching_do_not_change_results(minilm_dir, cache_dir, review_texts):
    texts = review_texts[:200]
    wide = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", cache_dir=cache_dir))
    narrow = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx", batch_size=3,
                                         max_tokens_per_batch=64, cache_dir=cache_dir))
    a, b = wide.encode(texts), narrow.encode(texts)
    assert cosines(a, b).min() >= 0.99999
    # Row i is the embedding of text i: encoding one text alone gives the same vector.
    for i in (0, 57, 199):
        assert cosines(a[i : i + 1], wide.encode([texts[i]]))[0] >= 0.99999
    assert wide.encode([]).shape == (0, 384)


@pytest.mark.parametrize("runtime", ["cpu", "onnx"])
def test_a_mixed_length_call_is_cut_where_rows_get_shorter(runtime, minilm_dir, cache_dir,
                                                           review_texts, st_reference):
    # A server's merged requests: 35 reviews in random order, one encode call.
    rng = np.random.default_rng(0)
    picks = rng.choice(len(review_texts), 35, replace=False)
    texts = [review_texts[i] for i in picks]
    encoder = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime=runtime, precision="fp32",
                                          cache_dir=cache_dir))
    backend = encoder.model.backend
    tokens = encoder.tokenize(texts)
    batches = list(encoder.batches(tokens))
    padded = sum(b.input_ids.size for b in batches)
    one_batch = len(texts) * int(tokens.lengths.max())
    assert len(batches) > 1 and padded < 0.7 * one_batch, (len(batches), padded, one_batch)
    for b in batches:
        widths = b.attention_mask.sum(axis=1)
        keep = max(1, backend.min_batch_tokens // b.input_ids.shape[1])
        # past min_batch_tokens no row is more than max_pad_waste shorter than the longest
        assert widths[keep:].min(initial=b.input_ids.shape[1]) >= (
            (1 - backend.max_pad_waste) * widths.max() - backend.pad_multiple)
    assert cosines(encoder.encode(texts), st_reference[picks]).min() >= 0.9999
