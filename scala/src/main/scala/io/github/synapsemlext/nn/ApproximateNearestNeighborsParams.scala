package io.github.synapsemlext.nn

import java.util.Locale

import scala.collection.JavaConverters._

import io.github.synapsemlext.util.PyRepr
import org.apache.spark.ml.param._
import org.apache.spark.sql.{Column, DataFrame}
import org.apache.spark.sql.functions.{col, monotonically_increasing_id}
import org.apache.spark.sql.types._
import org.json4s._
import org.json4s.jackson.JsonMethods

// Hand-written, not generated: the k-NN stages do their DataFrame plumbing in Scala. The
// Params' names, docs, defaults and value checks mirror synapseml_ext/nn/params.py, and
// ParamsParitySuite checks them (and the messages) against the Python class.

/** Params of [[ApproximateNearestNeighbors]] and its model (synapseml_ext.nn.params). */
trait ApproximateNearestNeighborsParams extends Params {

  /** @group param */
  final val k: IntParam = new IntParam(this, "k",
    "number of nearest neighbours to return per query (>= 1)", ParamValidators.gtEq(1))

  /** @group getParam */
  final def getK: Int = $(k)

  /** @group param */
  final val algorithm: Param[String] = new Param[String](this, "algorithm",
    "search algorithm: ivfflat (inverted lists, exact distances), ivfpq (product " +
      "quantisation, re-ranked), hnsw (graph; CPU), exact (brute force) or cagra (GPU only)",
    (value: String) => AnnRules.Algorithms.contains(value))

  /** @group getParam */
  final def getAlgorithm: String = $(algorithm)

  /** @group param */
  final val metric: Param[String] = new Param[String](this, "metric",
    "distance: euclidean (= l2), sqeuclidean, inner_product (larger is nearer) or cosine " +
      "(1 - cosine similarity)",
    (value: String) => AnnRules.Metrics.contains(value))

  /** @group getParam */
  final def getMetric: String = $(metric)

  /** Unset (the default) lets the engine choose every key per partition.
   * @group param */
  final val algoParams: AlgoParamsParam = new AlgoParamsParam(this, "algoParams",
    "algorithm parameters, spark-rapids-ml's names: nlist, nprobe (ivf*), M, n_bits " +
      "(ivfpq), M, ef_construction, ef_search (hnsw), target_recall (CPU engine: recall the " +
      "automatic nprobe/ef_search aims at, default 0.95); unset keys are chosen per partition")

  /** The algoParams, empty while unset. @group getParam */
  final def getAlgoParams: Map[String, Any] =
    if (isDefined(algoParams)) Option($(algoParams)).getOrElse(Map.empty) else Map.empty

  /** @group param */
  final val inputCol: Param[String] = new Param[String](this, "inputCol",
    "input column name.", (value: String) => value != null && value.nonEmpty)

  /** @group getParam */
  final def getInputCol: String = $(inputCol)

  /** @group param */
  final val idCol: Param[String] = new Param[String](this, "idCol",
    "column of unique item/query ids (integral or string); unset adds a generated " +
      "'unique_id' column as spark-rapids-ml does",
    (value: String) => value != null && value.nonEmpty)

  /** The id column, None while unset (then `unique_id` is generated). @group getParam */
  final def getIdCol: Option[String] = get(idCol)

  /** @group param */
  final val backend: Param[String] = new Param[String](this, "backend",
    "where the search runs: cpu (our distributed faiss engine), gpu (delegates to " +
      "spark-rapids-ml / cuVS), auto (gpu where spark-rapids-ml and cuVS import and see a GPU " +
      "on the executors, else cpu)",
    (value: String) => AnnRules.Backends.contains(value))

  /** @group getParam */
  final def getBackend: String = $(backend)

  /** @group param */
  final val numPartitions: IntParam = new IntParam(this, "numPartitions",
    "CPU engine: number of item partitions, one index each (0 keeps the input's " +
      "partitioning); fewer, larger partitions search faster (one per core is fastest, " +
      "see docs/ann.md), and each must stay below ~1.5 GB",
    ParamValidators.gtEq(0))

  /** @group getParam */
  final def getNumPartitions: Int = $(numPartitions)

  /** @group param */
  final val numQueryBlocks: IntParam = new IntParam(this, "numQueryBlocks",
    "CPU engine: query groups per kneighbors call (0: enough for every core, i.e. " +
      "ceil(default parallelism / index partitions)); every index partition meets every " +
      "group in one task, so tasks = index partitions x groups (more groups: more " +
      "parallelism and less memory per task, but each index partition is read once per " +
      "group)",
    ParamValidators.gtEq(0))

  /** @group getParam */
  final def getNumQueryBlocks: Int = $(numQueryBlocks)

