"""The synapseml-ext command: quickstart and embed (csv, jsonl, parquet)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from synapseml_ext.engine import EncoderSpec, SentenceEncoder

from conftest import REPO
from helpers import cosines


def _run(args: list[str], cache_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), SYNAPSEML_EXT_CACHE=cache_dir)
    env.pop("SYNAPSEML_EXT_EVENT_LOG", None)
    return subprocess.run([sys.executable, "-m", "synapseml_ext.cli", *args], env=env,
                          capture_output=True, text=True, timeout=900)


def test_quickstart_prints_the_nearest_reviews(cache_dir):
    done = _run(["quickstart", "--runtime", "onnx"], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Nearest sample reviews" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("desserts", "disgusting"))]
    assert len(lines) == 6
    # Sanity of the search itself: a dessert review first for "desserts", a spoiled one
    # for "disgusting".
    first = {line.split()[0]: line for line in lines if line.split()[1] == "1"}
    assert any(w in first["desserts"].lower() for w in ("pie", "cake", "ice cream", "dessert",
                                                         "tart", "brownie", "cookie"))
    assert any(w in first["disgusting"].lower() for w in ("rotten", "disgusting", "mold",
                                                           "rancid", "gross", "vile"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_embed_writes_parquet_in_order(tmp_path, fmt, minilm_dir, cache_dir):
    texts = ["Crème brûlée, the best dessert", None, "stale, rancid crackers", "ok",
             'quoted "text", with commas'] * 3
    frame = pd.DataFrame({"id": range(len(texts)), "review": texts})
    source = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        frame.to_csv(source, index=False)
    elif fmt == "jsonl":
        frame.to_json(source, orient="records", lines=True)
    else:
        frame.to_parquet(source)
    out_dir = tmp_path / "out"
    done = _run(["embed", "--input", str(source), "--text-col", "review", "--output",
                 str(out_dir), "--model", minilm_dir, "--runtime", "onnx"], cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    closing = done.stdout.strip().splitlines()[-1]
    assert closing.startswith(f"embedded {len(texts)} rows (3 null)")
    assert "rows/s" in closing and "tokens/s" in closing and "runtime=onnx" in closing
    assert "precision=fp32" in closing
    result = pd.read_parquet(out_dir)
    assert [int(i) for i in result["id"]] == list(range(len(texts)))
    assert result["embeddings"].isna().sum() == 3
    present = result.dropna(subset=["embeddings"])
    expected = SentenceEncoder(EncoderSpec(model=minilm_dir, runtime="onnx",
                                           cache_dir=cache_dir)).encode(present["review"].tolist())
    assert cosines(np.stack(present["embeddings"].to_numpy()), expected).min() >= 0.9999


def test_embed_reports_a_missing_column(tmp_path, minilm_dir, cache_dir):
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a"]}).to_csv(source, index=False)
    done = _run(["embed", "--input", str(source), "--text-col", "body", "--output",
                 str(tmp_path / "o"), "--model", minilm_dir], cache_dir)
    assert done.returncode != 0
    assert "inputCol 'body' not found; available columns: text" in done.stderr
