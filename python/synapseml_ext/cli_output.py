"""The CLI's output: refused before Spark starts where it would destroy what we did not
write (inputs, foreign files, mount points, unwritable folders); written to a hidden sibling
and moved into place, with a ``_SYNAPSEML_EXT_OUTPUT`` marker, only when the job succeeds, so
that ``--overwrite`` replaces only a previous output of ours and a failure leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synapseml_ext.cli_io import TOOL, InputPlan, _local, version
from synapseml_ext.engine.errors import UserInputError

MARKER = "_SYNAPSEML_EXT_OUTPUT"


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
    if parent.exists() and not parent.is_dir():
        raise UserInputError(f"the parent of --output {output!r} ({parent}) is a file, not a "
                             "directory: choose another --output")
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
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise UserInputError(
            f"--output {shown!r} holds files synapseml-ext did not write ({listed}); "
            "--overwrite replaces only a previous output: move them or choose a new directory")
    return marker


@contextmanager
def staged_output(plan: OutputPlan, description: dict) -> Iterator[Path]:
    """Yield the temporary directory to write; on success mark it as ours and move it into
    place (a previous output of ours is moved aside first, then deleted); on failure remove
    it, so that nothing is left behind and a retry starts clean (and again in
    :func:`remove_staged`). ``description`` goes into the marker as it is when the block
    ends (the job may add what it learnt)."""
    _staged.add(plan.temp)
    try:
        yield plan.temp
        _write_marker(plan.temp, description)
        _move_into_place(plan)
        _staged.discard(plan.temp)
    finally:
        shutil.rmtree(plan.temp, ignore_errors=True)


# This process's staged directories: a failed or cancelled job's tasks run on until they
# next check for it and can write into one after staged_output removed it (seen on Spark
# 3.5 after Ctrl-C), so they are removed again once those tasks have ended.
_staged: set[Path] = set()


def settle_staged(spark: Any) -> None:
    """Where an output did not finish, wait (at most 20 s) for ``spark``'s running tasks to
    end: they may still write into its staged directory."""
    if _staged:
        _wait_for_tasks(spark, 20.0)


def remove_staged() -> None:
    """Remove the staged directories of outputs that did not finish; after Spark's stop.
    Their JVM is ended first: a cancelled task can still write after ``SparkContext.stop()``
    returned (seen on Spark 3.5), and the CLI is done with the JVM."""
    if _staged:
        _end_jvm()
    for temp in _staged:
        shutil.rmtree(temp, ignore_errors=True)
    _staged.clear()


def _end_jvm() -> None:
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)  # set by pyspark when it launched the JVM
    if process is None:
        return
    try:
        gateway.shutdown()
    except Exception:  # already gone
        pass
    process.kill()
    process.wait(timeout=60)
    SparkContext._gateway = SparkContext._jvm = None


def _wait_for_tasks(spark: Any, seconds: float) -> None:
    """Until no task has run for 1 s: jobs are cancelled on every look (one that started
    meanwhile too), and a cancelled task runs on until it next checks."""
    deadline, idle = time.monotonic() + seconds, 0
    try:
        tracker = spark.sparkContext._jsc.sc().statusTracker()
        while time.monotonic() < deadline and idle < 5:
            spark.sparkContext.cancelAllJobs()
            running = sum(info.numRunningTasks() for info in tracker.getExecutorInfos())
            idle = 0 if running else idle + 1
            time.sleep(0.2)
    except (Exception, KeyboardInterrupt):  # Spark stopping, or Ctrl-C again: stop waiting
        return


def read_marker(directory: Path) -> dict | None:
    """The ``_SYNAPSEML_EXT_OUTPUT`` marker of a directory we wrote; ``None`` where there is
    none (or it is not ours)."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("tool") == TOOL else None


def marker_at(path: str) -> dict | None:
    """The marker of ``path`` where it is a local directory we wrote, else ``None``."""
    local = _local(path)
    return read_marker(Path(local)) if local and os.path.isdir(local) else None


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
