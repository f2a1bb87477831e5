"""The seed quickstart, end to end on local Spark: embed reviews, search them, print the
nearest reviews for two queries."""

from __future__ import annotations

from importlib import resources

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from synapseml_ext.hf import HuggingFaceSentenceEmbedder
from synapseml_ext.nn import ApproximateNearestNeighbors
from synapseml_ext.nn.transform import neighbour_rows

QUERIES = ("desserts", "disgusting")


def sample_reviews(spark: SparkSession) -> DataFrame:
    """48 short food reviews written for this project (id, Score, Summary, Text)."""
    with resources.files("synapseml_ext").joinpath("data/sample_reviews.csv").open("rb") as f:
        pdf = pd.read_csv(f)
    return spark.createDataFrame(pdf, "id long, Score int, Summary string, Text string")


def with_seed_text(df: DataFrame) -> DataFrame:
    """The seed's input column: ``Title: <Summary>; Content: <Text>``."""
    return df.withColumn(
        "data", F.format_string("Title: %s; Content: %s", F.trim("Summary"), F.trim("Text"))
    )


def nearest_reviews(spark: SparkSession, model: str, runtime: str = "auto", k: int = 3,
                    cache_dir: str = "", precision: str = "auto") -> pd.DataFrame:
    """The ``k`` nearest reviews of each query, as a pandas table (query, rank, distance, data)."""
    reviews = with_seed_text(sample_reviews(spark)).repartition(2)
    embedder = HuggingFaceSentenceEmbedder(
        modelName=model, inputCol="data", outputCol="embeddings", runtime=runtime,
        precision=precision, cacheDir=cache_dir,
    )
    embeddings = embedder.transform(reviews).select("id", "embeddings").cache()
    queries = spark.createDataFrame(list(enumerate(QUERIES, start=1)), "id long, data string")
    query_embeddings = embedder.transform(queries).select("id", "embeddings")

    # The seed's search stage: spark-rapids-ml on GPU clusters, our faiss engine on CPUs.
    search = ApproximateNearestNeighbors(k=k, metric="cosine", inputCol="embeddings",
                                         idCol="id").fit(embeddings)
    _, _, knn_df = search.kneighbors(query_embeddings)
    result = (
        neighbour_rows(knn_df, "query_id")
        .join(reviews.select("id", "data"), on="id")
        .join(queries.select(F.col("id").alias("query_id"), F.col("data").alias("query")),
              on="query_id")
        .select("query", "rank", "distance", "id", "data")
        .orderBy("query", "rank")
    )
    table = result.toPandas()
    embeddings.unpersist()
    return table


def format_table(table: pd.DataFrame, width: int = 90) -> str:
    shown = table.copy()
    shown["distance"] = shown["distance"].map(lambda d: f"{d:.4f}")
    shown["data"] = shown["data"].map(lambda t: t if len(t) <= width else t[: width - 3] + "...")
    return shown.to_string(index=False)
