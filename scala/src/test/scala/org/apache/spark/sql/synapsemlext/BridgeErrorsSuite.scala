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
    assert(BuildInfo.sparkLine === SparkLine.majorMinor(running))
    SparkLine.require()  // the line these tests run on passes
    assert(SparkLine.mismatch(s"${BuildInfo.sparkLine}.42").isEmpty)
    val (other, artifact) =
      if (BuildInfo.sparkLine == "3.5") ("4.0.1", "synapseml-ext-spark4.0_2.13")
      else ("3.5.9", "synapseml-ext_2.12")
    assert(SparkLine.mismatch(other).get === s"this synapseml-ext jar (${BuildInfo.version}) " +
      s"was built for Spark ${BuildInfo.sparkLine} (Scala ${BuildInfo.scalaBinaryVersion}) but " +
      s"the session runs Spark $other; use the artifact built for Spark " +
      s"${SparkLine.majorMinor(other)}: io.github.synapsemlext:$artifact:${BuildInfo.version}")
    assert(SparkLine.mismatch("3.4.1").get.contains("no artifact for Spark 3.4 yet"))
    assert(intercept[PythonBridgeException](SparkLine.require("4.1.0-preview1")).getMessage
      .contains("but the session runs Spark 4.1.0-preview1"))
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
