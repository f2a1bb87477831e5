"""The entry point the JVM calls on executors: ``load(spec_json) -> (function, return type)``.

A Scala stage sends, as the whole Python "command" of a pandas UDF, a tiny protocol-2 pickle
that calls ``synapseml_ext.bridge.load(spec_json)`` (see docs/scala.md). ``spec_json`` is the
stage's own persistence metadata (``class``, ``uid``, ``paramMap``, ``defaultParamMap``, the
same JSON ``save()`` writes) plus a ``bridge`` object naming the operation::

    {"class": "io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder", "uid": "...",
     "paramMap": {...}, "defaultParamMap": {...}, "sparkVersion": "3.5.9", ...,
     "bridge": {"protocol": 1, "op": "transform", "jarVersion": "0.1.0"}}

The stage is rebuilt here exactly as ``load()`` rebuilds a stage saved from Scala, and the
returned function is the one the PySpark stage itself runs on executors.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator

from pyspark.sql.types import DataType, StringType

import synapseml_ext
from synapseml_ext.bridge.names import by_any_name
from synapseml_ext.bridge.persistence import instance_from_metadata

__all__ = ["PROTOCOL_VERSION", "load"]

PROTOCOL_VERSION = 1


def load(spec_json: str) -> tuple[Callable, DataType]:
    """Executor side: the ``(function, return type)`` pair Spark's Python worker expects."""
    spec = json.loads(spec_json)
    bridge = spec.get("bridge") or {}
    protocol = bridge.get("protocol")
    if protocol != PROTOCOL_VERSION:
        raise RuntimeError(
            f"synapseml-ext {synapseml_ext.__version__} on this executor speaks bridge protocol "
            f"{PROTOCOL_VERSION} but the jar sent protocol {protocol} (jar version "
            f"{bridge.get('jarVersion')}); install matching versions of the jar and the "
            "Python package")
    op = bridge.get("op")
    if op == "probe":
        return _probe, StringType()
    return stage_from_spec(spec)._bridge_function(op)


def stage_from_spec(spec: dict):
    """The Python stage the spec's metadata describes (Scala or Python class name)."""
    bridged = by_any_name(spec["class"])
    if bridged is None:
        raise ValueError(f"no Python stage is bridged for class {spec['class']!r}")
    module_name, _, class_name = bridged.python_class.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return instance_from_metadata(cls, spec, "the bridge spec")


def _probe(batches: Iterator) -> Iterator:
    """One JSON line per row about this worker: what the JVM checks before the first job."""
    import pandas as pd

    facts = json.dumps({
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "pythonFull": platform.python_version(),
        "executable": sys.executable,
        "package": synapseml_ext.__version__,
        "protocol": PROTOCOL_VERSION,
        "host": platform.node(),
        "pid": os.getpid(),
    })
    for batch in batches:
        yield pd.Series([facts] * len(batch), dtype=object)
