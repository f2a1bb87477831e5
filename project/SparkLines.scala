/** The Spark lines the build targets (build.sbt; docs/scala.md has the matrix).
 *
 * @param spark       the Spark version the sources compile against
 * @param scala       its Scala version (the one Spark of that version is built with)
 * @param javaRelease the Java release Spark of that line still runs on
 * @param seam        scala/src/main/scala-spark<seam>: the code whose Spark APIs differ
 * @param runsOn      the Spark lines (major.minor) a jar built for this line runs on
 */
final case class Line(spark: String, scala: String, javaRelease: String, seam: String,
    runsOn: Seq[String])
