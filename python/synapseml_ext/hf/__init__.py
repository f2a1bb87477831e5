"""Spark ML stages for Hugging Face sentence-transformers models."""

from synapseml_ext.hf.embedder import HuggingFaceSentenceEmbedder

__all__ = ["HuggingFaceSentenceEmbedder"]
