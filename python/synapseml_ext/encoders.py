"""The encoder a worker runs for an :class:`~synapseml_ext.engine.EncoderSpec`: this process's
cached model (:mod:`synapseml_ext.engine`) or, for ``runtime="remote"``, this process's client
of the embedding server (:mod:`synapseml_ext.remote`). It sits above both packages, so that
neither imports the other."""

from __future__ import annotations

from synapseml_ext.engine import EncoderSpec, SentenceEncoder
from synapseml_ext.engine import get_encoder as get_local_encoder
from synapseml_ext.remote import RemoteEncoder, get_remote_encoder

__all__ = ["get_encoder"]


def get_encoder(spec: EncoderSpec) -> SentenceEncoder | RemoteEncoder:
    """Both answer ``encode``, ``encode_many``, ``stats``, ``runtime`` and ``precision``."""
    if spec.runtime == "remote":
        return get_remote_encoder(spec)
    return get_local_encoder(spec)
