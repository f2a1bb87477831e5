package io.github.synapsemlext.bench

import io.github.synapsemlext.nn.ApproximateNearestNeighbors
import org.apache.spark.sql.SparkSession

/** The Scala half of `tools/bench/scala_vs_pyspark.py --stage knn`: fit + kneighbors of the
 * k-NN stage called from Scala (through the driver-side Python), with the same protocol as
 * the PySpark half; the first run includes starting that Python process. One JSON line.
 *
 * args: ITEMS_PARQUET QUERIES_PARQUET K WARM_RUNS PARTITIONS
 */
object KnnThroughput {

  def main(args: Array[String]): Unit = {
    val Array(itemsPath, queriesPath, k, warmRuns, partitions) = args
    val spark = SparkSession.builder().appName("scala_vs_pyspark knn (Scala)").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    val items = spark.read.parquet(itemsPath).repartition(partitions.toInt).cache()
    val queries = spark.read.parquet(queriesPath).cache()
    val rows = items.count() + queries.count()
    val ann = new ApproximateNearestNeighbors().setK(k.toInt).setInputCol("v").setIdCol("id")
      .setAlgorithm("ivfflat").setBackend("cpu").setNumPartitions(partitions.toInt)
    val seconds = (0 to warmRuns.toInt).map { _ =>
      val started = System.nanoTime()
      ann.fit(items).kneighbors(queries)._3.write.format("noop").mode("overwrite").save()
      (System.nanoTime() - started) / 1e9
    }
    println(s"""{"side": "scala", "rows": $rows, "seconds": [${seconds.mkString(", ")}]}""")
    spark.stop()
  }
}
