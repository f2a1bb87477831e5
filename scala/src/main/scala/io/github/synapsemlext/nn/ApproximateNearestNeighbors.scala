package io.github.synapsemlext.nn

import scala.util.control.NonFatal

import io.github.synapsemlext.util.{CheckedEstimator, CheckedModel, PyRepr}
import org.apache.spark.internal.Logging
import org.apache.spark.ml.param.ParamMap
import org.apache.spark.ml.synapsemlext.{BridgedParamsReader, ModelMetadata}
import org.apache.spark.ml.util._
import org.apache.spark.network.util.JavaUtils
import org.apache.spark.sql.{Column, DataFrame, Dataset, SparkSession}
import org.apache.spark.sql.functions._
import org.apache.spark.sql.synapsemlext.{PythonBridge, SparkLine}
import org.apache.spark.sql.types.StructType
import org.apache.spark.storage.StorageLevel
import org.apache.spark.unsafe.hash.Murmur3_x86_32
import org.json4s._
import org.json4s.jackson.JsonMethods

/** k approximate nearest neighbours of query vectors among item vectors, from Scala.
 *
 * The JVM side of `synapseml_ext.nn.ApproximateNearestNeighbors` (same Params, same saved
 * layout, same results): the Spark plan is built here, as the PySpark stage builds it, and
 * the executor steps (build one faiss index per item partition, cut queries into blocks,
 * search block x partition pairs with the executors' local index copies, then the misses
 * with the index bytes) run the Python stage's own functions through the bridge
 * (`mapInArrow`). The executors need the `synapseml-ext` Python package (with
 * faiss-cpu); see docs/scala.md.
 *
 * {{{
 *   val model = new ApproximateNearestNeighbors().setK(10).setInputCol("embeddings")
 *     .setIdCol("id").fit(items)
 *   val (itemsWithId, queriesWithId, knn) = model.kneighbors(queries)
 *   // knn: query_id, indices: array<long>, distances: array<float>
 * }}}
 *
 * backend: "cpu" and "auto" run the CPU engine; "gpu" (spark-rapids-ml) is PySpark only.
 */
class ApproximateNearestNeighbors(override val uid: String)
    extends CheckedEstimator[ApproximateNearestNeighborsModel]
    with ApproximateNearestNeighborsParams with DefaultParamsWritable {

  def this() = this(Identifiable.randomUID("ApproximateNearestNeighbors"))

  /** The item checks of `fit` (idCol, id type, vector column); the schema is unchanged. */
  override def transformSchema(schema: StructType): StructType = {
    checkId(schema, "item")
    vectorExpr(schema, "item")
    schema
  }

  override def fit(dataset: Dataset[_]): ApproximateNearestNeighborsModel = {
    val built = Fit.build(this, dataset)
    copyValues(new ApproximateNearestNeighborsModel(uid, built.items, built.indexes,
      built.summary).setParent(this))
  }

  override def copy(extra: ParamMap): ApproximateNearestNeighbors = defaultCopy(extra)
}

/** The work of `ApproximateNearestNeighbors.fit`, kept out of the stage class: a class's
 * methods are verified when it loads, and under another Scala library (a jar for the other
 * Spark line) this body would fail that before the constructor could say so (SparkLine). */
private[nn] object Fit extends Logging {

  final case class Built(items: DataFrame, indexes: DataFrame, summary: JObject)

  def build(stage: ApproximateNearestNeighbors, dataset: Dataset[_]): Built = {
    AnnRules.requireJvmBackend(stage.getBackend)
    AnnRules.checkAlgoParams(stage.getAlgorithm, stage.getAlgoParams)
    val idKind = stage.checkId(dataset.schema, "item")
    val items = stage.withId(dataset.toDF(), "item")
    val vector = stage.vectorExpr(items.schema, "item")
    if (stage.getAlgorithm == "cagra") {
      logWarning("algorithm 'cagra' runs on GPUs only; the CPU engine uses 'hnsw'")
    }
    val partitions = if (stage.getNumPartitions > 0) stage.getNumPartitions
      else math.max(1, items.rdd.getNumPartitions)
    val prepared = items
      .select(col(s"`${stage.idColOrDefault}`").cast(Tables.sparkIdType(idKind)).as(Tables.Id),
        vector.as(Tables.Vec))
      .repartition(partitions, col(Tables.Id))
    // Each partition tunes its search breadth for its share of the global k, so the build
    // needs the partition count; it keeps a local copy of its index under the model's token.
    val token = LocalStore.newToken()
    val indexes = LocalStore.byPart(PythonBridge.mapInArrow(stage, prepared, "nn_build",
      JObject("id_kind" -> JString(idKind), "partitions" -> JInt(partitions),
        "token" -> JString(token),
        "store_limit" -> JInt(LocalStore.limit(dataset.sparkSession))),
      Tables.indexSchema(idKind)), partitions)
    val rows = DataErrors.translate(indexes.select(Tables.Part, Tables.Info).collect())
    if (rows.isEmpty) {
      indexes.unpersist()
      throw new IllegalArgumentException("the item DataFrame is empty: nothing to search")
    }
    val infos = rows.map(row => JsonMethods.parse(row.getString(1))).toSeq
    val summary = JObject(Summary.of(infos, stage.getInputCol).obj ++
      LocalStore.facts(token, rows.map(_.getInt(0)).toSeq, partitions).obj :+
      ("digests" -> Summary.digests(rows.map(_.getInt(0)).toSeq.zip(infos))))
    Built(items, indexes, summary)
  }
}

