"""Errors the engine raises, each naming what is wrong and how to fix it.

Every message is one line that starts with :data:`ERROR_PREFIX`, so that an error raised on
an executor can be found again inside the Java and Python traces Spark wraps it in
(:func:`user_message`).
"""

from __future__ import annotations

import re

# The marker of a message meant for the user (shared with the k-NN data errors).
ERROR_PREFIX = "synapseml-ext:"

_PREFIXED = re.compile(re.escape(ERROR_PREFIX) + r" ?([^\n]*\S)")


def one_line(message: str) -> str:
    """``message`` with its line breaks folded into spaces and :data:`ERROR_PREFIX` in front
    (once)."""
    text = re.sub(r"\s*\n\s*", " ", str(message)).strip()
    if text.startswith(ERROR_PREFIX):
        return text
    return f"{ERROR_PREFIX} {text}"


class EngineError(RuntimeError):
    """Base class for synapseml-ext engine errors: a one-line message naming the fix."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(one_line(message), *args)


class ModelLoadError(EngineError):
    """The model cannot be found or is not a supported sentence-transformers model."""


class DamagedModelError(ModelLoadError):
    """A file of the model is damaged (cut off, not what its name says): the message names it."""


class RuntimeUnavailableError(EngineError):
    """An explicitly requested runtime cannot run here (no GPU, missing package, ...)."""


class UserInputError(EngineError, ValueError):
    """A file, directory or option given by the user cannot be used (checked on the driver)."""


def missing_package(package: str, extra: str, purpose: str,
                    where: str = "this worker") -> RuntimeUnavailableError:
    """The one error style for optional imports: what is missing and which extra installs it."""
    return RuntimeUnavailableError(
        f"{purpose} needs the Python package {package!r}, which is not installed on {where}; "
        f"install it with: pip install 'synapseml-ext[{extra}]'"
    )


def user_message(error: BaseException | str) -> str | None:
    """Our one-line message inside ``error`` (a Py4JJavaError, PythonException,
    SparkException or our own error, or its text), without the prefix; ``None`` when the
    error is not one of ours.

    Spark repeats a worker's traceback (task failure, driver stack trace, cause); the last
    prefixed line is the outermost error of ours in the last copy.
    """
    if isinstance(error, EngineError):
        return _strip(str(error))
    found = _PREFIXED.findall(error if isinstance(error, str) else full_text(error))
    return found[-1].strip() if found else None


def _strip(message: str) -> str:
    return message[len(ERROR_PREFIX):].strip() if message.startswith(ERROR_PREFIX) else message


def full_text(error: BaseException) -> str:
    """The text of ``error`` and of its causes (Py4J keeps the Java trace in ``str``)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            parts.append(str(current))
        except Exception:  # a broken __str__ must not hide the original error
            parts.append(repr(current))
        current = current.__cause__ or current.__context__
    return "\n".join(reversed(parts))
