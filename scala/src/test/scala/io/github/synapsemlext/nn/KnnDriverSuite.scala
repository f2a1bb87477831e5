package io.github.synapsemlext.nn

import io.github.synapsemlext.TestEnv
import org.apache.spark.SparkException
import org.apache.spark.ml.param.ParamMap
import org.apache.spark.sql.functions.{col, lit}
import org.apache.spark.sql.synapsemlext.PythonDriver
import org.json4s._
import org.json4s.jackson.JsonMethods
import org.scalatest.funsuite.AnyFunSuite

/** The generated Scala stages run the PySpark stage in a driver-side Python process: Params
 * and schemas are checked there with its messages, data errors come back as on PySpark, and
 * the process is started once, and again after it died. */
class KnnDriverSuite extends AnyFunSuite {

  import KnnData._

  private lazy val spark = TestEnv.spark

  // Each case: Params set in this order; Python's _set_checked(**case) gets the same.
  private val cases = Seq(
    """{"k": 0}""", """{"algorithm": "annoy"}""", """{"algorithm": "IVF_PQ"}""",
    """{"metric": "manhattan"}""", """{"metric": "Cosine"}""", """{"backend": "tpu"}""",
    """{"numPartitions": -1}""", """{"numQueryBlocks": -2}""", """{"idCol": ""}""",
    """{"inputCol": ""}""", """{"algoParams": {"nprobe": 0}}""", """{"algoParams": {"nlist": 2.5}}""",
    """{"algoParams": {"nprobe": "10"}}""", """{"algoParams": {"ef_search": 10}}""",
    """{"algorithm": "hnsw", "algoParams": {"efSearch": 10, "M": 8}}""",
    """{"algorithm": "ivfpq", "algoParams": {"n_bits": 20}}""",
    """{"algoParams": {"target_recall": 1.5}}""", """{"algoParams": {"target_recall": true}}""",
    """{"algoParams": {"target_recall": 0.9, "n_probes": 3}}""",
    """{"algorithm": "exact", "algoParams": {"nlist": 3}}""",
    """{"algorithm": "cagra", "algoParams": {"graph_degree": 32}}""",
    """{"algoParams": {"nlist": 4}, "algorithm": "hnsw"}""")

  private def applyCase(json: String): Option[String] = {
    val stage = new ApproximateNearestNeighbors().setInputCol("v").setIdCol("id")
    JsonMethods.parse(json).asInstanceOf[JObject].obj.foreach {
      case ("k", JInt(v)) => stage.setK(v.toInt)
      case ("algorithm", JString(v)) => stage.setAlgorithm(v)
      case ("metric", JString(v)) => stage.setMetric(v)
      case ("backend", JString(v)) => stage.setBackend(v)
      case ("numPartitions", JInt(v)) => stage.setNumPartitions(v.toInt)
      case ("numQueryBlocks", JInt(v)) => stage.setNumQueryBlocks(v.toInt)
      case ("idCol", JString(v)) => stage.setIdCol(v)
      case ("inputCol", JString(v)) => stage.setInputCol(v)
      case ("algoParams", v) =>
        stage.setAlgoParams(io.github.synapsemlext.util.JsonValues.fromJson(v)
          .asInstanceOf[Map[String, Any]])
      case other => sys.error(s"no setter for $other")
    }
    try {
      stage.fit(tiny)
      None
    } catch {
      case e: IllegalArgumentException => Some(e.getMessage)
    }
  }

  private lazy val tiny = frame(clustered(20, 4, 2, seed = 5))

  private lazy val contract: JValue = {
    val dir = TestEnv.tempDir("knn-contract")
    val path = TestEnv.writeText(dir.resolve("cases.json"), cases.mkString("[", ",", "]"))
    TestEnv.pythonSide("nn_contract", path.toString)
  }

  test("Params are checked by the Python stage at fit, with its messages") {
    spark
    val python = (contract \ "messages") match {
      case JArray(items) => items.map {
        case JString(s) => Some(s)
        case _ => None
      }
      case other => sys.error(s"$other")
    }
    assert(python.count(_.isEmpty) == 5, python)  // the five valid cases
    cases.zip(python).filter(_._2.nonEmpty).foreach { case (json, expected) =>
      assert(applyCase(json) == expected, json)
    }
  }

  test("the driver-side Python starts once, and again after it died") {
    spark
    val ann = new ApproximateNearestNeighbors().setInputCol("v").setIdCol("id").setAlgorithm("exact")
    ann.fit(tiny)
    val first = PythonDriver.processId
    assert(first.isDefined)
    ann.fit(tiny).kneighbors(tiny)
    assert(PythonDriver.processId == first)
    assert(new ProcessBuilder("kill", "-9", first.get.toString).start().waitFor() == 0)
    val deadline = System.nanoTime() + 30e9.toLong
    while (PythonDriver.processId.isDefined && System.nanoTime() < deadline) Thread.sleep(50)
    assert(PythonDriver.processId.isEmpty)
    val model = ann.fit(tiny)
    assert(PythonDriver.processId.exists(_ != first.get))
    assert(model.kneighbors(tiny)._3.count() == 20)
  }