object ApproximateNearestNeighbors extends MLReadable[ApproximateNearestNeighbors] {

  /** The Python stage; saved metadata may name either class. */
  val PythonClassName: String = "synapseml_ext.nn.model.ApproximateNearestNeighbors"

  override def read: MLReader[ApproximateNearestNeighbors] = {
    SparkLine.require()  // before any Scala-library call (see CheckedEstimator)
    new BridgedParamsReader(classOf[ApproximateNearestNeighbors],
      Seq(classOf[ApproximateNearestNeighbors].getName, PythonClassName))
  }

  override def load(path: String): ApproximateNearestNeighbors = super.load(path)
}

/** The fitted k-NN search: `kneighbors` and `approxSimilarityJoin`.
 *
 * Holds the item DataFrame (with its id column) and the table of serialised per-partition
 * indexes; `save`/`load` write and read both in the PySpark model's layout, so a model
 * saved on either side searches on the other without rebuilding.
 */
class ApproximateNearestNeighborsModel private[nn] (override val uid: String,
    private[nn] val itemDf: DataFrame, private[nn] val indexDf: DataFrame,
    private[nn] val summary: JObject)
    extends CheckedModel[ApproximateNearestNeighborsModel]
    with ApproximateNearestNeighborsParams with MLWritable {

  /** Always "cpu": the JVM stages run the CPU engine. */
  def backendUsed: String = "cpu"

  /** What the build made, as JSON: dimension, id kind, and per partition the index kind,
   * size, search breadth and the recall measured on held-out items at fit. */
  def buildSummary: String = JsonMethods.compact(JsonMethods.render(summary))

  private def summaryDim: Int = (summary \ "dim") match {
    case JInt(n) => n.toInt
    case other => throw new IllegalStateException(s"bad build summary dim: $other")
  }

  private def summaryString(key: String): String = Summary.text(summary, key)

  private def summaryPartitions: Int = (summary \ "partitions") match {
    case JInt(n) => n.toInt
    case _ => 1
  }

  /** Not a transformer: use `kneighbors` or `approxSimilarityJoin`. */
  override def transform(dataset: Dataset[_]): DataFrame =
    throw new UnsupportedOperationException("ApproximateNearestNeighborsModel does not " +
      "transform; use kneighbors(queryDf) or approxSimilarityJoin(queryDf)")

  override def transformSchema(schema: StructType): StructType = schema

  /** The k nearest items of each query: `(itemDfWithId, queryDfWithId, knnDf)` as the
   * PySpark stage (and spark-rapids-ml) return them. `knnDf` has one row per query:
   * `query_<idCol>`, `indices` (item ids, nearest first) and `distances` (`array<float>`);
   * fewer than k items are padded with id `Long.MaxValue` (null for string ids) and
   * distance `inf` (`-inf` for inner_product). The search runs when `kneighbors` is called
   * (the driver must know whether every executor had a local copy of each index partition);
   * `knnDf` keeps the found lists in the executors' storage and merges them on an action.
   * With local copies off (`spark.synapseml_ext.nn.localIndexBytes=0`) nothing runs until
   * an action. */
  def kneighbors(queryDf: Dataset[_], sortKnnDfByQueryId: Boolean)
      : (DataFrame, DataFrame, DataFrame) = {
    val queryKind = checkId(queryDf.schema, "query")
    val queries = withId(queryDf.toDF(), "query")
    val vector = vectorExpr(queries.schema, "query")
    val itemKind = summaryString("id_kind")
    val token = summary \ "token" match {
      case JString(t) => Some(t)
      case _ => None
    }
    val storeLimit = LocalStore.limit(queries.sparkSession)
    val facts = JObject("query_kind" -> JString(queryKind), "item_kind" -> JString(itemKind),
      "dim" -> JInt(summaryDim), "token" -> token.map(JString(_)).getOrElse(JNull),
      "store_limit" -> JInt(storeLimit))
    val selected = queries.select(
      col(s"`$idColOrDefault`").cast(Tables.sparkIdType(queryKind)).as(Tables.Id),
      vector.as(Tables.Vec))
    val blocks = PythonBridge.mapInArrow(this, selected, "nn_block", facts,
      Tables.blockSchema(queryKind))
    // The shuffle writes the blocks once (the query plan above it is not re-run per index
    // partition) and gathers them into a few groups; never through the driver.
    val cores = queries.sparkSession.sparkContext.defaultParallelism
    val groups = if ($(numQueryBlocks) > 0) $(numQueryBlocks) else {
      math.max(1, math.ceil(cores.toDouble / math.max(1, summaryPartitions)).toInt)
    }
    val grouped = blocks.repartition(groups)
    // Local copies: one search task per index partition and query group, but no more tasks
    // than cores (a task then searches a few partitions in turn, paying its fixed costs once).
    val indexTasks = math.max(1, math.min(summaryParts.size,
      math.ceil(cores.toDouble / groups).toInt))
    val (perPartition, stored) =
      if (token.isDefined && storeLimit != 0) {
        searchLocalFirst(grouped, facts, queryKind, itemKind, indexTasks)
      } else {
        (PythonBridge.mapInArrow(this, indexMeetsBlocks(grouped), "nn_search", facts,
          Tables.foundSchema(queryKind, itemKind)), false)
      }
    // Stored lists are cheap to sample: ranged by query id, they are grouped for the merge
    // and sorted for knnDf by one shuffle instead of two. (Sampling lists not yet found would
    // run their search twice.)
    val ranged = sortKnnDfByQueryId && stored
    val toMerge =
      if (ranged) perPartition.repartitionByRange(col(Tables.FoundQid)) else perPartition
    // Always merged, even from one partition: the merge is also where a repeated query id
    // shows (more rows than index partitions).
    val found = mergeTopK(toMerge, $(k), $(metric) != "inner_product", queryKind)
    val queryCol = s"query_$idColOrDefault"
    val knn = found.select(col(Tables.FoundQid).as(queryCol), col(Tables.Indices),
      col(Tables.Distances))
    val ordered =
      if (ranged) knn.sortWithinPartitions(queryCol)
      else if (sortKnnDfByQueryId) knn.sort(queryCol)
      else knn
    (itemDf, queries, ordered)
  }

  def kneighbors(queryDf: Dataset[_]): (DataFrame, DataFrame, DataFrame) =
    kneighbors(queryDf, sortKnnDfByQueryId = true)

  /** One row per (query, neighbour): `item_df` and `query_df` struct columns holding the
   * item and query rows, and `distCol` (as the PySpark stage / spark-rapids-ml). */
  def approxSimilarityJoin(queryDf: Dataset[_], distCol: String = "distCol"): DataFrame = {
    val id = idColOrDefault
    val (items, queries, knn) = kneighbors(queryDf, sortKnnDfByQueryId = false)
    val pairs = knn.select(col(s"`query_$id`").as("__query_id"),
        explode(arrays_zip(col(Tables.Indices), col(Tables.Distances))).as("__pair"))
      .select(col("__query_id"), col(s"__pair.${Tables.Indices}").as("__item_id"),
        col(s"__pair.${Tables.Distances}").as(distCol))
    val itemRows = items.select(
      struct(items.columns.toSeq.map(c => items.col(s"`$c`")): _*).as("item_df"))
    val queryRows = queries.select(
      struct(queries.columns.toSeq.map(c => queries.col(s"`$c`")): _*).as("query_df"))
    val joined = itemRows.join(pairs, col(s"item_df.`$id`") === col("__item_id"))
      .join(queryRows, col("__query_id") === col(s"query_df.`$id`"))
    if (getIdCol.isDefined) joined.select(col("item_df"), col("query_df"), col(distCol))
    else joined.select(col("item_df").dropFields(id).as("item_df"),
      col("query_df").dropFields(id).as("query_df"), col(distCol))
  }

  /** Found rows of every (index partition, query block) pair, searched now: first with the
   * executors' local index copies (the pairs carry partition numbers only), then, only for
   * the blocks that found no copy, with the index bytes joined to them (on the placement key
   * the index table is partitioned by, so only the misses are shuffled). The first search is
   * checkpointed in the executors' block managers: the driver must see which partitions
   * missed before planning their search (as the PySpark stage). Also whether all found rows
   * are in the executors' storage (no blocks missed, so no search is left to run). */
  private def searchLocalFirst(blocks: DataFrame, facts: JObject, queryKind: String,
      itemKind: String, tasks: Int): (DataFrame, Boolean) = {
    val parts = summaryParts
    val numbers = blocks.sparkSession.range(0, parts.size, 1, tasks).select(
      element_at(array(parts.map(p => lit(p)): _*), col("id").cast("int") + 1).cast("int")
        .as(Tables.Part))
    val pairs = numbers.crossJoin(blocks.hint("shuffle_replicate_nl"))
    val searched = DataErrors.translate(PythonBridge.mapInArrow(this, pairs, "nn_search_local",
      facts, Tables.localFoundSchema(queryKind, itemKind)).localCheckpoint(eager = true))
    val missing = col(Tables.MissPart).isNotNull
    val missedParts = DataErrors.translate(
      searched.where(missing).select(Tables.MissPart).distinct().collect()).map(_.getInt(0))
    val found = searched.where(col(Tables.FoundQid).isNotNull)
      .select(col(Tables.FoundQid), col(Tables.Indices), col(Tables.Distances))
    if (missedParts.isEmpty) (found, true)
    else {
      val missed = searched.where(missing)
        .select(col(Tables.MissPart), col(Tables.Qids), col(Tables.Qvecs))
      // Joined on the placement key the index table is partitioned by: only misses move.
      val partitions = Summary.indexPartitions(summary)
      val withBytes = indexDf.where(col(Tables.Part).isin(missedParts.toSeq: _*))
        .join(missed.hint("shuffle_hash"), Placement.key(col(Tables.Part), partitions) ===
          Placement.key(col(Tables.MissPart), partitions))
      val columns = Seq(Tables.Part, Tables.Ids, Tables.Index, Tables.Info, Tables.Qids,
        Tables.Qvecs)
      (found.unionByName(PythonBridge.mapInArrow(this, withBytes.select(columns.map(col): _*),
        "nn_search", facts, Tables.foundSchema(queryKind, itemKind))), false)
    }
  }

  private def summaryParts: Seq[Int] = (summary \ "parts") match {
    case JArray(values) => values.map {
      case JInt(n) => n.toInt
      case other => throw new IllegalStateException(s"bad build summary part: $other")
    }
    case other => throw new IllegalStateException(s"bad build summary parts: $other")
  }

  /** Every (index row, query block) pair, one task per (index partition, block partition)
   * by a cartesian product (a broadcast would route one side via the driver). The task
   * streams its index rows and buffers its blocks in the order read, so an index row meets
   * the group's first block before the others; only that pair keeps the index bytes, which
   * cross to Python once per index row and task (`monotonically_increasing_id` is the
   * partition index << 33 plus the row's position: it numbers the blocks as read). */
  private def indexMeetsBlocks(blocks: DataFrame): DataFrame = {
    val numbered = blocks.select(col("*"), monotonically_increasing_id().as("__block"))
    val pairs = indexDf.crossJoin(numbered.hint("shuffle_replicate_nl"))
    val first = col("__block").bitwiseAND((1L << 33) - 1) === 0
    pairs.select(col(Tables.Part), when(first, col(Tables.Ids)).as(Tables.Ids),
      when(first, col(Tables.Index)).as(Tables.Index), col(Tables.Info), col(Tables.Qids),
      col(Tables.Qvecs))
  }

  /** Global top-k per query from the per-partition lists (ties broken by item id); a query
   * id met more than once (more lists than index partitions) fails the job naming it. */
  private def mergeTopK(found: DataFrame, k: Int, ascending: Boolean, queryKind: String)
      : DataFrame = {
    val zipped = found.select(col(Tables.FoundQid),
      explode(arrays_zip(col(Tables.Distances), col(Tables.Indices))).as("__z"))
    val top = zipped.groupBy(Tables.FoundQid)
      .agg(slice(sort_array(collect_list("__z"), ascending), 1, k).as("__z"),
        count(lit(1)).as("__n"))
    val id = col(Tables.FoundQid).cast("string")
    val shown = if (queryKind == "string") concat(lit("'"), id, lit("'")) else id
    val repeated = raise_error(concat(lit(s"${DataErrors.Prefix} query id "), shown,
      lit(" occurs more than once in the query DataFrame; idCol must identify each query " +
        "uniquely")))
    val merged = when(col("__n") > lit(summaryPartitions.toLong * k), repeated)
      .otherwise(col("__z"))
    top.select(col(Tables.FoundQid), merged.as("__z")).select(col(Tables.FoundQid),
      col(s"__z.${Tables.Indices}").as(Tables.Indices),
      col(s"__z.${Tables.Distances}").as(Tables.Distances))
  }

  override def copy(extra: ParamMap): ApproximateNearestNeighborsModel = {
    val that = new ApproximateNearestNeighborsModel(uid, itemDf, indexDf, summary)
    copyValues(that, extra).setParent(parent)
  }

  override def write: MLWriter = new ApproximateNearestNeighborsModel.Writer(this)
}

