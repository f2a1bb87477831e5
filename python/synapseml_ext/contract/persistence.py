"""Reading saved stages whose metadata may come from Scala (see :mod:`.names`)."""

from __future__ import annotations

from typing import Any

from pyspark.ml.util import DefaultParamsReadable, DefaultParamsReader

from synapseml_ext.contract.checked_params import CheckedParams
from synapseml_ext.contract.names import by_any_name

__all__ = ["BridgedParamsReadable", "BridgedParamsReader"]


def _python_class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__name__}"


def accepted_class_names(cls: type) -> tuple[str, ...]:
    python_name = _python_class_name(cls)
    stage = by_any_name(python_name)
    return stage.names if stage else (python_name,)


class BridgedParamsReader(DefaultParamsReader):
    """``DefaultParamsReader`` that also takes the Scala stub's class name in ``metadata/``
    (pyspark's own reader imports whatever class the metadata names)."""

    def load(self, path: str) -> Any:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        return instance_from_metadata(self.cls, metadata, path)


def instance_from_metadata(cls: type, metadata: dict, where: str) -> Any:
    """A ``cls`` with the uid and Params of ``metadata`` (as ``DefaultParamsReader`` does),
    each value passed through the setters' checks."""
    accepted = accepted_class_names(cls)
    if metadata["class"] not in accepted:
        raise ValueError(f"{where} holds a {metadata['class']}, not a {cls.__name__} "
                         f"(expected class {' or '.join(accepted)})")
    instance = cls()
    instance._resetUid(metadata["uid"])
    DefaultParamsReader.getAndSetParams(instance, metadata)
    if isinstance(instance, CheckedParams):
        instance.checkParams()
    return instance


class BridgedParamsReadable(DefaultParamsReadable):
    """``DefaultParamsReadable`` whose reader accepts stages saved from Scala too."""

    @classmethod
    def read(cls) -> BridgedParamsReader:
        return BridgedParamsReader(cls)
