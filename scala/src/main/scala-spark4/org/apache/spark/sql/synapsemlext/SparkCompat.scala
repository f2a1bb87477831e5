package org.apache.spark.sql.synapsemlext

import org.apache.spark.sql.Dataset

/** Spark 4.x / Scala 2.13 side of the seam (see scala-spark3.5/ for 3.5). Built against 4.0.1;
 * every signature used here is the same in 4.2.0, so the one 2.13 jar serves 4.0 to 4.2. */
object SparkCompat {

  /** In 4.x `sql.Dataset` is abstract: classic sessions give `sql.classic.Dataset`, Spark
   * Connect sessions `sql.connect.Dataset`, which has no SparkContext on the client. */
  def requireClassic(dataset: Dataset[_], stageName: String): Unit = dataset match {
    case _: org.apache.spark.sql.classic.Dataset[_] =>
    case _ => throw ConnectSessions.notSupported(stageName)
  }
}