object ApproximateNearestNeighborsModel extends MLReadable[ApproximateNearestNeighborsModel] {

  /** The Python model; saved metadata may name either class. */
  val PythonClassName: String = "synapseml_ext.nn.model.ApproximateNearestNeighborsModel"

  // A def: this object's initialiser must not call the Scala library (see `read`).
  private def acceptedClassNames =
    Seq(classOf[ApproximateNearestNeighborsModel].getName, PythonClassName)

  /** metadata/ as DefaultParamsWriter writes it plus the build summary; data/items and
   * data/indexes as parquet (the PySpark model's _ModelWriter layout). */
  private[nn] class Writer(instance: ApproximateNearestNeighborsModel) extends MLWriter {
    override protected def saveImpl(path: String): Unit = {
      ModelMetadata.save(instance, path, sc, JObject("summary" -> instance.summary))
      instance.itemDf.write.parquet(s"$path/data/items")
      // In pieces and uncompressed, as in Python: parquet's writer buffers a whole value
      // several times on the heap, and snappy's first read of a large one is very slow.
      Tables.saveChunks(instance.indexDf, Summary.text(instance.summary, "id_kind"))
        .write.options(Tables.SavedIndexOptions).parquet(s"$path/data/indexes")
    }
  }

  private class Reader extends MLReader[ApproximateNearestNeighborsModel] {
    override def load(path: String): ApproximateNearestNeighborsModel = {
      val where = s"the saved model at $path"
      val saved = DataErrors.saved(where)(ModelMetadata.load(path, sc))
      if (!acceptedClassNames.contains(saved.className)) {
        throw new IllegalArgumentException(s"$path holds a ${saved.className}, not a " +
          "ApproximateNearestNeighborsModel (expected class " +
          s"${acceptedClassNames.mkString(" or ")})")
      }
      val summary = saved.json \ "summary" match {
        case obj: JObject => obj
        case _ => throw new IllegalArgumentException(s"$path has no build summary in its " +
          "metadata: it was not saved by an ApproximateNearestNeighborsModel")
      }
      val indexes = DataErrors.saved(where)(Tables.readSaved(sparkSession, s"$path/data/indexes"))
      val items = DataErrors.saved(where)(Tables.readSaved(sparkSession, s"$path/data/items"))
      // Saved before local index copies: the parts from the table. A token per load, never
      // the saved one: a local copy made from other bytes under that token is not used.
      val parts = if ((summary \ "parts") != JNothing) Summary.parts(summary) else {
        DataErrors.saved(where)(indexes.select(Tables.Part).collect().map(_.getInt(0)).sorted.toSeq)
      }
      val partitions = summary \ "index_partitions" match {
        case JInt(n) => n.toInt
        case _ => parts.max + 1
      }
      val complete = JObject(summary.obj.filterNot(f => Set("token", "parts",
        "index_partitions").contains(f._1)) ++ LocalStore.facts(LocalStore.newToken(), parts,
        partitions).obj)
      val joined = if (!indexes.columns.contains(Tables.Chunk)) indexes else {
        Tables.joinedChunks(indexes, complete, partitions, path)
      }
      val placed = LocalStore.byPart(joined, partitions)
      // Read now, as fit builds now (the first search finds the local copies); the join
      // checked each partition's digest, the driver checks that none is missing.
      DataErrors.translate(DataErrors.saved(where) {
        val found = placed.select(Tables.Part).collect().map(_.getInt(0)).toSet
        val missing = parts.filterNot(found.contains)
        if (missing.nonEmpty) {
          throw new IllegalArgumentException(s"${DataErrors.Prefix} $where lacks index " +
            s"partition(s) ${missing.mkString(", ")} of the ${parts.size} recorded at fit: " +
            "files of its data/indexes are missing; restore them from a copy, or fit and " +
            "save the model again")
        }
        summary \ "items" match {
          case JInt(n) if items.count() != n.toLong =>
            throw new IllegalArgumentException(s"${DataErrors.Prefix} $where holds " +
              s"${items.count()} items where $n were saved: files of its data/items are " +
              "missing; restore them from a copy, or fit and save the model again")
          case _ =>
        }
      })
      val model = new ApproximateNearestNeighborsModel(saved.uid, items, placed, complete)
      saved.setParams(model)
      model
    }
  }

