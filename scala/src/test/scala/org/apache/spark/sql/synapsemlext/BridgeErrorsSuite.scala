package org.apache.spark.sql.synapsemlext

import java.io.File

import io.github.synapsemlext.{BuildInfo, TestEnv}
import io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder
import org.apache.spark.scheduler.{SparkListener, SparkListenerJobStart}
import org.scalatest.funsuite.AnyFunSuite

/** Setup mistakes a Scala user can make, each with an error that says what to fix. */
class BridgeErrorsSuite extends AnyFunSuite {

  private lazy val spark = TestEnv.spark

  private def embedder = new HuggingFaceSentenceEmbedder().setModelName(TestEnv.modelDir)
    .setInputCol("text").setRuntime("cpu").setPrecision("fp32")

  private def texts = spark.range(4).selectExpr("id", "concat('text ', id) as text")

  test("a jar built for another Spark line") {
    val running = org.apache.spark.SPARK_VERSION
    assert(BuildInfo.runsOn.contains(SparkLine.majorMinor(running)))
    assert(SparkLine.sparkVersion() === running)
    SparkLine.require()  // the line these tests run on passes
    assert(SparkLine.mismatch(running) === null)
    assert(SparkLine.mismatch(s"${BuildInfo.sparkLine}.42") === null)

    // What the build publishes: the 2.12 jar for Spark 3.5, the 2.13 jar for Spark 4.0-4.2.
    val group = "io.github.synapsemlext"
    val artifacts = new java.util.LinkedHashMap[String, String]()
    Seq("3.5" -> "synapseml-ext_2.12", "4.0" -> "synapseml-ext_2.13",
      "4.1" -> "synapseml-ext_2.13", "4.2" -> "synapseml-ext_2.13")
      .foreach { case (line, a) => artifacts.put(line, s"$group:$a") }
    assert(BuildInfo.artifacts === artifacts)
    val jar212 = java.util.Arrays.asList("3.5")
    val jar213 = java.util.Arrays.asList("4.0", "4.1", "4.2")
    assert(BuildInfo.runsOn === (if (BuildInfo.scalaBinaryVersion == "2.12") jar212 else
      if (BuildInfo.sparkLine == "4.0") jar213 else java.util.Arrays.asList(BuildInfo.sparkLine)))
    def mismatch(running: String, runsOn: java.util.List[String], scala: String) =
      Option(SparkLine.mismatch(running, "0.1.0", scala, runsOn, artifacts))

    // A 2.12 jar on Spark 4 and a 2.13 jar on Spark 3.5: one line naming the right artifact.
    assert(mismatch("4.2.0", jar212, "2.12").get === "this synapseml-ext jar (0.1.0) was built " +
      "for Spark 3.5 (Scala 2.12) but the session runs Spark 4.2.0; use the artifact built for " +
      "Spark 4.2: io.github.synapsemlext:synapseml-ext_2.13:0.1.0")
    assert(mismatch("4.0.1", jar212, "2.12").get.endsWith(
      "use the artifact built for Spark 4.0: io.github.synapsemlext:synapseml-ext_2.13:0.1.0"))
    assert(mismatch("3.5.9", jar213, "2.13").get === "this synapseml-ext jar (0.1.0) was built " +
      "for Spark 4.0-4.2 (Scala 2.13) but the session runs Spark 3.5.9; use the artifact built " +
      "for Spark 3.5: io.github.synapsemlext:synapseml-ext_2.12:0.1.0")
    // Every 4.x up to 4.2 runs the 2.13 jar built against 4.0; 3.5.x the 2.12 jar.
    Seq("4.0.0", "4.0.1", "4.1.0-preview1", "4.1.1", "4.2.0").foreach { v =>
      assert(mismatch(v, jar213, "2.13").isEmpty, v)
      assert(mismatch(v, jar212, "2.12").nonEmpty, v)
    }
    assert(mismatch("3.5.0", jar212, "2.12").isEmpty)
    // Lines with no artifact say which lines have one.
    assert(mismatch("4.3.0", jar213, "2.13").get.endsWith("but the session runs Spark 4.3.0; " +
      "synapseml-ext has no artifact for Spark 4.3 yet; supported lines: 3.5 " +
      "(io.github.synapsemlext:synapseml-ext_2.12), 4.0-4.2 " +
      "(io.github.synapsemlext:synapseml-ext_2.13)"))
    assert(mismatch("3.4.1", jar212, "2.12").get.contains("no artifact for Spark 3.4 yet"))
    assert(intercept[PythonBridgeException](SparkLine.require("3.4.1")).getMessage
      .contains("but the session runs Spark 3.4.1"))
  }

