package io.github.synapsemlext.util

import scala.collection.JavaConverters._

import org.apache.spark.ml.param.{Param, Params}
import org.json4s._
import org.json4s.jackson.JsonMethods

// Params whose Python typeConverter takes JSON values (a dict, or a bool-or-int): saved as
// the same JSON on both sides; the Python stage checks the values when it runs.

/** A map of JSON values (`algoParams`), null while unset as Python's None. */
class JsonMapParam(parent: Params, name: String, doc: String)
    extends Param[Map[String, Any]](parent, name, doc, (_: Map[String, Any]) => true) {

  override def jsonEncode(value: Map[String, Any]): String = JsonValues.render(value)

  override def jsonDecode(json: String): Map[String, Any] = JsonMethods.parse(json) match {
    case JNull | JNothing => null
    case obj: JObject => JsonValues.fromJson(obj).asInstanceOf[Map[String, Any]]
    case other => throw new IllegalArgumentException(
      s"$name must be a JSON object, got ${JsonMethods.compact(JsonMethods.render(other))}")
  }
}

/** Any JSON value (`verbose`: a Boolean or an Int). */
class JsonValueParam(parent: Params, name: String, doc: String)
    extends Param[Any](parent, name, doc, (_: Any) => true) {

  override def jsonEncode(value: Any): String = JsonValues.render(value)

  override def jsonDecode(json: String): Any = JsonValues.fromJson(JsonMethods.parse(json))
}

object JsonValues {

  def render(value: Any): String = JsonMethods.compact(JsonMethods.render(toJson(value)))

  def toJson(value: Any): JValue = value match {
    case null => JNull
    case s: String => JString(s)
    case b: Boolean => JBool(b)
    case i: Int => JInt(i)
    case l: Long => JInt(l)
    case b: BigInt => JInt(b)
    case d: Double => JDouble(d)
    case f: Float => JDouble(f.toDouble)
    case m: scala.collection.Map[_, _] => JObject(m.toList.map { case (k, v) => k.toString -> toJson(v) })
    case m: java.util.Map[_, _] => toJson(m.asScala)
    case s: Iterable[_] => JArray(s.toList.map(toJson))
    case a: Array[_] => JArray(a.toList.map(toJson))
    case other => throw new IllegalArgumentException(s"not a JSON value: $other")
  }

  def fromJson(value: JValue): Any = value match {
    case JNull | JNothing => null
    case JString(s) => s
    case JBool(b) => b
    case JInt(n) => if (n.isValidInt) n.toInt else if (n.isValidLong) n.toLong else n
    case JLong(n) => if (n.isValidInt) n.toInt else n
    case JDouble(d) => d
    case JDecimal(d) => d.toDouble
    case JObject(fields) => fields.map { case (k, v) => k -> fromJson(v) }.toMap
    case JArray(items) => items.map(fromJson)
    case other => throw new IllegalArgumentException(s"not a JSON value: $other")
  }
}
