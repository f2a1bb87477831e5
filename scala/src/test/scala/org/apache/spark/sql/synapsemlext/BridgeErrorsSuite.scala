package org.apache.spark.sql.synapsemlext

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

  test("a bad start timeout is one line naming the setting; the driver Python starts after") {
    spark.conf.set(PythonDriver.StartTimeoutConf, "soon")
    PythonDriver.stop()
    try {
      val e = intercept[PythonBridgeException](embedder.transformSchema(texts.schema))
      assert(e.getMessage === "spark.synapsemlext.driverPythonStartTimeout must be a whole " +
        "number of seconds, got 'soon'")
      assert(PythonDriver.processId.isEmpty)
    } finally spark.conf.unset(PythonDriver.StartTimeoutConf)
    assert(embedder.transformSchema(texts.schema).fieldNames.last === "embeddings")
    assert(PythonDriver.processId.isDefined)
  }

  test("a Spark Connect session is refused with a message naming Connect") {
    val message = ConnectSessions.notSupported("HuggingFaceSentenceEmbedder").getMessage
    assert(message.startsWith("the Scala HuggingFaceSentenceEmbedder does not run in a Spark " +
      "Connect session"))
    SparkCompat.requireClassic(texts, "HuggingFaceSentenceEmbedder")  // classic passes
  }

  test("schema errors come before any Spark job") {
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
