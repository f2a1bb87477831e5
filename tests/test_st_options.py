"""sentence-transformers' own options: Matryoshka truncation (truncateDim), the model's named
and default prompts (promptName), a pinned hub revision, and trustRemoteCode, each checked
against sentence-transformers itself on a small random-weight model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synapseml_ext.engine import EncoderSpec, ModelLoadError, SentenceEncoder
from synapseml_ext.engine.errors import UserInputError

from helpers import cosines
from tiny_models import build_tiny_model

TEXTS = ["a crunchy snack", "the tea was stale", "", "dogs love these treats " * 20]
PROMPTS = {"query": "query: ", "passage": "passage: "}


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory, minilm_dir) -> str:
    """A tiny model whose config names prompts and a default one, as e5/bge-style models do."""
    path = Path(build_tiny_model(tmp_path_factory.mktemp("st") / "m", minilm_dir))
    config_file = path / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config.update(prompts=PROMPTS, default_prompt_name="query")
    config_file.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def st_model(prompted_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(prompted_model, device="cpu")


def _ours(model: str, **options) -> SentenceEncoder:
    return SentenceEncoder(EncoderSpec(model=model, runtime="cpu", precision="fp32", **options))


def test_truncate_dim_gives_sentence_transformers_own_vectors(prompted_model, st_model):
    want = st_model.encode(TEXTS, truncate_dim=16, prompt_name="passage")
    encoder = _ours(prompted_model, truncate_dim=16, prompt_name="passage")
    got = encoder.encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 16) and encoder.dimension == 16
    assert cosines(got, want).min() >= 0.9999
    # Normalised after the cut (the model has a Normalize module): ready for cosine search.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    with pytest.raises(UserInputError, match=r"truncateDim=65 is more than the model's "
                                             r"dimension \(64\)"):
        _ours(prompted_model, truncate_dim=65)


@pytest.mark.parametrize("prompt_name", ["", "query", "passage"])
def test_prompts_by_name_and_the_default_prompt(prompted_model, st_model, prompt_name):
    # sentence-transformers uses the model's default prompt when none is named; so do we.
    want = st_model.encode(TEXTS, prompt_name=prompt_name or None)
    got = _ours(prompted_model, prompt_name=prompt_name).encode(TEXTS)
    assert cosines(got, want).min() >= 0.9999
    without = st_model.encode(TEXTS, prompt="")
    assert cosines(got, without).min() < 0.9999  # the prompt really changed the vectors


def test_prompt_errors_name_the_fix(prompted_model):
    with pytest.raises(UserInputError, match=r"promptName='doc' is not one of the model's "
                                             r"prompts \(.*'passage', 'query'\)"):
        _ours(prompted_model, prompt_name="doc")
    with pytest.raises(ValueError, match="prompt and promptName are both set"):
        EncoderSpec(model=prompted_model, prompt="q: ", prompt_name="query")


def test_models_with_their_own_code_need_trust_remote_code(tmp_path, minilm_dir):
    path = Path(build_tiny_model(tmp_path / "m", minilm_dir))
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"ships its own Python code .* runs only with "
                                             r"trustRemoteCode=true"):
        _ours(str(path))


def test_revision_is_passed_to_the_hub(monkeypatch, tmp_path):
    import huggingface_hub

    from synapseml_ext.engine.model_files import resolve_model_dir

    asked = []

    def fake_download(repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model_dir("org/model", "v1.2") == tmp_path
    assert resolve_model_dir("org/model") == tmp_path
    assert asked == [("org/model", "v1.2"), ("org/model", None)]


def test_stage_params_reach_the_engine_and_are_saved(spark, prompted_model, st_model, tmp_path):
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    stage = HuggingFaceSentenceEmbedder(modelName=prompted_model, inputCol="text",
                                        runtime="cpu", precision="fp32", truncateDim=24,
                                        promptName="passage", revision="main")
    stage.save(str(tmp_path / "stage"))
    loaded = HuggingFaceSentenceEmbedder.load(str(tmp_path / "stage"))
    assert (loaded.getTruncateDim(), loaded.getPromptName(), loaded.getRevision(),
            loaded.getTrustRemoteCode()) == (24, "passage", "main", False)
    df = spark.createDataFrame([(t,) for t in TEXTS], "text string")
    got = np.stack(loaded.transform(df).toPandas()["embeddings"])
    want = st_model.encode(TEXTS, truncate_dim=24, prompt_name="passage")
    assert got.shape == (len(TEXTS), 24) and cosines(got, want).min() >= 0.9999


@pytest.fixture(scope="module")
def layernorm_model(tmp_path_factory, minilm_dir) -> str:
    """Transformer, Pooling, LayerNorm (random scale and shift), Dense, Normalize: a module
    type this engine does not implement itself."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    path = Path(build_tiny_model(tmp_path_factory.mktemp("ln") / "base", minilm_dir,
                                 normalize=False))
    base = SentenceTransformer(str(path), device="cpu")
    torch.manual_seed(3)
    norm = models.LayerNorm(64)
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.normal_(0, 0.3)
    dense = models.Dense(64, 32, activation_function=torch.nn.Tanh())
    out = path.parent / "layernorm"
    SentenceTransformer(modules=[base[0], base[1], norm, dense, models.Normalize()],
                        device="cpu").save(str(out))
    return str(out)


@pytest.mark.parametrize("runtime", ["cpu", "onnx"])
def test_other_module_types_run_as_sentence_transformers_defines_them(layernorm_model, runtime,
                                                                      tmp_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(layernorm_model, device="cpu")
    want = st.encode(TEXTS)
    encoder = SentenceEncoder(EncoderSpec(model=layernorm_model, runtime=runtime,
                                          precision="fp32", cache_dir=str(tmp_path)))
    got = encoder.encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 32)
    assert cosines(got, want).min() >= 0.9999
    assert any("LayerNorm" in t for t in encoder.model.files.library_modules)
    # The same stack without its LayerNorm gives other vectors: the module really ran.
    skipped = SentenceTransformer(modules=[st[0], st[1], st[3], st[4]], device="cpu")
    assert cosines(got, skipped.encode(TEXTS)).min() < 0.99
