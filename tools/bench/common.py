"""Shared pieces of the benchmarks: machine facts, matmul ceilings, data, tables."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REVIEWS = REPO.parent / "shared" / "data" / "fine_food_reviews_1k.csv"
# all-MiniLM-L6-v2: 6 layers, hidden 384, FFN 1536: ~2 x 22M weights touched per token,
# plus attention over the row (~2 x 2 x L x 384 per layer), at ~100-tokens rows ~22.4 MFLOP.
MINILM_FLOP_PER_TOKEN = 22.4e6


def cpu_facts() -> dict:
    from synapseml_ext.engine.hardware import cpu_flags, cpu_model_name

    flags = cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("avx", "amx")) or "bf16" in f or f == "fma")
    return {"cpu": cpu_model_name(), "cores": os.cpu_count(), "flags": " ".join(shown),
            "python": platform.python_version()}


def matmul_gflops(dtype: str = "float32", n: int = 2048, threads: int | None = None,
                  seconds: float = 1.5) -> float:
    """Same-run matmul rate of torch on this machine (the ceiling the encoder works under)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(2):
        a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - started) / 1e9


def seed_texts_from_csv(path: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_csv(path)
    return ("Title: " + frame["Summary"].astype(str).str.strip() + "; Content: "
            + frame["Text"].astype(str).str.strip()).tolist()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, text: str, data: dict) -> None:
    """``results/NAME.md`` (the table the docs quote) and ``results/NAME.json`` (every figure)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2))
