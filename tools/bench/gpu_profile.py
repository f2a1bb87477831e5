"""Where the ``cuda`` runtime's time goes, on a GPU machine (Spark-free, like gpu_check).

Splits one ``encode`` of the timed review texts into tokenization, padding and model calls,
groups the CUDA kernel time by kind (matmul, attention, the rest) with ``torch.profiler``,
and times the variants worth keeping or dropping (fixed batch budgets, ``torch.compile``).

    python3 tools/bench/gpu_profile.py --model .device/gpu_check/all-MiniLM-L6-v2 \\
        --data .device/gpu_check/fine_food_reviews_1k.csv --large e5-large
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "tools"))

import gpu_check  # noqa: E402


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    if any(s in lowered for s in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul")):
        return "matmul"
    if any(s in lowered for s in ("fmha", "attention", "flash", "mem_eff", "softmax")):
        return "attention"
    if "layer_norm" in lowered or "layernorm" in lowered:
        return "layer_norm"
    if "gelu" in lowered:
        return "gelu"
    if "copy" in lowered or "memcpy" in lowered or "cat" in lowered:
        return "copy"
    return "elementwise/other"


def breakdown(encoder, texts: list[str]) -> dict[str, float]:
    """Wall seconds of tokenization, padding and model calls for one ``encode(texts)``."""
    model = encoder.model
    backend = model.backend
    started = time.perf_counter()
    tokens = model.tokenize(texts)
    tokenized = time.perf_counter()
    batches = list(encoder.batches(tokens))
    padded = time.perf_counter()
    for batch in batches:
        backend.run(batch.input_ids, batch.attention_mask)
    ran = time.perf_counter()
    return {"tokenize_s": tokenized - started, "pad_s": padded - tokenized,
            "model_s": ran - padded, "batches": len(batches),
            "real_tokens": int(tokens.lengths.sum()),
            "padded_tokens": int(sum(b.input_ids.size for b in batches))}


def kernel_table(encoder, texts: list[str]) -> list[tuple[str, float]]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        encoder.encode(texts)
        torch.cuda.synchronize()
    by_kind: dict[str, float] = defaultdict(float)
    top: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if not cuda_us or event.key.startswith("ProfilerStep"):
            continue
        if getattr(event, "device_type", None) is not None and "CUDA" not in str(event.device_type):
            continue
        by_kind[kernel_kind(event.key)] += cuda_us / 1e6
        top[event.key[:90]] += cuda_us / 1e6
    total = sum(by_kind.values())
    print(f"  CUDA kernel time {total:.3f}s by kind:")
    for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<18} {seconds:8.3f}s  {100 * seconds / total:5.1f}%")
    print("  top kernels:")
    for name, seconds in sorted(top.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {seconds:8.3f}s  {name}")
    return sorted(by_kind.items())


def rate(encoder, texts: list[str], repeats: int = 3) -> float:
    tokens = encoder.count_tokens(texts)
    return tokens / gpu_check.timed(lambda: encoder.encode(texts), repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--large", default="e5-large",
                        choices=(*sorted(gpu_check.LARGE_CONFIGS), "none"))
    parser.add_argument("--rows", type=int, default=2000)  # gpu_check's large-model count
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--variants", default="ablation,stream,profile",
                        help="comma-separated: ablation, stream, profile, budgets, compile")
    args = parser.parse_args(argv)

    import torch

    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    texts = gpu_check.review_texts(args.data)
    bench = (texts * (args.rows // len(texts) + 1))[:args.rows]  # as gpu_check times it
    work = Path(tempfile.mkdtemp())
    if args.large == "none":  # the given model itself, timed on gpu_check's 8000 texts
        large = args.model
        bench = (texts * (8000 // len(texts) + 1))[:8000]
    else:
        large = gpu_check.build_large_model(args.model, work / args.large, args.large)
    matmul, _ = gpu_check.matmul_tflops("cuda")
    print(f"{torch.cuda.get_device_name()}: bf16 matmul {matmul:.1f} TFLOP/s (8192^3)")

    encoder = SentenceEncoder(EncoderSpec(model=str(large), runtime="cuda",
                                          precision=args.precision, cache_dir=str(work / "c")))
    encoder.encode(bench)
    encoder.encode(bench)
    tokens = encoder.count_tokens(bench)
    per_token = gpu_check.flop_per_token(large, tokens / len(bench))

    def report(label: str, tok_s: float) -> None:
        share = 100 * tok_s * per_token / 1e12 / matmul
        print(f"  {label:<40} {tok_s:12,.0f} tokens/s  {share:5.1f}% of matmul")

    print(f"{large.name} {args.precision}: {len(bench)} texts, {tokens} tokens "
          f"(mean {tokens / len(bench):.1f}), {per_token / 1e6:.0f} MFLOP/token")
    report("as shipped (learnt budget)", rate(encoder, bench))
    print("  breakdown:", breakdown(encoder, bench))

    variants = args.variants.split(",")
    backend = encoder.model.backend
    if "ablation" in variants:
        # Each of the shipped measures switched off in turn (instance attributes shadow them).
        for label, overrides in (("without the padding-waste cut", {"max_pad_waste": 0.0}),
                                 ("waste cut 0.05 past 4096 tokens",
                                  {"max_pad_waste": 0.05, "min_batch_tokens": 4096}),
                                 ("waste cut 0.1 past 8192 tokens",
                                  {"max_pad_waste": 0.1, "min_batch_tokens": 8192}),
                                 ("without pipelining", {"run_pipelined": None}),
                                 ("without either (the first version)",
                                  {"max_pad_waste": 0.0, "run_pipelined": None})):
            for name, value in overrides.items():
                setattr(backend, name, value)
            encoder.encode(bench)
            report(label, rate(encoder, bench))
            for name in overrides:
                delattr(backend, name)
        report("as shipped, again", rate(encoder, bench))
    if "stream" in variants:
        # A Spark task's Arrow batches: four chunks one after the other, tokenized on the
        # calling thread (encode) or one chunk ahead on a background thread (encode_many).
        chunks = [bench] * 4
        streamed = 4 * tokens
        report("4 chunks, encode() each",
               streamed / gpu_check.timed(lambda: [encoder.encode(c) for c in chunks], 3))
        report("4 chunks, encode_many()",
               streamed / gpu_check.timed(lambda: list(encoder.encode_many(chunks)), 3))
    if "profile" in variants:  # last: the profiler slows what runs after it
        kernel_table(encoder, bench)
    if "budgets" in variants:
        for budget in (16384, 65536, 131072):
            fixed = SentenceEncoder(EncoderSpec(model=str(large), runtime="cuda",
                                                precision=args.precision,
                                                cache_dir=str(work / "c"),
                                                max_tokens_per_batch=budget), encoder.model)
            fixed.encode(bench)
            report(f"maxTokensPerBatch={budget}", rate(fixed, bench))
    if "compile" in variants:
        eager = backend.module
        for mode in ("default", "max-autotune-no-cudagraphs"):
            started = time.perf_counter()
            backend.module = torch.compile(eager, dynamic=True, mode=mode)
            try:
                encoder.encode(bench)
                encoder.encode(bench)
            except Exception as e:  # report and go on: this is a measurement
                print(f"  torch.compile mode={mode} failed: {type(e).__name__}: {e}"[:400])
                continue
            finally:
                warm = time.perf_counter() - started
            report(f"torch.compile {mode} (warm-up {warm:.0f}s)", rate(encoder, bench))
        backend.module = eager
    return 0


if __name__ == "__main__":
    sys.exit(main())
