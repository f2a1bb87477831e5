package org.apache.spark.sql.synapsemlext

import java.util.concurrent.{ConcurrentHashMap, TimeUnit}

import scala.collection.JavaConverters._
import scala.io.Source
import scala.util.control.NonFatal

import io.github.synapsemlext.BuildInfo
import org.apache.spark.SparkConf
import org.apache.spark.api.python.PythonFunction
import org.apache.spark.internal.Logging
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.execution.python.UserDefinedPythonFunction
import org.apache.spark.sql.functions.col
import org.apache.spark.sql.types.{DataType, StringType}
import org.json4s._
import org.json4s.jackson.JsonMethods

/** How the executors' Python is started, resolved the way PySpark resolves it.
 *
 * @param pythonExec    `spark.pyspark.python`, else env `PYSPARK_PYTHON`, else `python3`
 * @param pythonVer     the "major.minor" the worker must run (it refuses any other)
 * @param versionSource where `pythonVer` came from, for error messages
 * @param envVars       every `spark.executorEnv.*` plus PYTHONHASHSEED, as PySpark sends them
 */
final case class PythonSettings(pythonExec: String, pythonVer: String, versionSource: String,
    envVars: Map[String, String]) {

  def function(command: Array[Byte]): PythonFunction =
    // A fresh mutable map per function: Spark's Python runner writes into it.
    SparkCompat.pythonFunction(command, new java.util.HashMap[String, String](envVars.asJava),
      pythonExec, pythonVer)

  def udf(name: String, command: Array[Byte], dataType: DataType,
      evalType: Int): UserDefinedPythonFunction =
    UserDefinedPythonFunction(name, function(command), dataType, evalType,
      udfDeterministic = true)
}

/** What one executor's Python reported about itself (synapseml_ext.bridge.protocol._probe). */
final case class ExecutorPython(python: String, executable: String, packageVersion: String,
    protocol: Int, host: String)

object PythonEnvironment extends Logging {

  /** Set to the executors' Python "major.minor" when the driver cannot run their Python. */
  val PythonVersionConf = "spark.synapsemlext.pythonVersion"
  /** "false" skips the one-off executor check before the first Python stage runs. */
  val CheckExecutorsConf = "spark.synapsemlext.checkExecutors"
  /** The bridge protocol this jar speaks (synapseml_ext.bridge.PROTOCOL_VERSION). */
  val Protocol = 1
  /** PythonEvalType.SQL_SCALAR_PANDAS_ITER_UDF. */
  val ScalarPandasIterUdf = 204

  private val driverVersions = new ConcurrentHashMap[String, String]()
  private val checkedExecutors = new ConcurrentHashMap[(String, PythonSettings), Seq[ExecutorPython]]()

  /** `conf` is the SparkContext's (spark.pyspark.python, spark.executorEnv.*); `runtime`
   * reads the session's runtime conf, where our own keys may also be set with
   * `spark.conf.set`. */
  def settings(conf: SparkConf, runtime: String => Option[String],
      env: Map[String, String] = sys.env): PythonSettings = {
    val pythonExec = conf.getOption("spark.pyspark.python")
      .orElse(env.get("PYSPARK_PYTHON")).filter(_.nonEmpty).getOrElse("python3")
    val (pythonVer, source) = runtime(PythonVersionConf).orElse(conf.getOption(PythonVersionConf)) match {
      case Some(v) =>
        if (!v.matches("""\d+\.\d+""")) {
          throw new PythonBridgeException(s"$PythonVersionConf must be a Python major.minor " +
            s"version such as 3.11, got '$v'")
        }
        (v, s"set by $PythonVersionConf")
      case None => (driverPythonVersion(pythonExec), s"what $pythonExec reports on the driver")
    }
    val executorEnv = conf.getExecutorEnv.toMap
    val envVars = executorEnv + ("PYTHONHASHSEED" -> env.getOrElse("PYTHONHASHSEED", "0"))
    PythonSettings(pythonExec, pythonVer, source, envVars)
  }

  /** Settings for `session`, after checking once per application and settings that the
   * executors' Python runs at `pythonVer` and imports a synapseml_ext that speaks our
   * protocol (a one-task job per partition slot; off with spark.synapsemlext.checkExecutors). */
  def forSession(session: SparkSession): PythonSettings = {
    val python = settings(session)
    if (session.conf.getOption(CheckExecutorsConf).forall(_.trim.toLowerCase != "false")) {
      val key = (session.sparkContext.applicationId, python)
      if (!checkedExecutors.containsKey(key)) {
        checkedExecutors.putIfAbsent(key, checkExecutors(session, python))
      }
    }
    python
  }

  def settings(session: SparkSession): PythonSettings =
    settings(session.sparkContext.getConf, key => session.conf.getOption(key))

  /** Runs `pythonExec` on the driver for its "major.minor" (cached per executable). */
  def driverPythonVersion(pythonExec: String): String =
    driverVersions.computeIfAbsent(pythonExec, exec => askPythonVersion(exec))

