"""Params of :class:`HuggingFaceSentenceEmbedder`, one definition each (pyspark.ml style)."""

from __future__ import annotations

from typing import TypeVar

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol

from synapseml_ext.contract.checked_params import CheckedParams
from synapseml_ext.engine.spec import EncoderSpec, validate_option

P = TypeVar("P", bound="_SentenceEmbedderParams")

# Spark Param name -> EncoderSpec field. The engine validates values; Params only convert.
PARAM_TO_SPEC = {
    "modelName": "model",
    "runtime": "runtime",
    "precision": "precision",
    "batchSize": "batch_size",
    "maxTokensPerBatch": "max_tokens_per_batch",
    "maxSeqLength": "max_seq_length",
    "normalize": "normalize",
    "prompt": "prompt",
    "cacheDir": "cache_dir",
    "numThreads": "num_threads",
    "minCosine": "min_cosine",
    "truncateDim": "truncate_dim",
    "promptName": "prompt_name",
    "revision": "revision",
    "trustRemoteCode": "trust_remote_code",
    "endpoint": "endpoint",
    "apiFormat": "api_format",
    "apiKeyEnv": "api_key_env",
    "maxConcurrentRequests": "max_concurrent_requests",
    "requestTimeout": "request_timeout",
    "maxRetries": "max_retries",
}


