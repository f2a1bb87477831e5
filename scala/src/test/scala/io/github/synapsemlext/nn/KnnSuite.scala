package io.github.synapsemlext.nn

import io.github.synapsemlext.TestEnv
import org.apache.spark.sql.functions.{col, concat, lit}
import org.scalatest.funsuite.AnyFunSuite

/** fit -> model -> kneighbors from Scala: exact equals brute force, and every result equals
 * the PySpark stage's on the same data. */
class KnnSuite extends AnyFunSuite {

  import KnnData._

  private lazy val spark = TestEnv.spark
  private lazy val items = clustered(600, 16, 8, seed = 7)
  private lazy val queries = clustered(50, 16, 8, seed = 7, firstId = 10000)

  test("exact search from Scala equals brute force (3 index partitions, 2 query blocks)") {
    spark
    val model = new ApproximateNearestNeighbors().setAlgorithm("exact").setK(5)
      .setInputCol("v").setIdCol("id").setNumPartitions(3).setNumQueryBlocks(2)
      .fit(frame(items))
    assert(model.backendUsed == "cpu" && model.buildSummary.contains("\"partitions\":3"))
    val (itemDf, queryDf, knn) = model.kneighbors(frame(queries))
    assert(knn.columns.toSeq == Seq("query_id", "indices", "distances"))
    assert(itemDf.count() == 600 && queryDf.count() == 50)
    assertSame(collect(knn), bruteForce(items, queries, 5), 1e-5)
    // All found lists stored by the local-copy search: one range shuffle by query id groups
    // them for the merge and sorts knnDf (no hash shuffle for the grouping). A plan not yet
    // run, which shows each shuffle once.
    val plan = model.kneighbors(frame(queries))._3.queryExecution.executedPlan.toString
    val shuffles = """Exchange (\w+)\((?:__qid|query_id)\b""".r.findAllMatchIn(plan)
      .map(_.group(1)).toList
    assert(shuffles == Seq("rangepartitioning"))
  }

  test("Scala equals PySpark: default ivfflat, euclidean, long ids, 3 partitions") {
    spark
    val dir = TestEnv.tempDir("knn-parity")
    val itemsPath = save(frame(items), dir, "items")
    val queriesPath = save(frame(queries), dir, "queries")
    val params = Map[String, Any]("k" -> 10, "inputCol" -> "v", "idCol" -> "id",
      "backend" -> "cpu", "numPartitions" -> 3)
    val paramsPath = TestEnv.writeText(dir.resolve("params.json"), TestEnv.json(params))
    TestEnv.pythonSide("nn_reference", itemsPath, queriesPath, dir.resolve("py.json").toString,
      paramsPath.toString)
    val model = new ApproximateNearestNeighbors().setK(10).setInputCol("v").setIdCol("id")
      .setBackend("cpu").setNumPartitions(3).fit(spark.read.parquet(itemsPath))
    val scala = collect(model.kneighbors(spark.read.parquet(queriesPath))._3)
    assertSame(scala, readPython(dir.resolve("py.json")), 1e-5)
    // and the clustered data is easy: the approximate search found the exact neighbours
    assert(scala.map(_.indices) == bruteForce(items, queries, 10).map(_.indices))
  }

  test("Scala equals PySpark: hnsw, cosine, string ids, algoParams, query blocks") {
    spark
    val dir = TestEnv.tempDir("knn-parity-str")
    def withStringIds(rows: Seq[(Long, Array[Float])]) =
      frame(rows).select(concat(lit("doc-"), col("id").cast("string")).as("key"), col("v"))
    val itemsPath = save(withStringIds(items), dir, "items")
    val queriesPath = save(withStringIds(queries), dir, "queries")
    TestEnv.writeText(dir.resolve("params.json"), """{"k": 4, "algorithm": "hnsw",
      "metric": "cosine", "algoParams": {"M": 16, "ef_search": 64}, "inputCol": "v",
      "idCol": "key", "backend": "cpu", "numPartitions": 2, "numQueryBlocks": 3}""")
    TestEnv.pythonSide("nn_reference", itemsPath, queriesPath, dir.resolve("py.json").toString,
      dir.resolve("params.json").toString)
    val model = new ApproximateNearestNeighbors().setK(4).setAlgorithm("hnsw")
      .setMetric("cosine").setAlgoParams(Map("M" -> 16, "ef_search" -> 64)).setInputCol("v")
      .setIdCol("key").setBackend("cpu").setNumPartitions(2).setNumQueryBlocks(3)
      .fit(spark.read.parquet(itemsPath))
    val (_, _, knn) = model.kneighbors(spark.read.parquet(queriesPath))
    assert(knn.columns.head == "query_key")
    val scala = collect(knn)
    assert(scala.size == 50 && scala.head.indices.head.isInstanceOf[String])
    assertSame(scala, readPython(dir.resolve("py.json")), 1e-5)
  }

  test("generated unique_id, padding past the item count, approxSimilarityJoin") {
    spark
    val few = items.take(3)
    val model = new ApproximateNearestNeighbors().setAlgorithm("exact").setK(5)
      .setInputCol("v").fit(frame(few).drop("id"))
    val (itemDf, queryDf, knn) = model.kneighbors(frame(queries.take(2)).drop("id"))
    assert(itemDf.columns.head == "unique_id" && queryDf.columns.head == "unique_id")
    assert(knn.columns.head == "query_unique_id")
    val rows = collect(knn)
    assert(rows.size == 2)
    rows.foreach { r =>
      assert(r.indices.drop(3) == Seq(Long.MaxValue, Long.MaxValue))
      assert(r.distances.drop(3).forall(_.isPosInfinity))
    }
    val joined = new ApproximateNearestNeighbors().setAlgorithm("exact").setK(3)
      .setInputCol("v").setIdCol("id").fit(frame(items))
      .approxSimilarityJoin(frame(queries.take(5)), "dist")
    assert(joined.columns.toSeq == Seq("item_df", "query_df", "dist"))
    assert(joined.count() == 15)
    val expected = bruteForce(items, queries.take(5), 3)
      .flatMap(knn => knn.indices.map(i => (knn.query, i))).toSet
    assert(joined.select("query_df.id", "item_df.id").collect()
      .map(r => (r.get(0), r.get(1))).toSet == expected)
  }

  test("generated ids keep each query with its own neighbours after a round-robin repartition") {
    spark
    // The search reads the vectors only; the join back reads every column: unmaterialised,
    // the two round-robin shuffles sorted different columns and numbered rows differently.
    val model = new ApproximateNearestNeighbors().setAlgorithm("exact").setK(3)
      .setInputCol("v").fit(frame(items).repartition(3))
    val joined = model.approxSimilarityJoin(frame(queries).repartition(3), "dist")
    val expected = bruteForce(items, queries, 3)
      .flatMap(knn => knn.indices.map(i => (knn.query, i))).toSet
    assert(joined.select("query_df.id", "item_df.id").collect()
      .map(r => (r.get(0), r.get(1))).toSet == expected)
  }
}
