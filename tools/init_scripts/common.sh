# shellcheck shell=bash
# Shared steps of the synapseml-ext init scripts. Sourced after versions.env; bundle.sh inlines
# both so a cluster gets one self-contained file.
#
# Every path comes from the environment so the same script runs on a cluster and, pointed at
# a temporary prefix, in CI:
#   SYNAPSEML_EXT_PREFIX  root of every default path below ("" on a cluster)
#   PYTHON                interpreter to install into (default: $PREFIX/databricks/python/bin/python)
#   JAR_DIR               where Spark picks up jars (default: $PREFIX/databricks/jars)
#   STATE_DIR             stamp files (default: $PREFIX/var/lib/synapseml-ext)
#   LOG_FILE              log, appended (default: $PREFIX/var/log/synapseml-ext/init.log)
#   WHEEL                 pip spec or path of the synapseml-ext wheel (default: synapseml-ext==VERSION)
#                         (SYNAPSEML_EXT_WHEEL wins when set, likewise SYNAPSEML_EXT_JAR)
#   WHEEL_EXTRAS          extras of that wheel, comma-separated
#   JAR                   path or URL of the synapseml-ext jar; empty skips the jar step
#   PROTECTED_PACKAGES    installed packages pip must not move (the runtime's own)
#   PIP_ARGS              extra arguments for every pip install (e.g. "--no-index --find-links DIR")
#   FORCE=1               ignore stamp files and redo every step

SX_PREFIX="${SYNAPSEML_EXT_PREFIX:-}"
PYTHON="${PYTHON:-$SX_PREFIX/databricks/python/bin/python}"
JAR_DIR="${JAR_DIR:-$SX_PREFIX/databricks/jars}"
STATE_DIR="${STATE_DIR:-$SX_PREFIX/var/lib/synapseml-ext}"
LOG_FILE="${LOG_FILE:-$SX_PREFIX/var/log/synapseml-ext/init.log}"
# SYNAPSEML_EXT_WHEEL / SYNAPSEML_EXT_JAR: the same, with names that are safe to set as
# cluster-wide environment variables.
WHEEL="${SYNAPSEML_EXT_WHEEL:-${WHEEL:-synapseml-ext==$SYNAPSEML_EXT_VERSION}}"
JAR="${SYNAPSEML_EXT_JAR:-${JAR:-}}"
PROTECTED_PACKAGES="${PROTECTED_PACKAGES:-numpy pandas pyarrow pyspark torch}"
PIP_ARGS="${PIP_ARGS:-}"
FORCE="${FORCE:-0}"

