"""Errors the engine raises, each naming what is wrong and how to fix it."""

from __future__ import annotations


class EngineError(RuntimeError):
    """Base class for synapseml-ext engine errors."""


class ModelLoadError(EngineError):
    """The model cannot be found or is not a supported sentence-transformers model."""


class RuntimeUnavailableError(EngineError):
    """An explicitly requested runtime cannot run here (no GPU, missing package, ...)."""


def missing_package(package: str, extra: str, purpose: str) -> RuntimeUnavailableError:
    """The one error style for optional imports: what is missing and which extra installs it."""
    return RuntimeUnavailableError(
        f"{purpose} needs the Python package {package!r}, which is not installed on this "
        f"worker; install it with: pip install 'synapseml-ext[{extra}]'"
    )
