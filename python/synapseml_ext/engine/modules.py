"""The sentence model as one torch module: transformer, pooling, dense layers.

Normalisation is left out on purpose: it is applied to the pooled output by the encoder for
every runtime alike, so exported graphs (ONNX, TensorRT) do not depend on the ``normalize``
option.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from synapseml_ext.engine.errors import ModelLoadError
from synapseml_ext.engine.model_files import DenseSpec, ModelFiles


class SentenceModule(nn.Module):
    """``(input_ids, attention_mask[, token_type_ids]) -> float32 (batch, dim)``.

    Rows are right-padded (the encoder pads that way); pooling accumulates in float32 whatever
    the transformer's dtype.
    """

    def __init__(
        self,
        transformer: nn.Module,
        pooling_modes: tuple[str, ...],
        dense: list[nn.Module],
        prompt_length: int = 0,
        uses_token_type_ids: bool = True,
        library_modules: nn.ModuleList | None = None,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.pooling_modes = pooling_modes
        self.dense = nn.Sequential(*dense)
        self.prompt_length = prompt_length
        self.uses_token_type_ids = uses_token_type_ids
        # sentence-transformers' own modules after the transformer, in place of our pooling
        # and dense layers, for module types this engine does not implement
        self.library_modules = library_modules

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_type_ids and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.transformer(**kwargs)[0].float()
        if self.library_modules is not None:
            features = {"input_ids": input_ids, "attention_mask": attention_mask,
                        "token_embeddings": hidden}
            if self.prompt_length:
                features["prompt_length"] = self.prompt_length
            for module in self.library_modules:
                features = module(features)
            return features["sentence_embedding"].float()
        pooled = pool(hidden, attention_mask, self.pooling_modes, self.prompt_length)
        return self.dense(pooled).float()


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    modes: tuple[str, ...],
    prompt_length: int = 0,
) -> torch.Tensor:
    """sentence-transformers' pooling for right-padded rows, concatenated over ``modes``."""
    mask = attention_mask
    if prompt_length:
        mask = mask.clone()
        mask[:, :prompt_length] = 0
    maskf = mask.unsqueeze(-1).to(hidden.dtype)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(hidden.masked_fill(maskf == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * maskf).sum(dim=1)
            count = maskf.sum(dim=1).clamp(min=1e-9)
            out.append(total / (count if mode == "mean" else count.sqrt()))
        elif mode == "weightedmean":
            positions = torch.arange(1, hidden.shape[1] + 1, dtype=hidden.dtype,
                                     device=hidden.device).view(1, -1, 1)
            weights = maskf * positions
            out.append((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9))
        elif mode == "lasttoken":
            last = attention_mask.sum(dim=1).clamp(min=1) - 1
            index = last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
            out.append(torch.gather(hidden, 1, index).squeeze(1))
        else:  # model_files validates modes; this guards direct callers
            raise ValueError(f"unsupported pooling mode {mode!r}")
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def build_sentence_module(
    files: ModelFiles,
    *,
    attn_implementation: str = "sdpa",
    prompt_length: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SentenceModule:
    """Load the transformer weights and the post-pooling layers of ``files`` (eval mode)."""
    from transformers import AutoModel

    try:
        transformer, info = AutoModel.from_pretrained(
            str(files.transformer_dir),
            attn_implementation=attn_implementation,
            dtype=dtype,
            output_loading_info=True,
            trust_remote_code=files.trust_remote_code,
        )
    except (ValueError, ImportError):
        # Architectures without SDPA support fall back to their default attention.
        transformer, info = AutoModel.from_pretrained(
            str(files.transformer_dir), dtype=dtype, output_loading_info=True,
            trust_remote_code=files.trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"could not load transformer weights from {files.transformer_dir}: {e}") from e
    _check_all_weights_loaded(files, info)
    type_vocab = int(getattr(transformer.config, "type_vocab_size", 0) or 0)
    library = _library_modules(files) if files.library_modules else None
    dense = [] if library is not None else [_load_dense(d) for d in files.dense]
    module = SentenceModule(
        transformer,
        files.pooling_modes,
        dense,
        prompt_length=0 if files.include_prompt else prompt_length,
        uses_token_type_ids=type_vocab > 1,
        library_modules=library,
    )
    return module.eval()


def _library_modules(files: ModelFiles) -> nn.ModuleList:
    """The modules after the transformer, loaded by sentence-transformers itself.

    Our own pooling and dense layers cover the common stacks (and were measured faster to
    export); any other module type (LayerNorm, WeightedLayerPooling, a custom module, ...)
    runs as the library defines it. Normalize is left to the encoder, as for every model.
    """
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Normalize
    except ImportError as e:
        from synapseml_ext.engine.errors import missing_package

        raise missing_package(
            "sentence-transformers", "modules",
            f"model {files.root.name!r} (modules {', '.join(files.library_modules)})") from e
    try:
        model = SentenceTransformer(str(files.root), device="cpu",
                                    trust_remote_code=files.trust_remote_code)
    except Exception as e:
        raise ModelLoadError(
            f"sentence-transformers could not load the modules of {files.root} "
            f"({', '.join(files.library_modules)}): {type(e).__name__}: {e}") from e
    return nn.ModuleList([m for m in list(model)[1:] if not isinstance(m, Normalize)]).eval()


def _check_all_weights_loaded(files: ModelFiles, info: dict) -> None:
    """transformers fills weights missing from the checkpoint with random values and only
    warns: a damaged or wrong weights file would give plausible, wrong vectors."""
    # The pooler head is not part of a sentence embedding (pooling reads the hidden states).
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelLoadError(
            f"the weights in {files.transformer_dir} lack {len(missing)} tensor(s) the model "
            f"needs ({shown}): the weights file is damaged or belongs to another model; copy "
            "or download the model again")


def _load_dense(spec: DenseSpec) -> nn.Module:
    linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
    state = _read_state_dict(spec.path)
    weights = {k.removeprefix("linear."): v for k, v in state.items() if k.startswith("linear.")}
    linear.load_state_dict(weights)
    activation = getattr(nn, spec.activation, None)
    if activation is None:
        raise ModelLoadError(f"Dense module {spec.path}: unknown activation {spec.activation!r}")
    return nn.Sequential(linear, activation())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelLoadError(f"Dense module {path} has no model.safetensors or pytorch_model.bin")