sx_log() {
  printf '%s synapseml-ext-init: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

sx_die() {
  sx_log "ERROR: $*"
  exit 1
}

# Send everything from here on to the terminal and the log file.
sx_start() {
  local name=$1
  mkdir -p "$(dirname "$LOG_FILE")" "$STATE_DIR"
  exec > >(tee -a "$LOG_FILE") 2>&1
  sx_log "$name started (log: $LOG_FILE)"
  [[ -x "$PYTHON" ]] || sx_die "PYTHON=$PYTHON is not an executable interpreter; set PYTHON"
  sx_log "python: $PYTHON ($("$PYTHON" -c 'import sys; print(sys.version.split()[0])'))"
  sx_log "prefix: '${SX_PREFIX}', jars: $JAR_DIR, state: $STATE_DIR"
  sx_log "Databricks runtime: ${DATABRICKS_RUNTIME_VERSION:-none}; wheel: $WHEEL; jar: ${JAR:-none}"
}

# sx_step NAME COMMAND...: run COMMAND once per distinct (NAME, PYTHON, COMMAND, local wheel
# content); a stamp file holding that key marks it done, so a re-run with the same pins does
# nothing.
sx_step() {
  local name=$1
  shift
  local stamp="$STATE_DIR/$name.done"
  local want
  want="python=$PYTHON $(printf '%q ' "$@")"
  if [[ -f "$WHEEL" ]]; then
    want+=" wheel-sha256=$(sha256sum "$WHEEL" | cut -d' ' -f1)"
  fi
  if [[ "$FORCE" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    sx_log "step $name: already done with these pins (stamp $stamp), skipping"
    return 0
  fi
  sx_log "step $name: $*"
  local started=$SECONDS
  "$@"
  printf '%s' "$want" >"$stamp"
  sx_log "step $name: done in $((SECONDS - started))s"
}

# The installed version of distribution $1 in the target Python, or nothing; no import (torch
# takes seconds to import).
sx_installed_version() {
  "$PYTHON" -c 'import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass' "$1"
}

# Installed versions of PROTECTED_PACKAGES as pip constraints, so installing our packages can
# never upgrade or downgrade what the runtime ships: a conflict fails loudly instead.
sx_write_constraints() {
  local file="$STATE_DIR/runtime-constraints.txt"
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  "$PYTHON" - $PROTECTED_PACKAGES >"$file" <<'PY'
import sys
from importlib import metadata

for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
PY
  printf '%s' "$file"
}

sx_pip_install() {
  local constraints
  constraints="$(sx_write_constraints)"
  if [[ -s "$constraints" ]]; then
    sx_log "keeping the runtime's: $(tr '\n' ' ' <"$constraints")"
  fi
  # shellcheck disable=SC2086  # PIP_ARGS holds several arguments
  "$PYTHON" -m pip install --disable-pip-version-check --no-input \
    --constraint "$constraints" $PIP_ARGS "$@"
}

# Our wheel and its pinned companions in one resolver run. pip keeps an installed
# synapseml-ext of the same version even when a local wheel file was rebuilt, so a local
# file is then reinstalled on its own (without touching its dependencies).
sx_install_packages() {
  local extras=$1
  shift
  sx_pip_install "$@" "$(sx_wheel_spec "$extras")"
  if [[ -f "$WHEEL" ]]; then
    sx_pip_install --no-deps --force-reinstall "$WHEEL"
  fi
}

# The wheel spec with its extras: "pkg==1.0" -> "pkg[a,b]==1.0", "x.whl" -> "x.whl[a,b]".
sx_wheel_spec() {
  local extras=$1
  if [[ -z "$extras" ]]; then
    printf '%s' "$WHEEL"
  elif [[ "$WHEEL" == *.whl || "$WHEEL" == */* ]]; then
    printf '%s[%s]' "$WHEEL" "$extras"
  elif [[ "$WHEEL" == *==* ]]; then
    printf '%s[%s]==%s' "${WHEEL%%==*}" "$extras" "${WHEEL#*==}"
  else
    printf '%s[%s]' "$WHEEL" "$extras"
  fi
}

# torch: a runtime that already has it (Databricks ML) keeps its own build; otherwise install
# TORCH_VERSION from INDEX_URL (a CPU or CUDA build; empty = PyPI's default build).
sx_install_torch() {
  local index_url=$1
  local installed
  installed="$(sx_installed_version torch)"
  if [[ -n "$installed" ]]; then
    sx_log "torch $installed already installed: keeping it"
    return 0
  fi
  local index_args=()
  if [[ -n "$index_url" ]]; then
    index_args=(--extra-index-url "$index_url")
  fi
  sx_step "torch" sx_pip_install "${index_args[@]}" "torch==$TORCH_VERSION"
}

# The jar into JAR_DIR (Spark's classpath on Databricks). JAR is a path or an http(s)/file URL.
sx_install_jar() {
  if [[ -z "$JAR" ]]; then
    sx_log "step jar: skipped, JAR is not set (set JAR to a path or URL of" \
      "${SYNAPSEML_EXT_JAR_COORDINATES##*:}-$SYNAPSEML_EXT_VERSION.jar, or attach the Maven library" \
      "$SYNAPSEML_EXT_JAR_COORDINATES:$SYNAPSEML_EXT_VERSION to the cluster instead)"
    return 0
  fi
  local name
  name="$(basename "${JAR%%\?*}")"
  [[ "$name" == *.jar ]] || sx_die "JAR=$JAR does not name a .jar file"
  mkdir -p "$JAR_DIR"
  local fetched
  fetched="$(mktemp "$JAR_DIR/.synapseml-ext-jar.XXXXXX")"
  if [[ "$JAR" == *://* ]]; then
    sx_log "step jar: downloading $JAR"
    curl --fail --silent --show-error --location --retry 3 --output "$fetched" "$JAR" \
      || { rm -f "$fetched"; sx_die "could not download JAR=$JAR"; }
  else
    [[ -f "$JAR" ]] || { rm -f "$fetched"; sx_die "JAR=$JAR does not exist"; }
    cp "$JAR" "$fetched"
  fi
  if [[ "$(head -c 2 "$fetched")" != "PK" ]]; then
    rm -f "$fetched"
    sx_die "JAR=$JAR is not a jar (zip) file"
  fi
  local target="$JAR_DIR/$name"
  if [[ -f "$target" ]] && cmp -s "$fetched" "$target"; then
    rm -f "$fetched"
    sx_log "step jar: $target already up to date, skipping"
    return 0
  fi
  # Two versions of our classes on one classpath would be a lottery: drop the others.
  local artifact="${SYNAPSEML_EXT_JAR_COORDINATES##*:}"
  local old
  for old in "$JAR_DIR/$artifact"-*.jar; do
    if [[ -f "$old" && "$old" != "$target" ]]; then
      sx_log "step jar: removing $old (another version)"
      rm -f "$old"
    fi
  done
  chmod 0644 "$fetched"
  mv -f "$fetched" "$target"
  sx_log "step jar: installed $target"
}

# sx_import_check "REQUIRED MODULES" "OPTIONAL MODULES": import each in the target Python,
# print its version, list what is missing; fail when a required one is.
sx_import_check() {
  sx_log "import check in $PYTHON"
  "$PYTHON" - "$1" "$2" <<'PY'
import importlib
import sys

required, optional = sys.argv[1].split(), sys.argv[2].split()
missing = []
for module in required + optional:
    try:
        version = getattr(importlib.import_module(module), "__version__", "?")
        print(f"  ok       {module} {version}")
    except Exception as e:  # an import can fail with more than ImportError (missing .so, no driver)
        kind = "required" if module in required else "optional"
        print(f"  MISSING  {module} ({kind}): {type(e).__name__}: {e}")
        missing.append((module, kind))
failed = [m for m, kind in missing if kind == "required"]
if missing:
    print("missing: " + ", ".join(f"{m} ({kind})" for m, kind in missing))
else:
    print("missing: nothing")
if failed:
    print("a required module is missing: fix the cause above, then re-run with FORCE=1 "
          "(the stamps would otherwise skip the install steps)")
sys.exit(1 if failed else 0)
PY
}
