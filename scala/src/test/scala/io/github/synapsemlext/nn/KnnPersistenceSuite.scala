package io.github.synapsemlext.nn

import scala.collection.JavaConverters._

import io.github.synapsemlext.TestEnv
import org.apache.hadoop.fs.Path
import org.apache.parquet.hadoop.ParquetFileReader
import org.apache.parquet.hadoop.util.HadoopInputFile
import org.json4s._
import org.json4s.jackson.JsonMethods
import org.scalatest.funsuite.AnyFunSuite

/** A model saved in Scala searches in PySpark with the saved indexes, and one saved in
 * PySpark searches in Scala; estimators load on either side. */
class KnnPersistenceSuite extends AnyFunSuite {

  import KnnData._

  private lazy val spark = TestEnv.spark
  private lazy val items = clustered(400, 12, 6, seed = 11)
  private lazy val queries = clustered(30, 12, 6, seed = 11, firstId = 5000)

  test("a damaged saved model fails its load in one line naming the path") {
    val dir = TestEnv.tempDir("knn-damaged")
    val model = new ApproximateNearestNeighbors().setK(3).setAlgorithm("ivfflat")
      .setAlgoParams(Map("nlist" -> 4, "nprobe" -> 4)).setInputCol("v").setIdCol("id")
      .setNumPartitions(2).fit(frame(items))
    def damaged(name: String)(damage: java.nio.file.Path => Unit): String = {
      val path = dir.resolve(name)
      model.write.save(path.toString)
      val files = java.nio.file.Files.list(path.resolve("data/indexes")).iterator().asScala
        .filter(_.getFileName.toString.endsWith(".parquet")).toSeq.sortBy(_.toString)
      damage(files.last)
      java.nio.file.Files.deleteIfExists(files.last.resolveSibling(s".${files.last.getFileName}.crc"))
      path.toString
    }
    val deleted = damaged("deleted")(file => java.nio.file.Files.delete(file))
    val e1 = intercept[IllegalArgumentException](ApproximateNearestNeighborsModel.load(deleted))
    assert(e1.getMessage.contains(s"the saved model at $deleted lacks index partition(s)"))
    assert(!e1.getMessage.contains("\n"))
    val flipped = damaged("flipped") { file =>
      val bytes = java.nio.file.Files.readAllBytes(file)
      for (i <- bytes.length / 2 until bytes.length / 2 + 570) bytes(i) = (bytes(i) ^ 0xff).toByte
      java.nio.file.Files.write(file, bytes)
    }
    val e2 = intercept[IllegalArgumentException](ApproximateNearestNeighborsModel.load(flipped))
    assert(e2.getMessage.contains(s"the saved model at $flipped") &&
      e2.getMessage.contains("restore"))
  }

  test("Scala save -> Scala load searches with the saved indexes") {
    spark
    val dir = TestEnv.tempDir("knn-save")
    val model = new ApproximateNearestNeighbors().setK(3).setAlgorithm("ivf_flat")
      .setAlgoParams(Map("nlist" -> 4, "nprobe" -> 4)).setInputCol("v").setIdCol("id")
      .setNumPartitions(2).fit(frame(items))
    val path = dir.resolve("model").toString
    model.write.save(path)
    val loaded = ApproximateNearestNeighborsModel.load(path)
    assert(loaded.uid == model.uid && loaded.getAlgorithm == "ivfflat")
    assert(loaded.getAlgoParams.contains(Map("nlist" -> 4, "nprobe" -> 4)))
    // The same summary, but a token of its own: local copies are never shared with the
    // fitted model's, whose saved bytes may since have changed.
    def withoutToken(summary: String) = JsonMethods.parse(summary).removeField(_._1 == "token")
    assert(withoutToken(loaded.buildSummary) == withoutToken(model.buildSummary))
    assert(JsonMethods.parse(loaded.buildSummary) \ "token" !=
      JsonMethods.parse(model.buildSummary) \ "token")
    assert((JsonMethods.parse(loaded.buildSummary) \ "digests").children.size == 2)
    assertSame(collect(loaded.kneighbors(frame(queries))._3),
      collect(model.kneighbors(frame(queries))._3), 0.0)
    assert(indexCodecs(path) == Set("UNCOMPRESSED"))
    // The index rows in pieces (the Python writer's layout; its tests cover the variants).
    assert(spark.read.parquet(s"$path/data/indexes").count() >= 2)
    val e = intercept[java.io.IOException](model.write.save(path))
    assert(e.getMessage.contains("already exists"))
    model.write.overwrite().save(path)
  }

  /** The codecs of the saved index table's column chunks. */
  private def indexCodecs(model: String): Set[String] = {
    val conf = spark.sparkContext.hadoopConfiguration
    val dir = new Path(s"$model/data/indexes")
    val files = dir.getFileSystem(conf).listStatus(dir).map(_.getPath)
      .filter(_.getName.endsWith(".parquet"))
    assert(files.nonEmpty)
    files.flatMap { file =>
      val reader = ParquetFileReader.open(HadoopInputFile.fromPath(file, conf))
      try reader.getFooter.getBlocks.asScala.flatMap(_.getColumns.asScala.map(_.getCodec.name))
      finally reader.close()
    }.toSet
  }

