// The Scala side of synapseml-ext: generated stubs of the Python stages plus the JVM -> Python
// bridge. One artifact per Scala binary version, because Spark 3.5 runs Scala 2.12 and Spark 4
// Scala 2.13, and the Spark-internal signatures the bridge uses differ between them:
//
//   synapseml-ext_2.12   built against Spark 3.5.9, runs on Spark 3.5.x
//   synapseml-ext_2.13   built against Spark 4.0.1, runs on Spark 4.0.x to 4.2.x
//
//   ./sbt +publishLocal      both jars into ~/.ivy2/local (`+package`: both under target/)
//   ./sbt test               Spark 3.5 / Scala 2.12 (the default line)
//   ./sbt -Dsynapsemlext.sparkLine=4.0 test    the 2.13 jar's sources, built and run on 4.0.1
//   ./sbt -Dsynapsemlext.sparkLine=4.0 -Dsynapsemlext.testSparkLine=4.2 test
//                            the same 4.0-built classes run on Spark 4.2.0 (the binary check)
//   ./sbt -Dsynapsemlext.sparkLine=4.2 test    built and run on 4.2.0 (the source check)
//
// The Spark 4 tests need pyspark of the Spark they run on first on PYTHONPATH (docs/scala.md).
// `+` switches between the two Scala versions; `sparkLine` (3.5 for 2.12; for 2.13 the 4.x line
// named by -Dsynapsemlext.sparkLine, else 4.0) follows the Scala version, so `+`/`++2.13` and
// the property agree. Sources common to every line live in scala/src/main/scala; code that
// touches Spark APIs whose signatures differ lives in scala/src/main/scala-spark<seam>.

lazy val sparkLine = settingKey[String]("Spark line this build targets: 3.5, 4.0 or 4.2")
lazy val sparkVersion = settingKey[String]("Spark version the sources compile against")
lazy val testSparkLine = settingKey[String]("Spark line the tests run on (default: sparkLine)")

// A Line (project/SparkLines.scala): the Spark version compiled against, its Scala, the Java
// release Spark of that line runs on, the seam folder, and the Spark lines its jar runs on.
// 3.5.9 is the PySpark version pip installs; 4.0.1 is the newest 4.0.x with every module
// (spark-mllib too) on Maven Central; 4.2.0 the newest 4.x on both Maven Central and PyPI.
val lines = Map(
  "3.5" -> Line("3.5.9", "2.12.18", "8", "3.5", Seq("3.5")),
  "4.0" -> Line("4.0.1", "2.13.16", "17", "4", Seq("4.0", "4.1", "4.2")),
  "4.2" -> Line("4.2.0", "2.13.18", "17", "4", Seq("4.2"))
)
// What each published artifact is built from: the Scala binary version decides.
val publishedLines = Map("2.12" -> "3.5", "2.13" -> "4.0")

def lineOf(name: String): Line = lines.getOrElse(name, sys.error(
  s"unknown Spark line '$name'; expected one of: ${lines.keys.toSeq.sorted.mkString(", ")}"))

val chosenLine = sys.props.getOrElse("synapsemlext.sparkLine",
  sys.env.getOrElse("SYNAPSEMLEXT_SPARK_LINE", "3.5"))
val chosen: Line = lineOf(chosenLine)  // an unknown line stops the build here
// The 2.13 leg of `+`: the 4.x line asked for, else the one the 2.13 artifact is built from.
val spark4Line = if (chosenLine.startsWith("4.")) chosenLine else publishedLines("2.13")
val chosenTestLine = sys.props.get("synapsemlext.testSparkLine")
  .orElse(sys.env.get("SYNAPSEMLEXT_TEST_SPARK_LINE")).filter(_.nonEmpty)
val chosenTest: Option[Line] = chosenTestLine.map(lineOf)  // an unknown one stops the build

def lineFor(scalaBinary: String): String = if (scalaBinary == "2.12") "3.5" else spark4Line

// Spark's modules need these opens on Java 17 (the list spark-submit adds itself).
val javaModuleOpens = Seq(
  "java.base/java.lang", "java.base/java.lang.invoke", "java.base/java.lang.reflect",
  "java.base/java.io", "java.base/java.net", "java.base/java.nio", "java.base/java.util",
  "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
  "java.base/jdk.internal.ref", "java.base/sun.nio.ch", "java.base/sun.nio.cs",
  "java.base/sun.security.action", "java.base/sun.util.calendar"
).map(p => s"--add-opens=$p=ALL-UNNAMED")