  setDefault(k -> 5, algorithm -> "ivfflat", metric -> "euclidean", backend -> "auto",
    numPartitions -> 0, numQueryBlocks -> 0)

  // Setters with the Python stage's checks and messages (IllegalArgumentException here,
  // ValueError/TypeError there). Both the estimator and the model have them, as in Python.

  /** @group setParam */
  def setK(value: Int): this.type = {
    if (value < 1) throw new IllegalArgumentException(s"k must be a positive integer, got $value")
    set(k, value)
  }

  /** Also takes cuVS / faiss spellings (ivf_flat, brute, ...), stored under our names.
   * @group setParam */
  def setAlgorithm(value: String): this.type = {
    val canonical = AnnRules.canonicalAlgorithm(value)
    AnnRules.checkAlgoParams(canonical, getAlgoParams)
    set(algorithm, canonical)
  }

  /** @group setParam */
  def setMetric(value: String): this.type = {
    val lower = value.toLowerCase(Locale.ROOT)
    if (!AnnRules.Metrics.contains(lower)) {
      throw new IllegalArgumentException(s"unknown metric ${PyRepr(value)}; expected one of: " +
        AnnRules.Metrics.mkString(", "))
    }
    set(metric, lower)
  }

  /** Keys and values as spark-rapids-ml's `algoParams` (`Map("nlist" -> 100, "nprobe" -> 10)`).
   * @group setParam */
  def setAlgoParams(value: Map[String, Any]): this.type = {
    val checked = AlgoParamsParam.checked(value)
    AnnRules.checkAlgoParams($(algorithm), checked)
    set(algoParams, checked)
  }

  /** Java: `setAlgoParams(java.util.Map)`. @group setParam */
  def setAlgoParams(value: java.util.Map[String, _]): this.type =
    setAlgoParams(AlgoParamsParam.fromJava(value))

  /** @group setParam */
  def setInputCol(value: String): this.type = set(inputCol, AnnRules.columnName("inputCol", value))

  /** @group setParam */
  def setIdCol(value: String): this.type = set(idCol, AnnRules.columnName("idCol", value))

  /** "cpu" or "auto" (the CPU engine); "gpu" fails: spark-rapids-ml's GPU path is Python only.
   * @group setParam */
  def setBackend(value: String): this.type = {
    if (!AnnRules.Backends.contains(value)) {
      throw new IllegalArgumentException(s"unknown backend ${PyRepr(value)}; expected one of: " +
        AnnRules.Backends.mkString(", "))
    }
    AnnRules.requireJvmBackend(value)
    set(backend, value)
  }

  /** @group setParam */
  def setNumPartitions(value: Int): this.type =
    set(numPartitions, AnnRules.atLeastZero("numPartitions", value))

  /** @group setParam */
  def setNumQueryBlocks(value: Int): this.type =
    set(numQueryBlocks, AnnRules.atLeastZero("numQueryBlocks", value))

  // -- driver-side checks and column expressions (synapseml_ext.nn.model._SchemaMixin) -------

  private[nn] def idColOrDefault: String = getIdCol.getOrElse(AnnRules.GeneratedId)

  /** `df` with its id column: the idCol (which must exist) or a generated `unique_id`,
   *  computed once (a local checkpoint, as synapseml_ext.nn.schema.materialized): generated
   *  ids are stable only within one evaluation, and the search and a join back to the rows
   *  are two. */
  private[nn] def withId(df: DataFrame, what: String): DataFrame = {
    checkId(df.schema, what)
    if (getIdCol.isDefined) df
    else df.select(monotonically_increasing_id().as(AnnRules.GeneratedId) +:
      df.columns.toSeq.map(c => df.col(s"`$c`")): _*).localCheckpoint(eager = true)
  }

  /** The id kind ("long" or "string") of `schema` as `withId` will give it. */
  private[nn] def checkId(schema: StructType, what: String): String = getIdCol match {
    case None =>
      if (schema.fieldNames.contains(AnnRules.GeneratedId)) {
        throw new IllegalArgumentException(s"the $what DataFrame already has a column " +
          s"${PyRepr.str(AnnRules.GeneratedId)} but idCol is not set; set idCol to use it as " +
          "the id")
      }
      "long"
    case Some(id) =>
      if (!schema.fieldNames.contains(id)) {
        throw new IllegalArgumentException(s"idCol ${PyRepr.str(id)} not found in the $what " +
          s"DataFrame; available columns: ${AnnRules.available(schema)}")
      }
      schema(id).dataType match {
        case _: ByteType | _: ShortType | _: IntegerType | _: LongType => "long"
        case StringType => "string"
        case other => throw new IllegalArgumentException(s"idCol ${PyRepr.str(id)} of the " +
          s"$what DataFrame must be an integral or string column, got ${other.simpleString}")
      }
  }

