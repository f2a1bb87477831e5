package org.apache.spark.sql.synapsemlext

import java.io.{BufferedReader, InputStreamReader}
import java.nio.charset.StandardCharsets
import java.util.concurrent.{CountDownLatch, TimeUnit}

import scala.collection.JavaConverters._

import org.apache.spark.SparkContext
import org.apache.spark.api.python.{Py4JServer, PythonUtils}
import org.apache.spark.internal.Logging
import org.apache.spark.scheduler.{SparkListener, SparkListenerApplicationEnd}
import org.apache.spark.ml.param.Params
import org.apache.spark.ml.synapsemlext.StageMetadata
import org.apache.spark.sql.{DataFrame, Dataset, SparkSession}

/** What the driver-side Python registers (synapseml_ext/bridge/driver.py implements it). */
trait DriverCalls {
  /** `[status, text, frames...]`: status "ok" or the Python exception's class name. */
  def call(op: String, spec: String, frames: java.util.List[Object], args: String): java.util.List[Object]
}

/** One Python process per JVM that runs the PySpark stages for the Scala ones, attached to
 * this JVM's SparkContext through a py4j gateway (as `spark-submit` runs a Python app).
 *
 * Started on the first call (`spark.pyspark.driver.python`, else PYSPARK_DRIVER_PYTHON, else
 * the executors' Python), reused after; it exits when the JVM does (its stdin closes), and a
 * call after it died starts a new one, saying so in the log.
 */
object PythonDriver extends Logging {

  /** Seconds to wait for the Python process to attach (imports pyspark and synapseml_ext). */
  val StartTimeoutConf = "spark.synapsemlext.driverPythonStartTimeout"

  private var server: Py4JServer = _
  private var hooked = false
  private var listened: SparkContext = _  // the SparkContext whose end stops the process
  private var process: Process = _
  private var context: SparkContext = _  // the SparkContext the process is attached to
  private var pid = 0L
  @volatile private var calls: DriverCalls = _
  @volatile private var attached = new CountDownLatch(1)
  private val recentOutput = new java.util.concurrent.ConcurrentLinkedDeque[String]()

  /** Called by the Python process once it is attached. */
  def register(entry: DriverCalls, processId: Long): Unit = {
    calls = entry
    pid = processId
    attached.countDown()
  }

  /** `op` of the Python stage rebuilt from `stage`'s metadata, on `frames`, with JSON `args`:
   * the result's JSON text and DataFrames. Python's ValueError/TypeError come back as
   * IllegalArgumentException with its one-line message. */
  def call(stage: Params, op: String, frames: Seq[Dataset[_]], args: String,
      session: SparkSession): (String, Seq[DataFrame]) = {
    SparkLine.require()
    frames.headOption.foreach(f => SparkCompat.requireClassic(f, stage.getClass.getSimpleName))
    val entry = ensureStarted(session)
    val spec = StageMetadata.json(stage, session.sparkContext, org.json4s.JObject())
    val out = try entry.call(op, spec, frames.map(_.toDF().asInstanceOf[Object]).asJava, args).asScala
    catch {
      case e: py4j.Py4JException if processId.isEmpty =>
        throw new PythonBridgeException("the driver-side Python process died during " +
          s"$op (${e.getMessage.split("\n").head}); the next call starts a new one", e)
    }
    val status = String.valueOf(out.head)
    val text = String.valueOf(out(1))
    status match {
      case "ok" => (text, out.drop(2).map(_.asInstanceOf[DataFrame]).toSeq)
      case "ValueError" => throw new IllegalArgumentException(text)
      case other => throw new PythonBridgeException(s"$other: $text")
    }
  }

  private def ensureStarted(session: SparkSession): DriverCalls = synchronized {
    val current = session.sparkContext
    if (process != null && process.isAlive && calls != null && (context eq current)) return calls
    if (process != null && process.isAlive) {
      logInfo("synapseml-ext: the SparkContext changed; restarting the driver-side Python")
      process.destroy()
      process.waitFor(10, TimeUnit.SECONDS)
    } else if (process != null) {
      logWarning(s"synapseml-ext: the driver-side Python process${if (pid > 0) s" (pid $pid)" else ""} " +
        s"exited with code ${process.exitValue()}; starting a new one")
    }
    start(session)
    context = current
    calls
  }

