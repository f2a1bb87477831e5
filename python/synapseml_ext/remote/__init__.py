"""``runtime="remote"``: embeddings from an embedding server (TEI, ``synapseml-ext serve``,
OpenAI-compatible APIs) instead of a model on every executor."""

from synapseml_ext.remote.api import API_SHAPES, ApiShape, safe_url
from synapseml_ext.remote.client import RemoteEndpointError, RetryPolicy
from synapseml_ext.remote.encoder import RemoteEncoder, check_endpoint, get_remote_encoder

__all__ = [
    "API_SHAPES",
    "ApiShape",
    "RemoteEncoder",
    "RemoteEndpointError",
    "RetryPolicy",
    "check_endpoint",
    "get_remote_encoder",
    "safe_url",
]
