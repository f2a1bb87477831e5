"""CPU precision, step by step, in one process (no Spark): what bf16 buys and what each
tuning step adds, against sentence-transformers' own encode in the same run.

    .venv/bin/python tools/bench/cpu_precision.py [--threads 1] [--csv ...]

Rows: the 1000 fine-food reviews (~96 tokens) and seed-style pairs (two reviews joined with
". \\n", ~176 tokens after truncation at 256). Prints the CPU flags, same-run fp32/bf16 matmul
rates, rows/s, tokens/s, the share of the matmul ceiling for the precision used, and the
minimum / mean cosine to fp32 sentence-transformers.
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
    seed_texts_from_csv,
)


def pairs_of(texts: list[str], n: int, seed: int = 42) -> list[str]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(texts), n), rng.integers(0, len(texts), n)
    return [texts[i] + ". \n" + texts[j] for i, j in zip(a, b, strict=True)]


def timed(fn, texts):
    fn(texts[:32])  # warm-up: first-call allocations, lazy inits
    started = time.perf_counter()
    out = fn(texts)
    return time.perf_counter() - started, np.asarray(out, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per encoder (1 = one Spark task's share on a 2-core box)")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    facts = cpu_facts()
    fp32 = matmul_gflops("float32", threads=args.threads)
    bf16 = matmul_gflops("bfloat16", threads=args.threads)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, {args.threads} thread(s): fp32 {fp32:.0f} GFLOP/s, "
          f"bf16 {bf16:.0f} GFLOP/s ({bf16 / fp32:.2f}x)")
    torch.set_num_threads(args.threads)
    model = bundled_model_dir()
    reviews = seed_texts_from_csv(args.csv)
    datasets = {"reviews": reviews, "pairs": pairs_of(reviews, args.pairs)}

    st32 = SentenceTransformer(model, device="cpu")
    st16 = SentenceTransformer(model, device="cpu").to(torch.bfloat16)

    def ours(**kw):
        enc = SentenceEncoder(EncoderSpec(model=model, num_threads=args.threads,
                                          cache_dir=args.cache_dir, **kw))
        return enc.encode, enc

    contenders = {
        "sentence-transformers fp32, batch 32": ("fp32", lambda t: st32.encode(t, batch_size=32)),
        "sentence-transformers bf16, batch 32": ("bf16", lambda t: st16.encode(t, batch_size=32)),
        "ours onnx fp32 (default budget)": ("fp32", ours(runtime="onnx")[0]),
        "ours cpu fp32 (default budget)": ("fp32", ours(runtime="cpu", precision="fp32")[0]),
    }
    for budget in (512, 1024, 2048, 4096):
        contenders[f"ours cpu bf16, {budget}-token batches"] = (
            "bf16", ours(runtime="cpu", precision="bf16", max_tokens_per_batch=budget)[0])
    contenders["ours auto (default)"] = ("auto", ours()[0])
    auto_precision = ours()[1].precision

    for name, texts in datasets.items():
        reference = None
        rows = []
        tokens = SentenceEncoder(EncoderSpec(model=model, runtime="onnx",
                                             cache_dir=args.cache_dir)).count_tokens(texts)
        for label, (precision, fn) in contenders.items():
            seconds, out = timed(fn, texts)
            if reference is None:
                reference = out
            precision = auto_precision if precision == "auto" else precision
            ceiling = (bf16 if precision == "bf16" else fp32) * 1e9 / MINILM_FLOP_PER_TOKEN
            cos = cosines(out, reference)
            rows.append([label, round(len(texts) / seconds, 1), round(tokens / seconds),
                         f"{100 * tokens / seconds / ceiling:.0f}% ({precision})",
                         f"{cos.min():.6f}", f"{cos.mean():.7f}"])
        print(f"\n{name}: {len(texts)} rows, {tokens / len(texts):.0f} tokens per row\n")
        print(markdown_table(["path", "rows/s", "tokens/s", "share of matmul ceiling",
                              "min cos to ST fp32", "mean cos"], rows))


if __name__ == "__main__":
    main()