  override def read: MLReader[ApproximateNearestNeighborsModel] = {
    SparkLine.require()  // before any Scala-library call (see CheckedModel)
    new Reader
  }

  override def load(path: String): ApproximateNearestNeighborsModel = super.load(path)
}

/** Column names and schemas of the tables passed between the steps
 * (synapseml_ext/nn/tables.py; KnnContractSuite checks they agree). */
private[nn] object Tables {

  /** A saved table's pieces joined back into one index row per partition by the Python
   * stage's own step, which also keeps each in its executor's local store. (Not in the
   * model's companion: that object must load under any Scala and json4s; see CheckedModel.) */
  def joinedChunks(pieces: DataFrame, summary: JObject, partitions: Int,
      path: String): DataFrame = {
    val placed = pieces.repartition(partitions, Placement.key(col(Tables.Part), partitions))
      .sortWithinPartitions(Tables.Part, Tables.Chunk)
      .select(Tables.Part, Tables.Chunk, Tables.Ids, Tables.Index, Tables.Info)
    val idKind = Summary.text(summary, "id_kind")
    PythonBridge.mapInArrow(new ApproximateNearestNeighbors(), placed, "nn_join_chunks",
      JObject("id_kind" -> JString(idKind), "token" -> JString(Summary.text(summary, "token")),
        "store_limit" -> JInt(LocalStore.limit(pieces.sparkSession)),
        "digests" -> (summary \ "digests" match {
          case obj: JObject => obj
          case _ => JNull
        }), "path" -> JString(path)),
      Tables.indexSchema(idKind))
  }

  val Id = "__id"
  val Vec = "__vec"
  val Qids = "__qids"
  val Qvecs = "__qvecs"
  val Part = "__part"
  val Ids = "__ids"
  val Index = "__index"
  val Info = "__info"
  val FoundQid = "__qid"
  val MissPart = "__miss_part"
  val Chunk = "__chunk"
  /** Largest piece of a saved index row (synapseml_ext/nn/saved_tasks.py SAVE_CHUNK_BYTES). */
  val SaveChunkBytes: Int = 64 << 20
  val Indices = "indices"
  val Distances = "distances"

  def sparkIdType(idKind: String): String = if (idKind == "long") "bigint" else "string"

  def indexDdl(idKind: String): String =
    s"$Part int, $Ids array<${sparkIdType(idKind)}>, $Index binary, $Info string"

  def blockDdl(idKind: String): String = s"$Qids array<${sparkIdType(idKind)}>, $Qvecs binary"

  def foundDdl(queryKind: String, itemKind: String): String =
    s"$FoundQid ${sparkIdType(queryKind)}, $Indices array<${sparkIdType(itemKind)}>, " +
      s"$Distances array<float>"

  def localFoundDdl(queryKind: String, itemKind: String): String =
    s"${foundDdl(queryKind, itemKind)}, $MissPart int, $Qids array<${sparkIdType(queryKind)}>, " +
      s"$Qvecs binary"

  /** Uncompressed, one row group per piece (synapseml_ext/nn/saved_tasks.py saved_index_options:
   * parquet checks its buffered size every 100 rows by default). */
  val SavedIndexOptions: Map[String, String] = Map("compression" -> "none",
    "parquet.block.size" -> SaveChunkBytes.toString, "parquet.page.size.row.check.min" -> "1",
    "parquet.page.size.row.check.max" -> "1")

  def savedIndexDdl(idKind: String): String =
    s"$Part int, $Chunk int, $Ids array<${sparkIdType(idKind)}>, $Index binary, $Info string"

  /** The index table as saved: each row in pieces of at most `chunkBytes` (ids and info on
   * piece 0), cut by the Python stage's own step (a SQL expression reading the binary
   * column would copy the whole value once per piece). */
  def saveChunks(indexes: DataFrame, idKind: String, chunkBytes: Int = SaveChunkBytes)
      : DataFrame =
    PythonBridge.mapInArrow(new ApproximateNearestNeighbors(),
      indexes.select(Part, Ids, Index, Info), "nn_save_chunks",
      JObject("id_kind" -> JString(idKind), "chunk_bytes" -> JInt(chunkBytes)),
      StructType.fromDDL(savedIndexDdl(idKind)))

  /** A saved parquet table, its page checksums verified (Spark's reader skips the check
   * unless asked, and object stores keep no `.crc` files), as in Python. */
  def readSaved(spark: SparkSession, path: String): DataFrame =
    spark.read.option("parquet.page.verify-checksum.enabled", "true").parquet(path)

  def indexSchema(idKind: String): StructType = StructType.fromDDL(indexDdl(idKind))
  def blockSchema(idKind: String): StructType = StructType.fromDDL(blockDdl(idKind))
  def foundSchema(queryKind: String, itemKind: String): StructType =
    StructType.fromDDL(foundDdl(queryKind, itemKind))
  def localFoundSchema(queryKind: String, itemKind: String): StructType =
    StructType.fromDDL(localFoundDdl(queryKind, itemKind))
}

