"""Embedding throughput on CPU: SynapseML's stage vs ours, in one run, on local[2].

    .venv/bin/pip install --no-deps synapseml==1.1.3     # the baseline (pure Python)
    .venv/bin/python tools/bench/embed_cpu.py [--csv ../shared/data/fine_food_reviews_1k.csv]

Contenders (all-MiniLM-L6-v2, the 1000 fine-food reviews as "Title: ...; Content: ..."):
  (a) the seed approach: SynapseML 1.1.3 HuggingFaceSentenceEmbedder(runtime="cpu"), i.e.
      predict_batch_udf + SentenceTransformer.encode, 64 rows per call
  (b) our stage, runtime=cpu (PyTorch fp32)
  (c) our stage, runtime=onnx (ONNX Runtime fp32)
  (d) our encoder in one process without Spark (onnx, all cores)
  (e) our stage, runtime=auto / precision=auto (what a user gets by default)
Each Spark contender runs twice on the same cached DataFrame (2 partitions); the table shows
the second (warm) run, the cold one beside it. Prints rows/s, tokens/s (real tokens after
truncation), ratios to (a), the share of the same-run matmul ceiling, and cosine to (a).
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--skip-synapseml", action="store_true")
    args = parser.parse_args()
    # Workers inherit this in local mode: per-task lines would bury the table.
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")

    from synapseml_ext._spark import bundled_model_dir, local_spark
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    facts = cpu_facts()
    fp32 = matmul_gflops("float32", threads=2)
    bf16 = matmul_gflops("bfloat16", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")

    model = bundled_model_dir()
    texts = seed_texts_from_csv(args.csv)
    probe_encoder = SentenceEncoder(EncoderSpec(model=model, runtime="onnx",
                                                cache_dir=args.cache_dir))
    tokens = probe_encoder.count_tokens(texts)
    print(f"{len(texts)} reviews, {tokens} real tokens ({tokens / len(texts):.1f} per row, "
          f"truncated at {probe_encoder.max_seq_length})")

    spark = local_spark("local[2]", "embed_cpu benchmark",
                        conf={"spark.ui.showConsoleProgress": "false"})
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, data string")
    df = df.repartition(2, "id").cache()
    df.count()

    def run_stage(make_out):
        timings, vectors = [], None
        for _ in range(2):
            started = time.perf_counter()
            rows = make_out().select("id", "embeddings").collect()
            timings.append(time.perf_counter() - started)
            order = np.argsort([r.id for r in rows])
            vectors = np.array([rows[i].embeddings for i in order], dtype=np.float32)
        return timings, vectors

    results: dict[str, tuple[list[float], np.ndarray, str]] = {}
    if not args.skip_synapseml:
        from synapse.ml.hf import HuggingFaceSentenceEmbedder as SynapseMLEmbedder

        seed = SynapseMLEmbedder(inputCol="data", outputCol="embeddings", runtime="cpu",
                                 modelName=model)
        results["(a) SynapseML 1.1.3, runtime=cpu"] = (*run_stage(lambda: seed.transform(df)),
                                                       "fp32")

    def ours(runtime: str, precision: str):
        stage = HuggingFaceSentenceEmbedder(modelName=model, inputCol="data",
                                            outputCol="embeddings", runtime=runtime,
                                            precision=precision, cacheDir=args.cache_dir)
        return run_stage(lambda: stage.transform(df))

    results["(b) ours, runtime=cpu fp32"] = (*ours("cpu", "fp32"), "fp32")
    results["(c) ours, runtime=onnx"] = (*ours("onnx", "auto"), "fp32")

    single = SentenceEncoder(EncoderSpec(model=model, runtime="onnx", cache_dir=args.cache_dir,
                                         num_threads=2))
    single.encode(texts[:50])
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        one_process = single.encode(texts)
        timings.append(time.perf_counter() - started)
    results["(d) our encoder, one process, onnx"] = (timings, one_process, "fp32")

    auto_stage = HuggingFaceSentenceEmbedder(modelName=model, inputCol="data",
                                             outputCol="embeddings", cacheDir=args.cache_dir)
    auto_timings, auto_vectors = run_stage(lambda: auto_stage.transform(df))
    auto_precision = SentenceEncoder(EncoderSpec(model=model, cache_dir=args.cache_dir)).precision
    results["(e) ours, runtime=auto precision=auto"] = (auto_timings, auto_vectors, auto_precision)
    spark.stop()

    reference_name = next(iter(results))
    reference = results[reference_name][1]
    base_rate = len(texts) / results[reference_name][0][1]
    rows = []
    for name, (timing, vectors, precision) in results.items():
        warm = timing[1]
        rate = len(texts) / warm
        ceiling = (bf16 if precision == "bf16" else fp32) * 1e9 / MINILM_FLOP_PER_TOKEN
        cos = cosines(vectors, reference)
        rows.append([name, round(rate, 1), round(tokens / warm), f"{rate / base_rate:.2f}x",
                     f"{100 * tokens / warm / ceiling:.0f}% ({precision})",
                     f"{timing[0]:.1f}s / {warm:.1f}s", f"{cos.min():.6f}", f"{cos.mean():.7f}"])
    header = ["contender", "rows/s", "tokens/s", f"vs {reference_name[:3]}",
              "share of matmul ceiling", "cold / warm", "min cos to (a)", "mean cos to (a)"]
    print()
    print(markdown_table(header, rows))
    names = list(results)
    rate = {n: len(texts) / results[n][0][1] for n in names}
    if not args.skip_synapseml:
        print(f"\nb/a = {rate[names[1]] / rate[names[0]]:.2f}, c/a = {rate[names[2]] / rate[names[0]]:.2f}, "
              f"e/a = {rate[names[4]] / rate[names[0]]:.2f}, c/d = {rate[names[2]] / rate[names[3]]:.2f}")


if __name__ == "__main__":
    main()