  private def askPythonVersion(pythonExec: String): String = {
    val advice = s"set spark.pyspark.python (or PYSPARK_PYTHON) to the executors' Python, or " +
      s"set $PythonVersionConf to its major.minor version (e.g. 3.11)"
    try {
      val process = new ProcessBuilder(pythonExec, "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])").redirectErrorStream(true).start()
      val output = Source.fromInputStream(process.getInputStream, "UTF-8").mkString.trim
      if (!process.waitFor(60, TimeUnit.SECONDS) || process.exitValue() != 0 ||
          !output.matches("""\d+\.\d+""")) {
        throw new PythonBridgeException(s"'$pythonExec' on the driver did not report its " +
          s"Python version (output: ${output.take(300)}); $advice")
      }
      output
    } catch {
      case e: PythonBridgeException => throw e
      case NonFatal(e) => throw new PythonBridgeException(s"cannot run '$pythonExec' on the " +
        s"driver to learn the Python version the executors run (${e.getMessage}); $advice", e)
    }
  }

  /** The executor check itself: each task reports its Python; any failure is explained. */
  def checkExecutors(session: SparkSession, python: PythonSettings): Seq[ExecutorPython] = {
    val spec = compact(JObject("bridge" -> JObject("protocol" -> JInt(Protocol),
      "op" -> JString("probe"), "jarVersion" -> JString(BuildInfo.version))))
    val probe = python.udf("synapseml_ext_probe", PythonCommand.bridgeLoad(spec), StringType,
      ScalarPandasIterUdf)
    val slots = math.max(1, math.min(session.sparkContext.defaultParallelism, 64))
    val reports = try {
      session.range(0, slots, 1, slots).select(probe(col("id"))).collect().map(_.getString(0))
    } catch {
      case NonFatal(e) => throw explain(e, python)
    }
    val found = reports.distinct.toSeq.map(parseReport)
    found.find(_.protocol != Protocol).foreach { bad =>
      throw new PythonBridgeException(s"synapseml_ext ${bad.packageVersion} on ${bad.host} " +
        s"speaks bridge protocol ${bad.protocol}, this jar (${BuildInfo.version}) speaks " +
        s"$Protocol: install matching versions of the jar and the Python package")
    }
    found.filter(_.packageVersion != BuildInfo.version).map(_.packageVersion).distinct
      .foreach { v => logWarning(s"executors run synapseml_ext $v, this jar is " +
        s"${BuildInfo.version}; install the same version on both sides") }
    found
  }

  private def parseReport(json: String): ExecutorPython = {
    implicit val formats: Formats = DefaultFormats
    val value = JsonMethods.parse(json)
    ExecutorPython((value \ "python").extract[String], (value \ "executable").extract[String],
      (value \ "package").extract[String], (value \ "protocol").extract[Int],
      (value \ "host").extract[String])
  }

  // Spark 3.5 words it "different version (3, 11) than", Spark 4 "different version: 3.11 than".
  private val WorkerVersion = """different version:? \(?(\d+)(?:, |\.)(\d+)""".r

  /** A failed executor check, in words that say what to fix. */
  def explain(failure: Throwable, python: PythonSettings): PythonBridgeException = {
    val text = Iterator.iterate(failure)(_.getCause).takeWhile(_ != null)
      .map(e => String.valueOf(e.getMessage)).mkString("\n")
    val exec = python.pythonExec
    val message =
      if (text.contains("PYTHON_VERSION_MISMATCH") || text.contains("different version")) {
        val worker = WorkerVersion.findFirstMatchIn(text).map(m => s"${m.group(1)}.${m.group(2)}")
        s"Python version mismatch: the executors' Python ($exec) is " +
          s"${worker.getOrElse("another version")} but the JVM stage was set up for Python " +
          s"${python.pythonVer} (${python.versionSource}), and Spark's Python workers refuse " +
          s"to run across minor versions. Run one Python minor version on the driver and " +
          s"all executors (spark.pyspark.python / PYSPARK_PYTHON), or set " +
          s"$PythonVersionConf=${worker.getOrElse("<executors' major.minor>")}."
      } else if (text.contains("No module named 'synapseml_ext")) {
        s"the executors' Python ($exec, Python ${python.pythonVer}) cannot import " +
          s"synapseml_ext: install the Python package on every node (pip install " +
          s"synapseml-ext==${BuildInfo.version}, the version of this jar), or point " +
          s"spark.pyspark.python at a Python environment that has it. " +
          s"Worker said: ${firstLine(text, "No module named 'synapseml_ext")}"
      } else if (text.contains("Cannot run program")) {
        s"the executors cannot start Python '$exec': ${firstLine(text, "Cannot run program")}. " +
          "Set spark.pyspark.python (or PYSPARK_PYTHON) to a Python that exists on every node."
      } else if (text.contains("bridge protocol")) {
        firstLine(text, "bridge protocol")
      } else {
        s"the executors' Python ($exec, Python ${python.pythonVer}) failed the " +
          s"synapseml_ext check: ${failure.getMessage}"
      }
    new PythonBridgeException(message, failure)
  }

  private def firstLine(text: String, containing: String): String =
    text.split("\n").find(_.contains(containing)).map(_.trim).getOrElse(containing)

  private def compact(value: JValue): String = JsonMethods.compact(JsonMethods.render(value))
}
