package io.github.synapsemlext.util

/** A check on a Param's values, with the message the Python stage gives for the same value
 * (synapseml_ext.engine.spec: OneOf, IntAtLeast, NonBlank, NumberIn, Matches). The generated setters
 * call `checked` (clear message); the Param itself validates with `isValid` (Spark's message),
 * which also covers values set through a ParamMap. */
sealed abstract class ValueRule[T] extends Serializable {

  /** The message for a bad value of Param `name`, or None when `value` is fine. */
  def problem(name: String, value: T): Option[String]

  def isValid(value: T): Boolean = problem("value", value).isEmpty

  def checked(name: String, value: T): T = {
    problem(name, value).foreach(message => throw new IllegalArgumentException(message))
    value
  }
}

object ValueRules {

  def oneOf(allowed: String*): ValueRule[String] = new ValueRule[String] {
    def problem(name: String, value: String): Option[String] =
      if (allowed.contains(value)) None
      else Some(s"unknown $name ${PyRepr(value)}; expected one of: ${allowed.mkString(", ")}")
  }

  def intAtLeast(low: Int): ValueRule[Int] = new ValueRule[Int] {
    def problem(name: String, value: Int): Option[String] =
      if (value >= low) None
      else {
        val what = if (low == 1) "a positive integer" else s"an integer >= $low"
        Some(s"$name must be $what, got $value")
      }
  }

  def nonBlank(what: String): ValueRule[String] = new ValueRule[String] {
    def problem(name: String, value: String): Option[String] =
      if (value != null && value.trim.nonEmpty) None
      else Some(s"$name must be $what, got ${if (value == null) "None" else PyRepr(value)}")
  }

  /** `rangeText` is the range as the Python message prints it (`[0, 1]`). */
  def numberIn(low: Double, high: Double, rangeText: String): ValueRule[Double] =
    new ValueRule[Double] {
      def problem(name: String, value: Double): Option[String] =
        if (low <= value && value <= high) None
        else Some(s"$name must be a number in $rangeText, got ${PyRepr(value)}")
    }

  /** The whole value matches `pattern` (written once, in Python; the same syntax in Java).
   * `echo = false` keeps the value out of the message: it may be a secret in the wrong Param. */
  def matches(pattern: String, what: String, echo: Boolean): ValueRule[String] =
    new ValueRule[String] {
      private val regex = java.util.regex.Pattern.compile(pattern)

      def problem(name: String, value: String): Option[String] =
        if (value != null && regex.matcher(value).matches()) None
        else {
          val got = if (echo) s", got ${if (value == null) "None" else PyRepr(value)}" else ""
          Some(s"$name must be $what$got")
        }
    }
}
