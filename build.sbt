// The Scala side of synapseml-ext: generated stubs of the Python stages plus the JVM -> Python
// bridge. One artifact per Spark line, because the Spark-internal signatures the bridge uses
// differ between lines:
//
//   ./sbt package                                 Spark 3.5.9 / Scala 2.12 (the default)
//   ./sbt -Dsynapsemlext.sparkLine=4.0 package    Spark 4.0 / Scala 2.13 (the seam; see docs/scala.md)
//
// Sources common to every line live in scala/src/main/scala; code that touches Spark APIs
// whose signatures differ lives in scala/src/main/scala-spark<line>, selected by `sparkLine`.

lazy val sparkLine = settingKey[String]("Spark line this build targets: 3.5 or 4.0")

// line -> (Spark version, Scala version). 3.5.9 is the PySpark version pip installs.
val sparkLines = Map(
  "3.5" -> ("3.5.9", "2.12.18"),
  "4.0" -> ("4.0.1", "2.13.16")  // newest 4.0.x with every module on Maven Central here
)

val chosenLine = sys.props.getOrElse("synapsemlext.sparkLine", sys.env.getOrElse("SYNAPSEMLEXT_SPARK_LINE", "3.5"))
val lineVersions = sparkLines.getOrElse(
  chosenLine,
  sys.error(s"unknown synapsemlext.sparkLine '$chosenLine'; expected one of: ${sparkLines.keys.toSeq.sorted.mkString(", ")}")
)
val sparkVersion = lineVersions._1
val scalaVersionForLine = lineVersions._2
// Spark 3.5 still runs on Java 8; Spark 4.0 needs Java 17.
val javaRelease = if (chosenLine == "3.5") "8" else "17"

// Spark 3.5 modules need these opens on Java 17 (the list spark-submit adds itself).
val javaModuleOpens = Seq(
  "java.base/java.lang", "java.base/java.lang.invoke", "java.base/java.lang.reflect",
  "java.base/java.io", "java.base/java.net", "java.base/java.nio", "java.base/java.util",
  "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
  "java.base/jdk.internal.ref", "java.base/sun.nio.ch", "java.base/sun.nio.cs",
  "java.base/sun.security.action", "java.base/sun.util.calendar"
).map(p => s"--add-opens=$p=ALL-UNNAMED")

lazy val commonSettings = Seq(
  organization := "io.github.synapsemlext",
  version := "0.1.0",
  scalaVersion := scalaVersionForLine,
  javacOptions ++= Seq("--release", javaRelease),
  scalacOptions ++= Seq("-deprecation", "-feature", "-unchecked", "-release", javaRelease)
)

lazy val root = (project in file("."))
  .settings(commonSettings)
  .settings(
    // The Spark 3.5 artifact keeps the plain name the docs promise; other lines say theirs.
    name := (if (chosenLine == "3.5") "synapseml-ext" else s"synapseml-ext-spark$chosenLine"),
    sparkLine := chosenLine,

    Compile / scalaSource := baseDirectory.value / "scala" / "src" / "main" / "scala",
    Compile / unmanagedSourceDirectories +=
      baseDirectory.value / "scala" / "src" / "main" / s"scala-spark${sparkLine.value}",
    Compile / resourceDirectory := baseDirectory.value / "scala" / "src" / "main" / "resources",
    Test / scalaSource := baseDirectory.value / "scala" / "src" / "test" / "scala",
    Test / resourceDirectory := baseDirectory.value / "scala" / "src" / "test" / "resources",

    // Facts the jar checks at run time (Spark line) and reports (versions).
    Compile / sourceGenerators += Def.task {
      val file = (Compile / sourceManaged).value / "io" / "github" / "synapsemlext" / "BuildInfo.scala"
      IO.write(file,
        s"""package io.github.synapsemlext
           |
           |/** Written by build.sbt: what this jar was built for. */
           |object BuildInfo {
           |  val version: String = "${version.value}"
           |  val sparkLine: String = "${sparkLine.value}"
           |  val sparkVersion: String = "$sparkVersion"
           |  val scalaBinaryVersion: String = "${scalaBinaryVersion.value}"
           |}
           |""".stripMargin)
      Seq(file)
    }.taskValue,

    libraryDependencies ++= Seq(
      "org.apache.spark" %% "spark-sql" % sparkVersion % Provided,
      "org.apache.spark" %% "spark-mllib" % sparkVersion % Provided,
      "org.scalatest" %% "scalatest" % "3.2.19" % Test
    ),

    // Tests start local Spark with Python workers: one JVM of their own, one suite at a time.
    Test / fork := true,
    Test / parallelExecution := false,
    Test / javaOptions ++= Seq("-Xmx3g", "-XX:+IgnoreUnrecognizedVMOptions") ++ javaModuleOpens,
    Test / envVars ++= sys.env.filter { case (k, _) => k == "PYSPARK_PYTHON" || k == "PYTHONPATH" },
    Test / testOptions += Tests.Argument(TestFrameworks.ScalaTest, "-oD"),

    // Published POM: Spark stays provided; the cluster brings it.
    publishMavenStyle := true,
    licenses := Seq("Apache-2.0" -> url("https://www.apache.org/licenses/LICENSE-2.0")),
    homepage := Some(url("https://github.com/synapseml-ext/synapseml-ext"))
  )

// A Scala job as users write one (docs/scala.md): its own jar, run with spark-submit and
// --jars synapseml-ext_2.12-<version>.jar. tests/test_scala_interop.py runs it end to end.
lazy val examples = (project in file("scala/examples"))
  .dependsOn(root)
  .settings(commonSettings)
  .settings(
    name := "synapseml-ext-examples",
    publish / skip := true,
    libraryDependencies ++= Seq(
      "org.apache.spark" %% "spark-sql" % sparkVersion % Provided,
      "org.apache.spark" %% "spark-mllib" % sparkVersion % Provided
    )
  )

// The Scala half of tools/bench/scala_vs_pyspark.py (sources beside the Python half).
lazy val bench = (project in file("tools/bench/scala"))
  .dependsOn(root)
  .settings(commonSettings)
  .settings(
    name := "synapseml-ext-bench",
    publish / skip := true,
    Compile / scalaSource := baseDirectory.value,
    libraryDependencies ++= Seq(
      "org.apache.spark" %% "spark-sql" % sparkVersion % Provided,
      "org.apache.spark" %% "spark-mllib" % sparkVersion % Provided
    )
  )
