"""Which Python stage is which Scala stage.

Saved metadata names the class that wrote it (``class`` in ``metadata/``): the Python module
path from PySpark, the Scala class from a JVM job. Both readers accept both names through this
table instead of skipping the class check. Adding a bridged stage starts with a line here:
codegen writes its Scala class, which runs the PySpark stage in the driver-side Python.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["STAGES", "BridgedStage", "by_any_name", "scala_name"]


@dataclass(frozen=True)
class BridgedStage:
    python_class: str  # module path as pyspark's DefaultParamsWriter writes it
    scala_class: str   # the Scala stage
    model_class: str = ""  # an estimator's fitted model (its scala_class)

    @property
    def names(self) -> tuple[str, str]:
        return (self.python_class, self.scala_class)

    def python_type(self) -> type:
        """The Python stage class (imported on first use)."""
        module_name, _, class_name = self.python_class.rpartition(".")
        return getattr(importlib.import_module(module_name), class_name)


STAGES: tuple[BridgedStage, ...] = (
    BridgedStage("synapseml_ext.hf.embedder.HuggingFaceSentenceEmbedder",
                 "io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder"),
    BridgedStage("synapseml_ext.nn.model.ApproximateNearestNeighbors",
                 "io.github.synapsemlext.nn.ApproximateNearestNeighbors",
                 model_class="io.github.synapsemlext.nn.ApproximateNearestNeighborsModel"),
    BridgedStage("synapseml_ext.nn.model.ApproximateNearestNeighborsModel",
                 "io.github.synapsemlext.nn.ApproximateNearestNeighborsModel"),
)


def by_any_name(class_name: str) -> BridgedStage | None:
    """The bridged stage saved under ``class_name`` (Python or Scala spelling), if any."""
    return next((s for s in STAGES if class_name in s.names), None)


def scala_name(python_class: str) -> str | None:
    stage = by_any_name(python_class)
    return stage.scala_class if stage else None
