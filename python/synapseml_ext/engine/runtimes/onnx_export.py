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

Trust (:mod:`synapseml_ext.engine.cache_trust`): an entry is loaded in place only when no one
but this user can change it. With ``SYNAPSEML_EXT_CACHE_SECRET`` set, ``meta.json.sig`` holds
an HMAC of the entry's key and meta.json (whose sha256s cover the graphs); an entry without a
valid one is rebuilt, and graphs from a folder others can write are loaded from private
copies hashed while copying, so a graph swapped after its check is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synapseml_ext.engine import cache_roots, cache_trust, private_files
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
GRAPH_FILES = ("model.onnx", "model.ort.onnx")


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
    """The cached export of ``files``, built (once, under a lock) if missing, invalid or not
    trusted."""
    root = cache_root(cache_dir) / "onnx"
    key = export_key(files, prompt_length)
    final = root / key
    artifacts = load_artifacts(final)
    if artifacts is not None:
        return artifacts
    # The lock is on local disk, private to this user, keyed by this cache and entry.
    where = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    lock = cache_roots.lock_dir() / f"onnx-{where}-{key}.lock"
    with private_files.private_lock(lock, LOCK_TIMEOUT_S):
        artifacts, problem = _check(final)  # another worker may have finished meanwhile
        if artifacts is not None:
            return artifacts
        if problem:
            log.warning("ONNX cache entry %s %s: rebuilding it", final, problem)
        private_files.remove(final)
        private_files.make_private_dir(root)
        tmp = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            try:
                os.mkdir(tmp, 0o700)
            except OSError as e:
                raise private_files.not_writable(root, e) from e
            _export(files, probe, tmp, prompt_length)
            private_files.make_private(tmp)  # torch wrote the graphs with the umask's mode
            signature = cache_trust.sign("onnx", key, cache_trust.sha256_file(tmp / "meta.json"))
            if signature is not None:
                private_files.write_private(tmp / "meta.json.sig", signature.encode())
            try:
                os.replace(tmp, final)
            except OSError as e:  # another node's export landed first (no lock across nodes)
                if _check(final)[0] is None:
                    raise private_files.not_writable(root, e) from e
        finally:
            private_files.remove(tmp)
    artifacts, problem = _check(final)
    if artifacts is None:  # pragma: no cover - would mean the file system lost our files
        raise EngineError(f"ONNX export to {final} did not leave a valid cache entry "
                          f"({problem or 'missing'})")
    return artifacts


def load_artifacts(directory: Path) -> OnnxArtifacts | None:
    """The artifacts in ``directory`` if they may be trusted (see the module doc), its
    meta.json is readable and every file matches its recorded size and sha256; ``None``
    otherwise."""
    return _check(directory)[0]


def _check(directory: Path) -> tuple[OnnxArtifacts | None, str]:
    """The entry's artifacts, or ``None`` and why not ('' when there is no entry)."""
    if not os.path.lexists(directory):
        return None, ""
    signed = cache_trust.secret() is not None
    problem = cache_trust.why_untrusted(directory)
    if problem and not signed:
        return None, f"is not trusted ({problem})"
    corrupt = None, "is incomplete or corrupt"
    try:
        with cache_trust.open_trusted(directory / "meta.json") as f:
            raw_meta = f.read()
        signature = None
        if signed:
            try:
                with cache_trust.open_trusted(directory / "meta.json.sig") as f:
                    signature = f.read().decode("ascii").strip()
            except FileNotFoundError:
                pass
        if not cache_trust.signature_ok("onnx", directory.name,
                                        hashlib.sha256(raw_meta).hexdigest(), signature):
            return None, f"is not signed with {cache_trust.SECRET_ENV}"
        meta = json.loads(raw_meta.decode("utf-8"))
        graphs: dict[str, Path] = {}
        for name, expected in meta["files"].items():
            if name not in GRAPH_FILES:
                return corrupt
            path = directory / name
            why = problem or cache_trust.why_entry_untrusted(path)
            if why and not signed:
                return None, f"is not trusted ({why})"
            if why:  # others could swap the graph after its check: load a private copy
                copy = cache_roots.private_copy(path, expected["sha256"])
                if copy is None:
                    return corrupt
                graphs[name] = copy
                continue
            if path.stat().st_size != expected["size"] or cache_trust.sha256_file(path) != expected["sha256"]:
                return corrupt
            graphs[name] = path
        raw = graphs["model.onnx"]
    except cache_trust.UntrustedEntry as e:
        return None, f"is not trusted ({e})"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return corrupt
    return OnnxArtifacts(directory=directory, raw=raw, optimized=graphs.get("model.ort.onnx"),
                         meta=meta), ""


def _export(files: ModelFiles, probe: Sequence[TokenBatch], out: Path, prompt_length: int) -> None:
    """The export, checked against PyTorch, written into the existing folder ``out``."""
    import torch

    from synapseml_ext.engine.modules import build_sentence_module

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
        "files": {name: {"size": p.stat().st_size, "sha256": cache_trust.sha256_file(p)}
                  for name, p in written.items()},
    }
    private_files.write_private(out / "meta.json", json.dumps(meta, indent=2).encode("utf-8"))
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
