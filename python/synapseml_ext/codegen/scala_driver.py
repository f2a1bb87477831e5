"""Renders a generated Scala stage: the Params as the Python class declares them, and
methods that hand the JVM Datasets to the PySpark stage in the driver-side Python
(``org.apache.spark.sql.synapsemlext.PythonDriver``).

A transformer gets ``transform``; an estimator ``fit``; both ``transformSchema`` and a writer
that has Python check the Params before it saves them. A model gets ``transform``,
``transformSchema``, save/load and each DataFrame method of :data:`MODEL_METHODS` that the
Python model has. The Python stage checks the Params and the schema when it runs, so the
messages are PySpark's.
"""

from __future__ import annotations

import inspect

from synapseml_ext.codegen.model import StageModel, read_stage, scala_string
from synapseml_ext.codegen.scala import HEADER, class_doc, params_members
from synapseml_ext.contract.names import STAGES, BridgedStage

__all__ = ["MODEL_METHODS", "render_stage"]

# Python model method -> its Scala methods (the Python method's docstring documents them).
MODEL_METHODS = {
    "kneighbors": [
        "  def kneighbors(queryDf: Dataset[_], sortKnnDfByQueryId: Boolean)"
        ": (DataFrame, DataFrame, DataFrame) = {",
        "    val (_, frames) = state.call(this, \"kneighbors\", Seq(queryDf), "
        "queryDf.sparkSession,",
        "      \"sort\" -> JBool(sortKnnDfByQueryId))",
        "    (frames(0), frames(1), frames(2))",
        "  }",
        "",
        "  def kneighbors(queryDf: Dataset[_]): (DataFrame, DataFrame, DataFrame) =",
        "    kneighbors(queryDf, sortKnnDfByQueryId = true)",
    ],
    "approxSimilarityJoin": [
        "  def approxSimilarityJoin(queryDf: Dataset[_], distCol: String = \"distCol\")"
        ": DataFrame =",
        "    state.call(this, \"approxSimilarityJoin\", Seq(queryDf), queryDf.sparkSession,",
        "      \"distCol\" -> JString(distCol))._2.head",
    ],
}


def render_stage(stage: StageModel, bridged: BridgedStage) -> str:
    name = stage.scala_name
    short_package = stage.scala_package.rpartition(".")[2]
    is_model = bool(_estimator_of(bridged))
    lines = [
        HEADER,
        f"// Source: the Python stage {stage.python_class}.",
        "// Regenerate with `python -m synapseml_ext.codegen`; CI runs it with --check.",
        "",
        f"package {stage.scala_package}",
        "",
        "import io.github.synapsemlext.util._",
        "import org.apache.spark.ml.param._",
        "import org.apache.spark.ml.synapsemlext._",
        "import org.apache.spark.ml.util._",
        "import org.apache.spark.sql.{DataFrame, Dataset}",
        *(["import org.apache.spark.sql.types.{DataType, StructType}",
           "import org.json4s.{JBool, JString}",
           "import org.json4s.jackson.JsonMethods"] if is_model else
          ["import org.apache.spark.sql.types.StructType"]),
        "",
    ]
    # A model whose Params are its estimator's mixes in the estimator's trait (one copy).
    shared = _estimator_params(stage, bridged) if is_model else None
    if shared is None:
        lines += [f"/** Params of [[{name}]], as the Python stage declares them. */",
                  f"private[{short_package}] trait {name}Params extends Params {{",
                  *params_members(stage.params), "}", ""]
    lines += [*class_doc(stage.summary), " *",
              f" * Runs the PySpark stage `{stage.python_class}` in a driver-side Python",
              " * process attached to this JVM's session (started on the first call; the",
              " * driver and the executors need the pip package `synapseml-ext`, see",
              " * docs/scala.md). Saved stages load on either side.", " */"]
    if is_model:
        lines += _model_class(name, stage, bridged, shared or f"{name}Params")
    else:
        lines += _unfitted_class(name, stage, bridged)
    return "\n".join(lines).replace("SparkLine.require()", "org.apache.spark.sql.synapsemlext."
                                    "SparkLine.require()")


def _setters(stage: StageModel) -> list[str]:
    lines = []
    for p in stage.params:
        lines += ["", "  /** @group setParam */",
                  f"  def set{p.capitalized}(value: {p.scala.value}): this.type = "
                  f"set({p.name}, value)"]
    return lines


def _estimator_of(model: BridgedStage) -> BridgedStage | None:
    return next((s for s in STAGES if s.model_class == model.scala_class), None)


