package io.github.synapsemlext.hf

import scala.util.Try

import io.github.synapsemlext.TestEnv
import org.apache.spark.ml.param.ParamMap
import org.apache.spark.sql.types._
import org.json4s._
import org.json4s.jackson.JsonMethods
import org.scalatest.funsuite.AnyFunSuite

/** The generated stage: Params as Python declares them, and the Python stage's own checks and
 * messages (run in the driver-side Python) before any Spark job. */
class EmbedderStubSuite extends AnyFunSuite {

  private lazy val spark = TestEnv.spark

  private def stage = new HuggingFaceSentenceEmbedder()

  test("defaults, typed setters and getters mirror the Python stage") {
    val s = stage
    assert(s.uid.startsWith("HuggingFaceSentenceEmbedder_"))
    assert(s.getModelName === "sentence-transformers/all-MiniLM-L6-v2")
    assert((s.getRuntime, s.getPrecision, s.getBatchSize, s.getOutputCol) ===
      (("auto", "auto", 256, "embeddings")))
    assert((s.getMaxTokensPerBatch, s.getMaxSeqLength, s.getNumThreads) === ((0, 0, 0)))
    assert((s.getPrompt, s.getCacheDir, s.getMinCosine) === (("", "", 0.999)))
    assert(s.getNormalize === None && !s.isDefined(s.normalize))  // unset means "the model's"
    assert(!s.isDefined(s.inputCol))
    val set = s.setModelName("/models/x").setInputCol("text").setRuntime("onnx")
      .setBatchSize(64).setNormalize(false).setMinCosine(0.5)
    assert(set eq s)  // this.type, chainable
    assert((s.getModelName, s.getInputCol, s.getRuntime, s.getBatchSize) ===
      (("/models/x", "text", "onnx", 64)))
    assert(s.getNormalize === Some(false) && s.getMinCosine === 0.5)
    assert((s.getEndpoint, s.getApiFormat, s.getApiKeyEnv) === (("", "tei", "")))
    assert((s.getMaxConcurrentRequests, s.getRequestTimeout, s.getMaxRetries) === ((4, 60.0, 5)))
    assert((s.getTruncateDim, s.getPromptName, s.getRevision, s.getTrustRemoteCode) ===
      ((0, "", "", false)))
    assert(s.params.map(_.name).toSeq.sorted === Seq("apiFormat", "apiKeyEnv", "batchSize",
      "cacheDir", "endpoint", "inputCol", "maxConcurrentRequests", "maxRetries", "maxSeqLength",
      "maxTokensPerBatch", "minCosine", "modelName", "normalize", "numThreads", "outputCol",
      "precision", "prompt", "promptName", "requestTimeout", "revision", "runtime",
      "truncateDim", "trustRemoteCode"))
  }

  test("copy keeps the uid and every Param, and applies extra values") {
    val s = stage.setInputCol("text").setRuntime("cpu")
    val copied = s.copy(ParamMap(s.batchSize -> 8))
    assert(copied.uid === s.uid && copied.getRuntime === "cpu" && copied.getInputCol === "text")
    assert(copied.getBatchSize === 8 && s.getBatchSize === 256)
  }

