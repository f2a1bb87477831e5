package io.github.synapsemlext.util

import org.apache.spark.sql.types.{DataType, StructField, StructType}

/** A column a stage reads (synapseml_ext.bridge.contract.InputColumn): same checks and
 * messages as Python, raised as IllegalArgumentException on the driver. */
case class InputColumn(param: String, types: Seq[DataType], description: String,
    purpose: String) {

  def check(schema: StructType, column: Option[String]): Unit = {
    val name = column.getOrElse(
      throw new IllegalArgumentException(s"$param is not set: name $purpose"))
    val names = schema.fieldNames
    if (!names.contains(name)) {
      val available = if (names.isEmpty) "(none)" else names.mkString(", ")
      throw new IllegalArgumentException(
        s"$param ${PyRepr.str(name)} not found; available columns: $available")
    }
    val actual = schema(name).dataType
    if (!types.contains(actual)) {
      throw new IllegalArgumentException(
        s"$param ${PyRepr.str(name)} must be $description, got ${actual.simpleString}")
    }
  }
}

/** A column a stage appends (synapseml_ext.bridge.contract.OutputColumn). */
case class OutputColumn(param: String, dataType: DataType, nullable: Boolean) {

  def append(schema: StructType, column: String): StructType = {
    if (schema.fieldNames.contains(column)) {
      throw new IllegalArgumentException(s"$param ${PyRepr.str(column)} already exists in the " +
        s"DataFrame; choose another $param or drop that column first")
    }
    StructType(schema.fields :+ StructField(column, dataType, nullable))
  }
}
