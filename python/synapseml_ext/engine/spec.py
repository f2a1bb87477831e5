"""The options of one encoder, validated in one place.

``HuggingFaceSentenceEmbedder``'s Params map one to one onto :class:`EncoderSpec`; the Param
setters call :func:`validate_option` so a bad value fails on the driver, before any task runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

RUNTIMES = ("cpu", "onnx", "cuda", "tensorrt", "auto")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides what an encoder computes and how.

    ``0`` / ``None`` / ``""`` mean "the model's or the runtime's own choice".
    """

    model: str
    runtime: str = "auto"
    precision: str = "auto"
    batch_size: int = 256
    max_tokens_per_batch: int = 0
    max_seq_length: int = 0
    normalize: bool | None = None
    prompt: str = ""
    cache_dir: str = ""
    num_threads: int = 0
    min_cosine: float = 0.999

    def __post_init__(self) -> None:
        for f in fields(self):
            validate_option(f.name, getattr(self, f.name))

    def to_dict(self) -> dict:
        return asdict(self)


def validate_option(name: str, value) -> None:
    """Raise ``ValueError`` naming the option and the allowed values when ``value`` is bad."""
    check = _CHECKS.get(name)
    if check is not None:
        check(name, value)


def _one_of(allowed):
    def check(name, value):
        if value not in allowed:
            raise ValueError(
                f"unknown {_param_name(name)} {value!r}; expected one of: {', '.join(allowed)}"
            )

    return check


def _int_at_least(low: int):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise ValueError(f"{_param_name(name)} must be {what}, got {value!r}")

    return check


def _model(name, value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError("modelName must be a hub id or a local model directory, got "
                         f"{value!r}")


def _min_cosine(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"minCosine must be a number in [0, 1], got {value!r}")


def _normalize(name, value):
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"normalize must be true, false or unset, got {value!r}")


_CHECKS = {
    "model": _model,
    "runtime": _one_of(RUNTIMES),
    "precision": _one_of(PRECISIONS),
    "batch_size": _int_at_least(1),
    "max_tokens_per_batch": _int_at_least(0),
    "max_seq_length": _int_at_least(0),
    "num_threads": _int_at_least(0),
    "min_cosine": _min_cosine,
    "normalize": _normalize,
}

# Spark Param names, for error messages that name what the user typed.
_PARAM_NAMES = {
    "model": "modelName",
    "batch_size": "batchSize",
    "max_tokens_per_batch": "maxTokensPerBatch",
    "max_seq_length": "maxSeqLength",
    "num_threads": "numThreads",
    "min_cosine": "minCosine",
    "cache_dir": "cacheDir",
}


def _param_name(name: str) -> str:
    return _PARAM_NAMES.get(name, name)
