package org.apache.spark.sql.synapsemlext

import org.apache.spark.api.python.{PythonBroadcast, PythonFunction, SimplePythonFunction}
import org.apache.spark.broadcast.Broadcast
import org.apache.spark.sql.{DataFrame, Dataset}
import org.apache.spark.sql.execution.python.UserDefinedPythonFunction
import org.apache.spark.util.CollectionAccumulator

/** Spark 4.x / Scala 2.13 side of the seam (see scala-spark3.5/ for 3.5). Built against 4.0.1;
 * every signature used here is the same in 4.2.0, so the one 2.13 jar serves 4.0 to 4.2. */
object SparkCompat {

  def pythonFunction(command: Array[Byte], envVars: java.util.Map[String, String],
      pythonExec: String, pythonVer: String): PythonFunction =
    SimplePythonFunction(
      command.toSeq,
      envVars,
      new java.util.ArrayList[String](),                            // pythonIncludes
      pythonExec,
      pythonVer,
      new java.util.ArrayList[Broadcast[PythonBroadcast]](),       // broadcastVars
      null.asInstanceOf[CollectionAccumulator[Array[Byte]]])  // no PySpark accumulator server

  /** In 4.x `sql.Dataset` is abstract: classic sessions give `sql.classic.Dataset`, Spark
   * Connect sessions `sql.connect.Dataset`, which has no Python UDF machinery on the client. */
  def requireClassic(dataset: Dataset[_], stageName: String): Unit = dataset match {
    case _: org.apache.spark.sql.classic.Dataset[_] =>
    case _ => throw ConnectSessions.notSupported(stageName)
  }
}
