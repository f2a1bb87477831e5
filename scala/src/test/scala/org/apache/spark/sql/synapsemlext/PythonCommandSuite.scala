package org.apache.spark.sql.synapsemlext

import java.nio.file.Files

import io.github.synapsemlext.TestEnv
import org.json4s._
import org.json4s.jackson.JsonMethods
import org.scalatest.funsuite.AnyFunSuite

class PythonCommandSuite extends AnyFunSuite {

  test("the command is a protocol-2 pickle calling module.function(text)") {
    val bytes = PythonCommand.call("pkg.mod", "fn", "hé")  // 'é' is two UTF-8 bytes
    val expected = Array(0x80, 0x02, 'c'.toInt) ++ "pkg.mod\nfn\n".map(_.toInt) ++
      Array('X'.toInt, 3, 0, 0, 0, 'h'.toInt, 0xc3, 0xa9, 0x85, 'R'.toInt, '.'.toInt)
    assert(bytes.map(_ & 0xff).toSeq === expected.toSeq)
  }

  test("Python unpickles a JVM-built command into synapseml_ext.bridge's (function, type)") {
    val spec = JsonMethods.compact(JsonMethods.render(PythonBridge.bridgeSpec("probe")))
    val path = TestEnv.tempFile("command", ".bin")
    Files.write(path, PythonCommand.bridgeLoad(spec))
    val answer = TestEnv.pythonSide("unpickle", path.toString)
    assert((answer \ "function") === JString("_probe"))
    assert((answer \ "module") === JString("synapseml_ext.bridge.protocol"))
    assert((answer \ "returnType") === JString("\"string\""))
  }

  test("a long spec with non-ASCII text survives the pickle (length is in UTF-8 bytes)") {
    val text = "Crème brûlée 東京 🔥 " * 2000
    val bytes = PythonCommand.call("json", "loads", JsonMethods.compact(JsonMethods.render(
      JString(text))))
    val path = TestEnv.tempFile("command", ".bin")
    Files.write(path, bytes)
    val out = TestEnv.runPython(Seq("-c",
      s"import pickle,sys; v = pickle.load(open('$path', 'rb')); " +
        "sys.stdout.buffer.write(v.encode('utf-8'))"))
    assert(out === text)
  }
}
