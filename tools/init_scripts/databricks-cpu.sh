#!/usr/bin/env bash
# synapseml-ext on a Databricks CPU cluster (or any Linux Python + Spark node): PyTorch (CPU
# build, kept if the runtime has one), ONNX Runtime, faiss-cpu, the synapseml-ext wheel and jar,
# then an import check. Pins: versions.env. Paths and sources: see common.sh; for example
#   SYNAPSEML_EXT_PREFIX=/tmp/x PYTHON=/tmp/x/venv/bin/python WHEEL=dist/x.whl ./databricks-cpu.sh
# Idempotent: a re-run with the same pins skips every step.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

SX_DIR="${SYNAPSEML_EXT_INIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
# shellcheck source=versions.env
source "$SX_DIR/versions.env" # @bundle-inline
# shellcheck source=common.sh
source "$SX_DIR/common.sh" # @bundle-inline

# [cpu]: the PyTorch runtime (bf16) and the ONNX export; torch itself comes from sx_install_torch.
WHEEL_EXTRAS="${WHEEL_EXTRAS-cpu}"

sx_start "databricks-cpu.sh"
# The jar is downloaded and checked against JAR_SHA256 before anything is installed.
sx_fetch_jar
if [[ -n "$REQUIREMENTS_LOCK" ]]; then
  # Everything from the hashed lock file (torch included, or the runtime's kept).
  sx_step "packages" sx_install_locked
else
  sx_install_torch "$TORCH_CPU_INDEX_URL"
  sx_step "packages" sx_install_packages "$WHEEL_EXTRAS" \
    "onnxruntime==$ONNXRUNTIME_VERSION" \
    "faiss-cpu==$FAISS_CPU_VERSION"
fi
sx_install_jar
# pyspark is optional here: Databricks puts it on the path of Spark's Python processes only.
sx_import_check "synapseml_ext synapseml_ext.engine torch transformers onnxruntime faiss" "pyspark"
sx_log "databricks-cpu.sh finished"