def _unfitted_class(name: str, stage: StageModel, bridged: BridgedStage) -> list[str]:
    """A transformer, or an estimator of ``bridged.model_class``."""
    model = bridged.model_class.rpartition(".")[2]
    kind = f"CheckedEstimator[{model}]" if model else "CheckedTransformer"
    action = ([f"  override def fit(dataset: Dataset[_]): {model} =",
               f"    copyValues(new {model}(uid, DriverStages.fit(this, dataset)).setParent(this))"]
              if model else
              ["  override def transform(dataset: Dataset[_]): DataFrame =",
               "    DriverStages.transform(this, dataset)"])
    what = "the model's `outputCol`" if model else "`outputCol`"
    return [
        f"class {name}(override val uid: String) extends {kind}",
        f"    with {name}Params with DriverParamsWritable {{",
        "",
        f"  def this() = this(Identifiable.randomUID({scala_string(name)}))",
        *_setters(stage),
        "",
        f"  /** `schema` plus {what}, checked by the Python stage. */",
        "  override def transformSchema(schema: StructType): StructType =",
        "    DriverStages.transformSchema(this, schema)",
        "",
        *action,
        "",
        f"  override def copy(extra: ParamMap): {name} = defaultCopy(extra)",
        "}",
        "",
        f"object {name} extends MLReadable[{name}] {{",
        "",
        "  /** The Python stage this one runs; saved metadata may name either class. */",
        f"  val PythonClassName: String = {scala_string(stage.python_class)}",
        "",
        f"  override def read: MLReader[{name}] = {{",
        "    SparkLine.require()  // before any Scala-library call (see CheckedTransformer)",
        f"    new BridgedParamsReader(classOf[{name}], Seq(classOf[{name}].getName, "
        "PythonClassName))",
        "  }",
        "",
        f"  override def load(path: String): {name} = super.load(path)",
        "}",
        "",
    ]


def _estimator_params(model: StageModel, bridged: BridgedStage) -> str | None:
    """``<Estimator>Params`` when the estimator that fits this model declares the same
    Params, else None."""
    estimator = _estimator_of(bridged)
    if estimator is None or read_stage(estimator).params != model.params:
        return None
    return estimator.scala_class.rpartition(".")[2] + "Params"


def _model_class(name: str, stage: StageModel, bridged: BridgedStage,
                 params_trait: str) -> list[str]:
    python_cls = bridged.python_type()
    lines = [
        f"class {name} private[{stage.scala_package.rpartition('.')[2]}] "
        "(override val uid: String,",
        "    private[synapsemlext] val state: DriverState)",
        f"    extends CheckedModel[{name}] with {params_trait} with MLWritable {{",
        *_setters(stage),
        "",
        "  /** Where this model searches: the JVM stages run the CPU engine. */",
        "  def backendUsed: String = \"cpu\"",
        "",
        "  /** What the fit built, as JSON (the Python model's buildSummary). */",
        "  def buildSummary: String = state.summary",
    ]
    for method, body in MODEL_METHODS.items():
        if hasattr(python_cls, method):
            doc = (inspect.getdoc(getattr(python_cls, method)) or "").split("\n\n")[0]
            lines += ["", *[f"  {line}" for line in class_doc(doc.replace("\n", " "))],
                      "   */", *body]
    lines += [
        "",
        "  override def transform(dataset: Dataset[_]): DataFrame =",
        "    state.call(this, \"transform\", Seq(dataset), dataset.sparkSession)._2.head",
        "",
        "  override def transformSchema(schema: StructType): StructType = {",
        "    val (text, _) = state.call(this, \"transformSchema\", Nil, "
        "state.frames.head.sparkSession,",
        "      \"schema\" -> JsonMethods.parse(schema.json))",
        "    DataType.fromJson(text).asInstanceOf[StructType]",
        "  }",
        "",
        f"  override def copy(extra: ParamMap): {name} =",
        f"    copyValues(new {name}(uid, state), extra).setParent(parent)",
        "",
        "  override def write: MLWriter = new DriverModelWriter(this, state)",
        "}",
        "",
        f"object {name} extends MLReadable[{name}] {{",
        "",
        f"  override def read: MLReader[{name}] = {{",
        "    SparkLine.require()  // before any Scala-library call (see CheckedTransformer)",
        f"    new DriverModelReader[{name}](new {name}(_, _), new {name}(\"reader\", "
        "new DriverState(\"{}\", Nil)))",
        "  }",
        "",
        f"  override def load(path: String): {name} = super.load(path)",
        "}",
        "",
    ]
    return lines