def sparkModules(version: String, configuration: Option[Configuration]): Seq[ModuleID] =
  Seq("spark-sql", "spark-mllib").map { m =>
    val module = "org.apache.spark" %% m % version
    configuration.fold(module)(c => module % c)
  }

// The version is written once, as __version__ in the Python package (pyproject reads it too).
lazy val packageVersion: String = {
  val source = IO.read(file("python/synapseml_ext/__init__.py"))
  "__version__ = \"([^\"]+)\"".r.findFirstMatchIn(source).map(_.group(1))
    .getOrElse(sys.error("no __version__ in python/synapseml_ext/__init__.py"))
}

lazy val commonSettings = Seq(
  organization := "io.github.synapsemlext",
  version := packageVersion,
  scalaVersion := chosen.scala,
  crossScalaVersions := Seq("2.12.18", lineOf(spark4Line).scala),
  sparkLine := lineFor(scalaBinaryVersion.value),
  sparkVersion := lineOf(sparkLine.value).spark,
  // A line that is not published (4.2) builds beside the published one, not over it.
  crossTarget := {
    val published = publishedLines.get(scalaBinaryVersion.value).contains(sparkLine.value)
    if (published) crossTarget.value
    else target.value / s"scala-${scalaBinaryVersion.value}-spark${sparkLine.value}"
  },
  javacOptions ++= Seq("--release", lineOf(sparkLine.value).javaRelease),
  scalacOptions ++= Seq("-deprecation", "-feature", "-unchecked",
    "-release", lineOf(sparkLine.value).javaRelease),
  libraryDependencies ++= sparkModules(sparkVersion.value, Some(Provided))
)

