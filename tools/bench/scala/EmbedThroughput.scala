package io.github.synapsemlext.bench

import io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder
import org.apache.spark.sql.SparkSession
import org.apache.spark.sql.functions.col

/** The Scala half of tools/bench/scala_vs_pyspark.py: times the Scala-called embedder on
 * the same parquet input, with the same protocol as the PySpark half (one cold run, then
 * warm runs, each writing every column to Spark's no-op sink), and prints one JSON line.
 *
 * args: INPUT_PARQUET MODEL_DIR RUNTIME CACHE_DIR WARM_RUNS PARTITIONS
 */
object EmbedThroughput {

  def main(args: Array[String]): Unit = {
    val Array(input, model, runtime, cacheDir, warmRuns, partitions) = args
    val spark = SparkSession.builder().appName("scala_vs_pyspark (Scala)").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    val df = spark.read.parquet(input).repartition(partitions.toInt, col("id")).cache()
    val rows = df.count()
    val stage = new HuggingFaceSentenceEmbedder().setModelName(model).setInputCol("data")
      .setOutputCol("embeddings").setRuntime(runtime).setCacheDir(cacheDir)
    val seconds = (0 to warmRuns.toInt).map { _ =>
      val started = System.nanoTime()
      stage.transform(df).write.format("noop").mode("overwrite").save()
      (System.nanoTime() - started) / 1e9
    }
    println(s"""{"side": "scala", "rows": $rows, "seconds": [${seconds.mkString(", ")}]}""")
    spark.stop()
  }
}
