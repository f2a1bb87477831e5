package io.github.synapsemlext.nn

import io.github.synapsemlext.TestEnv
import org.apache.spark.SparkException
import org.apache.spark.ml.param.ParamMap
import org.apache.spark.sql.functions.{col, lit, spark_partition_id}
import org.json4s._
import org.json4s.jackson.JsonMethods
import org.scalatest.funsuite.AnyFunSuite

/** The hand-written Scala stages against the Python class: Params (names, docs, defaults),
 * algoParams keys, the tables' schemas and the setters' messages; then the driver-side and
 * executor-side errors of fit and kneighbors. */
class KnnContractSuite extends AnyFunSuite {

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
    val stage = new ApproximateNearestNeighbors()
    try {
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
          stage.setAlgoParams(AlgoParamsParam.fromJson(v).asInstanceOf[Map[String, Any]])
        case other => sys.error(s"no setter for $other")
      }
      None
    } catch {
      case e: IllegalArgumentException => Some(e.getMessage)
    }
  }

  private lazy val contract: JValue = {
    val dir = TestEnv.tempDir("knn-contract")
    val path = TestEnv.writeText(dir.resolve("cases.json"), cases.mkString("[", ",", "]"))
    TestEnv.pythonSide("nn_contract", path.toString)
  }

  test("Params: same names, docs and defaults as the Python class") {
    val python = (contract \ "params").asInstanceOf[JObject].obj.toMap
    val stage = new ApproximateNearestNeighbors()
    assert(stage.params.map(_.name).toSet == python.keySet)
    stage.params.foreach { param =>
      val p = param.asInstanceOf[org.apache.spark.ml.param.Param[Any]]
      val py = python(p.name)
      assert(JString(p.doc) == (py \ "doc"), s"doc of ${p.name}")
      val pyDefault = py \ "default"
      if (pyDefault == JNull) assert(!stage.hasDefault(p), s"${p.name} has no default in Python")
      else {
        val scalaDefault = JsonMethods.parse(p.jsonEncode(stage.getDefault(p).get))
        assert(scalaDefault == pyDefault, s"default of ${p.name}")
      }
    }
  }

  test("algoParams keys and the tables' schemas agree with Python") {
    val keys = (contract \ "algoParamKeys").asInstanceOf[JObject].obj.map {
      case (algorithm, JNull) => algorithm -> None
      case (algorithm, JObject(fields)) =>
        algorithm -> Some(fields.map { case (k, JString(v)) => k -> v; case o => sys.error(s"$o") }.toMap)
      case other => sys.error(s"$other")
    }.toMap
    assert(keys == AnnRules.AlgoParamKeys)
    val ddl = contract \ "ddl"
    assert((ddl \ "index_long") == JString(Tables.indexDdl("long")))
    assert((ddl \ "index_string") == JString(Tables.indexDdl("string")))
    assert((ddl \ "block_long") == JString(Tables.blockDdl("long")))
    assert((ddl \ "block_string") == JString(Tables.blockDdl("string")))
    assert((ddl \ "found_string_long") == JString(Tables.foundDdl("string", "long")))
    assert((ddl \ "found_long_string") == JString(Tables.foundDdl("long", "string")))
    assert((ddl \ "local_found_string_long") == JString(Tables.localFoundDdl("string", "long")))
    assert((ddl \ "local_found_long_string") == JString(Tables.localFoundDdl("long", "string")))
  }

  test("placement keys agree with Python and put index partition p in shuffle partition p") {
    val python = (contract \ "placement").asInstanceOf[JObject].obj
    assert(python.nonEmpty)
    python.foreach { case (n, JArray(keys)) =>
      assert(Placement.keys(n.toInt) == keys.map { case JInt(k) => k.toInt; case o => sys.error(s"$o") })
    case other => sys.error(s"$other")
    }
    val table = LocalStore.byPart(spark.range(0, 8).select(col("id").cast("int").as(Tables.Part)), 8)
    val placed = table.select(col(Tables.Part), spark_partition_id()).collect()
      .map(r => r.getInt(0) -> r.getInt(1)).toMap
    assert(placed == (0 until 8).map(p => p -> p).toMap)
    table.unpersist()
  }

  test("setters accept and refuse what Python does, with its messages") {
    val python = (contract \ "messages") match {
      case JArray(items) => items.map {
        case JString(s) => Some(s)
        case _ => None
      }
      case other => sys.error(s"$other")
    }
    assert(python.count(_.isEmpty) == 5, python)  // the five valid cases
    cases.zip(python).foreach { case (json, expected) =>
      assert(applyCase(json) == expected, json)
    }
    val stage = new ApproximateNearestNeighbors().setAlgorithm("BRUTE").setMetric("L2")
    assert(stage.getAlgorithm == "exact" && stage.getMetric == "l2")
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
      "column, got string")
    assert(message(ann.fit(items.limit(0))) == "the item DataFrame is empty: nothing to search")
    intercept[UnsupportedOperationException](model.transform(items))
  }

  test("backend gpu is PySpark only; auto is the CPU engine") {
    spark
    val gpu = intercept[IllegalArgumentException](new ApproximateNearestNeighbors().setBackend("gpu"))
    assert(gpu.getMessage.startsWith("backend 'gpu' is not available from Scala: the GPU " +
      "search delegates to spark-rapids-ml, whose k-NN runs only from PySpark"))
    // e.g. an estimator saved from PySpark with backend='gpu'
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