lazy val root = (project in file("."))
  .settings(commonSettings)
  .settings(
    // synapseml-ext_2.12 (Spark 3.5) and synapseml-ext_2.13 (Spark 4): the Scala suffix says
    // which Spark a jar is for.
    name := "synapseml-ext",
    // Only the lines in publishedLines publish; 4.2 is a check of the sources against 4.2.
    publish / skip := !publishedLines.values.toSeq.contains(sparkLine.value),
    testSparkLine := {
      val line = chosenTestLine.getOrElse(sparkLine.value)
      val binary = CrossVersion.binaryScalaVersion(lineOf(line).scala)
      if (binary != scalaBinaryVersion.value) sys.error(s"testSparkLine $line runs Scala " +
        s"$binary: classes built for Scala ${scalaBinaryVersion.value} cannot run on it")
      line
    },

    Compile / scalaSource := baseDirectory.value / "scala" / "src" / "main" / "scala",
    Compile / javaSource := baseDirectory.value / "scala" / "src" / "main" / "java",
    Compile / unmanagedSourceDirectories +=
      baseDirectory.value / "scala" / "src" / "main" / s"scala-spark${lineOf(sparkLine.value).seam}",
    Compile / resourceDirectory := baseDirectory.value / "scala" / "src" / "main" / "resources",
    Test / scalaSource := baseDirectory.value / "scala" / "src" / "test" / "scala",
    Test / resourceDirectory := baseDirectory.value / "scala" / "src" / "test" / "resources",

    // Facts the jar checks at run time (Spark line) and reports (versions, other artifacts).
    // Java, so that the Spark-line check reads them whatever Scala library the session has.
    Compile / sourceGenerators += Def.task {
      val file = (Compile / sourceManaged).value / "io" / "github" / "synapsemlext" / "BuildInfo.java"
      def strings(values: Seq[String]) = values.map(v => "\"" + v + "\"").mkString(", ")
      val artifacts = publishedLines.toSeq.flatMap { case (scala, line) =>
        lineOf(line).runsOn.map(runs => runs -> s"${organization.value}:${name.value}_$scala")
      }.sorted
      val puts = artifacts.map { case (runs, artifact) =>
        s"""    map.put("$runs", "$artifact");""" }
      IO.write(file,
        s"""package io.github.synapsemlext;
           |
           |import java.util.Arrays;
           |import java.util.Collections;
           |import java.util.LinkedHashMap;
           |import java.util.List;
           |import java.util.Map;
           |
           |/** Written by build.sbt: what this jar was built for. */
           |public final class BuildInfo {
           |  private BuildInfo() {}
           |
           |  public static final String version = "${version.value}";
           |  /** The Spark line compiled against. */
           |  public static final String sparkLine = "${sparkLine.value}";
           |  public static final String sparkVersion = "${sparkVersion.value}";
           |  public static final String scalaBinaryVersion = "${scalaBinaryVersion.value}";
           |  /** The Spark lines (major.minor) this jar runs on, oldest first. */
           |  public static final List<String> runsOn =
           |    Collections.unmodifiableList(Arrays.asList(${strings(lineOf(sparkLine.value).runsOn)}));
           |  /** For every Spark line a published artifact runs on, that artifact. */
           |  public static final Map<String, String> artifacts;
           |
           |  static {
           |    Map<String, String> map = new LinkedHashMap<>();
           |${puts.mkString("\n")}
           |    artifacts = Collections.unmodifiableMap(map);
           |  }
           |}
           |""".stripMargin)
      Seq(file)
    }.taskValue,

    libraryDependencies += "org.scalatest" %% "scalatest" % "3.2.19" % Test,

    // Tests start local Spark with Python workers: one JVM of their own, one suite at a time.
    Test / fork := true,
    Test / parallelExecution := false,
    Test / javaOptions ++= Seq("-Xmx3g", "-XX:+IgnoreUnrecognizedVMOptions") ++ javaModuleOpens,
    // The driver-side Python the k-NN stages start imports synapseml_ext from this checkout.
    Test / envVars ++= sys.env.filter { case (k, _) => k == "PYSPARK_PYTHON" } + ("PYTHONPATH" ->
      (((ThisBuild / baseDirectory).value / "python").getPath +: sys.env.get("PYTHONPATH").toSeq)
        .mkString(java.io.File.pathSeparator)),
    Test / testOptions += Tests.Argument(TestFrameworks.ScalaTest, "-oD"),
    // With testSparkLine set to another line, the classes built against `sparkVersion` run on
    // that line's Spark (resolved by sparkRuntime): what a user's cluster does with the jar.
    Test / fullClasspath := Def.taskDyn {
      val own = (Test / fullClasspath).value
      if (testSparkLine.value == sparkLine.value) Def.task(own)
      else Def.task {
        val provided = (Compile / dependencyClasspath).value.files.toSet
        val runtime = (sparkRuntime / Compile / dependencyClasspath).value
        own.filterNot(f => provided(f.data)) ++ runtime
      }
    }.value,

    // Published POM: Spark stays provided; the cluster brings it.
    publishMavenStyle := true,
    licenses := Seq("Apache-2.0" -> url("https://www.apache.org/licenses/LICENSE-2.0")),
    homepage := Some(url("https://github.com/synapseml-ext/synapseml-ext"))
  )

// Spark of `testSparkLine` with its own Scala library: the run-time classpath of the tests
// when they run classes built against another Spark (see root's Test / fullClasspath).
lazy val sparkRuntime = (project in file("target/spark-runtime"))
  .settings(
    publish / skip := true,
    scalaVersion := chosenTest.getOrElse(chosen).scala,
    crossScalaVersions := Seq(scalaVersion.value),
    libraryDependencies ++= sparkModules(chosenTest.getOrElse(chosen).spark, None)
  )

// A Scala job as users write one (docs/scala.md): its own jar, run with spark-submit and
// --jars synapseml-ext_2.12-<version>.jar. tests/test_scala_interop.py runs it end to end.
lazy val examples = (project in file("scala/examples"))
  .dependsOn(root)
  .settings(commonSettings)
  .settings(
    name := "synapseml-ext-examples",
    publish / skip := true
  )

// The Scala half of tools/bench/scala_vs_pyspark.py (sources beside the Python half).
lazy val bench = (project in file("tools/bench/scala"))
  .dependsOn(root)
  .settings(commonSettings)
  .settings(
    name := "synapseml-ext-bench",
    publish / skip := true,
    Compile / scalaSource := baseDirectory.value
  )
