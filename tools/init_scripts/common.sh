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
#   JAR                   https:// URL or absolute path of the synapseml-ext jar; empty skips the
#                         jar step (http://, file:// and relative paths are refused)
#   JAR_SHA256            sha256 of that jar (64 hex characters, `sha256sum JAR`), required with
#                         JAR: the jar is copied to a private temporary file and checked before
#                         anything is installed
#   REQUIREMENTS_LOCK     absolute path of a hashed requirements file (see lock.py): when set,
#                         every package comes from it, installed with pip --require-hashes
#                         (SYNAPSEML_EXT_JAR_SHA256 and SYNAPSEML_EXT_REQUIREMENTS_LOCK win when set)
#   PROTECTED_PACKAGES    installed packages pip must not move (the runtime's own)
#   PIP_ARGS              extra arguments for every pip install (e.g. "--no-index --find-links DIR"
#                         or "--index-url https://mirror/simple")
#   FORCE=1               ignore stamp files and redo every step
#
# Inputs are checked before the first step (sx_check_inputs). URLs are logged without their
# query string or user:password@ (SAS tokens, presigned parameters, credentials).

SX_PREFIX="${SYNAPSEML_EXT_PREFIX:-}"
PYTHON="${PYTHON:-$SX_PREFIX/databricks/python/bin/python}"
JAR_DIR="${JAR_DIR:-$SX_PREFIX/databricks/jars}"
STATE_DIR="${STATE_DIR:-$SX_PREFIX/var/lib/synapseml-ext}"
LOG_FILE="${LOG_FILE:-$SX_PREFIX/var/log/synapseml-ext/init.log}"
# SYNAPSEML_EXT_WHEEL / SYNAPSEML_EXT_JAR: the same, with names that are safe to set as
# cluster-wide environment variables.
WHEEL="${SYNAPSEML_EXT_WHEEL:-${WHEEL:-synapseml-ext==$SYNAPSEML_EXT_VERSION}}"
JAR="${SYNAPSEML_EXT_JAR:-${JAR:-}}"
JAR_SHA256="${SYNAPSEML_EXT_JAR_SHA256:-${JAR_SHA256:-}}"
REQUIREMENTS_LOCK="${SYNAPSEML_EXT_REQUIREMENTS_LOCK:-${REQUIREMENTS_LOCK:-}}"
PROTECTED_PACKAGES="${PROTECTED_PACKAGES:-numpy pandas pyarrow pyspark torch}"

# The runtime's Spark line: SPARK_LINE (3.5 or 4) when set, else from the Databricks runtime
# (17.0 and later run Spark 4 with Scala 2.13; 13.x-16.x run Spark 3.x with Scala 2.12).
sx_spark_line() {
  if [[ -n "${SPARK_LINE:-}" ]]; then
    printf '%s\n' "$SPARK_LINE"
  elif [[ "${DATABRICKS_RUNTIME_VERSION:-}" =~ ^([0-9]+)\. ]] && ((BASH_REMATCH[1] >= 17)); then
    printf '4\n'
  else
    printf '3.5\n'
  fi
}
SX_SPARK_LINE="$(sx_spark_line)"
case "$SX_SPARK_LINE" in
  3.5) SX_SCALA=2.12 ;;
  4 | 4.*) SX_SCALA=2.13 ;;
  *) SX_SCALA="" ;;
esac
SYNAPSEML_EXT_JAR_COORDINATES="${SYNAPSEML_EXT_JAR_COORDINATES:-${SYNAPSEML_EXT_JAR_MODULE}_${SX_SCALA:-2.12}}"
PIP_ARGS="${PIP_ARGS:-}"
FORCE="${FORCE:-0}"

# Drops what follows '?' in a URL (SAS tokens, presigned S3 parameters) and the user:password@
# part, wherever a URL appears in a line.
SX_REDACT_SED="s|([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@[:space:]]*@|\\1|g; s|([A-Za-z][A-Za-z0-9+.-]*://[^?[:space:]\"']*)[?][^[:space:]\"']*|\\1?<query hidden>|g"

sx_redact() {
  printf '%s\n' "$*" | sed -E "$SX_REDACT_SED"
}