  /** The inputCol as `array<float>`; fails for a missing or non-vector column. */
  private[nn] def vectorExpr(schema: StructType, what: String): Column = {
    if (!isDefined(inputCol)) {
      throw new IllegalArgumentException("inputCol is not set: name the vector column to search")
    }
    val name = $(inputCol)
    if (!schema.fieldNames.contains(name)) {
      throw new IllegalArgumentException(s"inputCol ${PyRepr.str(name)} not found in the $what " +
        s"DataFrame; available columns: ${AnnRules.available(schema)}")
    }
    schema(name).dataType match {
      case ArrayType(FloatType | DoubleType, _) => col(s"`$name`").cast("array<float>")
      case udt if udt.getClass.getSimpleName == "VectorUDT" =>
        org.apache.spark.ml.functions.vector_to_array(col(s"`$name`"), "float32")
      case other => throw new IllegalArgumentException(s"inputCol ${PyRepr.str(name)} of the " +
        s"$what DataFrame must be array<float>, array<double> or a Vector column, got " +
        other.simpleString)
    }
  }
}

/** `algoParams`: a map of JSON values, saved as a JSON object (null while unset, as Python's
 * None), so metadata reads the same on both sides. */
class AlgoParamsParam(parent: Params, name: String, doc: String)
    extends Param[Map[String, Any]](parent, name, doc, (_: Map[String, Any]) => true) {

  override def jsonEncode(value: Map[String, Any]): String =
    JsonMethods.compact(JsonMethods.render(
      if (value == null) JNull else AlgoParamsParam.toJson(value)))

  override def jsonDecode(json: String): Map[String, Any] = JsonMethods.parse(json) match {
    case JNull | JNothing => null
    case obj: JObject => obj.obj.map { case (key, v) => key -> AlgoParamsParam.fromJson(v) }.toMap
    case other => throw new IllegalArgumentException(
      s"algoParams must be a JSON object, got ${JsonMethods.compact(JsonMethods.render(other))}")
  }
}

object AlgoParamsParam {

  /** A Java map as the Scala map `setAlgoParams` takes. (Here, not in the Params trait: the
   * trait's methods are verified when a stage class loads, and this conversion names Scala
   * library classes that only one Scala version has; see CheckedEstimator.) */
  def fromJava(value: java.util.Map[String, _]): Map[String, Any] =
    if (value == null) null else value.asScala.toMap[String, Any]

  /** `value` with every entry a plain JSON value (Java boxes and collections become Scala
   * ones), or the Python stage's message for the first that is not. */
  def checked(value: Map[String, Any]): Map[String, Any] = {
    if (value == null) {
      throw new IllegalArgumentException("algoParams must be a map such as " +
        "Map(\"nlist\" -> 100, \"nprobe\" -> 10), got null")
    }
    value.map { case (key, item) =>
      val json = try toJson(item) catch {
        case _: IllegalArgumentException => throw new IllegalArgumentException(
          s"algoParams[${PyRepr.str(key)}] must be a JSON value, got $item")
      }
      key -> fromJson(json)
    }
  }

