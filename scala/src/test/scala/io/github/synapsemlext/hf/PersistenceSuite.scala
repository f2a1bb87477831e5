package io.github.synapsemlext.hf

import io.github.synapsemlext.TestEnv
import org.json4s._
import org.scalatest.funsuite.AnyFunSuite

/** Saved stages load on the other side: metadata written by the Scala stub loads in Python
 * and the Python stage's loads in Scala, with the same uid, set Params and defaults. */
class PersistenceSuite extends AnyFunSuite {

  private lazy val spark = TestEnv.spark

  test("Scala save -> Scala load keeps uid, set Params and unset ones") {
    spark
    val s = new HuggingFaceSentenceEmbedder().setInputCol("text").setRuntime("onnx")
      .setBatchSize(32).setNormalize(true).setMinCosine(0.25).setPrompt("query: ")
    val path = TestEnv.tempDir("embedder").resolve("stage").toString
    s.save(path)
    val loaded = HuggingFaceSentenceEmbedder.load(path)
    assert(loaded.uid === s.uid)
    assert(loaded.extractParamMap().toSeq.map(p => p.param.name -> p.value).toMap ===
      s.extractParamMap().toSeq.map(p => p.param.name -> p.value).toMap)
    assert(loaded.isSet(loaded.runtime) && !loaded.isSet(loaded.precision))
    assert(loaded.getNormalize === Some(true) && loaded.getPrompt === "query: ")
    val unset = new HuggingFaceSentenceEmbedder().setInputCol("t")
    unset.write.overwrite().save(path)
    assert(HuggingFaceSentenceEmbedder.load(path).getNormalize === None)
  }

  test("Scala -> Python and Python -> Scala") {
    val dir = TestEnv.tempDir("persistence")
    val scalaSaved = dir.resolve("from-scala").toString
    val pythonSaved = dir.resolve("from-python").toString
    new HuggingFaceSentenceEmbedder().setInputCol("text").setOutputCol("vec")
      .setRuntime("onnx").setBatchSize(32).setNormalize(false).setMinCosine(0.5)
      .setModelName("/models/e5").setPrompt("passage: ").save(scalaSaved)
    val pythonParams = Map[String, Any]("inputCol" -> "body", "runtime" -> "cpu",
      "maxSeqLength" -> 128, "normalize" -> true, "cacheDir" -> "/dbfs/cache")
    val paramsPath = TestEnv.writeText(dir.resolve("params.json"), TestEnv.json(pythonParams))
    val answer = TestEnv.pythonSide("persistence", scalaSaved, pythonSaved, paramsPath.toString)

    // Python read what Scala wrote: the set Params and the defaults, under the same uid.
    val scalaStage = HuggingFaceSentenceEmbedder.load(scalaSaved)
    assert((answer \ "loaded" \ "uid") === JString(scalaStage.uid))
    val pySet = (answer \ "loaded" \ "set").asInstanceOf[JObject].obj.toMap
    assert(pySet === Map("inputCol" -> JString("text"), "outputCol" -> JString("vec"),
      "runtime" -> JString("onnx"), "batchSize" -> JInt(32), "normalize" -> JBool(false),
      "minCosine" -> JDouble(0.5), "modelName" -> JString("/models/e5"),
      "prompt" -> JString("passage: ")))
    val pyDefaults = (answer \ "loaded" \ "defaults").asInstanceOf[JObject].obj.map(_._1).toSet
    assert(pyDefaults === scalaStage.params.filter(scalaStage.hasDefault(_)).map(_.name).toSet)

    // Scala reads what Python wrote.
    val fromPython = HuggingFaceSentenceEmbedder.load(pythonSaved)
    assert(JString(fromPython.uid) === (answer \ "saved" \ "uid"))
    assert((fromPython.getInputCol, fromPython.getRuntime, fromPython.getMaxSeqLength,
      fromPython.getNormalize, fromPython.getCacheDir) ===
      (("body", "cpu", 128, Some(true), "/dbfs/cache")))
    assert(fromPython.isSet(fromPython.runtime) && !fromPython.isSet(fromPython.batchSize))
    assert(fromPython.getBatchSize === 256 && fromPython.getOutputCol === "embeddings")
  }

  test("loading something else fails naming both classes") {
    spark
    val path = TestEnv.tempDir("other").resolve("tok").toString
    new org.apache.spark.ml.feature.Tokenizer().save(path)
    val e = intercept[IllegalArgumentException](HuggingFaceSentenceEmbedder.load(path))
    assert(e.getMessage.contains("holds a org.apache.spark.ml.feature.Tokenizer, not a " +
      "HuggingFaceSentenceEmbedder (expected class io.github.synapsemlext.hf." +
      "HuggingFaceSentenceEmbedder or synapseml_ext.hf.embedder.HuggingFaceSentenceEmbedder)"))
  }
}
