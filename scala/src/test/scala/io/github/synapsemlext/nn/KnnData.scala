package io.github.synapsemlext.nn

import java.nio.file.Path

import scala.util.Random

import io.github.synapsemlext.TestEnv
import org.apache.spark.sql.{DataFrame, Row}
import org.json4s._
import org.json4s.jackson.JsonMethods

/** Small clustered data sets and a brute-force reference for the k-NN suites. */
object KnnData {

  final case class Knn(query: Any, indices: Seq[Any], distances: Seq[Double])

  /** `n` vectors of dimension `dim` around `clusters` centres (seeded), ids from `firstId`. */
  def clustered(n: Int, dim: Int, clusters: Int, seed: Long, firstId: Long = 0L)
      : Seq[(Long, Array[Float])] = {
    val rnd = new Random(seed)
    val centres = Array.fill(clusters, dim)(rnd.nextGaussian())
    (0 until n).map { i =>
      val c = centres(rnd.nextInt(clusters))
      (firstId + i, c.map(x => (x + 0.15 * rnd.nextGaussian()).toFloat))
    }
  }

  def frame(rows: Seq[(Long, Array[Float])], idName: String = "id",
      vectorName: String = "v"): DataFrame = {
    val spark = TestEnv.spark
    import spark.implicits._
    rows.map { case (id, v) => (id, v.toSeq) }.toDF(idName, vectorName)
  }

  def save(df: DataFrame, dir: Path, name: String): String = {
    val path = dir.resolve(name).toString
    df.write.parquet(path)
    path
  }

  def collect(knn: DataFrame): Seq[Knn] = knn.collect().toSeq.map { row: Row =>
    Knn(row.get(0), row.getSeq[Any](1), row.getSeq[Float](2).map(_.toDouble))
  }

  /** Python's knn rows written by tests/scala_python_side.py (JSON lists). */
  def readPython(path: Path): Seq[Knn] =
    JsonMethods.parse(new String(java.nio.file.Files.readAllBytes(path), "UTF-8")) match {
      case JArray(rows) => rows.map {
        case JArray(List(q, JArray(ids), JArray(ds))) =>
          Knn(plain(q), ids.map(plain), ds.map {
            case JDouble(d) => d
            case JInt(n) => n.toDouble
            case other => sys.error(s"distance $other")
          })
        case other => sys.error(s"bad row $other")
      }
      case other => sys.error(s"bad knn json $other")
    }

  private def plain(v: JValue): Any = v match {
    case JInt(n) => n.toLong
    case JString(s) => s
    case JNull => null
    case other => sys.error(s"id $other")
  }

  /** Exact euclidean k-NN (ties by id), distances in double precision. */
  def bruteForce(items: Seq[(Long, Array[Float])], queries: Seq[(Long, Array[Float])],
      k: Int): Seq[Knn] = queries.sortBy(_._1).map { case (qid, q) =>
    val nearest = items.map { case (id, v) =>
      (math.sqrt(v.indices.map(i => math.pow(v(i).toDouble - q(i), 2)).sum), id)
    }.sorted.take(k)
    Knn(qid, nearest.map(_._2), nearest.map(_._1))
  }

  /** Same queries, same neighbour ids in order, distances within `tolerance`. */
  def assertSame(actual: Seq[Knn], expected: Seq[Knn], tolerance: Double): Unit = {
    assert(actual.map(_.query) == expected.map(_.query), "query ids differ")
    actual.zip(expected).foreach { case (a, e) =>
      assert(a.indices == e.indices, s"query ${a.query}: ${a.indices} != ${e.indices}")
      a.distances.zip(e.distances).foreach { case (x, y) =>
        assert(math.abs(x - y) <= tolerance * math.max(1.0, math.abs(y)),
          s"query ${a.query}: distance $x vs $y")
      }
    }
  }
}
