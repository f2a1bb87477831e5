package org.apache.spark.ml.synapsemlext

import org.apache.spark.SparkContext
import org.apache.spark.ml.param.Params
import org.apache.spark.ml.util.{DefaultParamsReader, DefaultParamsWriter, MLReader}
import org.json4s.{JObject, JValue}

// In org.apache.spark.ml because Spark's metadata reader and writer are private[ml]; using
// them (rather than a copy) keeps the on-disk format exactly Spark's, which is also what
// pyspark's DefaultParamsWriter/Reader speak.

/** Reads a stage saved by `DefaultParamsWritable`, from Scala or from the Python stage.
 *
 * Saved metadata names the class that wrote it: the Scala stub or the Python module path
 * (synapseml_ext/contract/names.py). Spark's own reader instantiates whatever class the
 * metadata names, which cannot work for a Python class; this one accepts exactly the names
 * in `acceptedClassNames` and fails clearly on anything else.
 */
class BridgedParamsReader[T <: Params](cls: Class[T], acceptedClassNames: Seq[String])
    extends MLReader[T] {

  override def load(path: String): T = {
    val metadata = DefaultParamsReader.loadMetadata(path, sc)
    if (!acceptedClassNames.contains(metadata.className)) {
      throw new IllegalArgumentException(s"$path holds a ${metadata.className}, not a " +
        s"${cls.getSimpleName} (expected class ${acceptedClassNames.mkString(" or ")})")
    }
    val instance = cls.getConstructor(classOf[String]).newInstance(metadata.uid)
    metadata.getAndSetParams(instance)
    instance
  }
}

/** A stage's persistence metadata as JSON, the spec the Python bridge rebuilds it from. */
object StageMetadata {

  def json(stage: Params, sc: SparkContext, extra: JObject): String =
    DefaultParamsWriter.getMetadataToSave(stage, sc, Some(extra))
}
