package org.apache.spark.sql.synapsemlext

import io.github.synapsemlext.BuildInfo

/** The jar is built for one Spark line (the bridge uses Spark-internal signatures that
 * change between lines); running it on another must fail clearly, before any of those
 * signatures is touched. */
object SparkLine {

  private val artifacts = Map(
    "3.5" -> "io.github.synapsemlext:synapseml-ext_2.12",
    "4.0" -> "io.github.synapsemlext:synapseml-ext-spark4.0_2.13")

  def majorMinor(version: String): String = version.split("[.-]").take(2).mkString(".")

  /** The problem with running this jar on Spark `running`, if any. */
  def mismatch(running: String, builtFor: String = BuildInfo.sparkLine): Option[String] = {
    val line = majorMinor(running)
    if (line == builtFor) None
    else {
      val advice = artifacts.get(line) match {
        case Some(artifact) => s"use the artifact built for Spark $line: $artifact:${BuildInfo.version}"
        case None => s"synapseml-ext has no artifact for Spark $line yet; " +
          s"supported lines: ${artifacts.keys.toSeq.sorted.mkString(", ")}"
      }
      Some(s"this synapseml-ext jar (${BuildInfo.version}) was built for Spark $builtFor " +
        s"(Scala ${BuildInfo.scalaBinaryVersion}) but the session runs Spark $running; $advice")
    }
  }

  def require(running: String = org.apache.spark.SPARK_VERSION): Unit =
    mismatch(running).foreach(message => throw new PythonBridgeException(message))
}