/** The executors' local index copies (synapseml_ext/nn/local_store.py): the model's token,
 * the store's byte limit, and the index table with partition p in shuffle partition p. */
private[nn] object LocalStore {

  /** 0 turns the local copies off; unset, the store may use half its disk's free space. */
  val LimitConf = "spark.synapseml_ext.nn.localIndexBytes"
  val Auto: Long = -1L

  def newToken(): String = java.util.UUID.randomUUID().toString.replace("-", "")

  def limit(spark: SparkSession): Long =
    spark.conf.getOption(LimitConf).map(_.trim).filter(_.nonEmpty)
      .map(text => JavaUtils.byteStringAsBytes(text)).getOrElse(Auto)

  /** Index partition p in shuffle partition p, by its placement key (the miss join, on the
   * same key, then shuffles only the misses), and kept on disk, off the JVM heap, as in
   * Python. */
  def byPart(indexes: DataFrame, partitions: Int): DataFrame =
    indexes.repartition(partitions, Placement.key(col(Tables.Part), partitions))
      .persist(StorageLevel.DISK_ONLY)

  def facts(token: String, parts: Seq[Int], partitions: Int): JObject =
    JObject("token" -> JString(token), "parts" -> JArray(parts.sorted.map(JInt(_)).toList),
      "index_partitions" -> JInt(partitions))
}

