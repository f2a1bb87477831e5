"""Export a sentence model to ONNX once, keep it on disk, rebuild what is stale or corrupt.

One export path serves both graph runtimes: ``model.onnx`` holds standard ONNX ops only
(the TensorRT runtime builds its engines from it); ``model.ort.onnx`` is the same graph with
ONNX Runtime's transformer fusions (attention, layer norm, GELU), used by the onnx runtime
when it matches the PyTorch model on the probe texts.

Layout: ``<cache>/onnx/<key>/{model.onnx, model.ort.onnx, meta.json}``. ``key`` hashes the
model's content and everything the export depends on; ``meta.json`` records each file's
size and sha256, checked on every load. Writers build in a temporary directory and rename it
into place, under a file lock, so concurrent workers export once and readers never see a
half-written graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synapseml_ext.engine.batching import TokenBatch
from synapseml_ext.engine.errors import EngineError
from synapseml_ext.engine.model_files import ModelFiles
from synapseml_ext.engine.paths import cache_root
from synapseml_ext.engine.precision import min_cosine

log = logging.getLogger("synapseml_ext.engine")

# Bump when the export recipe changes: old cache entries then stop matching.
EXPORT_VERSION = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
# An export must reproduce PyTorch fp32 this closely on the probe texts.
EXPORT_MIN_COSINE = 0.9999
LOCK_TIMEOUT_S = 1800


@dataclass(frozen=True)
class OnnxArtifacts:
    directory: Path
    raw: Path
    optimized: Path | None
    meta: dict

    @property
    def for_onnxruntime(self) -> Path:
        return self.optimized or self.raw


def export_key(files: ModelFiles, prompt_length: int) -> str:
    import torch

    parts = {
        "model": files.fingerprint(),
        "pooling": list(files.pooling_modes),
        "prompt_length": 0 if files.include_prompt else prompt_length,
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "torch": ".".join(torch.__version__.split(".")[:2]),
    }
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def ensure_onnx(
    files: ModelFiles,
    probe: Sequence[TokenBatch],
    *,
    cache_dir: str = "",
    prompt_length: int = 0,
) -> OnnxArtifacts:
    """The cached export of ``files``, built (once, under a lock) if missing or invalid."""
    from filelock import FileLock

    root = cache_root(cache_dir) / "onnx"
    root.mkdir(parents=True, exist_ok=True)
    key = export_key(files, prompt_length)
    final = root / key
    artifacts = load_artifacts(final)
    if artifacts is not None:
        return artifacts
    with FileLock(str(root / f"{key}.lock"), timeout=LOCK_TIMEOUT_S):
        artifacts = load_artifacts(final)  # another worker may have finished meanwhile
        if artifacts is not None:
            return artifacts
        if final.exists():
            log.warning("ONNX cache entry %s is incomplete or corrupt: rebuilding it", final)
            shutil.rmtree(final, ignore_errors=True)
        tmp = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            _export(files, probe, tmp, prompt_length)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    artifacts = load_artifacts(final)
    if artifacts is None:  # pragma: no cover - would mean the file system lost our files
        raise EngineError(f"ONNX export to {final} did not leave a valid cache entry")
    return artifacts


def load_artifacts(directory: Path) -> OnnxArtifacts | None:
    """The artifacts in ``directory`` if its meta.json is readable and every file matches
    its recorded size and sha256; ``None`` otherwise."""
    try:
        meta = json.loads((directory / "meta.json").read_text("utf-8"))
        for name, expected in meta["files"].items():
            path = directory / name
            if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    optimized = directory / "model.ort.onnx"
    return OnnxArtifacts(
        directory=directory,
        raw=directory / "model.onnx",
        optimized=optimized if "model.ort.onnx" in meta["files"] else None,
        meta=meta,
    )


def _export(files: ModelFiles, probe: Sequence[TokenBatch], out: Path, prompt_length: int) -> None:
    import torch

    from synapseml_ext.engine.modules import build_sentence_module

    out.mkdir(parents=True)
    started = time.perf_counter()
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's optimizer fuses
    # into its Attention kernel and TensorRT into its own MHA; SDPA's export does not fuse.
    module = build_sentence_module(files, attn_implementation="eager", prompt_length=prompt_length)
    with torch.inference_mode():
        reference = np.concatenate(
            [module(torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)).numpy()
             for b in probe]
        )
    # A sample with several rows, so no axis is traced as a constant 1.
    sample = max(probe, key=lambda b: b.input_ids.shape[0])
    raw = out / "model.onnx"
    _torch_export(module, sample, raw)
    del module

    raw_cos = min_cosine(reference, _run_onnx(raw, probe))
    if raw_cos < EXPORT_MIN_COSINE:
        raise EngineError(
            f"ONNX export of {files.root} does not reproduce PyTorch (minimum cosine {raw_cos:.6f}"
            f" on the probe texts); use runtime='cpu' for this model"
        )
    written = {"model.onnx": raw}
    optimized = out / "model.ort.onnx"
    opt_cos = None
    if _optimize_for_onnxruntime(raw, optimized, files):
        opt_cos = min_cosine(reference, _run_onnx(optimized, probe))
        if opt_cos >= EXPORT_MIN_COSINE:
            written["model.ort.onnx"] = optimized
        else:
            log.warning("ONNX Runtime fusions changed %s (minimum cosine %.6f): using the plain "
                        "graph", files.root, opt_cos)
            optimized.unlink()
    meta = {
        "model_dir": str(files.root),
        "model_fingerprint": files.fingerprint(),
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "torch": torch.__version__,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "probe_min_cosine": {"model.onnx": raw_cos, "model.ort.onnx": opt_cos},
        "seconds": round(time.perf_counter() - started, 2),
        "files": {name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                  for name, p in written.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2), "utf-8")
    log.info("exported %s to ONNX in %.1fs (%s)", files.root, meta["seconds"],
             "fused for ONNX Runtime" if "model.ort.onnx" in written else "no fusions")


def _torch_export(module, sample: TokenBatch, path: Path) -> None:
    import torch

    args = (torch.from_numpy(sample.input_ids), torch.from_numpy(sample.attention_mask))
    with warnings.catch_warnings():
        # Tracer chatter about shape checks that are constant for right-padded inputs; the
        # probe comparison after export is what proves the graph right.
        warnings.simplefilter("ignore")
        _export_graph(module, args, path)


def _export_graph(module, args, path: Path) -> None:
    import torch

    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    try:
        # The TorchScript exporter gives graphs ONNX Runtime's transformer optimizer knows.
        torch.onnx.export(
            module, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
        return
    except Exception as e:  # removed or failing in this torch: use the dynamo exporter
        log.info("TorchScript ONNX export failed (%s); using torch.export", e)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    seq = torch.export.Dim("sequence", min=1, max=1 << 16)
    torch.onnx.export(
        module, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), opset_version=max(OPSET, 18),
        dynamo=True, external_data=False,
    )


def _optimize_for_onnxruntime(raw: Path, out: Path, files: ModelFiles) -> bool:
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        return False
    try:
        model = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=files.num_attention_heads,
            hidden_size=files.hidden_size,
            opt_level=1,
        )
        model.save_model_to_file(str(out))
        return True
    except Exception as e:  # an architecture the optimizer does not know: keep the plain graph
        log.info("ONNX Runtime transformer optimizer skipped for %s: %s", files.root, e)
        return False


def _run_onnx(path: Path, probe: Sequence[TokenBatch]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run(None, {"input_ids": b.input_ids, "attention_mask": b.attention_mask})[0]
         for b in probe]
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
