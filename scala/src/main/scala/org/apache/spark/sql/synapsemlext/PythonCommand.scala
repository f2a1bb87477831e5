package org.apache.spark.sql.synapsemlext

import java.io.ByteArrayOutputStream
import java.nio.charset.StandardCharsets

/** The "command" Spark's Python worker unpickles into `(function, return type)`.
 *
 * Instead of a cloudpickled closure, the JVM writes a protocol-2 pickle that calls an
 * importable function with one string:
 * {{{
 *   0x80 0x02 | 'c' module '\n' name '\n' | 'X' <uint32 LE length> <utf-8> | 0x85 'R' '.'
 *   PROTO 2     GLOBAL                      BINUNICODE                     TUPLE1 REDUCE STOP
 * }}}
 * so no Python runs on the driver, nothing depends on the cloudpickle version Spark vendors,
 * and the command stays a few hundred bytes (model weights load on the workers).
 */
object PythonCommand {

  def call(module: String, function: String, argument: String): Array[Byte] = {
    require(module.nonEmpty && !module.contains('\n'), s"bad module name '$module'")
    require(function.nonEmpty && !function.contains('\n'), s"bad function name '$function'")
    val out = new ByteArrayOutputStream()
    out.write(Array[Byte](0x80.toByte, 0x02))
    out.write('c')
    out.write(s"$module\n$function\n".getBytes(StandardCharsets.US_ASCII))
    val text = argument.getBytes(StandardCharsets.UTF_8)
    out.write('X')
    val n = text.length
    out.write(Array[Byte](n.toByte, (n >>> 8).toByte, (n >>> 16).toByte, (n >>> 24).toByte))
    out.write(text)
    out.write(Array[Byte](0x85.toByte, 'R', '.'))
    out.toByteArray
  }

  /** `synapseml_ext.bridge.load(specJson)`. */
  def bridgeLoad(specJson: String): Array[Byte] = call("synapseml_ext.bridge", "load", specJson)
}