/** Where index rows live (synapseml_ext/nn/placement.py): repartitioning by the partition
 * number itself hashes it first, which put 3 of 8 index partitions into one task (and ran a
 * parquet writer out of memory on save); the placement key of partition number p is the
 * smallest non-negative int that Spark's hash partitioning sends to partition p. */
private[nn] object Placement {

  /** Spark's hash(int): Murmur3 x86 32-bit with seed 42. */
  val HashSeed = 42

  def keys(partitions: Int): Seq[Int] = {
    require(partitions > 0, s"partitions must be positive, got $partitions")
    val found = scala.collection.mutable.Map.empty[Int, Int]
    var candidate = 0
    while (found.size < partitions) {
      val slot = Math.floorMod(Murmur3_x86_32.hashInt(candidate, HashSeed), partitions)
      if (!found.contains(slot)) found(slot) = candidate
      candidate += 1
    }
    (0 until partitions).map(found)
  }

  /** The placement key of the partition numbers in `part` (0 <= part < partitions). */
  def key(part: Column, partitions: Int): Column =
    element_at(array(keys(partitions).map(k => lit(k)): _*), part + 1)
}

/** The build summary the model keeps and saves (synapseml_ext.nn.model._summarise). */
private[nn] object Summary {

  private val Kept = Seq("kind", "n", "params", "search", "calibration_recall", "reason", "seconds")

  /** A string of the summary (id_kind, token); a missing one is a corrupt model. */
  def text(summary: JObject, key: String): String = (summary \ key) match {
    case JString(s) => s
    case other => throw new IllegalStateException(s"bad build summary $key: $other")
  }

  /** Shuffle partitions of the index table: saved with the summary, else (older saves) the
   * largest partition number + 1, as the Python loader does. */
  def indexPartitions(summary: JObject): Int = summary \ "index_partitions" match {
    case JInt(n) => n.toInt
    case _ => (summary \ "parts").children.collect { case JInt(n) => n.toInt }.max + 1
  }

  def parts(summary: JObject): Seq[Int] =
    (summary \ "parts").children.collect { case JInt(n) => n.toInt }.sorted

  /** `{partition: sha256}` from each index row's info (synapseml_ext.nn.integrity). */
  def digests(rows: Seq[(Int, JValue)]): JObject =
    JObject(rows.toList.sortBy(_._1).map { case (part, info) => part.toString -> (info \ "sha256") })

  def of(infos: Seq[JValue], column: String): JObject = {
    val sorted = infos.sortBy(info => -long(info \ "n"))
    val first = sorted.head
    sorted.find(info => long(info \ "dim") != long(first \ "dim")).foreach { other =>
      throw new IllegalArgumentException(s"${DataErrors.Prefix} item id " +
        s"${repr(other \ "first_id")} has a ${PyRepr.str(column)} vector of dimension " +
        s"${long(other \ "dim")} but item id ${repr(first \ "first_id")} has " +
        s"${long(first \ "dim")}; all vectors must have the same dimension")
    }
    val idKind = first \ "first_id" match {
      case JString(_) => "string"
      case _ => "long"
    }
    JObject(
      "dim" -> JInt(long(first \ "dim")),
      "id_kind" -> JString(idKind),
      "partitions" -> JInt(sorted.size),
      "items" -> JInt(sorted.map(info => long(info \ "n")).sum),
      "indexes" -> JArray(sorted.toList.map(info =>
        JObject(Kept.toList.map(key => key -> (info \ key))))))
  }

  private def long(value: JValue): Long = value match {
    case JInt(n) => n.toLong
    case JLong(n) => n
    case JDouble(d) => d.toLong
    case other => throw new IllegalStateException(s"bad index info value: $other")
  }

  private def repr(value: JValue): String = value match {
    case JString(s) => PyRepr.str(s)
    case JInt(n) => n.toString
    case other => JsonMethods.compact(JsonMethods.render(other))
  }
}

