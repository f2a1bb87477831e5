package io.github.synapsemlext.examples

import io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder
import org.apache.spark.ml.Pipeline
import org.apache.spark.ml.feature.SQLTransformer
import org.apache.spark.sql.{DataFrame, SparkSession}

/** A Scala Spark job that embeds product reviews with the Python stage.
 *
 * {{{
 * spark-submit --master local[2] \
 *   --conf spark.pyspark.python=/path/to/venv/bin/python \
 *   --jars synapseml-ext_2.12-0.1.0.jar \
 *   --class io.github.synapsemlext.examples.EmbedReviews synapseml-ext-examples_2.12-0.1.0.jar \
 *   --input reviews.csv --output embedded.parquet [--model DIR] [--runtime onnx]
 *   [--stage SAVED_EMBEDDER] [--save-stage DIR]
 * }}}
 * The input has columns Summary and Text (csv with a header, or parquet); the output keeps
 * every input column and adds `data` ("Title: <Summary>; Content: <Text>") and `embeddings`.
 */
object EmbedReviews {

  def main(args: Array[String]): Unit = {
    val options = parse(args)
    val spark = SparkSession.builder().appName("synapseml-ext EmbedReviews").getOrCreate()
    try run(spark, options) finally spark.stop()
  }

  def run(spark: SparkSession, options: Map[String, String]): Unit = {
    val reviews = read(spark, options("input"))
    val text = new SQLTransformer().setStatement(
      "SELECT *, concat('Title: ', trim(Summary), '; Content: ', trim(Text)) AS data FROM __THIS__")
    val embedder = options.get("stage") match {
      case Some(saved) => HuggingFaceSentenceEmbedder.load(saved)  // e.g. saved from PySpark
      case None =>
        val e = new HuggingFaceSentenceEmbedder().setInputCol("data").setOutputCol("embeddings")
        options.get("model").foreach(e.setModelName)
        options.get("runtime").foreach(e.setRuntime)
        options.get("precision").foreach(e.setPrecision)
        options.get("cache-dir").foreach(e.setCacheDir)
        e
    }
    options.get("save-stage").foreach(path => embedder.write.overwrite().save(path))
    val started = System.nanoTime()
    val model = new Pipeline().setStages(Array(text, embedder)).fit(reviews)
    model.transform(reviews).write.mode("overwrite").parquet(options("output"))
    val seconds = (System.nanoTime() - started) / 1e9
    val rows = spark.read.parquet(options("output")).count()
    println(f"EmbedReviews: $rows rows in $seconds%.1f s (${rows / seconds}%.1f rows/s), " +
      s"stage ${embedder.uid} (runtime=${embedder.getRuntime}, model=${embedder.getModelName})")
  }

  private def read(spark: SparkSession, path: String): DataFrame =
    if (path.endsWith(".csv")) {
      spark.read.option("header", "true").option("escape", "\"").option("multiLine", "true")
        .csv(path)
    } else spark.read.parquet(path)

  private def parse(args: Array[String]): Map[String, String] = {
    val known = Set("input", "output", "model", "runtime", "precision", "cache-dir", "stage",
      "save-stage")
    val pairs = args.grouped(2).map {
      case Array(flag, value) if flag.startsWith("--") && known(flag.drop(2)) => flag.drop(2) -> value
      case other => usage(s"unexpected arguments: ${other.mkString(" ")}")
    }.toMap
    if (!pairs.contains("input") || !pairs.contains("output")) usage("--input and --output are required")
    pairs
  }

  private def usage(problem: String): Nothing = {
    System.err.println(s"EmbedReviews: $problem\nusage: --input PATH --output PATH [--model DIR] " +
      "[--runtime R] [--precision P] [--cache-dir DIR] [--stage SAVED] [--save-stage DIR]")
    sys.exit(2)
  }
}
