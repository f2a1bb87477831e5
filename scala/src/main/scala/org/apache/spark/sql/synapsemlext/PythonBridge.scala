package org.apache.spark.sql.synapsemlext

import io.github.synapsemlext.BuildInfo
import org.apache.spark.ml.param.Params
import org.apache.spark.ml.synapsemlext.StageMetadata
import org.apache.spark.sql.{DataFrame, Dataset}
import org.apache.spark.sql.functions.col
import org.apache.spark.sql.types.{DataType, StructType}
import org.json4s.{JInt, JObject, JString, JValue}

/** Runs bridged Python stages from JVM stages (the generated stubs call this).
 *
 * The stage's persistence metadata (Spark's own JSON: class, uid, paramMap,
 * defaultParamMap) plus `{"bridge": {"protocol", "op", "jarVersion"}}` is the whole spec; the
 * executors' `synapseml_ext.bridge.load(spec)` rebuilds the Python stage from it exactly as
 * `load()` would and returns the executor function that stage runs under PySpark.
 */
object PythonBridge {

  /** `dataset` plus column `outputCol` = the Python stage's `op` applied to `inputCol`, as a
   * scalar-iterator pandas UDF: only `inputCol` crosses to Python, the other columns stay in
   * the JVM, rows and order are kept (the same plan shape the PySpark stage builds). */
  def columnTransform(stage: Params, dataset: Dataset[_], inputCol: String, outputCol: String,
      dataType: DataType, op: String = "transform"): DataFrame = {
    SparkLine.require()
    SparkCompat.requireClassic(dataset, stage.getClass.getSimpleName)
    val session = dataset.sparkSession
    val python = PythonEnvironment.forSession(session)
    val spec = StageMetadata.json(stage, session.sparkContext, bridgeSpec(op))
    val udf = python.udf(s"${stage.getClass.getSimpleName}.$op", PythonCommand.bridgeLoad(spec),
      dataType, PythonEnvironment.ScalarPandasIterUdf)
    dataset.toDF().withColumn(outputCol, udf(col(inputCol)))
  }

  def bridgeSpec(op: String, facts: JObject = JObject()): JObject = {
    val base = List[(String, JValue)]("protocol" -> JInt(PythonEnvironment.Protocol),
      "op" -> JString(op), "jarVersion" -> JString(BuildInfo.version))
    JObject("bridge" -> JObject(if (facts.obj.isEmpty) base else base :+ ("facts" -> facts)))
  }
}
