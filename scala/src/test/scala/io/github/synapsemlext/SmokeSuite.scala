package io.github.synapsemlext

import io.github.synapsemlext.hf.HuggingFaceSentenceEmbedder
import org.apache.spark.sql.SparkSession
import org.scalatest.funsuite.AnyFunSuite

class SmokeSuite extends AnyFunSuite {
  test("smoke") {
    val spark = SparkSession.builder().master("local[2]").config("spark.ui.enabled", "false")
      .config("spark.pyspark.python", sys.env("PYSPARK_PYTHON")).getOrCreate()
    import spark.implicits._
    val df = Seq((1, "hello world"), (2, null), (3, "desserts")).toDF("id", "text")
    val emb = new HuggingFaceSentenceEmbedder().setModelName(sys.env("MODEL")).setInputCol("text")
      .setRuntime("cpu").setPrecision("fp32")
    val out = emb.transform(df)
    out.explain()
    val rows = out.collect()
    rows.foreach(r => println((r.get(0), r.get(1), Option(r.getSeq[Float](2)).map(_.take(3)))))
    spark.stop()
  }
}
