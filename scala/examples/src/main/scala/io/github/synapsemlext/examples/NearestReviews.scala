package io.github.synapsemlext.examples

import io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder
import io.github.synapsemlext.nn.ApproximateNearestNeighbors
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.{col, concat, lit, trim}

/** A Scala Spark job that embeds product reviews and finds, for each review, the most similar
 * other reviews: both Python stages (embedder, k-NN) called from Scala.
 *
 * {{{
 * spark-submit --master local[2] \
 *   --conf spark.pyspark.python=/path/to/venv/bin/python \
 *   --jars synapseml-ext_2.12-0.1.0.jar \
 *   --class io.github.synapsemlext.examples.NearestReviews synapseml-ext-examples_2.12-0.1.0.jar \
 *   --input reviews.csv --output DIR [--model DIR] [--runtime onnx] [--k 5]
 *   [--algorithm ivfflat] [--save-model DIR]
 * }}}
 * The input has columns `Unnamed: 0` (the review id), Summary and Text (csv with a header).
 * Writes DIR/embedded (id, embeddings) and DIR/knn (query_id, indices, distances).
 */
object NearestReviews {

  def main(args: Array[String]): Unit = {
    val options = parse(args)
    val spark = SparkSession.builder().appName("synapseml-ext NearestReviews").getOrCreate()
    try run(spark, options) finally spark.stop()
  }

  def run(spark: SparkSession, options: Map[String, String]): Unit = {
    val reviews = spark.read.option("header", "true").option("escape", "\"")
      .option("multiLine", "true").csv(options("input"))
      .select(col("`Unnamed: 0`").cast("long").as("id"),
        concat(lit("Title: "), trim(col("Summary")), lit("; Content: "), trim(col("Text")))
          .as("data"))
    val embedder = new HuggingFaceSentenceEmbedder().setInputCol("data").setOutputCol("embeddings")
    options.get("model").foreach(embedder.setModelName)
    options.get("runtime").foreach(embedder.setRuntime)
    options.get("cache-dir").foreach(embedder.setCacheDir)
    val embedded = s"${options("output")}/embedded"
    embedder.transform(reviews).select("id", "embeddings").write.mode("overwrite").parquet(embedded)

    val items = spark.read.parquet(embedded)
    val ann = new ApproximateNearestNeighbors().setInputCol("embeddings").setIdCol("id")
      .setMetric("cosine").setK(options.getOrElse("k", "5").toInt)
    options.get("algorithm").foreach(ann.setAlgorithm)
    val model = ann.fit(items)
    options.get("save-model").foreach(path => model.write.overwrite().save(path))
    val (_, _, knn) = model.kneighbors(items)
    knn.write.mode("overwrite").parquet(s"${options("output")}/knn")
    val rows = spark.read.parquet(s"${options("output")}/knn").count()
    println(s"NearestReviews: $rows queries, k=${model.getK}, algorithm=${model.getAlgorithm}, " +
      s"build ${model.buildSummary}")
  }

  private def parse(args: Array[String]): Map[String, String] = {
    val known = Set("input", "output", "model", "runtime", "cache-dir", "k", "algorithm",
      "save-model")
    val pairs = args.grouped(2).map {
      case Array(flag, value) if flag.startsWith("--") && known(flag.drop(2)) =>
        flag.drop(2) -> value
      case other => usage(s"unexpected arguments: ${other.mkString(" ")}")
    }.toMap
    if (!pairs.contains("input") || !pairs.contains("output")) {
      usage("--input and --output are required")
    }
    pairs
  }

  private def usage(problem: String): Nothing = {
    System.err.println(s"NearestReviews: $problem\nusage: --input PATH --output DIR " +
      "[--model DIR] [--runtime R] [--cache-dir DIR] [--k K] [--algorithm A] [--save-model DIR]")
    sys.exit(2)
  }
}
