"""What codegen knows about a Python stage: read from the class itself, never restated.

Each Param gives its name, doc, ``typeConverter`` (-> Scala type), default, whether an unset
value is meaningful (its Python getter returns ``None``, like ``normalize``); the stage gives
its summary and its Scala name (contract/names.py).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from pyspark.ml.param import Param, TypeConverters

from synapseml_ext.contract.names import BridgedStage
from synapseml_ext.nn import params as nn_params

__all__ = ["ParamModel", "ScalaType", "StageModel", "read_stage"]

NO_DEFAULT = object()
PARAM_NAME = re.compile(r"^[a-z][a-zA-Z0-9]*$")


@dataclass(frozen=True)
class ScalaType:
    value: str       # the Scala type of a value: String, Int, ...
    param: str       # the Param class: Param[String], IntParam, ...
    new_param: str   # constructor expression prefix: new IntParam

    def literal(self, value: Any) -> str:
        return scala_literal(value)


# Python typeConverter -> Scala Param type. The JSON each side writes for these in saved
# metadata is the same (strings, ints, doubles, booleans, arrays of them).
_SCALA_TYPES = {
    TypeConverters.toString: ScalaType("String", "Param[String]", "new Param[String]"),
    TypeConverters.toInt: ScalaType("Int", "IntParam", "new IntParam"),
    TypeConverters.toFloat: ScalaType("Double", "DoubleParam", "new DoubleParam"),
    TypeConverters.toBoolean: ScalaType("Boolean", "BooleanParam", "new BooleanParam"),
    TypeConverters.toListString: ScalaType("Array[String]", "StringArrayParam",
                                           "new StringArrayParam"),
    TypeConverters.toListInt: ScalaType("Array[Int]", "IntArrayParam", "new IntArrayParam"),
    TypeConverters.toListFloat: ScalaType("Array[Double]", "DoubleArrayParam",
                                          "new DoubleArrayParam"),
    # JSON-valued Params (io.github.synapsemlext.util.JsonParams); Python checks the values.
    nn_params._to_algo_params: ScalaType("Map[String, Any]", "JsonMapParam", "new JsonMapParam"),
    nn_params._to_verbose: ScalaType("Any", "JsonValueParam", "new JsonValueParam"),
}


@dataclass(frozen=True)
class ParamModel:
    name: str
    doc: str
    scala: ScalaType
    default: Any          # NO_DEFAULT when the Python stage sets none
    optional: bool        # unset is meaningful: the Python getter returns None

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    @property
    def capitalized(self) -> str:
        return self.name[0].upper() + self.name[1:]


@dataclass(frozen=True)
class StageModel:
    python_class: str
    scala_class: str
    summary: str
    params: tuple[ParamModel, ...]

    @property
    def scala_package(self) -> str:
        return self.scala_class.rpartition(".")[0]

    @property
    def scala_name(self) -> str:
        return self.scala_class.rpartition(".")[2]


def read_stage(bridged: BridgedStage) -> StageModel:
    cls = bridged.python_type()
    stage = cls()
    params = tuple(_read_param(stage, p) for p in stage.params)
    summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return StageModel(bridged.python_class, bridged.scala_class, summary, params)


def _read_param(stage, param: Param) -> ParamModel:
    where = f"{type(stage).__name__}.{param.name}"
    if not PARAM_NAME.match(param.name):
        raise ValueError(f"{where}: Param names must match {PARAM_NAME.pattern}")
    if not param.doc.strip():
        raise ValueError(f"{where}: Param has no doc")
    scala = _SCALA_TYPES.get(param.typeConverter)
    if scala is None:
        raise TypeError(f"{where}: codegen has no Scala type for typeConverter "
                        f"{getattr(param.typeConverter, '__name__', param.typeConverter)!r}; "
                        "add one to synapseml_ext/codegen/model.py")
    default = stage._defaultParamMap.get(param, NO_DEFAULT)
    if default is None:  # a None default is Python's "unset": an optional Param in Scala
        return ParamModel(param.name, param.doc.strip(), scala, NO_DEFAULT, True)
    return ParamModel(param.name, param.doc.strip(), scala, default,
                      _unset_is_meaningful(stage, param))


def _unset_is_meaningful(stage, param: Param) -> bool:
    """True when the Python getter answers ``None`` for an unset Param without a default
    (``getNormalize``), False when it raises (``getInputCol``: the Param is required)."""
    if stage.hasDefault(param):
        return False
    getter = getattr(stage, "get" + param.name[0].upper() + param.name[1:], None)
    if getter is None:
        return False
    try:
        return getter() is None
    except KeyError:
        return False


def scala_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return scala_string(value)
    if isinstance(value, (list, tuple)):
        return "Array(" + ", ".join(scala_literal(v) for v in value) + ")"
    raise TypeError(f"no Scala literal for {value!r}")


def scala_string(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'