# A filter for output that can hold URLs (pip's, curl's).
sx_redact_stream() {
  sed -u -E "$SX_REDACT_SED"
}

# Every log line goes through sx_redact: a URL never reaches the terminal or the log whole.
sx_log() {
  sx_redact "$(date -u +%Y-%m-%dT%H:%M:%SZ) synapseml-ext-init: $*"
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
  sx_log "Databricks runtime: ${DATABRICKS_RUNTIME_VERSION:-none} (Spark line $SX_SPARK_LINE, Scala ${SX_SCALA:-?}); wheel: $WHEEL; jar: ${JAR:-none}"
  sx_check_inputs
}

# What a run is given, checked before the first step, so that a refused jar source, a missing or
# malformed JAR_SHA256 or an unusable lock file fails with nothing downloaded or installed.
sx_check_inputs() {
  if [[ -n "$REQUIREMENTS_LOCK" ]]; then
    [[ "$REQUIREMENTS_LOCK" == /* && -f "$REQUIREMENTS_LOCK" ]] \
      || sx_die "REQUIREMENTS_LOCK=$REQUIREMENTS_LOCK is not an existing file: set it to the absolute path of a hashed requirements file (tools/init_scripts/lock.py writes one)"
    grep -q -- '--hash=sha256:' "$REQUIREMENTS_LOCK" \
      || sx_die "REQUIREMENTS_LOCK=$REQUIREMENTS_LOCK holds no --hash=sha256: entries: generate it with tools/init_scripts/lock.py"
    if [[ ! -f "$WHEEL" ]] && ! grep -qiE '^synapseml[-_.]ext(\[[^]]*\])?==' "$REQUIREMENTS_LOCK"; then
      sx_die "REQUIREMENTS_LOCK=$REQUIREMENTS_LOCK does not pin synapseml-ext: set WHEEL to the path of the wheel file, or generate the lock with the wheel in it"
    fi
  fi
  [[ -n "$JAR" ]] || return 0
  local name
  name="$(basename "${JAR%%\?*}")"
  case "${JAR,,}" in
    https://*) ;;
    *://*)
      sx_die "JAR=$JAR: only an https:// URL or an absolute path is accepted for the jar (it runs in every Spark JVM); use https://, or copy the jar to a volume and set JAR to its path" ;;
    /*)
      [[ -f "$JAR" ]] || sx_die "JAR=$JAR does not exist: set JAR to the absolute path or the https:// URL of the jar" ;;
    *)
      sx_die "JAR=$JAR is neither an https:// URL nor an absolute path: set JAR to one of those" ;;
  esac
  [[ "$name" == *.jar ]] || sx_die "JAR=$JAR does not name a .jar file"
  [[ -n "$SX_SCALA" ]] || sx_die "SPARK_LINE=$SX_SPARK_LINE is not a Spark line this jar is built for: set SPARK_LINE to 3.5 or 4"
  # A jar of the other Scala version fails in every Spark JVM: refuse it here, in one line.
  if [[ "$name" =~ _(2\.1[0-9])- && "${BASH_REMATCH[1]}" != "$SX_SCALA" ]]; then
    sx_die "JAR=$JAR is built for Scala ${BASH_REMATCH[1]} but this runtime is Spark $SX_SPARK_LINE (Scala $SX_SCALA): use ${SYNAPSEML_EXT_JAR_MODULE##*:}_$SX_SCALA-$SYNAPSEML_EXT_VERSION.jar (or set SPARK_LINE if the runtime was guessed wrong)"
  fi
  [[ -n "$JAR_SHA256" ]] \
    || sx_die "JAR_SHA256 is not set: set JAR_SHA256 (or SYNAPSEML_EXT_JAR_SHA256) to the jar's sha256, the first field of: sha256sum $name"
  [[ "$JAR_SHA256" =~ ^[0-9A-Fa-f]{64}$ ]] \
    || sx_die "JAR_SHA256 is not 64 hex characters: set it to the first field of: sha256sum $name"
}

# SX_TMP: a directory only this user can read (mode 0700), removed when the script exits.
SX_TMP=""
sx_private_dir() {
  if [[ -z "$SX_TMP" ]]; then
    SX_TMP="$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/synapseml-ext-init.XXXXXX")"
    # shellcheck disable=SC2064  # the path is fixed now
    trap "rm -rf '$SX_TMP'" EXIT
  fi
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
  if [[ -n "$REQUIREMENTS_LOCK" && -f "$REQUIREMENTS_LOCK" ]]; then
    want+=" lock-sha256=$(sha256sum "$REQUIREMENTS_LOCK" | cut -d' ' -f1)"
  fi
  # The stamp holds a hash of the key: the key can hold index URLs, and those credentials.
  want="$(printf '%s' "$want" | sha256sum | cut -d' ' -f1)"
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
    --constraint "$constraints" $PIP_ARGS "$@" 2>&1 | sx_redact_stream
}

# REQUIREMENTS_LOCK mode: every package from the hashed lock file, in one pip run that refuses
# any file whose hash the lock does not list (already installed packages that satisfy it stay);
# a local wheel file, which the lock cannot know, after it without its dependencies.
sx_install_locked() {
  sx_pip_install --require-hashes -r "$REQUIREMENTS_LOCK"
  if [[ -f "$WHEEL" ]]; then
    sx_pip_install --no-deps --force-reinstall "$WHEEL"
  fi
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
# TORCH_VERSION from INDEX_URL (a CPU or CUDA build; empty = PyPI's default build). INDEX_URL
# replaces PyPI for this pip run (--index-url, not --extra-index-url: a name is never looked up
# on two indexes at once); the PyTorch indexes carry torch's dependencies too.
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
    index_args=(--index-url "$index_url")
  fi
  sx_step "torch" sx_pip_install "${index_args[@]}" "torch==$TORCH_VERSION"
}

# SX_JAR_FILE: the jar, copied or downloaded into SX_TMP and checked against JAR_SHA256. The
# scripts call this before installing anything, so a wrong hash installs nothing.
SX_JAR_FILE=""
sx_fetch_jar() {
  if [[ -z "$JAR" || -n "$SX_JAR_FILE" ]]; then
    return 0
  fi
  sx_check_inputs
  sx_private_dir
  local file="$SX_TMP/jar"
  if [[ "$JAR" == *://* ]]; then
    sx_log "step jar: downloading $JAR"
    local quoted=${JAR//\\/\\\\}
    quoted=${quoted//\"/\\\"}
    # The URL goes to curl on stdin (--config -), not on its command line, where every local
    # user could read it; https only, redirects included; curl's own messages are redacted.
    if ! curl --fail --silent --show-error --location --proto =https --proto-redir =https \
      --retry 3 --output "$file" --config - <<<"url = \"$quoted\"" 2>"$SX_TMP/curl.err"; then
      local line
      while IFS= read -r line; do
        sx_log "curl: $line"
      done <"$SX_TMP/curl.err"
      sx_die "could not download JAR=$JAR (curl's message above); nothing was installed"
    fi
  else
    cp "$JAR" "$file"
  fi
  local actual
  actual="$(sha256sum "$file" | cut -d' ' -f1)"
  if [[ "$actual" != "${JAR_SHA256,,}" ]]; then
    sx_die "JAR=$JAR has sha256 $actual, not JAR_SHA256=${JAR_SHA256,,}; nothing was installed: check where the jar came from, then set JAR_SHA256 to the sha256sum of the jar you trust"
  fi
  [[ "$(head -c 2 "$file")" == "PK" ]] || sx_die "JAR=$JAR is not a jar (zip) file"
  sx_log "step jar: sha256 $actual checked"
  SX_JAR_FILE=$file
}

# The checked jar into JAR_DIR (Spark's classpath on Databricks).
sx_install_jar() {
  if [[ -z "$JAR" ]]; then
    sx_log "step jar: skipped, JAR is not set (set JAR to a path or https:// URL of" \
      "${SYNAPSEML_EXT_JAR_COORDINATES##*:}-$SYNAPSEML_EXT_VERSION.jar and JAR_SHA256 to its sha256," \
      "or attach the Maven library $SYNAPSEML_EXT_JAR_COORDINATES:$SYNAPSEML_EXT_VERSION to the cluster instead)"
    return 0
  fi
  sx_fetch_jar
  local name
  name="$(basename "${JAR%%\?*}")"
  local target="$JAR_DIR/$name"
  if [[ -f "$target" ]] && cmp -s "$SX_JAR_FILE" "$target"; then
    sx_log "step jar: $target already up to date, skipping"
    return 0
  fi
  mkdir -p "$JAR_DIR"
  local staged
  staged="$(mktemp "$JAR_DIR/.synapseml-ext-jar.XXXXXX")"
  cp "$SX_JAR_FILE" "$staged"
  # Two versions of our classes on one classpath would be a lottery: drop the others (other
  # versions, and either Scala build of them: a runtime upgraded from Spark 3.5 to 4).
  local module="${SYNAPSEML_EXT_JAR_MODULE##*:}"
  local old
  for old in "$JAR_DIR/$module"_2.1[0-9]-*.jar; do
    if [[ -f "$old" && "$old" != "$target" ]]; then
      sx_log "step jar: removing $old (another version)"
      rm -f "$old"
    fi
  done
  chmod 0644 "$staged"
  mv -f "$staged" "$target"
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

# databricks-gpu.sh: the lib/ folders of the nvidia-* and tensorrt wheels on LD_LIBRARY_PATH of
# the Spark processes (driver, executors, their Python workers: onnxruntime's CUDA provider, cupy
# and a JVM do not find them through a Python package), in a marked block of the spark-env.sh
# those processes source. Not in /etc/ld.so.conf.d, which would give every process on the node,
# setuid ones included, libraries from pip's folders. SPARK_ENV_FILE="" skips this.
SPARK_ENV_FILE="${SPARK_ENV_FILE-$SX_PREFIX/databricks/spark/conf/spark-env.sh}"
sx_export_cuda_libs() {
  # An earlier version of the script registered the folders with the dynamic loader: undo that.
  local legacy="$SX_PREFIX/etc/ld.so.conf.d/synapseml-ext-cuda12.conf"
  if [[ -f "$legacy" ]]; then
    rm -f "$legacy"
    sx_log "step cuda-libs: removed $legacy (written by an earlier version of this script)"
    if [[ -z "$SX_PREFIX" && "$(id -u)" == 0 ]] && command -v ldconfig >/dev/null; then
      ldconfig
    fi
  fi
  if [[ -z "$SPARK_ENV_FILE" ]]; then
    sx_log "step cuda-libs: skipped (SPARK_ENV_FILE is empty)"
    return 0
  fi
  local dirs
  dirs="$("$PYTHON" - <<'PY'
import glob
import os
import site

dirs = set()
for root in site.getsitepackages():
    for pattern in ("nvidia/*/lib", "tensorrt_libs"):
        dirs.update(d for d in glob.glob(os.path.join(root, pattern)) if os.path.isdir(d))
print(":".join(sorted(dirs)))
PY
)"
  local begin="# >>> synapseml-ext: CUDA 12 libraries of the pip wheels (databricks-gpu.sh) >>>"
  local end="# <<< synapseml-ext <<<"
  local kept=""
  if [[ -f "$SPARK_ENV_FILE" ]]; then
    kept="$(awk -v b="$begin" -v e="$end" '$0 == b {skip = 1; next} $0 == e {skip = 0; next} !skip' \
      "$SPARK_ENV_FILE")"
  fi
  mkdir -p "$(dirname "$SPARK_ENV_FILE")"
  {
    if [[ -n "$kept" ]]; then
      printf '%s\n' "$kept"
    fi
    if [[ -n "$dirs" ]]; then
      printf '%s\n' "$begin" \
        "export LD_LIBRARY_PATH=$(printf '%q' "$dirs")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" "$end"
    fi
  } >"$SPARK_ENV_FILE"
  if [[ -n "$dirs" ]]; then
    sx_log "step cuda-libs: LD_LIBRARY_PATH for Spark's processes in $SPARK_ENV_FILE" \
      "($(tr ':' '\n' <<<"$dirs" | wc -l) folders)"
  else
    sx_log "step cuda-libs: no CUDA library folders found in $PYTHON's site-packages"
  fi
}
