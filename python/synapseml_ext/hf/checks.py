"""Driver-side checks of an embedder's model and runtime, before any task runs.

Each check fails with one line naming the fix. They are cheap (a few small files read, one
hub request with a short timeout) and each passing combination is checked once per process.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from synapseml_ext.engine.errors import (
    DamagedModelError,
    ModelLoadError,
    RuntimeUnavailableError,
    missing_package,
)

__all__ = ["check_model", "check_runtime", "driver_checks"]

HUB_TIMEOUT_S = 5.0

# runtime -> (package the runtime imports, extra that installs it)
_RUNTIME_PACKAGES = {
    "cpu": ("torch", "cpu"),
    "onnx": ("onnxruntime", "onnx"),
    "cuda": ("torch", "gpu"),
    "tensorrt": ("tensorrt", "tensorrt"),
}

_passed: set[tuple] = set()
_lock = threading.Lock()


def driver_checks(model: str, runtime: str, *, max_seq_length: int = 0,
                  local: bool = False, revision: str = "") -> None:
    """:func:`check_model` and, where driver and executors share this machine,
    :func:`check_runtime`; once per passing combination."""
    key = (model, runtime, max_seq_length, local, revision)
    with _lock:
        if key in _passed:
            return
    check_model(model, max_seq_length=max_seq_length, local=local, revision=revision)
    if local:
        check_runtime(runtime)
    with _lock:
        _passed.add(key)


def check_model(model: str, *, max_seq_length: int = 0, local: bool = True,
                revision: str = "") -> None:
    """A local directory must hold a sentence-transformers or transformers model; any other
    name is a hub id that must be in the local Hugging Face cache or known to the hub.

    A directory missing on a cluster's driver may still exist on its executors: there the
    check is left to them (``local=False``).
    """
    if not model:
        raise ModelLoadError("modelName is empty: pass a local model directory or a hub id "
                             "such as 'sentence-transformers/all-MiniLM-L6-v2'")
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        _check_model_dir(path, model, max_seq_length)
        return
    if path.exists():
        raise ModelLoadError(f"model {model!r} is a file, not a model directory: pass the "
                             "directory that holds config.json (or modules.json)")
    if _looks_like_path(model):
        if local:
            raise ModelLoadError(f"model directory {model!r} does not exist: pass a directory "
                                 "that holds a sentence-transformers model, or a hub id")
        return
    _check_hub_id(model, max_seq_length, revision)


def check_runtime(runtime: str) -> None:
    """An explicit runtime's package imports here (and, for the GPU runtimes, a GPU is
    visible). Only meaningful where the tasks run on this machine (local master)."""
    if runtime == "auto":
        return
    package, extra = _RUNTIME_PACKAGES[runtime]
    if importlib.util.find_spec(package) is None:
        raise missing_package(package, extra, f"runtime={runtime!r}", where="this machine")
    if runtime in ("cuda", "tensorrt"):
        from synapseml_ext.engine.hardware import cuda_unavailable_reason

        reason = cuda_unavailable_reason()
        if reason:
            raise RuntimeUnavailableError(
                f"runtime={runtime!r} needs an NVIDIA GPU and none is usable here: {reason}. "
                f"Use runtime='cpu', 'onnx' or 'auto' on this machine, or install the CUDA build "
                f"of torch on a GPU machine (pip install 'synapseml-ext[{extra}]')")


def _looks_like_path(model: str) -> bool:
    # A hub id is "name" or "org/name": anything else can only be meant as a path.
    return (os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
            or "\\" in model)


def _check_model_dir(path: Path, model: str, max_seq_length: int) -> None:
    from synapseml_ext.engine.model_files import read_model_files

    try:
        files = read_model_files(str(path), max_seq_length)
    except DamagedModelError:  # names the file and the fix already
        raise
    except ModelLoadError as e:
        raise ModelLoadError(
            f"{model!r} does not hold a usable model ({_reason(e)}): pass a directory with a "
            "sentence-transformers model (modules.json, config.json, weights)") from e
    weights = (".safetensors", ".bin", ".pt", ".pth")
    if not any(p.name.endswith(weights) for p in files.transformer_dir.iterdir()):
        raise ModelLoadError(
            f"{model!r} has no weights ({files.transformer_dir} holds no model.safetensors or "
            "pytorch_model.bin): pass a complete model directory")
    for weights_file in sorted(files.transformer_dir.glob("*.safetensors")):
        _check_safetensors(weights_file, model)


def _check_safetensors(path: Path, model: str) -> None:
    """The file's header parses and its tensors fit in the file (a cut-off download or copy);
    reads the header only."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - a dependency of transformers
        return
    try:
        with safe_open(str(path), framework="np"):
            pass
    except Exception as e:
        raise DamagedModelError(
            f"{model!r} has damaged weights ({path.name}: {str(e).splitlines()[0]}): the file "
            "is incomplete or altered; copy or download the model again") from e


def _reason(error: ModelLoadError) -> str:
    from synapseml_ext.engine.errors import user_message

    return (user_message(error) or str(error)).rstrip(".")


def _check_hub_id(model: str, max_seq_length: int, revision: str = "") -> None:
    try:
        from huggingface_hub import HfApi, constants, snapshot_download
        from huggingface_hub.errors import (
            GatedRepoError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return
    try:
        cached = snapshot_download(model, local_files_only=True, revision=revision or None)
    except Exception:  # not cached (or not a valid id): ask the hub below
        cached = None
    if cached:
        _check_model_dir(Path(cached), model, max_seq_length)
        return
    offline = (f"model {model!r} is not a local directory and not in the local Hugging Face "
               "cache, and the driver is offline ({why}): pass a local model directory "
               "(a sentence-transformers model saved with model.save(DIR))")
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(offline.format(why="HF_HUB_OFFLINE is set"))
    try:
        HfApi().model_info(model, revision=revision or None, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as e:
        raise ModelLoadError(
            f"model {model!r} is gated on the Hugging Face hub: accept its terms on "
            "huggingface.co and set HF_TOKEN, or pass a local model directory") from e
    except RevisionNotFoundError as e:
        raise ModelLoadError(
            f"model {model!r} has no revision {revision!r} on the Hugging Face hub: check the "
            "branch, tag or commit given as revision") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"model {model!r} is neither a local directory nor a Hugging Face hub model: check "
            "the name (org/name), set HF_TOKEN for a private model, or pass a local model "
            "directory") from e
    except Exception as e:
        if type(e).__name__ == "HFValidationError":
            raise ModelLoadError(
                f"model {model!r} is neither a local directory nor a valid hub id (org/name): "
                "pass an existing model directory or a hub id") from e
        why = f"the hub is unreachable: {type(e).__name__}"
        raise ModelLoadError(offline.format(why=why)) from e
