#!/usr/bin/env bash
# Writes self-contained copies of the init scripts (versions.env and common.sh inlined) into
# OUT_DIR: a cluster init script is one file, uploaded to a volume or workspace folder.
#   tools/init_scripts/bundle.sh dist/init_scripts
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:?usage: bundle.sh OUT_DIR}"
mkdir -p "$out_dir"

for script in databricks-cpu.sh databricks-gpu.sh; do
  target="$out_dir/$script"
  {
    while IFS= read -r line; do
      if [[ "$line" =~ ^source\ \"\$SX_DIR/([A-Za-z0-9_.-]+)\"\ \#\ @bundle-inline$ ]]; then
        included="${BASH_REMATCH[1]}"
        printf '# ---- begin %s (inlined by bundle.sh) ----\n' "$included"
        grep -v '^# shellcheck shell=bash$' "$here/$included"
        printf '# ---- end %s ----\n' "$included"
      elif [[ "$line" =~ ^#\ shellcheck\ source= || "$line" =~ ^SX_DIR= ]]; then
        continue
      else
        printf '%s\n' "$line"
      fi
    done <"$here/$script"
  } >"$target"
  if grep -q '@bundle-inline' "$target"; then
    echo "bundle.sh: $script still sources a file after bundling" >&2
    exit 1
  fi
  chmod +x "$target"
  echo "bundle.sh: wrote $target"
done
