"""The CLI's failures: a one-line summary of an error (Spark-wrapped ones included), and a
private (0600) log file per run, in a 0700 per-user folder, that receives the JVM's log4j
output instead of the terminal and the traceback of a failure.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synapseml_ext.cli_io import TOOL


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


@contextmanager
def child_stderr_to(log_file: Path) -> Iterator[None]:
    """Processes started inside (the JVM, and the Python workers it starts) write their
    stderr to ``log_file``: the JVM's start-up warning that Spark's launcher options cause
    ("Using incubator modules"), which no option turns off, is not for the terminal. This
    process's stderr is the terminal again after."""
    sys.stderr.flush()
    log = os.open(log_file, os.O_WRONLY | os.O_APPEND)
    terminal = os.dup(2)
    try:
        os.dup2(log, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        os.close(terminal)
        os.close(log)


_JVM_NOISE = ("WARNING: Using incubator modules",)
_TELLING = re.compile(r"error|exception|no such file|not found|must be|could not|cannot", re.I)
_ABOUT_JAVA = re.compile(r"/java: |JAVA_HOME|UnsupportedClassVersionError|Java Virtual Machine|"
                         r"boot layer|Unrecognized option")


def jvm_said(log_file: Path) -> tuple[str, bool]:
    """What a JVM that stopped at start wrote to ``log_file``: the first line naming an
    error (else the first that is not a known warning), and whether it is about Java."""
    lines = [line.strip() for line in _log_lines(log_file)
             if line.strip() and not line.startswith(_JVM_NOISE)
             and not line.lstrip().startswith("at ")]
    said = next((line for line in lines if _TELLING.search(line)), lines[0] if lines else "")
    return said[:300], bool(_ABOUT_JAVA.search(said))


def not_started_error(error: Exception, log_file: Path) -> Exception | None:
    """One line for a JVM that exited before Spark started, with its own words (its stderr
    went to ``log_file``); None for other errors."""
    from synapseml_ext.engine.errors import RuntimeUnavailableError

    said, about_java = jvm_said(log_file)
    if "Java gateway process exited" not in str(error) or not said:
        return None
    hint = "check JAVA_HOME: Java 17 runs Spark 3.5 and 4.x; " if about_java else ""
    return RuntimeUnavailableError(f"Spark did not start: {said} ({hint}full log: {log_file})")


# How a Python worker logs (engine.logs.configure_worker_logging): its stderr is the JVM's.
_WORKER_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ synapseml_ext[\w.]* [A-Z]+: ")


def worker_records(log_file: Path) -> list[str]:
    """Our loggers' records that the Python workers wrote to ``log_file`` (warnings, by the
    CLI's default level), each once, in order."""
    return list(dict.fromkeys(line for line in _log_lines(log_file)
                              if _WORKER_RECORD.match(line)))


def _log_lines(log_file: Path) -> list[str]:
    """The lines of ``log_file``; none where it is gone or unreadable."""
    try:
        return log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def append_log(log_file: Path, text: str) -> None:
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(text)


def _from_py4j(record: logging.LogRecord) -> bool:
    return "py4j" in Path(record.pathname).parts


def quiet_py4j_logging(log_file: Path) -> list[logging.Handler]:
    """py4j reports a read cut by Ctrl-C (a second Ctrl-C raises KeyboardInterrupt inside its
    call) with ``logging.exception`` on the root logger, which prints the traceback on the
    terminal: send its records to ``log_file``. Everything else still reaches stderr as Python's
    last-resort handler shows it (WARNING and above, the message alone). Returns the handlers
    added to the root logger (none where the caller configured logging)."""
    root = logging.getLogger()
    if root.handlers:  # the caller configured logging: theirs to decide
        return []
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    to_file.addFilter(_from_py4j)
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.addFilter(lambda record: not _from_py4j(record))
    handlers: list[logging.Handler] = [to_file, to_stderr]
    for handler in handlers:
        root.addHandler(handler)
    return handlers


def drop_handlers(handlers: list[logging.Handler]) -> None:
    """Take ``handlers`` off the root logger and close them (the log file may go next)."""
    for handler in handlers:
        logging.getLogger().removeHandler(handler)
        handler.close()
