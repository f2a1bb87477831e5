"""Saving and loading a fitted model: ``metadata/`` as ``DefaultParamsWriter`` writes it
(plus the build summary), ``data/items`` and ``data/indexes`` as parquet, the index rows in
pieces (:data:`~synapseml_ext.nn.saved_tasks.SAVE_CHUNK_BYTES`), joined back and checked at load.
"""

from __future__ import annotations

import re
from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from synapseml_ext import __version__
from synapseml_ext.contract.persistence import instance_from_metadata
from synapseml_ext.nn import integrity, local_store, saved_tasks, tables
from synapseml_ext.nn.placement import by_part, kept_in_place, placement_key
from synapseml_ext.nn.plan import store_limit
from synapseml_ext.nn.task_config import JoinChunksTask, LocalStore
from synapseml_ext.nn.vectors import ERROR_PREFIX, DataErrors

# Key of the metadata's save format: 2 since index bytes may be packed (nn.packing); absent
# (saved before the key), read as 1: raw or packed bytes, each row's info says which.
FORMAT = "synapsemlExtFormat"
SAVE_FORMAT = 2


class EstimatorWriter(DefaultParamsWriter):
    """The estimator's metadata, as DefaultParamsWriter writes it."""

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)


class ModelWriter(MLWriter):
    """metadata/ as DefaultParamsWriter writes it (plus the build summary), data/items and
    data/indexes as parquet."""

    def __init__(self, instance: Any, class_name: str | None = None) -> None:
        super().__init__()
        self.instance = instance
        self.class_name = class_name  # a Scala caller's class, for Spark's Scala readers

    def saveImpl(self, path: str) -> None:
        model = self.instance
        DefaultParamsWriter.saveMetadata(
            _named(model, self.class_name), path, self.sc,
            extraMetadata={"summary": model._summary, FORMAT: SAVE_FORMAT,
                           "synapsemlExtVersion": __version__})
        mode = "overwrite" if self.shouldOverwrite else "errorifexists"
        model._item_df.write.mode(mode).parquet(f"{path}/data/items")
        # In pieces (saved_tasks.SAVE_CHUNK_BYTES), uncompressed: faiss' float data does not
        # compress, and parquet 1.13's snappy reader grows its input buffer one 4 KB step at a
        # time (PARQUET-2429), so the first read of a ~190 MB index row took 150 s per JVM
        # (2.3 s uncompressed; docs/ann.md).
        _save_chunks(model._index_df, model._summary["id_kind"],
                     model._summary.get("label_kind")).write.mode(mode).options(
            **saved_tasks.saved_index_options()).parquet(f"{path}/data/indexes")


class ModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls
        self.metadata: dict[str, Any] = {}  # what the last load read (the Scala bridge's too)

    def load(self, path: str) -> Any:
        where = f"the saved model at {path}"
        with SavedDataErrors(where):
            metadata = self.metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        _check_format(metadata, where)
        model = instance_from_metadata(self.cls, metadata, path)
        spark = SparkSession.builder.getOrCreate()
        summary = metadata["summary"]
        with SavedDataErrors(where):
            indexes = read_saved(spark, f"{path}/data/indexes")
            items = read_saved(spark, f"{path}/data/items")
            if "parts" not in summary:  # saved before local index copies: the table's parts
                summary["parts"] = sorted(row[0] for row in indexes.select(tables.PART).collect())
        # A token per load, never the saved one: a local copy made from other bytes under the
        # same token (the model saved earlier in this application, then altered) is not used.
        summary["token"] = local_store.new_token()
        partitions = summary.setdefault("index_partitions", max(summary["parts"]) + 1)
        if saved_tasks.CHUNK in indexes.columns:  # pieces placed by partition, joined in place
            indexes = kept_in_place(_joined_chunks(indexes, summary, store_limit(spark), path))
        else:
            indexes = by_part(indexes, partitions)
        with DataErrors(), SavedDataErrors(where):
            # Read now, as fit builds now (the first search finds local copies); the join
            # checked each partition's digest, the driver checks that none is missing.
            found = [row[0] for row in indexes.select(tables.PART).collect()]
            integrity.check_parts(found, summary["parts"], where)
            if "items" in summary and items.count() != summary["items"]:
                raise ValueError(f"{ERROR_PREFIX} {where} holds {items.count()} items where "
                                 f"{summary['items']} were saved: files of its data/items are "
                                 "missing; restore them from a copy, or fit and save the model "
                                 "again")
        model._set_state(items, indexes, summary, "loaded")
        return model


