"""The options of one encoder, validated in one place.

``HuggingFaceSentenceEmbedder``'s Params map one to one onto :class:`EncoderSpec`; the Param
setters call :func:`validate_option` so a bad value fails on the driver, before any task runs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

RUNTIMES = ("cpu", "onnx", "cuda", "tensorrt", "auto", "remote")
API_FORMATS = ("tei", "openai")
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
    # sentence-transformers' own options: Matryoshka truncation, the model's named prompts,
    # a pinned hub revision, and whether the model's own Python code may run
    truncate_dim: int = 0
    prompt_name: str = ""
    revision: str = ""
    trust_remote_code: bool = False
    # runtime="remote": an embedding server does the work (synapseml_ext.remote)
    endpoint: str = ""
    api_format: str = "tei"
    api_key_env: str = ""
    max_concurrent_requests: int = 4
    request_timeout: float = 60.0
    max_retries: int = 5

    def __post_init__(self) -> None:
        for f in fields(self):
            validate_option(f.name, getattr(self, f.name))
        check_runtime_precision(self.runtime, self.precision)
        if self.prompt and self.prompt_name:
            raise ValueError(f"prompt and promptName are both set ({self.prompt!r}, "
                             f"{self.prompt_name!r}): set one of them")
        if self.runtime == "remote" and not self.endpoint:
            raise ValueError("runtime='remote' needs endpoint: the embedding server's URL, "
                             "e.g. http://tei-host:8080 (apiFormat='tei') or "
                             "https://host/v1 (apiFormat='openai')")

    def to_dict(self) -> dict:
        return asdict(self)


def validate_option(name: str, value) -> None:
    """Raise ``ValueError`` naming the option and the allowed values when ``value`` is bad."""
    rule = RULES.get(name)
    if rule is not None:
        rule.check(_param_name(name), value)


def check_runtime_precision(runtime: str, precision: str) -> None:
    """Raise ``ValueError`` for a precision the runtime can never run, whatever the hardware
    (checked on the driver; what the hardware allows is checked on the worker).

    cpu: fp32, bf16. onnx: fp32. cuda: fp16, bf16, fp32. tensorrt: fp16, fp32. ``auto``
    means fp16 on a GPU, and bf16 or fp32 on a CPU (by its flags).
    """
    if runtime == "remote" and precision != "auto":
        raise ValueError(
            f"precision={precision!r} cannot be chosen with runtime='remote': the embedding "
            "server runs its own precision; leave precision='auto'")
    if precision == "fp16" and runtime == "cpu":
        raise ValueError(
            "precision='fp16' needs a GPU (runtime='cuda' or 'tensorrt'); on CPU use "
            "'bf16', 'fp32' or 'auto'")
    if runtime == "onnx" and precision in ("bf16", "fp16"):
        raise ValueError(
            f"precision={precision!r} is not supported by runtime='onnx' (ONNX Runtime on "
            "CPU runs fp32); use runtime='cpu' for bf16")
    if runtime == "tensorrt" and precision == "bf16":
        raise ValueError(
            "precision='bf16' is not supported by runtime='tensorrt' (its engines are built "
            "in fp16 or fp32); use runtime='cuda' for bf16")


# The rules are data, not closures, so that synapseml_ext.codegen can emit the same checks
# (and the same messages) into the generated Scala stages.


class Rule(Protocol):
    """A check on one option's values; raises ``ValueError`` naming the option."""

    def check(self, name: str, value: Any) -> None: ...


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
class Matches:
    """A whole-string regular expression (the same syntax in Python and Java). ``echo=False``
    keeps the value out of the message (it may be a secret typed in the wrong place)."""

    pattern: str
    what: str
    echo: bool = True

    def check(self, name: str, value) -> None:
        if not isinstance(value, str) or re.fullmatch(self.pattern, value) is None:
            got = f", got {value!r}" if self.echo else ""
            raise ValueError(f"{name} must be {self.what}{got}")


@dataclass(frozen=True)
class OptionalBool:
    def check(self, name: str, value) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be true, false or unset, got {value!r}")


RULES: dict[str, Rule] = {
    "model": NonBlank("a hub id or a local model directory"),
    "runtime": OneOf(RUNTIMES),
    "precision": OneOf(PRECISIONS),
    "batch_size": IntAtLeast(1),
    "max_tokens_per_batch": IntAtLeast(0),
    "max_seq_length": IntAtLeast(0),
    "num_threads": IntAtLeast(0),
    "min_cosine": NumberIn(0.0, 1.0),
    "normalize": OptionalBool(),
    "truncate_dim": IntAtLeast(0),
    "trust_remote_code": OptionalBool(),
    "endpoint": Matches(r"(https?://[^/?#@\s]+(/[^?#@\s]*)?(\?[^#@\s]*)?)?",
                        "empty or an http(s) URL without credentials (put the key in the "
                        "environment variable that apiKeyEnv names)"),
    "api_format": OneOf(API_FORMATS),
    "api_key_env": Matches(r"([A-Za-z_][A-Za-z0-9_]*)?",
                           "the NAME of an environment variable holding the key (e.g. "
                           "TEI_API_KEY), never the key itself", echo=False),
    "max_concurrent_requests": IntAtLeast(1),
    "request_timeout": NumberIn(0.001, 86400.0),
    "max_retries": IntAtLeast(0),
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
    "truncate_dim": "truncateDim",
    "prompt_name": "promptName",
    "trust_remote_code": "trustRemoteCode",
    "api_format": "apiFormat",
    "api_key_env": "apiKeyEnv",
    "max_concurrent_requests": "maxConcurrentRequests",
    "request_timeout": "requestTimeout",
    "max_retries": "maxRetries",
}


def _param_name(name: str) -> str:
    return _PARAM_NAMES.get(name, name)
