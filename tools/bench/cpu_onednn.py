"""bf16 on the CPU runtime with and without oneDNN-packed linear layers (GELU fused), one run.

    .venv/bin/python tools/bench/cpu_onednn.py [--threads 1] [--rounds 3]

Same model (all-MiniLM-L6-v2), same texts, same process: the runtime as shipped (linear layers
packed by ``engine/runtimes/cpu/onednn.py``) against the same runtime with that step turned
off (plain ``F.linear``), alternated ``--rounds`` times, best round kept. Rows: the 1000
fine-food reviews (~96 tokens) and seed-style pairs (~177 tokens). Prints the CPU flags, the
same-run bf16 matmul rate for the thread count, rows/s, the share of that matmul rate, and
the minimum cosine of each to fp32 sentence-transformers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    MINILM_FLOP_PER_TOKEN,
    cosines,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    save_results,
    seed_texts_from_csv,
)
from cpu_precision import pairs_of


def load(model: str, threads: int, cache_dir: str, packed: bool):
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.engine.runtimes.cpu import onednn

    original = onednn.pack_bf16_linears
    if not packed:
        onednn.pack_bf16_linears = lambda module: 0  # the runtime before this step
    try:
        encoder = SentenceEncoder(EncoderSpec(model=model, runtime="cpu", precision="bf16",
                                              num_threads=threads, cache_dir=cache_dir,
                                              min_cosine=0))
    finally:
        onednn.pack_bf16_linears = original
    encoder.encode(["warm-up"] * 8)
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.engine.encoder import ModelCache

    facts = cpu_facts()
    bf16 = matmul_gflops("bfloat16", threads=args.threads)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, {args.threads} thread(s): bf16 {bf16:.0f} GFLOP/s")
    torch.set_num_threads(args.threads)
    model = bundled_model_dir()
    reviews = seed_texts_from_csv(args.csv)
    datasets = {"reviews": reviews, "pairs": pairs_of(reviews, args.pairs)}
    reference = SentenceTransformer(model, device="cpu")

    variants = {}
    for label, packed in (("plain F.linear (before)", False), ("oneDNN packed + GELU fused", True)):
        ModelCache.clear()
        variants[label] = load(model, args.threads, args.cache_dir, packed)

    results: dict = {"cpu": facts, "matmul_bf16_gflops": bf16, "threads": args.threads}
    for name, texts in datasets.items():
        fp32 = reference.encode(texts, batch_size=32)
        tokens = next(iter(variants.values())).count_tokens(texts)
        best = dict.fromkeys(variants, float("inf"))
        outputs = {}
        for _ in range(args.rounds):  # alternate, so that drift in the machine hits both
            for label, encoder in variants.items():
                started = time.perf_counter()
                outputs[label] = np.asarray(encoder.encode(texts), dtype=np.float32)
                best[label] = min(best[label], time.perf_counter() - started)
        rows = []
        base = next(iter(best.values()))
        for label, seconds in best.items():
            cos = cosines(outputs[label], fp32)
            share = tokens / seconds * MINILM_FLOP_PER_TOKEN / (bf16 * 1e9)
            rows.append([label, round(len(texts) / seconds, 1), f"{base / seconds:.2f}x",
                         f"{100 * share:.0f}%", f"{cos.min():.6f}", f"{cos.mean():.7f}"])
            results.setdefault(name, {})[label] = {
                "rows_per_s": len(texts) / seconds, "matmul_share": share,
                "min_cos_fp32": float(cos.min()), "mean_cos_fp32": float(cos.mean())}
        table = markdown_table(["bf16 path", "rows/s", "vs before", "share of bf16 matmul",
                                "min cos to ST fp32", "mean cos"], rows)
        print(f"\n{name}: {len(texts)} rows, {tokens / len(texts):.0f} tokens per row\n\n{table}")
        results[name]["table"] = table
    save_results("cpu_onednn", "\n\n".join(results[n]["table"] for n in datasets), results)


if __name__ == "__main__":
    main()
