package org.apache.spark.ml.synapsemlext

import org.apache.spark.ml.param.Params
import org.apache.spark.ml.util.{DefaultParamsReader, DefaultParamsWriter, MLReader, MLWritable,
  MLWriter}
import org.apache.spark.sql.{DataFrame, Dataset, SparkSession}
import org.apache.spark.sql.synapsemlext.PythonDriver
import org.apache.spark.sql.types.{DataType, StructType}
import org.json4s._
import org.json4s.jackson.JsonMethods

// The pieces the generated stages that run through the driver-side Python share. In
// org.apache.spark.ml for Spark's metadata parser (private[ml]), so saved metadata is read
// exactly as Spark reads it.

/** A fitted model's state as the Python stage hands it over: its JSON (the build summary and
 * why that backend) and its tables. The Scala model keeps no Python object, so a restarted
 * Python process serves it the same. */
final class DriverState(val json: String, val frames: Seq[DataFrame]) {

  private def parsed: JValue = JsonMethods.parse(json)

  /** The build summary as compact JSON. */
  def summary: String = JsonMethods.compact(JsonMethods.render(parsed \ "summary"))

  /** `op` of the model `stage` on these tables plus `more`, with `args` and this state. */
  def call(stage: Params, op: String, more: Seq[Dataset[_]], session: SparkSession,
      args: (String, JValue)*): (String, Seq[DataFrame]) = {
    val all = JObject((("state" -> parsed) +: args).toList)
    PythonDriver.call(stage, op, frames ++ more, JsonMethods.compact(JsonMethods.render(all)),
      session)
  }
}

/** The calls of a generated stage that holds no fitted state (a transformer, an estimator). */
object DriverStages {

  /** The schema `stage` (or, for an estimator, the model it fits) gives `schema`, checked by
   * the Python stage. */
  def transformSchema(stage: Params, schema: StructType): StructType = {
    val args = JsonMethods.compact(JsonMethods.render(
      JObject("schema" -> JsonMethods.parse(schema.json))))
    val (text, _) = PythonDriver.call(stage, "transformSchema", Nil, args, SparkSession.active)
    DataType.fromJson(text).asInstanceOf[StructType]
  }

  /** The Python transformer rebuilt from `stage`, applied to `dataset`. */
  def transform(stage: Params, dataset: Dataset[_]): DataFrame =
    PythonDriver.call(stage, "transform", Seq(dataset), "{}", dataset.sparkSession)._2.head

  /** The state of the model `fit` of the Python estimator rebuilt from `stage` makes. */
  def fit(stage: Params, dataset: Dataset[_]): DriverState = {
    val (text, frames) = PythonDriver.call(stage, "fit", Seq(dataset), "{}", dataset.sparkSession)
    new DriverState(text, frames)
  }
}

/** `DefaultParamsWritable`, after the Python stage checked the Params: the Scala setters take
 * any value, and a value the Python stage refuses (a key in `apiKeyEnv`) is never written. */
trait DriverParamsWritable extends MLWritable { self: Params =>
  override def write: MLWriter = new MLWriter {
    override protected def saveImpl(path: String): Unit = {
      PythonDriver.call(self, "check", Nil, "{}", sparkSession)
      DefaultParamsWriter.saveMetadata(self, path, sc)
    }
  }
}

/** Saves a driver-run model through the Python stage's writer (the PySpark layout). */
class DriverModelWriter(stage: Params, state: DriverState) extends MLWriter {
  override protected def saveImpl(path: String): Unit =
    state.call(stage, "save", Nil, sparkSession, "path" -> JString(path),
      "className" -> JString(stage.getClass.getName))
}

/** Loads a model the Python stage's reader reads (saved from Scala or PySpark) and sets the
 * Scala stage's Params from its metadata. */
class DriverModelReader[T <: Params](make: (String, DriverState) => T, python: Params)
    extends MLReader[T] {

  override def load(path: String): T = {
    val args = JsonMethods.compact(JsonMethods.render(JObject("path" -> JString(path))))
    val (text, frames) = PythonDriver.call(python, "load", Nil, args, sparkSession)
    val metadata = DefaultParamsReader.parseMetadata(
      JsonMethods.compact(JsonMethods.render(JsonMethods.parse(text) \ "metadata")))
    val instance = make(metadata.uid, new DriverState(text, frames))
    metadata.getAndSetParams(instance)
    instance
  }
}
