"""Precision choice and the quality guard for reduced precision.

``precision="auto"`` picks bf16 on CPUs that multiply bf16 in hardware. Whatever picks bf16,
the first load of a model in a worker encodes the shipped probe texts in fp32 and in bf16;
below ``minCosine`` the encoder stays in fp32. The verdict is kept on disk per model,
precision and CPU kind, so other workers and later jobs do not repeat the probe.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
            return json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}

    def get(self, precision: str) -> Verdict | None:
        value = self._read().get(precision)
        if not isinstance(value, (int, float)):
            return None
        return Verdict(float(value), self.threshold)

    def put(self, precision: str, value: float) -> Verdict:
        data = self._read()
        data[precision] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError as e:  # a read-only cache only costs a repeated probe
            log.warning("could not store the precision verdict in %s: %s", self.path, e)
        return Verdict(value, self.threshold)


def _safe_name(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:24]
