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
    rule = RULES.get(name)
    if rule is not None:
        rule.check(_param_name(name), value)


# The rules are data, not closures, so that synapseml_ext.codegen can emit the same checks
# (and the same messages) into the generated Scala stages.


@dataclass(frozen=True)
class OneOf:
    allowed: tuple[str, ...]

    def check(self, name: str, value) -> None:
        if value not in self.allowed:
            raise ValueError(
                f"unknown {name} {value!r}; expected one of: {', '.join(self.allowed)}")


@dataclass(frozen=True)
class IntAtLeast:
    low: int

    def check(self, name: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < self.low:
            what = "a positive integer" if self.low == 1 else f"an integer >= {self.low}"
            raise ValueError(f"{name} must be {what}, got {value!r}")


@dataclass(frozen=True)
class NonBlank:
    what: str

    def check(self, name: str, value) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be {self.what}, got {value!r}")


@dataclass(frozen=True)
class NumberIn:
    low: float
    high: float

    def check(self, name: str, value) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not self.low <= float(value) <= self.high):
            raise ValueError(f"{name} must be a number in [{self.low:g}, {self.high:g}], "
                             f"got {value!r}")


@dataclass(frozen=True)
class OptionalBool:
    def check(self, name: str, value) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be true, false or unset, got {value!r}")


RULES = {
    "model": NonBlank("a hub id or a local model directory"),
    "runtime": OneOf(RUNTIMES),
    "precision": OneOf(PRECISIONS),
    "batch_size": IntAtLeast(1),
    "max_tokens_per_batch": IntAtLeast(0),
    "max_seq_length": IntAtLeast(0),
    "num_threads": IntAtLeast(0),
    "min_cosine": NumberIn(0.0, 1.0),
    "normalize": OptionalBool(),
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
