package io.github.synapsemlext.util

/** Python's `repr` of a str, so that messages written by the Scala stubs read exactly like the
 * Python stage's (`inputCol 'text' not found; ...`). Covers what column names and option
 * values contain in practice: quotes, backslashes, control characters. */
object PyRepr {

  def str(value: String): String = {
    val quote = if (value.contains('\'') && !value.contains('"')) '"' else '\''
    val body = new StringBuilder
    value.foreach {
      case '\\' => body ++= "\\\\"
      case '\n' => body ++= "\\n"
      case '\r' => body ++= "\\r"
      case '\t' => body ++= "\\t"
      case c if c == quote => body += '\\' += c
      case c if c < ' ' || c == '\u007f' => body ++= f"\\x${c.toInt}%02x"
      case c => body += c
    }
    s"$quote$body$quote"
  }

  /** `repr` of a value a Param can hold. */
  def apply(value: Any): String = value match {
    case s: String => str(s)
    case b: Boolean => if (b) "True" else "False"
    case other => other.toString
  }
}
