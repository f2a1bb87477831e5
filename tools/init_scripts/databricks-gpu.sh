#!/usr/bin/env bash
# synapseml-ext on a Databricks GPU cluster (ML GPU runtime, CUDA 12 driver): CUDA 12 runtime
# libraries as pip wheels (no runfile installer, nothing under /usr/local/cuda touched),
# TensorRT, RAPIDS cuML/cuVS and spark-rapids-ml, the synapseml-ext wheel with its GPU extras
# and jar, then an import check. Pins: versions.env. Paths and sources: see common.sh.
# Idempotent: a re-run with the same pins skips every step.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SX_DIR="${SYNAPSEML_EXT_INIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
# shellcheck source=versions.env
source "$SX_DIR/versions.env" # @bundle-inline
# shellcheck source=common.sh
source "$SX_DIR/common.sh" # @bundle-inline

WHEEL_EXTRAS="${WHEEL_EXTRAS-gpu,tensorrt}"
# Where the dynamic loader learns about the pip CUDA libraries ("" = do not register them).
LD_CONF_FILE="${LD_CONF_FILE-$SX_PREFIX/etc/ld.so.conf.d/synapseml-ext-cuda12.conf}"

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

# The lib/ folders of the nvidia-* and tensorrt wheels, for processes that do not find them
# through a Python package (onnxruntime's CUDA provider, cupy, a JVM).
register_cuda_libs() {
  if [[ -z "$LD_CONF_FILE" ]]; then
    sx_log "step ld-conf: skipped (LD_CONF_FILE is empty)"
    return 0
  fi
  mkdir -p "$(dirname "$LD_CONF_FILE")"
  "$PYTHON" - >"$LD_CONF_FILE" <<'PY'
import glob
import os
import site

roots = site.getsitepackages()
dirs = set()
for root in roots:
    for pattern in ("nvidia/*/lib", "tensorrt_libs"):
        dirs.update(d for d in glob.glob(os.path.join(root, pattern)) if os.path.isdir(d))
print("\n".join(sorted(dirs)))
PY
  sx_log "step ld-conf: wrote $LD_CONF_FILE ($(wc -l <"$LD_CONF_FILE") folders)"
  # Only the real /etc feeds the loader; under a test prefix the file is all we want.
  if [[ -z "$SX_PREFIX" && "$(id -u)" == 0 ]] && command -v ldconfig >/dev/null; then
    ldconfig
    sx_log "step ld-conf: ldconfig done"
  fi
}

sx_start "databricks-gpu.sh"
if command -v nvidia-smi >/dev/null; then
  sx_log "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
else
  sx_log "no nvidia-smi on this node: installing anyway (the import check may fail on a node without a GPU driver)"
fi
TORCH_VERSION="$TORCH_GPU_VERSION" sx_install_torch "$TORCH_GPU_INDEX_URL"
nvidia_index_args=()
if [[ -n "$NVIDIA_INDEX_URL" ]]; then
  nvidia_index_args=(--extra-index-url "$NVIDIA_INDEX_URL")
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
register_cuda_libs
sx_install_jar
sx_import_check \
  "synapseml_ext synapseml_ext.engine torch transformers onnxruntime faiss tensorrt cuml cuvs spark_rapids_ml" \
  "pyspark cupy"
"$PYTHON" -c 'import torch; print("torch CUDA", torch.version.cuda, "- GPU visible:", torch.cuda.is_available())' \
  || sx_log "torch could not report its CUDA build"
sx_log "databricks-gpu.sh finished"