/** An executor's data error (its message starts with `synapseml-ext:`: a NaN, a duplicated
 * id, a wrong dimension) as an IllegalArgumentException with that message on the driver. */
private[nn] object DataErrors {

  val Prefix = "synapseml-ext:"
  private val Message = (java.util.regex.Pattern.quote(Prefix) + "[^\n]*").r

  /** A saved table Spark cannot read (a damaged parquet file, a missing path) as one line
   * naming the model, as the Python loader says it. */
  def saved[T](where: String)(body: => T): T =
    try body
    catch {
      case e: IllegalArgumentException => throw e
      case NonFatal(e) if !messages(e).contains(Prefix) =>
        val reason = Cause.findFirstMatchIn(messages(e)).map(_.group(1))
          .getOrElse(String.valueOf(e.getMessage))
        throw new IllegalArgumentException(s"$Prefix $where cannot be read " +
          s"(${reason.take(300)}): it is damaged or incomplete; restore it from a copy, or fit " +
          "and save the model again", e)
    }

  private val Cause = "(?:Exception|Error): ([^\n]+)".r

  private def messages(e: Throwable): String =
    Iterator.iterate[Throwable](e)(_.getCause).takeWhile(_ != null)
      .map(t => s"${t.getClass.getName}: ${t.getMessage}").mkString("\n")

  def translate[T](body: => T): T =
    try body
    catch {
      case e: IllegalArgumentException => throw e
      case NonFatal(e) =>
        val text = Iterator.iterate[Throwable](e)(_.getCause).takeWhile(_ != null)
          .map(t => String.valueOf(t.getMessage)).mkString("\n")
        Message.findFirstIn(text) match {
          case Some(message) => throw new IllegalArgumentException(message.trim, e)
          case None => throw e
        }
    }
}
