"""The CPU runtimes on calls of mixed lengths, with and without the padding cut, one run.

    .venv/bin/python tools/bench/mixed_batches.py [--call-rows 35] [--rounds 3]

A server's merged requests (or a small partition) reach the engine as one call of reviews in
random order: padded to the longest, they compute ~2.6x their real tokens. The CPU runtimes
cut such a call where rows get ``max_pad_waste`` shorter than the batch's longest, once it
holds ``min_batch_tokens`` (engine/runtimes/cpu/backend.py, onnx/backend.py). Per runtime and
precision, in one process: the 1000 fine-food reviews as calls of ``--call-rows`` random
reviews, and as one call (sorted, the Spark case), each with the cut as shipped and turned
off, alternated ``--rounds`` times, best kept. Prints CPU flags, same-run matmul rates,
rows/s, padded tokens per real token and the minimum cosine of the two outputs.
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
    cosines,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    save_results,
    seed_texts_from_csv,
)


def encode_calls(encoder, calls: list[list[str]], cut: bool) -> tuple[float, float, np.ndarray]:
    """(seconds, padded tokens per real token, vectors) for ``calls``, cut on or off."""
    backend = type(encoder.model.backend)
    shipped = backend.max_pad_waste, backend.min_batch_tokens
    if not cut:
        backend.max_pad_waste, backend.min_batch_tokens = 0.0, 0  # as before the cut
    try:
        before = (encoder.stats.padded_tokens, encoder.stats.tokens)
        started = time.perf_counter()
        out = np.concatenate([encoder.encode(call) for call in calls])
        seconds = time.perf_counter() - started
    finally:
        backend.max_pad_waste, backend.min_batch_tokens = shipped
    padded = encoder.stats.padded_tokens - before[0]
    real = encoder.stats.tokens - before[1]
    return seconds, padded / real, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--call-rows", type=int, default=35,
                        help="rows per call (35: what 64 single-text clients merged into)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    args = parser.parse_args()

    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.engine.hardware import choose_cpu_precision, cpu_flags

    facts = cpu_facts()
    fp32, bf16 = matmul_gflops("float32", threads=2), matmul_gflops("bfloat16", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    reviews = seed_texts_from_csv(args.csv)
    order = np.random.default_rng(0).permutation(len(reviews))
    mixed = [[reviews[i] for i in order[s:s + args.call_rows]]
             for s in range(0, len(reviews), args.call_rows)]
    shapes = {f"calls of {args.call_rows} random reviews": (mixed, order),
              "one call of 1000 (sorted inside)": ([reviews], np.arange(len(reviews)))}
    variants = [("cpu", "fp32"), ("onnx", "fp32")]
    if choose_cpu_precision(cpu_flags())[0] == "bf16":
        variants.insert(1, ("cpu", "bf16"))

    header = ["runtime", "calls", "cut", "rows/s", "padded / real tokens", "speed-up",
              "min cos cut vs not"]
    rows, data = [], {"cpu": facts, "matmul_gflops": {"fp32": fp32, "bf16": bf16}, "rows": []}
    for runtime, precision in variants:
        encoder = SentenceEncoder(EncoderSpec(model=bundled_model_dir(), runtime=runtime,
                                              precision=precision, cache_dir=args.cache_dir))
        encoder.encode(reviews[:64])  # warm
        for shape, (calls, rows_order) in shapes.items():
            best = {True: float("inf"), False: float("inf")}
            pad, out = {}, {}
            for _ in range(args.rounds):
                for cut in (False, True):
                    seconds, pad[cut], out[cut] = encode_calls(encoder, calls, cut)
                    best[cut] = min(best[cut], seconds)
            cos = float(cosines(out[True], out[False]).min())
            for cut in (False, True):
                rate = len(rows_order) / best[cut]
                speedup = best[False] / best[cut]
                rows.append([f"{runtime}/{precision}", shape, "on" if cut else "off",
                             round(rate, 1), f"{pad[cut]:.2f}",
                             f"{speedup:.2f}x" if cut else "", f"{cos:.6f}" if cut else ""])
                data["rows"].append({"runtime": runtime, "precision": precision, "calls": shape,
                                     "cut": cut, "rows_per_s": rate, "padded_per_real": pad[cut],
                                     "min_cos": cos})
            print(markdown_table(header, rows[-2:]).split("\n", 2)[2], flush=True)
    table = markdown_table(header, rows)
    text = (f"CPU: {facts['cpu']} ({facts['cores']} cores), {facts['flags']}; same-run torch "
            f"matmul (2 threads) fp32 {fp32:.0f}, bf16 {bf16:.0f} GFLOP/s\n\n{table}\n")
    print("\n" + text)
    save_results("mixed_batches", text, data)


if __name__ == "__main__":
    main()
