"""Spark-free sentence encoders: tokenise, batch, run, pool, normalise.

Importable and usable without pyspark (a GPU box, a notebook, a benchmark)::

    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    encoder = SentenceEncoder(EncoderSpec(model="/models/all-MiniLM-L6-v2", runtime="onnx"))
    vectors = encoder.encode(["first text", "second text"])   # float32 (2, 384)
"""

from synapseml_ext.engine.encoder import (
    EncodeStats,
    ModelCache,
    SentenceEncoder,
    get_encoder,
    load_model,
)
from synapseml_ext.engine.errors import EngineError, ModelLoadError, RuntimeUnavailableError
from synapseml_ext.engine.spec import PRECISIONS, RUNTIMES, EncoderSpec, validate_option

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "EncodeStats",
    "EncoderSpec",
    "EngineError",
    "ModelCache",
    "ModelLoadError",
    "RuntimeUnavailableError",
    "SentenceEncoder",
    "get_encoder",
    "load_model",
    "validate_option",
]
