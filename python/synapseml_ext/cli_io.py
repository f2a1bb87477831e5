"""The CLI's inputs, checked before Spark starts: the input exists, is readable, has a known
format and decodes with ``--encoding``, named columns exist, ``--cache-dir`` is writable;
plus the names every CLI module shares (formats, the tool's name and version, local paths).
The output is :mod:`.cli_output`; the failure log, :mod:`.cli_logs`.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import lzma
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from synapseml_ext.engine.errors import UserInputError

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
    if all(os.path.getsize(f) == 0 for f in files):
        # Spark would read it as a table without columns and blame the text column
        raise UserInputError(f"{flag} {path!r} is empty (0 bytes): pass a file with data")
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


def check_columns(columns: list[str], wanted: dict[str, str | None], where: str) -> None:
    """Each named column is one of ``columns``: one line naming the option otherwise."""
    for flag, name in wanted.items():
        if name and name not in columns:
            raise UserInputError(f"{flag} {name!r} not found in {where}; available columns: "
                                 f"{', '.join(columns)}")


def check_new_column(columns: list[str], flag: str, name: str, where: str) -> None:
    """``name``, a column the command adds, is not one of ``columns`` already."""
    if name in columns:
        raise UserInputError(f"{flag} {name!r} is already a column of {where}: choose another "
                             "name")


def check_embed_columns(plan: InputPlan, encoding: str, text_col: str, output_col: str,
                        id_col: str | None) -> None:
    """The embed job's columns, where the input's columns can be told before Spark starts."""
    columns = input_columns(plan, encoding)
    if columns is not None:
        check_columns(columns, {"--text-col": text_col, "--id-col": id_col}, "--input")
        check_new_column(columns, "--output-col", output_col, "--input")


def check_master(master: str) -> None:
    """A standalone master (``spark://host:port[,host:port]``) accepts connections: else
    Spark fails later, from its own thread, as a "stopped SparkContext"."""
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master[len("spark://"):].split(","):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return
        except (OSError, ValueError) as e:
            reasons.append(f"{address}: {getattr(e, 'strerror', None) or e}")
    raise UserInputError(f"--master {master!r} cannot be reached ({'; '.join(reasons)}): "
                         "check its URL and that the master runs")


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
