package org.apache.spark.sql.synapsemlext

/** The JVM stages reach Spark's Python worker machinery directly, which a Spark Connect
 * client does not have (Spark runs it on the server). */
object ConnectSessions {

  def notSupported(stageName: String): PythonBridgeException = new PythonBridgeException(
    s"the Scala $stageName does not run in a Spark Connect session: it starts the Python " +
      "stage through Spark's classic Python UDF machinery, which a Connect client cannot " +
      "reach. Use a classic SparkSession (spark-submit, a job or notebook on a classic " +
      s"cluster), or use the Python stage (synapseml_ext) from PySpark, which works over " +
      "Spark Connect.")
}
