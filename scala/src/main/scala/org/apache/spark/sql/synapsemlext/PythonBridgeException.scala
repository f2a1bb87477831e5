package org.apache.spark.sql.synapsemlext

/** A problem between the JVM stage and the Python side (setup, not data), worded for the
 * person who has to fix the cluster. */
class PythonBridgeException(message: String, cause: Throwable = null)
    extends RuntimeException(message, cause)
