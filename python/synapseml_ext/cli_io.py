"""The CLI's files: input checks before Spark starts, an output that replaces only our own
output and appears only when the job succeeded, and a private log for failures."""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import json
import lzma
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synapseml_ext.engine.errors import UserInputError

MARKER = "_SYNAPSEML_EXT_OUTPUT"
TOOL = "synapseml-ext"
FORMATS = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}
OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
PROGRESS_MODES = ("auto", "bar", "lines", "off")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Compressions Spark reads that Python cannot decode here: their text is not checked.
_UNCHECKED = (".zst", ".snappy", ".lz4", ".deflate", ".br")


def version() -> str:
    from synapseml_ext import __version__

    return __version__


def _local(path: str) -> str | None:
    """The local path of ``path`` (``file:`` URIs included); ``None`` for other schemes."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    if "://" in path:
        return None
    return os.path.abspath(os.path.expanduser(path))


# -- input ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputPlan:
    path: str          # as Spark reads it
    fmt: str           # csv | parquet | jsonl
    files: tuple[Path, ...]  # the local data files (empty for remote inputs)


def check_input(path: str, fmt: str | None, encoding: str, *, flag: str = "--input",
                format_flag: str = "--format", formats: dict[str, str] = FORMATS
                ) -> InputPlan:
    """The input exists, is readable, has a known format and (csv, jsonl) decodes with
    ``encoding``; raises :class:`UserInputError` otherwise. ``flag`` and ``format_flag``
    name the options in messages; ``formats`` maps file extensions to formats."""
    if fmt is None:
        fmt = _format_from_name(path, formats)
        if fmt is None:
            known = list(dict.fromkeys(formats.values()))
            raise UserInputError(f"cannot tell the format of {flag} {path!r} from its name: "
                                 f"pass {format_flag} {', '.join(known[:-1])} or {known[-1]}")
    if fmt != "parquet":
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UserInputError(f"unknown --encoding {encoding!r}: pass a codec name such as "
                                 "utf-8, latin-1 or cp1252") from None
    local = _local(path)
    if local is None:  # hdfs://, s3a://, ...: Spark checks it
        return InputPlan(path, fmt, ())
    matches = sorted(glob.glob(local)) if glob.has_magic(local) else [local]
    if not matches or not os.path.exists(matches[0]):
        raise UserInputError(f"{flag} {path!r} does not exist: check the path")
    files = tuple(f for m in matches for f in _data_files(Path(m)))
    if not files:
        raise UserInputError(f"{flag} {path!r} holds no data files")
    for f in files:
        if not os.access(f, os.R_OK):
            raise UserInputError(f"cannot read input file {str(f)!r}: permission denied")
    return InputPlan(path, fmt, files)


def _format_from_name(path: str, formats: dict[str, str]) -> str | None:
    name = path.rstrip("/")
    for suffix in (*_OPENERS, *_UNCHECKED):  # data.csv.gz is csv
        name = name.removesuffix(suffix)
    return formats.get(Path(name).suffix.lower().lstrip("."))


def output_format(output: str, fmt: str | None) -> str:
    """The format ``--output`` is written in: ``fmt``, else its extension (out.csv is csv),
    else parquet."""
    return fmt or _format_from_name(output, FORMATS) or "parquet"


def _data_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(names):
            if not name.startswith((".", "_")):  # Spark skips these too
                yield Path(root) / name


def check_encoding(plan: InputPlan, encoding: str) -> None:
    """Every csv/jsonl input file decodes with ``encoding`` (strict): bytes that do not would
    otherwise be stored as U+FFFD without a word."""
    if plan.fmt == "parquet":
        return
    for path in plan.files:
        if path.name.endswith(_UNCHECKED):
            continue
        _check_decodes(path, encoding)


def _check_decodes(path: Path, encoding: str) -> None:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    opener = _OPENERS.get(path.suffix, open)
    offset = newlines = 0
    with opener(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = decoder.getstate()[0]  # undecoded tail bytes of the previous chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                data = pending + chunk
                at = offset - len(pending) + e.start
                line = newlines - pending.count(b"\n") + data[:e.start].count(b"\n") + 1
                bad = " ".join(f"0x{b:02x}" for b in data[e.start:max(e.end, e.start + 1)])
                raise UserInputError(
                    f"input file {str(path)!r} is not valid {encoding}: {bad} at byte "
                    f"offset {at} (line {line}); pass its encoding with --encoding (e.g. "
                    "--encoding latin-1 or cp1252)") from None
            if not chunk:
                return
            offset += len(chunk)
            newlines += chunk.count(b"\n")


def input_columns(plan: InputPlan, encoding: str) -> list[str] | None:
    """The columns of a local csv (its header row) or parquet input, read without Spark;
    ``None`` where they cannot be told that way (jsonl, remote, unusual headers)."""
    if not plan.files:
        return None
    first = plan.files[0]
    try:
        if plan.fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(first).names)
        if plan.fmt == "csv" and not first.name.endswith(_UNCHECKED):
            with _OPENERS.get(first.suffix, open)(first, "rt", encoding=encoding,
                                                  newline="") as f:
                header = next(csv.reader(f), None)
            # Spark renames empty and repeated names: only a plain header is told here.
            if header and all(header) and len(set(header)) == len(header):
                return header
    except Exception:  # Spark reads it, and says what is wrong
        return None
    return None


def check_column(plan: InputPlan, encoding: str, flag: str, name: str) -> None:
    """``name`` is a column of the input, where that can be told before Spark starts."""
    columns = input_columns(plan, encoding)
    if columns is not None and name not in columns:
        raise UserInputError(f"{flag} {name!r} not found in --input; available columns: "
                             f"{', '.join(columns)}")


# -- output --------------------------------------------------------------------------------

@dataclass
class OutputPlan:
    """Where the job writes (``temp``, a hidden sibling) and what it becomes (``final``)."""

    final: Path
    temp: Path
    replace: bool  # ``final`` holds a previous output of ours


def check_output(output: str, inputs: InputPlan | Sequence[InputPlan], overwrite: bool
                 ) -> OutputPlan:
    """Refuse, before Spark starts, any output that would destroy what we did not write
    (``inputs``: every file or directory the command reads)."""
    local = _local(output)
    if local is None:
        raise UserInputError(f"--output {output!r} must be a local directory: the output is "
                             "written beside it and renamed into place when the job succeeds")
    final = Path(local)
    if final.is_symlink():
        raise UserInputError(f"--output {output!r} is a symbolic link: pass the directory "
                             "it points to")
    target = Path(os.path.realpath(final))
    for plan in [inputs] if isinstance(inputs, InputPlan) else inputs:
        input_local = _local(plan.path)
        if input_local is None:
            continue
        for inp in {Path(os.path.realpath(p)) for p in (input_local, *plan.files)}:
            if target == inp or target in inp.parents or inp in target.parents:
                raise UserInputError(
                    f"--output {output!r} contains or is inside the input {plan.path!r}: "
                    "choose an output directory outside the input")
    parent = final.parent
    if not parent.is_dir():
        raise UserInputError(f"the parent of --output {output!r} ({parent}) does not exist: "
                             "create it first, or choose another --output")
    temp = parent / f".{final.name}.{TOOL}-tmp-{uuid.uuid4().hex[:12]}"
    try:  # the real test of writability (ACLs, read-only mounts, root on chattr +i)
        os.mkdir(temp, 0o700)
        os.rmdir(temp)
    except OSError as e:
        raise UserInputError(f"cannot write to {parent} (the parent of --output): "
                             f"{e.strerror}; choose a writable location for --output") from None
    replace = False
    if final.exists():
        if not final.is_dir():
            raise UserInputError(f"--output {output!r} is an existing file: choose a directory "
                                 "path that does not exist yet")
        if os.path.ismount(final):
            raise UserInputError(f"--output {output!r} is a mount point: choose a new "
                                 "directory inside it")
        if any(final.iterdir()):
            if not overwrite:
                raise UserInputError(
                    f"--output {output!r} already exists: pass --overwrite to replace a previous "
                    "synapseml-ext output, or choose a new directory")
            _check_ours(final, output)
            replace = True
        _probe_writable(final, output)
    return OutputPlan(final, temp, replace)


def _probe_writable(directory: Path, shown: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{TOOL}-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserInputError(f"--output {shown!r} is not writable ({e.strerror}): choose "
                             "another --output") from None


def _check_ours(directory: Path, shown: str) -> dict:
    """The marker of a previous output of ours; refuse a directory holding anything else."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        if marker.get("tool") != TOOL:
            raise ValueError("another tool's marker")
        ours = set(marker["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(
            f"--output {shown!r} is not a synapseml-ext output (no valid {MARKER} "
            "marker) and --overwrite replaces only those: choose a new or empty directory"
        ) from None
    others = sorted(p.name for p in directory.iterdir() if p.name not in ours)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise UserInputError(
            f"--output {shown!r} holds files synapseml-ext did not write ({shown}); "
            "--overwrite replaces only a previous output: move them or choose a new directory")
    return marker


@contextmanager
def staged_output(plan: OutputPlan, description: dict) -> Iterator[Path]:
    """Yield the temporary directory to write; on success mark it as ours and move it into
    place (a previous output of ours is moved aside first, then deleted); on failure remove
    it, so that nothing is left behind and a retry starts clean. ``description`` goes into
    the marker as it is when the block ends (the job may add what it learnt)."""
    try:
        yield plan.temp
        _write_marker(plan.temp, description)
        _move_into_place(plan)
    finally:
        shutil.rmtree(plan.temp, ignore_errors=True)


def read_marker(directory: Path) -> dict | None:
    """The ``_SYNAPSEML_EXT_OUTPUT`` marker of a directory we wrote; ``None`` where there is
    none (or it is not ours)."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


def _write_marker(directory: Path, description: dict) -> None:
    files = sorted(p.name for p in directory.iterdir())
    marker = {"tool": TOOL, "version": version(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **description, "files": files}
    (directory / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def _move_into_place(plan: OutputPlan) -> None:
    final = plan.final
    if not plan.replace:
        try:  # rename() replaces only an empty directory, never files
            os.rename(plan.temp, final)
        except OSError as e:  # e.g. filled by something else while the job ran
            raise UserInputError(f"could not move the finished output into --output "
                                 f"{str(final)!r} ({e.strerror}); nothing was replaced: "
                                 "choose a new directory") from None
        return
    _check_ours(final, str(final))  # again: it may have changed while the job ran
    old = final.parent / f".{final.name}.{TOOL}-old-{uuid.uuid4().hex[:12]}"
    os.rename(final, old)
    try:
        os.rename(plan.temp, final)
    except OSError:
        os.rename(old, final)
        raise
    _check_ours(old, str(final))
    shutil.rmtree(old)


# -- errors and logs -----------------------------------------------------------------------

def is_spark_error(error: BaseException) -> bool:
    # Py4JJavaError, pyspark.errors.PySparkException and their subclasses.
    return any(c.__module__.startswith(("py4j", "pyspark")) for c in type(error).__mro__)


def summary(error: BaseException) -> str:
    """The most telling ``Type: message`` line of a (possibly Spark-wrapped) error."""
    lines = str(error).splitlines()
    found = [m.group(0) for line in lines
             if (m := re.match(r"[A-Za-z_][\w.]*(Error|Exception): \S.*", line))
             and not line.startswith(("org.apache", "java.", "py4j", "scala."))]
    text = found[-1] if found else (lines[0] if lines and lines[0] else repr(error))
    return text[:300]


def new_log_file(command: str) -> Path:
    """A private (0600) log file in the per-user log directory (0700)."""
    from platformdirs import user_log_dir

    name = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        directory = Path(user_log_dir(TOOL))
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_uid != os.getuid() or directory.stat().st_mode & 0o077:
            directory.chmod(0o700)
        fd = os.open(directory / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:  # no writable home: a fresh private directory under the temp dir
        directory = Path(tempfile.mkdtemp(prefix=f"{TOOL}-logs-"))
        fd = os.open(directory / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    return directory / name


def quiet_spark_conf(log_file: Path) -> dict[str, str]:
    """Spark conf that sends the JVM's log4j output to ``log_file`` instead of stderr."""
    props = log_file.with_suffix(".log4j2.properties")
    fd = os.open(props, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(
            "rootLogger.level = warn\n"
            "rootLogger.appenderRef.file.ref = file\n"
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex\n")
    return {"spark.driver.extraJavaOptions": f'"-Dlog4j2.configurationFile={props}"',
            "spark.ui.showConsoleProgress": "false"}


def append_log(log_file: Path, text: str) -> None:
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(text)


def check_cache_dir(cache_dir: str) -> None:
    """An explicit cache directory must be (or be creatable as) a writable directory."""
    if not cache_dir:
        return
    path = Path(os.path.expanduser(cache_dir))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"--cache-dir {cache_dir!r}: {existing} is not a directory; pass "
                             "a writable directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{TOOL}-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserInputError(
            f"--cache-dir {cache_dir!r} is not writable ({e.strerror}): pass a writable "
            "directory, or leave --cache-dir out to use the per-user cache") from None