  test("bad values and bad schemas fail with the Python stage's own messages") {
    val schema = StructType(Seq(StructField("id", LongType), StructField("text", StringType),
      StructField("it's", IntegerType), StructField("embeddings", ArrayType(FloatType))))
    case class Case(params: Map[String, Any], withSchema: Boolean)
    val cases = Seq(
      Case(Map("runtime" -> "gpu"), withSchema = false),
      Case(Map("precision" -> "int4"), withSchema = false),
      Case(Map("batchSize" -> 0), withSchema = false),
      Case(Map("maxSeqLength" -> -1), withSchema = false),
      Case(Map("numThreads" -> -2), withSchema = false),
      Case(Map("minCosine" -> 1.5), withSchema = false),
      Case(Map("modelName" -> "  "), withSchema = false),
      Case(Map("endpoint" -> "https://user:pw@tei:8080"), withSchema = false),
      Case(Map("apiKeyEnv" -> "sk-live-123"), withSchema = false),  // a key, not a name
      Case(Map("apiFormat" -> "grpc"), withSchema = false),
      Case(Map("requestTimeout" -> 0.0), withSchema = false),
      Case(Map("maxRetries" -> -1), withSchema = false),
      Case(Map("truncateDim" -> -8), withSchema = false),
      Case(Map.empty, withSchema = true),                                     // inputCol unset
      Case(Map("inputCol" -> "body", "outputCol" -> "e"), withSchema = true),  // missing
      Case(Map("inputCol" -> "id", "outputCol" -> "e"), withSchema = true),    // wrong type
      Case(Map("inputCol" -> "it's", "outputCol" -> "e"), withSchema = true),  // quote in name
      Case(Map("inputCol" -> "text"), withSchema = true),                      // output exists
      Case(Map("inputCol" -> "text", "outputCol" -> "vec"), withSchema = true) // fine
    )
    spark  // the checks run in the driver-side Python attached to this session
    val scala = cases.map { c =>
      Try {
        val s = stage
        c.params.foreach {
          case ("runtime", v: String) => s.setRuntime(v)
          case ("precision", v: String) => s.setPrecision(v)
          case ("batchSize", v: Int) => s.setBatchSize(v)
          case ("maxSeqLength", v: Int) => s.setMaxSeqLength(v)
          case ("numThreads", v: Int) => s.setNumThreads(v)
          case ("minCosine", v: Double) => s.setMinCosine(v)
          case ("modelName", v: String) => s.setModelName(v)
          case ("endpoint", v: String) => s.setEndpoint(v)
          case ("apiKeyEnv", v: String) => s.setApiKeyEnv(v)
          case ("apiFormat", v: String) => s.setApiFormat(v)
          case ("requestTimeout", v: Double) => s.setRequestTimeout(v)
          case ("maxRetries", v: Int) => s.setMaxRetries(v)
          case ("truncateDim", v: Int) => s.setTruncateDim(v)
          case ("inputCol", v: String) => s.setInputCol(v)
          case ("outputCol", v: String) => s.setOutputCol(v)
          case other => fail(s"no setter in this test for $other")
        }
        s.transformSchema(if (c.withSchema) schema else
          StructType(Seq(StructField("text", StringType))))  // Params alone: a fine schema
      }.failed.toOption.map {
        case e: IllegalArgumentException => e.getMessage
        case e => fail(s"expected IllegalArgumentException, got $e")
      }
    }
    val json = JArray(cases.toList.map { c =>
      val params = JObject(c.params.toList.map {
        case (k, v: String) => k -> JString(v)
        case (k, v: Int) => k -> JInt(v)
        case (k, v: Double) => k -> JDouble(v)
        case (k, v) => fail(s"unexpected $k=$v")
      })
      if (c.withSchema) JObject("params" -> params, "schema" -> JsonMethods.parse(schema.json))
      else JObject("params" -> params)
    })
    val path = TestEnv.writeText(TestEnv.tempFile("cases", ".json"),
      JsonMethods.compact(JsonMethods.render(json)))
    val python = TestEnv.pythonSide("messages", path.toString) match {
      case JArray(items) => items.map {
        case JString(m) => Some(m)
        case _ => None
      }
      case other => fail(s"unexpected answer $other")
    }
    scala.zip(python).zip(cases).foreach { case ((s, p), c) =>
      assert(s === p, s"case $c")
    }
    assert(scala.count(_.isDefined) === cases.size - 1)  // every bad case failed on both sides
    assert(!scala.flatten.exists(_.contains("sk-live-123")))  // a misplaced key is not echoed
  }

  test("values set without the setters are checked too, and a refused value is never saved") {
    spark
    val s = stage.setInputCol("text")
    s.set(s.runtime, "gpu")
    val fine = StructType(Seq(StructField("text", StringType)))
    assert(intercept[IllegalArgumentException](s.transformSchema(fine)).getMessage ===
      "unknown runtime 'gpu'; expected one of: cpu, onnx, cuda, tensorrt, auto, remote")
    // A key where the NAME of its environment variable belongs: refused, not echoed, not saved.
    val keyed = stage.setInputCol("text").setApiKeyEnv("sk-live-123")
    val path = TestEnv.tempDir("refused").resolve("stage").toString
    val e = intercept[IllegalArgumentException](keyed.write.save(path))
    assert(e.getMessage.startsWith("apiKeyEnv must be the NAME of an environment variable"))
    assert(!e.getMessage.contains("sk-live-123") && !new java.io.File(path).exists())
  }
}