  test("bad schemas fail on the driver with the Python stage's messages") {
    spark
    val items = frame(clustered(20, 4, 2, seed = 3))
    def message(body: => Any): String = intercept[IllegalArgumentException](body).getMessage
    val ann = new ApproximateNearestNeighbors().setInputCol("v").setIdCol("id")
    assert(message(ann.copy(ParamMap(ann.idCol -> "key")).fit(items)) ==
      "idCol 'key' not found in the item DataFrame; available columns: id, v")
    assert(message(ann.fit(items.withColumn("id", col("id").cast("double")))) ==
      "idCol 'id' of the item DataFrame must be an integral or string column, got double")
    assert(message(ann.copy(ParamMap(ann.inputCol -> "w")).fit(items)) ==
      "inputCol 'w' not found in the item DataFrame; available columns: id, v")
    assert(message(new ApproximateNearestNeighbors().setIdCol("id").fit(items)) ==
      "inputCol is not set: name the vector column to search")
    assert(message(new ApproximateNearestNeighbors().setInputCol("v")
      .fit(items.withColumnRenamed("id", "unique_id"))) == "the item DataFrame already has a " +
      "column 'unique_id' but idCol is not set; set idCol to use it as the id")
    val model = ann.setAlgorithm("exact").fit(items)
    assert(message(model.kneighbors(items.withColumn("v", lit("x")))) ==
      "inputCol 'v' of the query DataFrame must be array<float>, array<double> or a Vector " +
      "column (or a list of numeric columns), got string")
    assert(message(ann.fit(items.limit(0))) == "the item DataFrame is empty: nothing to search")
    // transform (SynapseML KNNModel's shape) and the schema it promises
    val found = model.transform(items)
    assert(found.schema == model.transformSchema(items.schema))
    assert(found.count() == 20)
    assert(message(model.transform(found)) == "the DataFrame already has a column " +
      "'neighbors'; set outputCol to another name")
  }

  test("backend gpu is PySpark only; auto is the CPU engine") {
    spark
    val gpu = intercept[IllegalArgumentException](new ApproximateNearestNeighbors()
      .setInputCol("v").setIdCol("id").setBackend("gpu").fit(frame(clustered(10, 4, 2, seed = 1))))
    assert(gpu.getMessage.startsWith("backend 'gpu' is not available from Scala: the GPU " +
      "search delegates to spark-rapids-ml, whose k-NN runs only from PySpark"))
    // a stage whose backend came in with a copy (or a load), not through the setter
    val ann = new ApproximateNearestNeighbors().setInputCol("v").setIdCol("id")
    val loaded = ann.copy(ParamMap(ann.backend -> "gpu"))
    val e = intercept[IllegalArgumentException](loaded.fit(frame(clustered(10, 4, 2, seed = 1))))
    assert(e.getMessage == gpu.getMessage)
    assert(ann.getBackend == "auto" &&
      ann.setAlgorithm("exact").fit(frame(clustered(10, 4, 2, seed = 1))).backendUsed == "cpu")
  }

  test("data errors come back from the executors with their messages") {
    spark
    import spark.implicits._
    val ann = new ApproximateNearestNeighbors().setInputCol("v").setIdCol("id").setAlgorithm("exact")
    def fitMessage(rows: Seq[(Long, Seq[Float])]): String =
      intercept[IllegalArgumentException](ann.fit(rows.toDF("id", "v"))).getMessage
    assert(fitMessage(Seq(1L -> Seq(1f, 2f), 3L -> Seq(1f, 0f), 3L -> Seq(0f, 1f))) ==
      "synapseml-ext: item id 3 occurs 2 times; idCol must identify each item uniquely")
    assert(fitMessage(Seq(1L -> Seq(1f, Float.NaN), 2L -> Seq(0f, 1f)))
      .startsWith("synapseml-ext: item id 1 has a non-finite value (nan) in its 'v' vector"))
    val dims = fitMessage((0L until 40L).map(i => i -> (if (i == 17L) Seq(1f, 2f, 3f) else Seq(1f, 2f))))
    assert(dims.startsWith("synapseml-ext: item id ") && dims.contains("all vectors must have " +
      "the same dimension"), dims)
    val model = ann.fit(Seq(1L -> Seq(1f, 2f), 2L -> Seq(0f, 1f)).toDF("id", "v"))
    val badQuery = Seq(9L -> Seq(1f, 2f, 3f)).toDF("id", "v")
    // The search runs in kneighbors: its data error comes back as on the driver.
    assert(intercept[IllegalArgumentException](model.kneighbors(badQuery)).getMessage
      .startsWith("synapseml-ext: query id 9 has a 'v' vector of dimension 3 but the items have 2"))
    // With the local index copies off the search is lazy: the error comes with the action.
    spark.conf.set("spark.synapseml_ext.nn.localIndexBytes", "0")
    try {
      val (_, _, knn) = model.kneighbors(badQuery)
      // Spark 3.5 and 4.0 wrap the worker's error in a SparkException; 4.2 throws the
      // PythonException (a SparkThrowable there) itself.
      val query = intercept[Exception](knn.collect())
      assert(query.isInstanceOf[SparkException] ||
        query.getClass.getName == "org.apache.spark.api.python.PythonException", query)
      assert(query.getMessage.contains("synapseml-ext: query id 9 has a 'v' vector of " +
        "dimension 3 but the items have 2"), query.getMessage)
    } finally spark.conf.unset("spark.synapseml_ext.nn.localIndexBytes")
  }
}