class _SentenceEmbedderParams(HasInputCol, HasOutputCol, CheckedParams):
    """Params shared by the embedder and the code generated from it for Scala."""

    modelName: Param[str] = Param(
        Params._dummy(), "modelName",
        "sentence-transformers model: a Hugging Face hub id or a local model directory",
        typeConverter=TypeConverters.toString)
    runtime: Param[str] = Param(
        Params._dummy(), "runtime",
        "where the model runs: cpu (PyTorch), onnx (ONNX Runtime), cuda (PyTorch on GPU), "
        "tensorrt (TensorRT engine from the ONNX export), auto (best available on each "
        "worker), remote (an embedding server at endpoint does the work)",
        typeConverter=TypeConverters.toString)
    precision: Param[str] = Param(
        Params._dummy(), "precision",
        "numeric precision: auto (fp16 on GPUs; bf16 on CPUs with AMX-BF16 or AVX512-BF16, fp32 "
        "on other CPUs), fp32, bf16 (runtimes cpu and cuda) or fp16 (runtimes cuda and tensorrt)",
        typeConverter=TypeConverters.toString)
    batchSize: Param[int] = Param(
        Params._dummy(), "batchSize",
        "maximum number of rows per model call (rows are also cut by maxTokensPerBatch)",
        typeConverter=TypeConverters.toInt)
    maxTokensPerBatch: Param[int] = Param(
        Params._dummy(), "maxTokensPerBatch",
        "maximum padded tokens per model call; 0 lets the runtime choose (about 1-2k on CPU, "
        "sized to memory on GPU)",
        typeConverter=TypeConverters.toInt)
    maxSeqLength: Param[int] = Param(
        Params._dummy(), "maxSeqLength",
        "truncate texts to this many tokens; 0 uses the model's max_seq_length",
        typeConverter=TypeConverters.toInt)
    normalize: Param[bool] = Param(
        Params._dummy(), "normalize",
        "L2-normalise embeddings; unset follows the model (its Normalize module)",
        typeConverter=TypeConverters.toBoolean)
    prompt: Param[str] = Param(
        Params._dummy(), "prompt",
        "text put before every input, e.g. 'query: ' or 'passage: ' for e5 models",
        typeConverter=TypeConverters.toString)
    cacheDir: Param[str] = Param(
        Params._dummy(), "cacheDir",
        "directory for ONNX exports, TensorRT engines and precision verdicts; empty uses "
        "$SYNAPSEML_EXT_CACHE or the user cache directory; a shared path (e.g. /dbfs/...) lets "
        "all nodes reuse one build",
        typeConverter=TypeConverters.toString)
    numThreads: Param[int] = Param(
        Params._dummy(), "numThreads",
        "intra-op threads per task; 0 uses the task's CPU share (spark.task.cpus)",
        typeConverter=TypeConverters.toInt)
    minCosine: Param[float] = Param(
        Params._dummy(), "minCosine",
        "quality guard for reduced precision: minimum cosine to fp32 on the probe texts, "
        "below which the worker falls back to fp32; 0 disables the check",
        typeConverter=TypeConverters.toFloat)

    truncateDim: Param[int] = Param(
        Params._dummy(), "truncateDim",
        "keep the first N dimensions of each embedding (Matryoshka models), normalised after "
        "the cut when the model or normalize says so; 0 keeps them all",
        typeConverter=TypeConverters.toInt)
    promptName: Param[str] = Param(
        Params._dummy(), "promptName",
        "one of the model's prompts by name (config_sentence_transformers.json, e.g. 'query'); "
        "empty uses the model's default prompt, if it has one; exclusive with prompt",
        typeConverter=TypeConverters.toString)
    revision: Param[str] = Param(
        Params._dummy(), "revision",
        "hub models: the branch, tag or commit to load (pin it for reproducible embeddings); "
        "empty is the default branch; ignored for local directories",
        typeConverter=TypeConverters.toString)
    trustRemoteCode: Param[bool] = Param(
        Params._dummy(), "trustRemoteCode",
        "allow a model that ships its own Python code (auto_map in config.json) to run it on "
        "the workers; such models are refused while false",
        typeConverter=TypeConverters.toBoolean)
    endpoint: Param[str] = Param(
        Params._dummy(), "endpoint",
        "runtime=remote: the embedding server's base URL, e.g. http://tei:8080 (apiFormat=tei: "
        "POST /embed) or https://host/v1 (apiFormat=openai: POST /embeddings)",
        typeConverter=TypeConverters.toString)
    apiFormat: Param[str] = Param(
        Params._dummy(), "apiFormat",
        "runtime=remote: the server's API, tei (text-embeddings-inference, synapseml-ext serve) "
        "or openai (OpenAI-compatible /embeddings; modelName is sent as model)",
        typeConverter=TypeConverters.toString)
    apiKeyEnv: Param[str] = Param(
        Params._dummy(), "apiKeyEnv",
        "runtime=remote: the NAME of an environment variable that holds the API key on the "
        "executors (sent as a Bearer token); the key itself is never a Param nor saved",
        typeConverter=TypeConverters.toString)
    maxConcurrentRequests: Param[int] = Param(
        Params._dummy(), "maxConcurrentRequests",
        "runtime=remote: requests in flight per Spark task",
        typeConverter=TypeConverters.toInt)
    requestTimeout: Param[float] = Param(
        Params._dummy(), "requestTimeout",
        "runtime=remote: seconds to wait for one response before retrying it",
        typeConverter=TypeConverters.toFloat)
    maxRetries: Param[int] = Param(
        Params._dummy(), "maxRetries",
        "runtime=remote: retries of a request after 429, 5xx, a timeout or a dropped "
        "connection (exponential backoff with jitter, Retry-After honoured)",
        typeConverter=TypeConverters.toInt)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._setDefault(
            outputCol="embeddings",
            modelName="sentence-transformers/all-MiniLM-L6-v2",
            runtime="auto",
            precision="auto",
            batchSize=256,
            maxTokensPerBatch=0,
            maxSeqLength=0,
            prompt="",
            cacheDir="",
            numThreads=0,
            minCosine=0.999,
            truncateDim=0,
            promptName="",
            revision="",
            trustRemoteCode=False,
            endpoint="",
            apiFormat="tei",
            apiKeyEnv="",
            maxConcurrentRequests=4,
            requestTimeout=60.0,
            maxRetries=5,
        )

    def _set_checked(self: P, **kwargs) -> P:
        """``_set`` after the engine's validation; ``None`` means "leave unset" (SynapseML's
        constructor passes ``None`` for every argument it was not given)."""
        values = {k: v for k, v in kwargs.items() if v is not None}
        for name, value in values.items():
            spec_name = PARAM_TO_SPEC.get(name)
            if spec_name is not None:
                param = self.getParam(name)
                validate_option(spec_name, param.typeConverter(value))
        return self._set(**values)

    def encoder_spec(self) -> EncoderSpec:
        """The engine options these Params describe (plain values, safe to ship to workers)."""
        values = {spec: self.getOrDefault(name) for name, spec in PARAM_TO_SPEC.items()
                  if self.isDefined(self.getParam(name))}
        return EncoderSpec(**values)

    def getModelName(self) -> str:
        return self.getOrDefault(self.modelName)

    def getRuntime(self) -> str:
        return self.getOrDefault(self.runtime)

    def getPrecision(self) -> str:
        return self.getOrDefault(self.precision)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getMaxTokensPerBatch(self) -> int:
        return self.getOrDefault(self.maxTokensPerBatch)

    def getMaxSeqLength(self) -> int:
        return self.getOrDefault(self.maxSeqLength)

    def getNormalize(self) -> bool | None:
        """``None`` while unset: the model's own configuration decides."""
        return self.getOrDefault(self.normalize) if self.isDefined(self.normalize) else None

    def getPrompt(self) -> str:
        return self.getOrDefault(self.prompt)

    def getCacheDir(self) -> str:
        return self.getOrDefault(self.cacheDir)

    def getNumThreads(self) -> int:
        return self.getOrDefault(self.numThreads)

    def getMinCosine(self) -> float:
        return self.getOrDefault(self.minCosine)

    def getEndpoint(self) -> str:
        return self.getOrDefault(self.endpoint)

    def getApiFormat(self) -> str:
        return self.getOrDefault(self.apiFormat)

    def getApiKeyEnv(self) -> str:
        return self.getOrDefault(self.apiKeyEnv)

    def getMaxConcurrentRequests(self) -> int:
        return self.getOrDefault(self.maxConcurrentRequests)

    def getRequestTimeout(self) -> float:
        return self.getOrDefault(self.requestTimeout)

    def getMaxRetries(self) -> int:
        return self.getOrDefault(self.maxRetries)

    def getTruncateDim(self) -> int:
        return self.getOrDefault(self.truncateDim)

    def getPromptName(self) -> str:
        return self.getOrDefault(self.promptName)

    def getRevision(self) -> str:
        return self.getOrDefault(self.revision)

    def getTrustRemoteCode(self) -> bool:
        return self.getOrDefault(self.trustRemoteCode)
