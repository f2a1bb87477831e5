"""Precision choice and the quality guard for reduced precision.

``precision="auto"`` picks bf16 on CPUs that multiply bf16 in hardware. Whatever picks bf16,
the first load of a model in a worker encodes the shipped probe texts in fp32 and in bf16;
below ``minCosine`` the encoder stays in fp32. The verdict is kept on disk per model,
precision and CPU kind, so other workers and later jobs do not repeat the probe. A verdict
file is used only when this user alone can write it, or, with ``SYNAPSEML_EXT_CACHE_SECRET``
set, when it is signed (:mod:`synapseml_ext.engine.cache_trust`): a forged verdict could
otherwise pass a precision that fails the quality guard.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synapseml_ext.engine import cache_trust, private_files
from synapseml_ext.engine.errors import EngineError
from synapseml_ext.engine.hardware import choose_cpu_precision, cpu_flags, cpu_signature

log = logging.getLogger("synapseml_ext.engine")


def resolve_cpu_precision(requested: str, flags=None) -> tuple[str, str]:
    """``(precision, reason)`` for a CPU runtime; fp16 has no fast CPU path."""
    if requested == "auto":
        return choose_cpu_precision(cpu_flags() if flags is None else flags)
    if requested == "fp16":
        raise ValueError(
            "precision='fp16' needs a GPU (runtime='cuda' or 'tensorrt'); on CPU use "
            "'bf16', 'fp32' or 'auto'"
        )
    return requested, "requested"


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    num = (ref * cand).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    return float((num / np.maximum(den, 1e-30)).min())


@dataclass(frozen=True)
class Verdict:
    min_cosine: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold


class ProbeVerdicts:
    """Probe results of one model on this kind of CPU, stored under ``cache_dir/precision``.

    A stored minimum cosine is reused for any threshold: the verdict is re-derived from it.
    """

    def __init__(self, cache_dir: Path, model_fingerprint: str, device_signature: str = "",
                 threshold: float = 0.999) -> None:
        self.threshold = threshold
        key = _safe_name(f"{model_fingerprint}-{device_signature or cpu_signature()}")
        self.path = cache_dir / "precision" / f"{key}.json"

    def _read(self) -> dict:
        try:
            with cache_trust.open_trusted(self.path) as f:
                data = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except cache_trust.UntrustedEntry as e:
            log.warning("precision verdicts %s are not trusted (%s): probing again", self.path, e)
            return {}
        except (OSError, ValueError):
            return {}
        verdicts = data.get("verdicts") if isinstance(data, dict) else None
        if not isinstance(verdicts, dict):
            return {}
        if not cache_trust.signature_ok("precision", self.path.stem, _digest(verdicts),
                                        data.get("signature")):
            log.warning("precision verdicts %s are not signed with %s: probing again",
                        self.path, cache_trust.SECRET_ENV)
            return {}
        return verdicts

    def get(self, precision: str) -> Verdict | None:
        value = self._read().get(precision)
        if not isinstance(value, (int, float)):
            return None
        return Verdict(float(value), self.threshold)

    def put(self, precision: str, value: float) -> Verdict:
        data = self._read()
        data[precision] = value
        stored: dict = {"verdicts": data}
        signature = cache_trust.sign("precision", self.path.stem, _digest(data))
        if signature is not None:
            stored["signature"] = signature
        try:
            private_files.make_private_dir(self.path.parent)
            private_files.write_private(self.path, json.dumps(stored).encode("utf-8"))
        except (OSError, EngineError) as e:  # a read-only cache only costs a repeated probe
            log.warning("could not store the precision verdict in %s: %s", self.path, e)
        return Verdict(value, self.threshold)


def _digest(verdicts: dict) -> str:
    """Of the verdicts as stored (floats survive JSON exactly, so a reader gets the same)."""
    blob = json.dumps(verdicts, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _safe_name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]
