package org.apache.spark.sql.synapsemlext;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import io.github.synapsemlext.BuildInfo;

/**
 * The jar is built for one Spark line (Spark 3.5 runs Scala 2.12, Spark 4 Scala 2.13, and the
 * Spark Connect seam differs); running it on another must fail clearly, before any of it runs.
 *
 * <p>Java, not Scala, on purpose: a synapseml-ext_2.12 jar on Spark 4 (Scala 2.13) or a
 * synapseml-ext_2.13 jar on Spark 3.5 (Scala 2.12) has the wrong Scala library under it, so
 * the check must not call into one. The stages run it first thing in their constructors
 * ({@code CheckedTransformer}, {@code CheckedEstimator}, {@code CheckedModel}) and again
 * before the driver-side Python is called ({@code PythonDriver}).
 */
public final class SparkLine {

  private SparkLine() {}

  private static volatile String running;

  /** "4.1" for "4.1.0-preview1". */
  public static String majorMinor(String version) {
    String[] parts = version.split("[.-]");
    return parts.length >= 2 ? parts[0] + "." + parts[1] : version;
  }

  /**
   * The problem with running a jar on Spark {@code running}, or null when it runs there.
   *
   * @param jarVersion  the jar's version
   * @param scalaBinary the Scala binary version the jar is built for
   * @param runsOn      the Spark lines (major.minor) the jar runs on, oldest first
   * @param artifacts   for every Spark line some artifact runs on, that artifact's coordinates
   */
  public static String mismatch(String running, String jarVersion, String scalaBinary,
      List<String> runsOn, Map<String, String> artifacts) {
    String line = majorMinor(running);
    if (runsOn.contains(line)) return null;
    String advice;
    String artifact = artifacts.get(line);
    if (artifact != null) {
      advice = "use the artifact built for Spark " + line + ": " + artifact + ":" + jarVersion;
    } else {
      advice = "synapseml-ext has no artifact for Spark " + line + " yet; supported lines: "
          + supported(artifacts);
    }
    return "this synapseml-ext jar (" + jarVersion + ") was built for Spark " + span(runsOn)
        + " (Scala " + scalaBinary + ") but the session runs Spark " + running + "; " + advice;
  }

  /** {@link #mismatch(String, String, String, List, Map)} for this jar. */
  public static String mismatch(String running) {
    return mismatch(running, BuildInfo.version, BuildInfo.scalaBinaryVersion, BuildInfo.runsOn,
        BuildInfo.artifacts);
  }

  /** org.apache.spark.SPARK_VERSION, read without the Scala library. */
  public static String sparkVersion() {
    String version = running;
    if (version == null) {
      try {
        Class<?> pkg = Class.forName("org.apache.spark.package$");
        Object module = pkg.getField("MODULE$").get(null);
        version = (String) pkg.getMethod("SPARK_VERSION").invoke(module);
      } catch (ReflectiveOperationException | LinkageError e) {
        throw new PythonBridgeException("synapseml-ext cannot tell which Spark runs this "
            + "session (org.apache.spark.SPARK_VERSION: " + e + ")", e);
      }
      running = version;
    }
    return version;
  }

  /** Throws the mismatch of this jar and the running Spark, if any. */
  public static void require() {
    require(sparkVersion());
  }

  public static void require(String runningVersion) {
    String problem = mismatch(runningVersion);
    if (problem != null) throw new PythonBridgeException(problem, null);
  }

  /** "3.5" or "4.0-4.2". */
  static String span(List<String> lines) {
    if (lines.isEmpty()) return "no Spark line";
    String first = lines.get(0);
    String last = lines.get(lines.size() - 1);
    return first.equals(last) ? first : first + "-" + last;
  }

  /** "3.5 (g:a_2.12), 4.0-4.2 (g:a_2.13)": consecutive lines of one artifact together. */
  static String supported(Map<String, String> artifacts) {
    List<String> out = new ArrayList<>();
    List<String> lines = new ArrayList<>();
    String current = null;
    for (Map.Entry<String, String> e : artifacts.entrySet()) {
      if (current != null && !current.equals(e.getValue())) {
        out.add(span(lines) + " (" + current + ")");
        lines.clear();
      }
      current = e.getValue();
      lines.add(e.getKey());
    }
    if (current != null) out.add(span(lines) + " (" + current + ")");
    return String.join(", ", out);
  }
}