def _check_format(metadata: dict[str, Any], where: str) -> None:
    """A model saved in a format newer than this version reads is one line saying so, not
    a checksum error on bytes it cannot unpack."""
    saved = metadata.get(FORMAT, 1)
    if isinstance(saved, bool) or not isinstance(saved, int):
        raise ValueError(f"{ERROR_PREFIX} {where} cannot be read (its metadata records save "
                         f"format {saved!r}): it is damaged; restore it from a copy, or fit "
                         "and save the model again")
    if saved > SAVE_FORMAT:
        raise ValueError(
            f"{ERROR_PREFIX} {where} was saved by synapseml-ext "
            f"{metadata.get('synapsemlExtVersion', '(newer)')} in save format {saved!r}, which "
            f"this version ({__version__}) cannot read: upgrade synapseml-ext to load it")


def _named(model: Any, class_name: str | None) -> Any:
    """``model``, or a copy that metadata records under ``class_name`` (module.Class): a
    model a Scala job saves names the Scala class, so Spark's Scala readers (PipelineModel)
    can instantiate it."""
    if not class_name:
        return model
    module, _, name = class_name.rpartition(".")
    view = model.copy()
    view.__class__ = type(name, (type(model),), {"__module__": module})
    return view


class SavedDataErrors:
    """A saved table Spark cannot read (a damaged parquet footer or page, a missing file)
    as one line naming the model, instead of the reader's stack trace."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, ValueError) or ERROR_PREFIX in str(error):
            return False
        text = str(error)
        # The root cause (the last "Caused by:" of the Java trace: a checksum or decoding
        # error), else the Java exception's own message, not py4j's "An error occurred ...".
        causes = re.findall(r"Caused by: [\w.$]+: ([^\n]+)", text)
        cause = re.search(r"(?:Exception|Error): ([^\n]+)", text)
        reason = (causes[-1] if causes else cause.group(1) if cause
                  else text.strip().splitlines()[0] if text.strip() else "")
        raise ValueError(f"{ERROR_PREFIX} {self.where} cannot be read ({reason[:300]}): it is "
                         "damaged or incomplete; restore it from a copy, or fit and save the "
                         "model again") from error


def read_saved(spark: SparkSession, path: str) -> DataFrame:
    """A saved parquet table, its page checksums verified (parquet writes them; Spark's
    reader skips the check unless asked, and object stores keep no ``.crc`` files)."""
    return spark.read.option("parquet.page.verify-checksum.enabled", "true").parquet(path)


def _save_chunks(index_df: DataFrame, id_kind: str, label_kind: str | None) -> DataFrame:
    """The index table as saved: each index row in pieces (ids, info and labels on piece 0),
    so that no parquet value is larger than saved_tasks.SAVE_CHUNK_BYTES."""
    columns = [tables.PART, tables.IDS, tables.INDEX, tables.INFO]
    return index_df.select(*columns, *([tables.LABELS] if label_kind else [])).mapInArrow(
        saved_tasks.make_save_chunks_fn(saved_tasks.SAVE_CHUNK_BYTES),
        saved_tasks.saved_index_schema(id_kind, label_kind))


def _joined_chunks(pieces: DataFrame, summary: dict[str, Any], limit: int, path: str
                   ) -> DataFrame:
    """A saved table's pieces joined back into one index row per partition, each kept in
    the local store of the executor that joined it (as the build keeps its own)."""
    partitions = summary["index_partitions"]
    label_kind = summary.get("label_kind")
    placed = (pieces.repartition(partitions, placement_key(F.col(tables.PART), partitions))
              .sortWithinPartitions(tables.PART, saved_tasks.CHUNK)
              .select(tables.PART, saved_tasks.CHUNK, tables.IDS, tables.INDEX, tables.INFO,
                      *([tables.LABELS] if label_kind else [])))
    cfg = JoinChunksTask(path, summary.get("digests"), LocalStore(summary["token"], limit))
    return placed.mapInArrow(saved_tasks.make_join_chunks_fn(cfg),
                             tables.index_schema(summary["id_kind"], label_kind))
