package org.apache.spark.sql.synapsemlext

import org.apache.spark.api.python.{PythonBroadcast, PythonFunction, SimplePythonFunction}
import org.apache.spark.broadcast.Broadcast
import org.apache.spark.sql.{DataFrame, Dataset}
import org.apache.spark.sql.catalyst.expressions.PythonUDF
import org.apache.spark.sql.execution.python.UserDefinedPythonFunction

/** Spark 3.5 / Scala 2.12 side of the seam: what differs between Spark lines lives here
 * (scala-spark4/ holds the same object for Spark 4.x). */
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
      null)  // accumulator: a JVM job has no PySpark accumulator server

  /** In 3.5 a Spark Connect Scala client brings its own Dataset/SparkSession classes with no
   * SparkContext; reaching for it fails at link time, which is what this catches. */
  def requireClassic(dataset: Dataset[_], stageName: String): Unit = {
    val classic =
      try dataset.sparkSession.sparkContext != null
      catch { case _: LinkageError | _: UnsupportedOperationException => false }
    if (!classic) throw ConnectSessions.notSupported(stageName)
  }
}
