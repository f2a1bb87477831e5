"""``HuggingFaceSentenceEmbedder``: a text column in, an ``array<float>`` embedding column out."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.accumulators import Accumulator, AccumulatorParam
from pyspark.ml import Transformer
from pyspark.ml.util import DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructType

from synapseml_ext._spark import is_local_master, spark_context_of
from synapseml_ext.contract.columns import ColumnTransform, InputColumn, OutputColumn
from synapseml_ext.contract.persistence import BridgedParamsReadable
from synapseml_ext.engine.errors import EngineError, ModelLoadError
from synapseml_ext.executor_check import check_executors
from synapseml_ext.hf.checks import driver_checks
from synapseml_ext.hf.params import _SentenceEmbedderParams

__all__ = ["HuggingFaceSentenceEmbedder"]

log = logging.getLogger("synapseml_ext.hf")

EMBEDDING_TYPE = ArrayType(FloatType(), containsNull=False)


class HuggingFaceSentenceEmbedder(
    Transformer, _SentenceEmbedderParams, BridgedParamsReadable, DefaultParamsWritable
):
    """Sentence embeddings of a text column with any sentence-transformers model.

    Drop-in for ``synapse.ml.hf.HuggingFaceSentenceEmbedder`` (same keyword constructor):
    the model loads once per Python worker and serves every later task and ``transform()``
    call there; rows are sorted by token length and cut into token-budget batches inside
    each Arrow batch; the output keeps every input row, column and the row order. A null
    text gives a null embedding, an empty string the model's embedding of ``""``.

    Examples
    --------
    >>> from synapseml_ext.hf import HuggingFaceSentenceEmbedder
    >>> emb = HuggingFaceSentenceEmbedder(modelName=model_dir, inputCol="text",
    ...                                   outputCol="embeddings", runtime="onnx")
    >>> df = spark.createDataFrame([("desserts",), ("disgusting",)], ["text"])
    >>> out = emb.transform(df)
    >>> out.columns
    ['text', 'embeddings']
    >>> len(out.head().embeddings)
    384
    >>> emb.save(temp_path + "/embedder")
    >>> loaded = HuggingFaceSentenceEmbedder.load(temp_path + "/embedder")
    >>> loaded.getRuntime(), loaded.getInputCol()
    ('onnx', 'text')
    """

    # Schema checks, shared with the generated Scala stage (synapseml_ext.codegen).
    _CONTRACT = ColumnTransform(
        InputColumn("inputCol", (StringType(),), "a string column", "the text column to embed"),
        OutputColumn("outputCol", EMBEDDING_TYPE),
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str | None = None,
        outputCol: str | None = None,
        runtime: str | None = None,
        batchSize: int | None = None,
        modelName: str | None = None,
        precision: str | None = None,
        maxTokensPerBatch: int | None = None,
        maxSeqLength: int | None = None,
        normalize: bool | None = None,
        prompt: str | None = None,
        cacheDir: str | None = None,
        numThreads: int | None = None,
        minCosine: float | None = None,
        truncateDim: int | None = None,
        promptName: str | None = None,
        revision: str | None = None,
        trustRemoteCode: bool | None = None,
        endpoint: str | None = None,
        apiFormat: str | None = None,
        apiKeyEnv: str | None = None,
        maxConcurrentRequests: int | None = None,
        requestTimeout: float | None = None,
        maxRetries: int | None = None,
    ) -> None:
        """
        __init__(self, *, inputCol=None, outputCol="embeddings", runtime="auto", batchSize=256,
                 modelName="sentence-transformers/all-MiniLM-L6-v2", precision="auto",
                 maxTokensPerBatch=0, maxSeqLength=0, normalize=None, prompt="", cacheDir="",
                 numThreads=0, minCosine=0.999, truncateDim=0, promptName="", revision="",
                 trustRemoteCode=False, endpoint="", apiFormat="tei", apiKeyEnv="",
                 maxConcurrentRequests=4, requestTimeout=60.0, maxRetries=5)

        ``None`` leaves a Param at its default, as SynapseML's constructor does.
        """
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str | None = None,
        outputCol: str | None = None,
        runtime: str | None = None,
        batchSize: int | None = None,
        modelName: str | None = None,
        precision: str | None = None,
        maxTokensPerBatch: int | None = None,
        maxSeqLength: int | None = None,
        normalize: bool | None = None,
        prompt: str | None = None,
        cacheDir: str | None = None,
        numThreads: int | None = None,
        minCosine: float | None = None,
        truncateDim: int | None = None,
        promptName: str | None = None,
        revision: str | None = None,
        trustRemoteCode: bool | None = None,
        endpoint: str | None = None,
        apiFormat: str | None = None,
        apiKeyEnv: str | None = None,
        maxConcurrentRequests: int | None = None,
        requestTimeout: float | None = None,
        maxRetries: int | None = None,
    ) -> HuggingFaceSentenceEmbedder:
        """Sets params for this embedder (``None`` leaves a Param unchanged)."""
        return self._set_checked(**self._input_kwargs)

    def setInputCol(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(inputCol=value)

    def setOutputCol(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(outputCol=value)

    def setModelName(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(modelName=value)

    def setRuntime(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(runtime=value)

    def setPrecision(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(precision=value)

    def setBatchSize(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(batchSize=value)

    def setMaxTokensPerBatch(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(maxTokensPerBatch=value)

    def setMaxSeqLength(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(maxSeqLength=value)

    def setNormalize(self, value: bool) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(normalize=value)

    def setPrompt(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(prompt=value)

    def setCacheDir(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(cacheDir=value)

    def setNumThreads(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(numThreads=value)

    def setMinCosine(self, value: float) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(minCosine=value)

    def setTruncateDim(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(truncateDim=value)

    def setPromptName(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(promptName=value)

    def setRevision(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(revision=value)

    def setTrustRemoteCode(self, value: bool) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(trustRemoteCode=value)

    def setEndpoint(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(endpoint=value)

    def setApiFormat(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(apiFormat=value)

    def setApiKeyEnv(self, value: str) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(apiKeyEnv=value)

    def setMaxConcurrentRequests(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(maxConcurrentRequests=value)

    def setRequestTimeout(self, value: float) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(requestTimeout=value)

    def setMaxRetries(self, value: int) -> HuggingFaceSentenceEmbedder:
        return self._set_checked(maxRetries=value)

    def transformSchema(self, schema: StructType) -> StructType:
        """The output schema; raises on the driver for a missing or non-string input column
        or an output column that already exists."""
        return self._CONTRACT.transform_schema(self, schema)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self._transform_with_stats(dataset, None)

    def _transform_with_stats(self, dataset: DataFrame, stats: Accumulator | None) -> DataFrame:
        """``_transform``, optionally adding each task's counts to an
        :class:`EmbedStatsAccumulator` (classic Spark only; the CLI uses it)."""
        self.transformSchema(dataset.schema)
        spec = self.encoder_spec()
        # Fail here, in one line, on what the driver can see, not in every task.
        context = spark_context_of(dataset)
        if context is not None:
            check_executors(context)
        local = context is not None and is_local_master(context.master)
        if spec.runtime == "remote":
            if local:
                from synapseml_ext.remote import check_endpoint

                check_endpoint(spec)
        else:
            driver_checks(spec.model, spec.runtime, max_seq_length=spec.max_seq_length,
                          local=local, revision=spec.revision)
        embed = make_embed_udf(spec.to_dict(), stats)
        return dataset.withColumn(self.getOutputCol(), embed(F.col(self.getInputCol())))


def make_embed_udf(spec: dict, stats: Accumulator | None = None) -> Callable:
    """A scalar-iterator pandas UDF ``string -> array<float>`` over ``spec`` (plain values
    only: nothing of the stage is pickled). Runs on executors; the model comes from the
    worker's :class:`~synapseml_ext.engine.ModelCache`."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(EMBEDDING_TYPE)  # type: ignore[call-overload]
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        return embed_batches(spec, batches, stats)

    return embed


