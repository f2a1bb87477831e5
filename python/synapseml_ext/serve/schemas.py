"""The two request shapes (TEI's ``/embed``, OpenAI's ``/v1/embeddings``), checked."""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from synapseml_ext.serve.engine import RequestError


@dataclass(frozen=True)
class TeiRequest:
    texts: list[str]
    normalize: bool = True
    truncate: bool | None = None  # None: the server's --auto-truncate
    prompt_name: str | None = None


@dataclass(frozen=True)
class OpenAIRequest:
    texts: list[str]
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_json(raw: bytes) -> dict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise _invalid(f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    return body


def parse_tei(body: dict) -> TeiRequest:
    return TeiRequest(
        texts=_texts(body, "inputs"),
        normalize=_typed(body, "normalize", bool, "true or false", default=True),
        truncate=_typed(body, "truncate", bool, "true, false or null"),
        prompt_name=_typed(body, "prompt_name", str, "a string or null"),
    )


def parse_openai(body: dict) -> OpenAIRequest:
    fmt = _typed(body, "encoding_format", str, '"float" or "base64"', default="float")
    if fmt not in ("float", "base64"):
        raise _invalid(f'"encoding_format" must be "float" or "base64", got {fmt!r}')
    dims = _typed(body, "dimensions", int, "a positive integer")
    if isinstance(dims, bool):
        raise _invalid('"dimensions" must be a positive integer')
    return OpenAIRequest(texts=_texts(body, "input"),
                         model=_typed(body, "model", str, "a string"),
                         encoding_format=fmt, dimensions=dims)


def _texts(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if isinstance(value, str):
        return [value]
    if value is None:
        raise _invalid(f'"{key}" is required: a string or a list of strings')
    if not isinstance(value, list):
        raise _invalid(f'"{key}" must be a string or a list of strings, '
                       f"got {type(value).__name__}")
    if not value:
        raise _invalid(f'"{key}" is an empty list: send at least one string')
    for i, item in enumerate(value):
        if not isinstance(item, str):
            what = "null" if item is None else type(item).__name__
            raise _invalid(f'"{key}"[{i}] is {what}: every input must be a string '
                           "(token arrays are not supported)")
    return value


def _typed(body: dict, key: str, kind: type, expected: str, default=None):
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _invalid(f'"{key}" must be {expected}, got {json.dumps(value)[:40]}')
    return value


def _invalid(message: str) -> RequestError:
    return RequestError(422, message)