  test("Scala -> PySpark and PySpark -> Scala (model and estimator)") {
    spark
    val dir = TestEnv.tempDir("knn-cross")
    val itemsPath = save(frame(items), dir, "items")
    val queriesPath = save(frame(queries), dir, "queries")
    val scalaSaved = dir.resolve("scala-model").toString
    val pythonSaved = dir.resolve("py-model").toString
    val estimator = new ApproximateNearestNeighbors().setK(4).setAlgorithm("ivfpq")
      .setAlgoParams(Map("nlist" -> 4, "M" -> 4, "n_bits" -> 6)).setMetric("L2")
      .setInputCol("v").setIdCol("id").setBackend("cpu").setNumPartitions(2)
    val model = estimator.fit(spark.read.parquet(itemsPath))
    model.save(scalaSaved)
    estimator.save(scalaSaved + "-estimator")
    val scalaKnn = collect(model.kneighbors(spark.read.parquet(queriesPath))._3)
    TestEnv.writeText(dir.resolve("params.json"), s"""{"items": "$itemsPath", "k": 6,
      "algorithm": "hnsw", "metric": "inner_product", "algoParams": {"ef_search": 32},
      "inputCol": "v", "idCol": "id", "backend": "cpu", "numPartitions": 3}""")
    val answer = TestEnv.pythonSide("nn_persistence", scalaSaved, queriesPath,
      dir.resolve("py-from-scala.json").toString, pythonSaved, dir.resolve("params.json").toString)

    // PySpark searched with the Scala-built indexes it loaded (its reader never rebuilds)
    assertSame(readPython(dir.resolve("py-from-scala.json")), scalaKnn, 1e-5)
    assert((answer \ "loaded" \ "uid") == JString(model.uid))
    assert((answer \ "loaded" \ "set" \ "algoParams") ==
      JObject("nlist" -> JInt(4), "M" -> JInt(4), "n_bits" -> JInt(6)))
    assert((answer \ "loaded" \ "set" \ "metric") == JString("l2"))
    // The same summary and digests; a load draws a token of its own.
    assert((answer \ "loaded" \ "summary").removeField(_._1 == "token") ==
      JsonMethods.parse(model.buildSummary).removeField(_._1 == "token"))
    assert((answer \ "loadedEstimator" \ "uid") == JString(estimator.uid))
    assert((answer \ "loadedEstimator" \ "set" \ "k") == JInt(4))

    // Scala searches with the PySpark-built model, and gets PySpark's answer
    val fromPython = ApproximateNearestNeighborsModel.load(pythonSaved)
    assert(JString(fromPython.uid) == (answer \ "saved" \ "uid"))
    assert((fromPython.getK, fromPython.getAlgorithm, fromPython.getMetric, fromPython.getNumPartitions)
      == ((6, "hnsw", "inner_product", 3)))
    assert(fromPython.getAlgoParams.contains(Map("ef_search" -> 32)) && !fromPython.isSet(fromPython.numQueryBlocks))
    assert(JsonMethods.parse(fromPython.buildSummary).removeField(_._1 == "token") ==
      (answer \ "saved" \ "summary").removeField(_._1 == "token"))
    val expected = readPython(TestEnv.writeText(dir.resolve("py.json"),
      JsonMethods.compact(JsonMethods.render(answer \ "saved" \ "knn"))))
    val actual = collect(fromPython.kneighbors(spark.read.parquet(queriesPath))._3)
    assertSame(actual, expected, 1e-5)
    assert(actual.head.distances == actual.head.distances.sorted.reverse, "inner_product: largest first")

    val pyEstimator = ApproximateNearestNeighbors.load(pythonSaved + "-estimator")
    assert(pyEstimator.getAlgorithm == "hnsw" && pyEstimator.getAlgoParams.contains(Map("ef_search" -> 32)))
    assert(pyEstimator.getIdCol == Some("id") && !pyEstimator.isSet(pyEstimator.numQueryBlocks))
  }

  test("inside a Scala Pipeline: fit, save, load, search") {
    spark
    val ann = new ApproximateNearestNeighbors().setK(3).setAlgorithm("exact").setInputCol("v")
      .setIdCol("id")
    val fitted = new org.apache.spark.ml.Pipeline().setStages(Array(ann)).fit(frame(items))
    val path = TestEnv.tempDir("knn-pipeline").resolve("pipeline").toString
    fitted.write.save(path)
    val loaded = org.apache.spark.ml.PipelineModel.load(path)
    val model = loaded.stages.head.asInstanceOf[ApproximateNearestNeighborsModel]
    assert(model.uid == ann.uid && model.getK == 3)
    assertSame(collect(model.kneighbors(frame(queries))._3), bruteForce(items, queries, 3), 1e-5)
    // A stage after the k-NN model reads its neighbors column: Pipeline.fit checks the
    // schema through both stages first (the estimator's transformSchema).
    val counted = new org.apache.spark.ml.Pipeline().setStages(Array(ann,
      new org.apache.spark.ml.feature.SQLTransformer()
        .setStatement("SELECT id, size(neighbors) AS found FROM __THIS__")))
      .fit(frame(items)).transform(frame(queries))
    assert(counted.collect().map(_.getInt(1)).toSet == Set(3))
  }

  test("loading something else fails naming both classes") {
    spark
    val path = TestEnv.tempDir("knn-other").resolve("tok").toString
    new org.apache.spark.ml.feature.Tokenizer().save(path)
    val e = intercept[IllegalArgumentException](ApproximateNearestNeighborsModel.load(path))
    assert(e.getMessage.contains("holds a org.apache.spark.ml.feature.Tokenizer, not a " +
      "ApproximateNearestNeighborsModel (expected class synapseml_ext.nn.model." +
      "ApproximateNearestNeighborsModel or io.github.synapsemlext.nn.ApproximateNearestNeighborsModel)"))
  }
}
