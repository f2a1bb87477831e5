"""Find a sentence-transformers model on disk and read its own configuration.

Everything the encoder does after the transformer (pooling, dense layers, normalisation) comes
from the model's files (``modules.json``, ``1_Pooling/config.json``, ...), never from guesses.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from synapseml_ext.engine.errors import DamagedModelError, ModelLoadError

_POOLING_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_MODES = frozenset(_POOLING_LEGACY_KEYS.values())

# Files whose bytes define the model: hashed whole when small, sampled when large.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class DenseSpec:
    """A ``sentence_transformers.models.Dense`` layer after pooling."""

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # the class name, e.g. "Tanh" or "Identity"


@dataclass(frozen=True)
class ModelFiles:
    """What the encoder needs to know about one sentence-transformers model directory."""

    root: Path
    transformer_dir: Path
    pooling_modes: tuple[str, ...]
    include_prompt: bool
    dense: tuple[DenseSpec, ...]
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    prompts: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    default_prompt_name: str = ""
    # config.json maps its classes to Python files shipped with the model (auto_map)
    needs_remote_code: bool = False
    # the user's choice (trustRemoteCode), set by the encoder before any weights load
    trust_remote_code: bool = False
    # module types this engine does not implement (e.g. LayerNorm): sentence-transformers
    # loads the modules after the transformer (see engine.modules)
    library_modules: tuple[str, ...] = ()
    hidden_size: int = 0
    num_attention_heads: int = 0
    model_type: str = ""
    # the embedding table's rows (config.json): a tokenizer far smaller lost its vocabulary
    vocab_size: int = 0

    def fingerprint(self) -> str:
        """A content hash of the model: stable across machines and paths, so a cache keyed by
        it can live on a shared file system."""
        return _fingerprint_dir(self.root)


def resolve_model_dir(model_name: str, revision: str = "") -> Path:
    """A local directory as is; otherwise a Hugging Face hub id at ``revision`` (a branch, tag
    or commit; the default branch when empty), downloaded once (cached by huggingface_hub;
    honours HF_HUB_OFFLINE)."""
    if not model_name:
        raise ModelLoadError("modelName is empty: give a hub id or a local model directory")
    path = Path(os.path.expanduser(model_name))
    if path.is_dir():
        return path.resolve()
    if path.is_absolute() or model_name.startswith((".", "~")):
        raise ModelLoadError(f"model directory {model_name!r} does not exist on this machine")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelLoadError("huggingface_hub is needed to download hub models") from e
    try:
        return Path(snapshot_download(model_name, revision=revision or None,
                                      ignore_patterns=_hub_files_not_needed()))
    except Exception as e:
        raise ModelLoadError(
            f"could not load model {model_name!r}: it is not a local directory and the "
            f"Hugging Face hub could not provide it ({type(e).__name__}: {e}). Pass a local "
            "directory that holds the model, or allow network access to the hub."
        ) from e


def _hub_files_not_needed() -> list[str]:
    """Other frameworks' weights and the ONNX variants a repository may carry (hundreds of
    MB each); the model's own ``onnx/model.onnx`` only where it will run (no torch)."""
    from synapseml_ext.engine.hardware import onnx_exporter_installed

    patterns = ["*.msgpack", "*.h5", "*.ot", "openvino/*", "onnx/model_*"]
    return patterns + (["onnx/*"] if onnx_exporter_installed() else [])


@lru_cache(maxsize=16)
def cached_model_files(model_name: str, max_seq_length: int = 0,
                       revision: str = "") -> ModelFiles:
    """:func:`read_model_files`, once per process (hub ids resolve once)."""
    return read_model_files(model_name, max_seq_length, revision)