  private def start(session: SparkSession): Unit = {
    if (!hooked) {
      sys.addShutdownHook(stop())
      hooked = true
    }
    calls = null
    pid = 0L
    recentOutput.clear()
    attached = new CountDownLatch(1)
    val conf = session.sparkContext.getConf
    val timeout = session.conf.getOption(StartTimeoutConf).map { text =>
      scala.util.Try(text.trim.toLong).toOption.filter(_ > 0).getOrElse(throw new PythonBridgeException(
        s"$StartTimeoutConf must be a whole number of seconds, got '$text'"))
    }.getOrElse(120L)
    val workers = conf.getOption("spark.pyspark.python").orElse(sys.env.get("PYSPARK_PYTHON"))
      .filter(_.nonEmpty).getOrElse("python3")
    val python = conf.getOption("spark.pyspark.driver.python")
      .orElse(sys.env.get("PYSPARK_DRIVER_PYTHON")).filter(_.nonEmpty).getOrElse(workers)
    val advice = s"the driver needs a Python with pyspark ${PythonDriver.sparkLine} and " +
      "synapseml-ext installed: set spark.pyspark.driver.python (or PYSPARK_DRIVER_PYTHON) to it"
    // A gateway per process: py4j numbers each process's objects from p0, and a proxy of a
    // dead process, when the JVM collects it, would release the new process's object.
    if (server != null) server.shutdown()
    server = daemonGateway(session)
    val builder = new ProcessBuilder(python, "-m", "synapseml_ext.bridge.driver")
    val env = builder.environment()
    env.put("PYSPARK_GATEWAY_PORT", server.getListeningPort.toString)
    env.put("PYSPARK_GATEWAY_SECRET", server.secret)
    env.put("PYSPARK_PYTHON", workers)
    env.put("PYTHONPATH", PythonUtils.mergePythonPaths(
      PythonUtils.sparkPythonPath, sys.env.getOrElse("PYTHONPATH", "")))
    env.put("PYTHONUNBUFFERED", "1")
    builder.redirectErrorStream(true)
    val started = System.nanoTime()
    process = try builder.start() catch {
      case e: java.io.IOException =>
        stop()
        throw new PythonBridgeException(s"cannot run the driver-side Python '$python' " +
          s"(${e.getMessage}); $advice", e)
    }
    val output = echo(process)
    while (!attached.await(200, TimeUnit.MILLISECONDS)) {
      val waited = (System.nanoTime() - started) / 1e9
      if (!process.isAlive || waited > timeout) {
        val why = if (waited > timeout) s"no answer in $timeout s" else s"exit code ${process.exitValue()}"
        stop()
        output.join(5000)
        val said = recentOutput.asScala.filter(_.trim.nonEmpty).lastOption.getOrElse("nothing")
        throw new PythonBridgeException(s"the driver-side Python '$python' did not start ($why; " +
          s"its last line: $said): $advice")
      }
    }
    logInfo(f"synapseml-ext: driver-side Python $python (pid $pid) attached in " +
      f"${(System.nanoTime() - started) / 1e9}%.1f s")
  }

  private def sparkLine: String = org.apache.spark.SPARK_VERSION.split('.').take(2).mkString(".")

  /** Spark's gateway, its threads daemons (started from a daemon thread, whose status they
   * inherit), so it never keeps a finished job's JVM alive; stopped with the SparkContext. */
  private def daemonGateway(session: SparkSession): Py4JServer = {
    val gateway = new Py4JServer(session.sparkContext.getConf)
    val starter = new Thread(() => gateway.start(), "synapseml-ext gateway start")
    starter.setDaemon(true)
    starter.start()
    starter.join()
    if (!(listened eq session.sparkContext)) {
      session.sparkContext.addSparkListener(new SparkListener {
        override def onApplicationEnd(end: SparkListenerApplicationEnd): Unit = stop()
      })
      listened = session.sparkContext
    }
    gateway
  }

  /** Copies the process's output to this JVM's stderr, keeping the last lines for errors. */
  private def echo(process: Process): Thread = {
    val thread = new Thread(() => {
      val reader = new BufferedReader(new InputStreamReader(process.getInputStream,
        StandardCharsets.UTF_8))
      Iterator.continually(reader.readLine()).takeWhile(_ != null).foreach { line =>
        System.err.println(line)
        recentOutput.addLast(line)
        if (recentOutput.size > 40) recentOutput.pollFirst()
      }
    }, "synapseml-ext driver python output")
    thread.setDaemon(true)
    thread.start()
    thread
  }

  /** Stops the Python process and the gateway (when the SparkContext stops, or the JVM). */
  def stop(): Unit = synchronized {
    if (process != null) process.destroy()
    if (server != null) server.shutdown()
    process = null
    server = null
    calls = null
    context = null
  }

  /** The Python process's id, or None before it started (for tests and logs). */
  def processId: Option[Long] = synchronized {
    if (process != null && process.isAlive) Some(pid) else None
  }
}
