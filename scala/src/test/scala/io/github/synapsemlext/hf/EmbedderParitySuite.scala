package io.github.synapsemlext.hf

import io.github.synapsemlext.TestEnv
import org.apache.spark.ml.{Pipeline, PipelineModel}
import org.apache.spark.ml.feature.SQLTransformer
import org.apache.spark.sql.{DataFrame, Row}
import org.scalatest.funsuite.AnyFunSuite

/** A Scala pipeline runs the Python stage on the 1000 fine-food reviews and matches what the
 * PySpark stage gives on the same rows. */
class EmbedderParitySuite extends AnyFunSuite {

  private lazy val spark = TestEnv.spark

  // fp32 PyTorch: both sides run the same executor function on the same Arrow batches.
  private def params: Map[String, Any] = Map("modelName" -> TestEnv.modelDir,
    "inputCol" -> "data", "outputCol" -> "embeddings", "runtime" -> "cpu",
    "precision" -> "fp32", "cacheDir" -> TestEnv.cacheDir)

  private def embedder = new HuggingFaceSentenceEmbedder()
    .setModelName(TestEnv.modelDir).setInputCol("data").setOutputCol("embeddings")
    .setRuntime("cpu").setPrecision("fp32").setCacheDir(TestEnv.cacheDir)

  /** The seed quickstart's text, built in Scala: "Title: <Summary>; Content: <Text>". */
  private val buildText = new SQLTransformer().setStatement(
    "SELECT *, concat('Title: ', trim(Summary), '; Content: ', trim(Text)) AS data FROM __THIS__")

  private def reviews: DataFrame = {
    val csv = TestEnv.reviewsCsv.getOrElse(cancel("fine_food_reviews_1k.csv not found beside " +
      "the checkout (set SYNAPSEML_EXT_SHARED_DATA to its folder)"))
    spark.read.option("header", "true").option("escape", "\"").option("multiLine", "true")
      .csv(csv.getPath).withColumnRenamed("_c0", "id")
      .selectExpr("cast(id as long) as id", "cast(Score as int) as Score", "Summary", "Text")
      .repartition(3)  // several partitions: order must survive them
      .sortWithinPartitions("id")
  }

  private def pysparkReference(input: DataFrame): Map[Long, Seq[Float]] = {
    val dir = TestEnv.tempDir("parity")
    val in = dir.resolve("in.parquet").toString
    val out = dir.resolve("out.parquet").toString
    input.write.parquet(in)
    val paramsPath = TestEnv.writeText(dir.resolve("params.json"), TestEnv.json(params))
    TestEnv.pythonSide("reference", in, out, paramsPath.toString)
    spark.read.parquet(out).collect().map(r =>
      r.getAs[Long]("id") -> r.getSeq[Float](r.fieldIndex("embeddings"))).toMap
  }

  private def cosine(a: Seq[Float], b: Seq[Float]): Double = {
    val dot = a.zip(b).map { case (x, y) => x.toDouble * y }.sum
    dot / math.sqrt(a.map(x => x.toDouble * x).sum * b.map(x => x.toDouble * x).sum)
  }

  test("1000 reviews: same rows, order and columns as the input; embeddings = PySpark's") {
    val input = reviews.cache()
    val pipeline = new Pipeline().setStages(Array(buildText, embedder)).fit(input)
    val out = pipeline.transform(input)
    assert(out.columns.toSeq === Seq("id", "Score", "Summary", "Text", "data", "embeddings"))
    val rows = out.collect()
    val inputRows = input.collect()
    assert(rows.length === 1000)
    assert(rows.map(_.getAs[Long]("id")).toSeq === inputRows.map(_.getAs[Long]("id")).toSeq)
    assert(rows.map(r => (r.getAs[Int]("Score"), r.getAs[String]("Text"))).toSeq ===
      inputRows.map(r => (r.getAs[Int]("Score"), r.getAs[String]("Text"))).toSeq)

    val reference = pysparkReference(buildText.transform(input))
    assert(reference.size === 1000)
    val cosines = rows.map { r =>
      val vector = r.getSeq[Float](r.fieldIndex("embeddings"))
      assert(vector.length === 384)
      cosine(vector, reference(r.getAs[Long]("id")))
    }
    assert(cosines.min >= 0.9999, s"min cosine ${cosines.min}")
    input.unpersist()
  }

  test("nulls give null embeddings, empty text an embedding; a saved PipelineModel reloads") {
    val local = spark
    import local.implicits._
    val df = Seq[(Int, String)]((0, null), (1, ""), (2, "desserts"), (3, null))
      .toDF("id", "data").coalesce(1)
    val model = new Pipeline().setStages(Array(embedder)).fit(df)
    val path = TestEnv.tempDir("pipeline").resolve("model").toString
    model.write.overwrite().save(path)
    val reloaded = PipelineModel.load(path)
    assert(reloaded.stages.head.isInstanceOf[HuggingFaceSentenceEmbedder])
    val rows = reloaded.transform(df).orderBy("id").collect()
    assert(rows.map(_.isNullAt(2)).toSeq === Seq(true, false, false, true))
    rows.filterNot(_.isNullAt(2)).foreach { r: Row =>
      val v = r.getSeq[Float](2)
      assert(v.length === 384 && v.forall(x => !x.isNaN))
    }
  }
}
