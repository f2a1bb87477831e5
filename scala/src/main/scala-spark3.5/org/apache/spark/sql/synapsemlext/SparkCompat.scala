package org.apache.spark.sql.synapsemlext

import org.apache.spark.sql.Dataset

/** Spark 3.5 / Scala 2.12 side of the seam: what differs between Spark lines lives here
 * (scala-spark4/ holds the same object for Spark 4.x). */
object SparkCompat {

  /** In 3.5 a Spark Connect Scala client brings its own Dataset/SparkSession classes with no
   * SparkContext; reaching for it fails at link time, which is what this catches. */
  def requireClassic(dataset: Dataset[_], stageName: String): Unit = {
    val classic =
      try dataset.sparkSession.sparkContext != null
      catch { case _: LinkageError | _: UnsupportedOperationException => false }
    if (!classic) throw ConnectSessions.notSupported(stageName)
  }
}
