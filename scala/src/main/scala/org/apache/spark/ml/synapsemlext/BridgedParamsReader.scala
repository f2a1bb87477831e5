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
 * (synapseml_ext/bridge/names.py). Spark's own reader instantiates whatever class the
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

/** Metadata of a model with state beside its Params (the k-NN model's build summary), in the
 * layout pyspark's `DefaultParamsWriter.saveMetadata(..., extraMetadata=...)` writes. */
object ModelMetadata {

  /** What `metadata/` holds: the writer's class, the uid, the whole JSON (extra keys too). */
  final class Saved private[ml] (metadata: DefaultParamsReader.Metadata) {
    val className: String = metadata.className
    val uid: String = metadata.uid
    val json: JValue = metadata.metadata

    /** Sets `stage`'s Params and defaults as saved. */
    def setParams(stage: Params): Unit = metadata.getAndSetParams(stage)
  }

  def save(stage: Params, path: String, sc: SparkContext, extra: JObject): Unit =
    DefaultParamsWriter.saveMetadata(stage, path, sc, Some(extra))

  def load(path: String, sc: SparkContext): Saved = {
    new Saved(DefaultParamsReader.loadMetadata(path, sc))
  }
}