  def toJson(value: Any): JValue = value match {
    case null => JNull
    case s: String => JString(s)
    case b: Boolean => JBool(b)
    case i: Int => JInt(i)
    case l: Long => JInt(l)
    case s: Short => JInt(s.toInt)
    case b: Byte => JInt(b.toInt)
    case b: BigInt => JInt(b)
    case d: Double if !d.isNaN && !d.isInfinity => JDouble(d)
    case f: Float if !f.isNaN && !f.isInfinity => JDouble(f.toDouble)
    case m: scala.collection.Map[_, _] =>
      JObject(m.toList.map { case (k, v) => k.toString -> toJson(v) })
    case m: java.util.Map[_, _] => toJson(m.asScala)
    case s: Iterable[_] => JArray(s.toList.map(toJson))
    case a: Array[_] => JArray(a.toList.map(toJson))
    case l: java.util.List[_] => JArray(l.asScala.toList.map(toJson))
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

/** Value rules of synapseml_ext/nn/params.py, with its messages. */
object AnnRules {

  val Algorithms: Seq[String] = Seq("ivfflat", "ivfpq", "hnsw", "exact", "cagra")
  val Metrics: Seq[String] = Seq("euclidean", "sqeuclidean", "l2", "inner_product", "cosine")
  val Backends: Seq[String] = Seq("auto", "cpu", "gpu")
  val AlgorithmAliases: Map[String, String] = Map("ivf_flat" -> "ivfflat", "ivf_pq" -> "ivfpq",
    "brute" -> "exact", "brute_force" -> "exact", "flat" -> "exact")
  /** spark-rapids-ml's `unique_id`, added where idCol is unset. */
  val GeneratedId = "unique_id"

  /** algoParams keys by algorithm (spark-rapids-ml's names and cuVS / faiss spellings) ->
   * canonical key; None: passed to cuVS unchanged (cagra). */
  val AlgoParamKeys: Map[String, Option[Map[String, String]]] = {
    val ivf = Map("nlist" -> "nlist", "n_lists" -> "nlist", "nprobe" -> "nprobe",
      "n_probes" -> "nprobe", "target_recall" -> "target_recall")
    Map(
      "exact" -> Some(Map.empty[String, String]),
      "ivfflat" -> Some(ivf),
      "ivfpq" -> Some(ivf ++ Map("M" -> "M", "pq_dim" -> "M", "n_bits" -> "n_bits",
        "nbits" -> "n_bits", "pq_bits" -> "n_bits", "refine_factor" -> "refine_factor")),
      "hnsw" -> Some(Map("M" -> "M", "ef_construction" -> "ef_construction",
        "efConstruction" -> "ef_construction", "ef_search" -> "ef_search",
        "efSearch" -> "ef_search", "target_recall" -> "target_recall")),
      "cagra" -> None)
  }
  val IntKeys: Set[String] =
    Set("nlist", "nprobe", "M", "n_bits", "refine_factor", "ef_construction", "ef_search")

  def canonicalAlgorithm(value: String): String = {
    val lower = value.toLowerCase(Locale.ROOT)
    val name = AlgorithmAliases.getOrElse(lower, lower)
    if (!Algorithms.contains(name)) {
      throw new IllegalArgumentException(s"unknown algorithm ${PyRepr(value)}; expected one " +
        s"of: ${Algorithms.mkString(", ")}")
    }
    name
  }

  /** Fails as Python's normalize_algo_params does for a key `algorithm` does not use or a bad
   * value. */
  def checkAlgoParams(algorithm: String, params: Map[String, Any]): Unit =
    AlgoParamKeys(algorithm).foreach { keys =>
      var nBits: Option[Long] = None
      params.foreach { case (key, value) =>
        val canonical = keys.getOrElse(key, throw new IllegalArgumentException(
          s"algoParams key ${PyRepr.str(key)} is not used by algorithm ${PyRepr.str(algorithm)}; " +
            s"known keys: ${if (keys.isEmpty) "(none)" else keys.keys.toSeq.sorted.mkString(", ")}"
        ))
        if (IntKeys.contains(canonical)) {
          val n = integral(value).filter(_ >= 1).getOrElse(throw new IllegalArgumentException(
            s"algoParams[${PyRepr.str(key)}] must be a positive integer, got ${pyRepr(value)}"))
          if (canonical == "n_bits") nBits = Some(n)
        } else if (canonical == "target_recall") {
          val ok = value match {
            case _: Boolean => false
            case n: Int => n == 1
            case n: Long => n == 1L
            case d: Double => d > 0.0 && d <= 1.0
            case _ => false
          }
          if (!ok) throw new IllegalArgumentException(
            s"algoParams[${PyRepr.str(key)}] must be a number in (0, 1], got ${pyRepr(value)}")
        }
      }
      nBits.filter(n => n < 1 || n > 16).foreach { n =>
        throw new IllegalArgumentException(s"algoParams n_bits must be between 1 and 16, got $n")
      }
    }

  private def integral(value: Any): Option[Long] = value match {
    case n: Int => Some(n.toLong)
    case n: Long => Some(n)
    case n: BigInt if n.isValidLong => Some(n.toLong)
    case _ => None
  }

  private def pyRepr(value: Any): String = value match {
    case null => "None"
    case s: String => PyRepr.str(s)
    case b: Boolean => PyRepr(b)
    case other => other.toString
  }

  def columnName(param: String, value: String): String = {
    if (value == null || value.isEmpty) {
      throw new IllegalArgumentException(s"$param must be a non-empty column name")
    }
    value
  }

  def atLeastZero(param: String, value: Int): Int = {
    if (value < 0) throw new IllegalArgumentException(s"$param must be an integer >= 0, got $value")
    value
  }

  /** The JVM stages run the CPU engine; "auto" means it. */
  def requireJvmBackend(value: String): Unit = if (value == "gpu") {
    throw new IllegalArgumentException("backend 'gpu' is not available from Scala: the GPU " +
      "search delegates to spark-rapids-ml, whose k-NN runs only from PySpark. Use the PySpark " +
      "stage (synapseml_ext.nn.ApproximateNearestNeighbors) for GPU search, or backend 'cpu' " +
      "(or 'auto', which is the CPU engine from Scala)")
  }

  def available(schema: StructType): String =
    if (schema.fieldNames.isEmpty) "(none)" else schema.fieldNames.mkString(", ")
}
