package org.apache.spark.sql.synapsemlext

/** The JVM stages hand the job's SparkContext to a driver-side Python, which a Spark Connect
 * client does not have (Spark runs the driver on the server). */
object ConnectSessions {

  def notSupported(stageName: String): PythonBridgeException = new PythonBridgeException(
    s"the Scala $stageName does not run in a Spark Connect session: it runs the PySpark " +
      "stage in a Python process attached to this JVM's SparkContext, which a Connect client " +
      "does not have. Use a classic SparkSession (spark-submit, a job or notebook on a " +
      "classic cluster), or use the Python stage (synapseml_ext) from PySpark, which works " +
      "over Spark Connect.")
}