def read_model_files(model_name: str, max_seq_length: int = 0, revision: str = "") -> ModelFiles:
    """Read the sentence-transformers configuration of ``model_name``.

    A plain Hugging Face transformer directory (no ``modules.json``) gets the
    sentence-transformers defaults for such models: mean pooling, no normalisation.
    """
    root = resolve_model_dir(model_name, revision)
    modules = _read_json(root / "modules.json", default=None)
    transformer_dir = root
    pooling_modes: tuple[str, ...] = ("mean",)
    include_prompt = True
    dense: list[DenseSpec] = []
    normalize = False
    seen_pooling = False
    library: list[str] = []
    if modules is not None:
        for module in sorted(modules, key=lambda m: m.get("idx", 0)):
            kind = module.get("type", "").rsplit(".", 1)[-1]
            mdir = root / module.get("path", "")
            if kind == "Transformer":
                transformer_dir = mdir
            elif kind == "Pooling":
                cfg = _read_json(mdir / "config.json", default={})
                pooling_modes = _pooling_modes(cfg, mdir)
                include_prompt = bool(cfg.get("include_prompt", True))
                seen_pooling = True
            elif kind == "Dense":
                dense.append(_dense_spec(mdir))
            elif kind == "Normalize":
                normalize = True
            else:
                library.append(str(module.get("type")))
        if not seen_pooling and not library:
            raise ModelLoadError(f"model {model_name!r}: modules.json has no Pooling module")
    st_cfg = _read_json(transformer_dir / "sentence_bert_config.json", default={}) or _read_json(
        root / "sentence_bert_config.json", default={}
    )
    hf_cfg = _read_json(transformer_dir / "config.json", default=None)
    if hf_cfg is None:
        raise ModelLoadError(f"{transformer_dir} has no config.json: not a transformers model")
    for name in _TOKENIZER_JSON:  # transformers would fail on a damaged one without its name
        _read_json(transformer_dir / name, default=None)
    model_max = int(st_cfg.get("max_seq_length") or 0)
    position_limit = int(hf_cfg.get("max_position_embeddings") or 0)
    if hf_cfg.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        position_limit -= 2  # these reserve two positions for the padding offset
    if not model_max:
        tok_cfg = _read_json(transformer_dir / "tokenizer_config.json", default={})
        model_max = int(tok_cfg.get("model_max_length") or 0)
        if model_max <= 0 or model_max > 100_000:
            model_max = position_limit or 512
    if position_limit > 0:
        model_max = min(model_max, position_limit)
    seq_len = int(max_seq_length) if max_seq_length and max_seq_length > 0 else model_max
    if position_limit > 0 and seq_len > position_limit:
        raise ModelLoadError(
            f"maxSeqLength={seq_len} is more than model {model_name!r} supports "
            f"({position_limit} positions)"
        )
    st_model_cfg = _read_json(root / "config_sentence_transformers.json", default={})
    prompts = st_model_cfg.get("prompts") or {}
    return ModelFiles(
        root=root,
        transformer_dir=transformer_dir,
        pooling_modes=pooling_modes,
        include_prompt=include_prompt,
        dense=tuple(dense),
        normalize=normalize,
        max_seq_length=seq_len,
        do_lower_case=bool(st_cfg.get("do_lower_case", False)),
        prompts=dict(prompts),
        default_prompt_name=str(st_model_cfg.get("default_prompt_name") or ""),
        needs_remote_code=bool(hf_cfg.get("auto_map")),
        library_modules=tuple(library),
        hidden_size=int(hf_cfg.get("hidden_size") or hf_cfg.get("d_model") or 0),
        num_attention_heads=int(hf_cfg.get("num_attention_heads") or 0),
        model_type=str(hf_cfg.get("model_type", "")),
        vocab_size=int(hf_cfg.get("vocab_size") or 0),
    )


def _pooling_modes(cfg: dict, mdir: Path) -> tuple[str, ...]:
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _POOLING_LEGACY_KEYS.items() if cfg.get(key))
    if not modes:
        raise ModelLoadError(f"{mdir / 'config.json'} enables no pooling mode")
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise ModelLoadError(
            f"{mdir / 'config.json'}: pooling mode(s) {unknown} not supported; supported: "
            f"{sorted(POOLING_MODES)}"
        )
    return modes


def _dense_spec(mdir: Path) -> DenseSpec:
    cfg = _read_json(mdir / "config.json", default=None)
    if cfg is None:
        raise ModelLoadError(f"Dense module {mdir} has no config.json")
    activation = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
    return DenseSpec(
        path=mdir,
        in_features=int(cfg["in_features"]),
        out_features=int(cfg["out_features"]),
        bias=bool(cfg.get("bias", True)),
        activation=activation.rsplit(".", 1)[-1],
    )


_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _read_json(path: Path, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut inside a character too
        raise DamagedModelError(f"{path} is damaged (not valid JSON: {e}): save or download "
                                "the model again") from e


_SAMPLE = 1 << 20


def _fingerprint_dir(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel.endswith(".md") or "onnx" in rel:
            continue
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= 4 * _SAMPLE or not rel.endswith(_WEIGHT_SUFFIXES):
                digest.update(f.read())
            else:
                # Large weight files: their size plus their first, middle and last MiB
                # identify them well enough and keep this cheap for multi-GB models.
                for offset in (0, size // 2, size - _SAMPLE):
                    f.seek(offset)
                    digest.update(f.read(_SAMPLE))
    return digest.hexdigest()[:24]