  test("the executors' Python version differs from the one the stage was set up for") {
    val driverVersion = PythonEnvironment.driverPythonVersion(TestEnv.python)
    val other = if (driverVersion == "3.10") "3.12" else "3.10"
    spark.conf.set(PythonEnvironment.PythonVersionConf, other)
    try {
      val e = intercept[PythonBridgeException](embedder.transform(texts))
      assert(e.getMessage.startsWith(s"Python version mismatch: the executors' Python " +
        s"(${TestEnv.python}) is $driverVersion but the JVM stage was set up for Python " +
        s"$other (set by spark.synapsemlext.pythonVersion)"))
      assert(e.getMessage.endsWith(s"set spark.synapsemlext.pythonVersion=$driverVersion."))
    } finally spark.conf.unset(PythonEnvironment.PythonVersionConf)
    assert(embedder.transform(texts).count() === 4)  // and the right version works
  }

  test("the Python package is missing on the executors") {
    // A sitecustomize that hides synapseml_ext, as if it were not pip-installed there.
    val blocker = TestEnv.tempDir("no-synapseml-ext").toFile
    TestEnv.writeText(new File(blocker, "sitecustomize.py").toPath,
      """import importlib.abc, sys
        |class _Hide(importlib.abc.MetaPathFinder):
        |    def find_spec(self, name, path=None, target=None):
        |        if name == "synapseml_ext" or name.startswith("synapseml_ext."):
        |            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        |sys.meta_path.insert(0, _Hide())
        |""".stripMargin)
    val settings = PythonEnvironment.settings(spark)
    val hidden = settings.copy(envVars = settings.envVars + ("PYTHONPATH" -> blocker.getPath))
    val e = intercept[PythonBridgeException](PythonEnvironment.checkExecutors(spark, hidden))
    assert(e.getMessage.startsWith(s"the executors' Python (${TestEnv.python}, Python " +
      s"${settings.pythonVer}) cannot import synapseml_ext: install the Python package on " +
      s"every node (pip install synapseml-ext==${BuildInfo.version}"))
    assert(e.getMessage.contains("No module named 'synapseml_ext'"))
  }

  test("the Python executable does not exist (on the driver, on the executors)") {
    val missing = "/nonexistent/bin/python3"
    val e1 = intercept[PythonBridgeException](PythonEnvironment.driverPythonVersion(missing))
    assert(e1.getMessage.startsWith(s"cannot run '$missing' on the driver to learn the " +
      "Python version the executors run"))
    assert(e1.getMessage.contains("spark.synapsemlext.pythonVersion"))
    val settings = PythonEnvironment.settings(spark).copy(pythonExec = missing)
    val e2 = intercept[PythonBridgeException](PythonEnvironment.checkExecutors(spark, settings))
    assert(e2.getMessage.startsWith(s"the executors cannot start Python '$missing'"))
  }

  test("the executor check passes and reports the workers' Python") {
    val settings = PythonEnvironment.settings(spark)
    val found = PythonEnvironment.checkExecutors(spark, settings)
    assert(found.nonEmpty)
    found.foreach { p =>
      assert(p.python === settings.pythonVer && p.protocol === PythonEnvironment.Protocol)
      assert(p.packageVersion === BuildInfo.version)
    }
    assert(settings.envVars("PYTHONHASHSEED") === sys.env.getOrElse("PYTHONHASHSEED", "0"))
    assert(settings.envVars("PYTHONPATH") === TestEnv.pythonPath)  // spark.executorEnv.*
  }

  test("a Spark Connect session is refused with a message naming Connect") {
    val message = ConnectSessions.notSupported("HuggingFaceSentenceEmbedder").getMessage
    assert(message.startsWith("the Scala HuggingFaceSentenceEmbedder does not run in a Spark " +
      "Connect session"))
    SparkCompat.requireClassic(texts, "HuggingFaceSentenceEmbedder")  // classic passes
  }

  test("schema errors come before any Spark job or Python worker") {
    var jobs = 0
    val listener = new SparkListener {
      override def onJobStart(jobStart: SparkListenerJobStart): Unit = jobs += 1
    }
    val df = texts
    spark.sparkContext.addSparkListener(listener)
    try {
      val e = intercept[IllegalArgumentException](embedder.setInputCol("missing").transform(df))
      assert(e.getMessage === "inputCol 'missing' not found; available columns: id, text")
      spark.sparkContext.listenerBus.waitUntilEmpty()
      assert(jobs === 0)
    } finally spark.sparkContext.removeSparkListener(listener)
  }
}
