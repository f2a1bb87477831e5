"""One embedding request, retried the way servers ask: backoff with jitter, ``Retry-After``."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass

import httpx
import numpy as np

from synapseml_ext.engine.errors import EngineError
from synapseml_ext.remote.api import ApiShape, safe_url

__all__ = ["RemoteEndpointError", "RetryPolicy", "TooManyInputsError", "post_embeddings"]

log = logging.getLogger("synapseml_ext.remote")

# Overload and server-side failures that a later attempt can get past.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_HINTS = {
    401: "check that apiKeyEnv names the variable holding the server's key on every executor",
    403: "the key is not allowed to use this endpoint or model",
    404: "check endpoint and apiFormat (tei: POST <endpoint>/embed, openai: "
         "POST <endpoint>/embeddings)",
    405: "check endpoint and apiFormat",
    422: "the server refused the inputs; check modelName and the server's limits",
}


class RemoteEndpointError(EngineError):
    """The embedding server refused a request, or kept failing past the retries."""


class TooManyInputsError(Exception):
    """413: the request holds more inputs (or tokens) than the server takes at once."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    # Longest Retry-After honoured: a server asking for more still gets retried at this.
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)], so tasks that failed
        together do not retry together."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** attempt))

    def delay(self, attempt: int, retry_after: str | None) -> float:
        wait = _parse_retry_after(retry_after)
        if wait is None:
            return self.backoff(attempt)
        return min(wait, self.max_retry_after) + random.uniform(0.0, self.base_delay)


async def post_embeddings(client: httpx.AsyncClient, shape: ApiShape, url: str, body: dict,
                          count: int, policy: RetryPolicy) -> tuple[np.ndarray, int]:
    """POST ``body`` to ``url`` until it succeeds: the vectors and the tokens counted.

    Retried: :data:`RETRY_STATUSES`, timeouts, refused and dropped connections, malformed
    responses. Raises :class:`TooManyInputsError` on 413 (the caller splits the batch) and
    :class:`RemoteEndpointError`, one line naming the endpoint, the status and the server's
    message, on any other refusal or once the retries are spent.
    """
    last = ""
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        try:
            response = await client.post(url, json=body)
        except httpx.TimeoutException:
            last = f"no response within {client.timeout.read or 0:g}s (requestTimeout)"
        except httpx.TransportError as e:
            last = f"{type(e).__name__}: {str(e) or 'connection failed'}"
        else:
            status = response.status_code
            if status == 413:
                raise TooManyInputsError(_server_message(response))
            if 200 <= status < 300:
                try:
                    return shape.parse(response.json(), count)
                except ValueError as e:  # also a JSON decode error: a cut-off body
                    last = f"a malformed response ({e})"
            elif status in RETRY_STATUSES:
                last = f"HTTP {status}: {_server_message(response)}"
                retry_after = response.headers.get("retry-after")
            else:
                hint = _HINTS.get(status, "the server refused the request")
                raise RemoteEndpointError(
                    f"embedding server {safe_url(url)} answered HTTP {status}: "
                    f"{_server_message(response)}; {hint}")
        if attempt < policy.max_retries:
            wait = policy.delay(attempt, retry_after)
            log.info("embedding request to %s failed (%s); retry %d/%d in %.2fs",
                     safe_url(url), last, attempt + 1, policy.max_retries, wait)
            await asyncio.sleep(wait)
    raise RemoteEndpointError(
        f"embedding server {safe_url(url)} failed {policy.max_retries + 1} times in a row, "
        f"last with {last}; check that the server is up and not overloaded, or raise "
        "maxRetries / requestTimeout")


def _server_message(response: httpx.Response) -> str:
    """The server's reason, one line, short: TEI's and OpenAI's ``error`` fields, else text."""
    try:
        payload = response.json()
    except ValueError:
        text = response.text
    else:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):  # OpenAI: {"error": {"message": ...}}
            error = error.get("message")
        text = str(error) if error else str(payload)
    text = " ".join(text.split())
    return (text[:300] + "...") if len(text) > 300 else (text or response.reason_phrase)


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
