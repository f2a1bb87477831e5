"""The two request/response shapes a remote embedding server speaks: TEI's and OpenAI's."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np

__all__ = ["API_SHAPES", "ApiShape", "safe_url"]


def safe_url(url: str) -> str:
    """``url`` without its query and fragment: what error messages and logs may show (a query
    can carry a key, e.g. Azure's ``?api-key=``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True)
class ApiShape:
    """How one API names its route, request body and response."""

    name: str
    route: str          # appended to the endpoint unless the endpoint already ends with it
    info_route: str     # where the server describes its limits ("" when the API has none)
    default_batch: int  # inputs per request when the server does not say

    def url(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        path = parts.path.rstrip("/")
        if not path.endswith(self.route):
            path += self.route
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    def info_url(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        path = parts.path.rstrip("/")
        if path.endswith(self.route):
            path = path[: -len(self.route)]
        return urlunsplit((parts.scheme, parts.netloc, path + self.info_route, parts.query, ""))

    def body(self, texts: list[str], model: str, normalize: bool | None,
             prompt_name: str = "") -> dict:
        if self.name == "tei":
            # The local runtimes truncate at the model's max_seq_length; ask TEI to do the same.
            body: dict = {"inputs": texts, "truncate": True}
            if normalize is not None:
                body["normalize"] = normalize
            if prompt_name:
                body["prompt_name"] = prompt_name
            return body
        return {"input": texts, "model": model, "encoding_format": "float"}

    def parse(self, payload: object, count: int) -> tuple[np.ndarray, int]:
        """The vectors (float32, one row per input, in input order) and the tokens the server
        counted (0 when it does not say). Raises ``ValueError`` on a malformed response."""
        tokens = 0
        if self.name == "tei":
            rows = payload
        else:
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
                raise ValueError("the response has no 'data' list")
            items = sorted(payload["data"], key=lambda item: item.get("index", 0))
            rows = [item.get("embedding") for item in items]
            usage = payload.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        if not isinstance(rows, list) or len(rows) != count:
            got = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise ValueError(f"the server returned {got} embeddings for {count} inputs")
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError("the embeddings are not lists of numbers of one length") from e
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise ValueError(f"the embeddings have shape {vectors.shape}, not (inputs, dim)")
        if not np.isfinite(vectors).all():
            raise ValueError("the embeddings hold NaN or infinite values")
        return vectors, tokens


API_SHAPES = {
    "tei": ApiShape("tei", "/embed", "/info", default_batch=32),
    # OpenAI accepts up to 2048 inputs per request; the stage's batchSize applies.
    "openai": ApiShape("openai", "/embeddings", "", default_batch=2048),
}
