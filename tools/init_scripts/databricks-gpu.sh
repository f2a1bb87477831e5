#!/usr/bin/env bash
# synapseml-ext on a Databricks GPU cluster (ML GPU runtime, CUDA 12 driver): CUDA 12 runtime
# libraries as pip wheels (no runfile installer, nothing under /usr/local/cuda touched),
# TensorRT, RAPIDS cuML/cuVS and spark-rapids-ml, the synapseml-ext wheel with its GPU extras
# and jar, then an import check. Pins: versions.env. Paths and sources: see common.sh. The CUDA
# library folders reach the Spark processes through LD_LIBRARY_PATH in spark-env.sh (SPARK_ENV_FILE),
# not the whole node through /etc/ld.so.conf.d.
# Idempotent: a re-run with the same pins skips every step.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SX_DIR="${SYNAPSEML_EXT_INIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
# shellcheck source=versions.env
source "$SX_DIR/versions.env" # @bundle-inline
# shellcheck source=common.sh
source "$SX_DIR/common.sh" # @bundle-inline

WHEEL_EXTRAS="${WHEEL_EXTRAS-gpu,tensorrt}"
cuda12_wheels() {
  printf '%s\n' \
    "nvidia-cuda-runtime-cu12==$CUDA_RUNTIME_CU12_VERSION" \
    "nvidia-cuda-nvrtc-cu12==$CUDA_NVRTC_CU12_VERSION" \
    "nvidia-cublas-cu12==$CUBLAS_CU12_VERSION" \
    "nvidia-cudnn-cu12==$CUDNN_CU12_VERSION" \
    "nvidia-cufft-cu12==$CUFFT_CU12_VERSION" \
    "nvidia-curand-cu12==$CURAND_CU12_VERSION" \
    "nvidia-cusolver-cu12==$CUSOLVER_CU12_VERSION" \
    "nvidia-cusparse-cu12==$CUSPARSE_CU12_VERSION" \
    "nvidia-nvjitlink-cu12==$NVJITLINK_CU12_VERSION" \
    "nvidia-nccl-cu12==$NCCL_CU12_VERSION"
}

sx_start "databricks-gpu.sh"
# The jar is downloaded and checked against JAR_SHA256 before anything is installed.
sx_fetch_jar
if command -v nvidia-smi >/dev/null; then
  sx_log "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
else
  sx_log "no nvidia-smi on this node: installing anyway (the import check may fail on a node without a GPU driver)"
fi
if [[ -n "$REQUIREMENTS_LOCK" ]]; then
  # Everything from the hashed lock file (torch included, or the runtime's kept).
  sx_step "packages" sx_install_locked
else
  TORCH_VERSION="$TORCH_GPU_VERSION" sx_install_torch "$TORCH_GPU_INDEX_URL"
  # NVIDIA_INDEX_URL, when set, replaces PyPI for this run (--index-url: a mirror that serves
  # every package below; never an extra index, where a name could come from either).
  nvidia_index_args=()
  if [[ -n "$NVIDIA_INDEX_URL" ]]; then
    nvidia_index_args=(--index-url "$NVIDIA_INDEX_URL")
  fi
  mapfile -t cuda_specs < <(cuda12_wheels)
  # One resolver run for everything, so no later step can move what an earlier one pinned.
  sx_step "packages" sx_install_packages "$WHEEL_EXTRAS" "${nvidia_index_args[@]}" \
    "${cuda_specs[@]}" \
    "tensorrt-cu12==$TENSORRT_CU12_VERSION" \
    "cuml-cu12==$RAPIDS_VERSION" \
    "cuvs-cu12==$RAPIDS_VERSION" \
    "spark-rapids-ml==$SPARK_RAPIDS_ML_VERSION" \
    "onnxruntime==$ONNXRUNTIME_VERSION" \
    "faiss-cpu==$FAISS_CPU_VERSION"
fi
sx_export_cuda_libs
sx_install_jar
sx_import_check \
  "synapseml_ext synapseml_ext.engine torch transformers onnxruntime faiss tensorrt cuml cuvs spark_rapids_ml" \
  "pyspark cupy"
"$PYTHON" -c 'import torch; print("torch CUDA", torch.version.cuda, "- GPU visible:", torch.cuda.is_available())' \
  || sx_log "torch could not report its CUDA build"
sx_log "databricks-gpu.sh finished"
