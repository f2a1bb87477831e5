package io.github.synapsemlext.util

import org.apache.spark.ml.{Estimator, Model, Transformer}
import org.apache.spark.sql.synapsemlext.SparkLine

// Stages that check the running Spark before anything else of theirs runs: a superclass's
// constructor body runs before the stage's Params (its traits) are initialised, so a jar
// built for the other Spark line (and Scala) fails with SparkLine's sentence instead of a
// NoSuchMethodError from the Scala library. The bodies call only Java (SparkLine).

/** A Transformer whose construction checks the Spark line first. */
abstract class CheckedTransformer extends Transformer {
  SparkLine.require()
}

/** An Estimator whose construction checks the Spark line first. */
abstract class CheckedEstimator[M <: Model[M]] extends Estimator[M] {
  SparkLine.require()
}

/** A Model whose construction checks the Spark line first. */
abstract class CheckedModel[M <: Model[M]] extends Model[M] {
  SparkLine.require()
}