def embed_batches(spec: dict, batches: Iterator[pd.Series],
                  stats: Accumulator | None = None) -> Iterator[pd.Series]:
    """Executor side: embed each Arrow batch of texts (nulls stay null)."""
    from synapseml_ext.encoders import get_encoder
    from synapseml_ext.engine import EncoderSpec
    from synapseml_ext.engine.logs import configure_worker_logging, log_task_throughput

    batches = iter(batches)
    first = next(batches, None)
    if first is None:  # empty partitions never load the model
        return
    configure_worker_logging()
    try:
        encoder = get_encoder(EncoderSpec(**spec))
    except EngineError:
        raise
    except Exception as e:
        # Damaged weights and the like: one line of ours that the driver can find again.
        raise ModelLoadError(
            f"could not load model {spec['model']!r} (runtime={spec['runtime']!r}) on this "
            f"worker: {type(e).__name__}: {e}. Check that the model directory is complete and "
            "undamaged (save or download it again)") from e
    nulls = 0
    # The encoder reads one batch ahead of its output (the GPU runtimes tokenize the next
    # batch while one computes): the null masks wait here for their embeddings.
    waiting: deque[pd.Series] = deque()

    def non_null_texts() -> Iterator[list[str]]:
        nonlocal nulls
        for texts in itertools.chain([first], batches):
            present = texts.notna()
            nulls += int((~present).sum())
            waiting.append(present)
            yield texts[present].tolist()

    for vectors in encoder.encode_many(non_null_texts()):
        yield with_nulls(vectors, waiting.popleft())
    log_task_throughput(encoder)
    if stats is not None:
        s = encoder.stats
        stats.add({"rows": s.rows + nulls, "nulls": nulls, "tokens": s.tokens,
                   "runtime": {encoder.runtime}, "precision": {encoder.precision}})


class EmbedStatsAccumulator(AccumulatorParam):
    """Sums rows, nulls and tokens over tasks and collects the runtimes and precisions that
    the workers chose."""

    @staticmethod
    def create(sc) -> Accumulator:
        return sc.accumulator(EmbedStatsAccumulator.empty(), EmbedStatsAccumulator())

    @staticmethod
    def empty() -> dict:
        return {"rows": 0, "nulls": 0, "tokens": 0, "runtime": set(), "precision": set()}

    def zero(self, value: dict) -> dict:
        return self.empty()

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        for key in ("rows", "nulls", "tokens"):
            value1[key] += value2[key]
        for key in ("runtime", "precision"):
            value1[key] |= value2[key]
        return value1


def with_nulls(vectors: np.ndarray, present: pd.Series) -> pd.Series:
    """The batch's output column: ``vectors`` in the rows where ``present``, null elsewhere."""
    out: list = [None] * len(present)
    for slot, vector in zip(np.flatnonzero(present.to_numpy()), vectors, strict=True):
        out[slot] = vector
    return pd.Series(out, index=present.index, dtype=object)
