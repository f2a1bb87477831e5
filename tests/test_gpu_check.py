"""tools/gpu_check.py runs on a CPU too: prepare a carry folder, then the quick check, as a
subprocess (the way it runs on the device machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import build_tiny_model

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          env=env, timeout=900, check=False)


def test_prepare_then_quick_check_on_cpu(tmp_path, minilm_dir):
    model = Path(build_tiny_model(tmp_path / "tiny", minilm_dir, max_seq_length=128))
    carry = tmp_path / "carry"
    prepared = _run("--prepare", str(carry), "--model", str(model),
                    "--data", str(REPO / "python/synapseml_ext/data/sample_reviews.csv"))
    assert prepared.returncode == 0, prepared.stderr
    copy = carry / "tiny"
    assert (copy / "modules.json").exists() and (carry / "sample_reviews.csv").exists()
    # weights stored in fp16: about half the original file
    ratio = (copy / "model.safetensors").stat().st_size / (model / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55

    out = tmp_path / "out"
    result = _run("--device", "cpu", "--quick", "--model", str(copy),
                  "--data", str(carry / "sample_reviews.csv"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in report["rows"]}
    for model_name in ("tiny", "tiny-sized (random)"):
        for runtime in ("cpu", "onnx"):
            row = rows[(model_name, runtime, "fp32")]
            assert row["tokens_per_s"] > 0 and row["min_cos"] >= 0.999, row
        assert rows[(model_name, "sentence-transformers", "fp32")]["tokens_per_s"] > 0
        for runtime, extra in (("cuda", "gpu"), ("tensorrt", "tensorrt")):
            row = rows[(model_name, runtime, "fp16")]
            assert row["tokens_per_s"] is None
            assert "needs an NVIDIA GPU" in row["note"] and f"synapseml-ext[{extra}]" in row["note"]
    assert report["environment"]["matmul_fp32_tflops"] > 0
    assert "| model | runtime | precision |" in result.stdout  # the one table at the end
    assert (out / "gpu_check.md").read_text().count("| tiny") >= 10
