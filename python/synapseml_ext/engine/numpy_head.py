"""What follows the transformer (pooling, Dense layers) in NumPy, for workers without torch.

A model's own ONNX graph in sentence-transformers' layout (``onnx/model.onnx`` beside the
transformer's files, as hub models such as all-MiniLM-L6-v2 ship it) ends at the token
embeddings; sentence-transformers runs its pooling and Dense modules in torch after it. This
is the same arithmetic as :func:`synapseml_ext.engine.modules.pool` for right-padded rows.
Normalisation stays with the encoder, as for every runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from synapseml_ext.engine.errors import ModelLoadError
from synapseml_ext.engine.model_files import DenseSpec, ModelFiles

_SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0),
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def pool(hidden: np.ndarray, attention_mask: np.ndarray, modes: tuple[str, ...],
         prompt_length: int = 0) -> np.ndarray:
    """sentence-transformers' pooling of ``hidden`` (batch, seq, dim), concatenated over
    ``modes``; float32."""
    hidden = hidden.astype(np.float32, copy=False)
    mask = attention_mask.astype(np.float32)
    if prompt_length:
        mask[:, :prompt_length] = 0
    maskf = mask[:, :, None]
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(hidden[:, 0])
        elif mode == "max":
            out.append(np.where(maskf > 0, hidden, -np.inf).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * maskf).sum(axis=1)
            count = np.maximum(maskf.sum(axis=1), 1e-9)
            out.append(total / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = maskf * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
            out.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        elif mode == "lasttoken":
            last = np.maximum(attention_mask.sum(axis=1), 1) - 1
            out.append(hidden[np.arange(hidden.shape[0]), last])
        else:  # model_files validates modes; this guards direct callers
            raise ValueError(f"unsupported pooling mode {mode!r}")
    return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)


class DenseLayer:
    """``activation(x @ weight.T + bias)``, as ``sentence_transformers.models.Dense``."""

    def __init__(self, spec: DenseSpec) -> None:
        activation = _ACTIVATIONS.get(spec.activation)
        if activation is None:
            raise ModelLoadError(
                f"Dense module {spec.path}: activation {spec.activation!r} needs torch on this "
                "worker; install it with: pip install 'synapseml-ext[cpu]'")
        state = _read_safetensors(spec.path)
        self.weight = state["linear.weight"]  # float32, as _read_safetensors returns them
        self.bias = state["linear.bias"] if spec.bias else None
        self.activation = activation

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return self.activation(y)


class SentenceHead:
    """Token embeddings -> sentence embeddings for one model's pooling and Dense layers."""

    def __init__(self, files: ModelFiles, prompt_length: int = 0) -> None:
        if files.library_modules:
            raise ModelLoadError(
                f"model {files.root.name}: modules {list(files.library_modules)} run in "
                "sentence-transformers, which needs torch on this worker; install them with: "
                "pip install 'synapseml-ext[cpu,modules]'")
        self.modes = files.pooling_modes
        self.prompt_length = 0 if files.include_prompt else prompt_length
        self.dense = [DenseLayer(d) for d in files.dense]

    def __call__(self, token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = pool(token_embeddings, attention_mask, self.modes, self.prompt_length)
        for layer in self.dense:
            out = layer(out)
        return out.astype(np.float32, copy=False)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of ``path/model.safetensors`` as float32. Read here, not with
    ``safetensors.numpy``: NumPy has no bfloat16, which Dense layers may be stored in."""
    file = path / "model.safetensors"
    if not file.exists():
        raise ModelLoadError(
            f"Dense module {path} has no model.safetensors (a pytorch_model.bin needs torch "
            "on this worker; install it with: pip install 'synapseml-ext[cpu]')")
    data = file.read_bytes()
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        body = memoryview(data)[8 + size:]
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            raw = np.frombuffer(body[start:end], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
            if info["dtype"] == "BF16":  # the high half of a float32
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = raw.astype(np.float32).reshape(info["shape"])
        return tensors
    except (KeyError, ValueError, TypeError) as e:
        raise ModelLoadError(f"{file} is not a safetensors file this worker can read without "
                             f"torch ({e}); install torch: pip install 'synapseml-ext[cpu]'") from e
