"""Data sets for the ANN benchmark, built once and cached outside the repository.

(1) ``minilm``: real all-MiniLM-L6-v2 embeddings of short texts built from the 1000 fine-food
    reviews: "<summary of review i>. <one sentence of review j>" for random pairs (i, j),
    deduplicated, embedded once with our own encoder (runtime auto) and cached as float32.
    The last ``queries`` rows are held-out queries (texts not among the items).
(2) ``latent``: synthetic vectors clustered in a low-dimensional latent space, lifted to
    ``dim`` dimensions (see :func:`latent_set` for how its difficulty was chosen).

    .venv/bin/python tools/bench/ann_data.py minilm --n 210000     # 30+ min on 2 busy cores
    .venv/bin/python tools/bench/ann_data.py latent --n 1010000
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_REVIEWS

CACHE = Path(os.environ.get("SYNAPSEML_EXT_BENCH_CACHE",
                            Path.home() / ".cache" / "synapseml-ext-bench"))

_SENTENCE = re.compile(r"(?<=[.!?])\s+|<br\s*/?>")


def review_sentences(csv: Path = DEFAULT_REVIEWS) -> tuple[list[str], list[str]]:
    """(summaries, sentences) of the reviews: sentences of 3 to 40 words, deduplicated."""
    import pandas as pd

    frame = pd.read_csv(csv)
    summaries = sorted({s.strip() for s in frame["Summary"].astype(str) if s.strip()})
    sentences: set[str] = set()
    for text in frame["Text"].astype(str):
        for part in _SENTENCE.split(text):
            part = part.strip()
            if 3 <= len(part.split()) <= 40:
                sentences.add(part)
    return summaries, sorted(sentences)


def pair_texts(n: int, seed: int = 7, csv: Path = DEFAULT_REVIEWS) -> list[str]:
    """``n`` distinct "<summary>. <sentence>" texts, in a seeded random order."""
    summaries, sentences = review_sentences(csv)
    if n > len(summaries) * len(sentences):
        raise ValueError(f"only {len(summaries) * len(sentences)} distinct pairs exist")
    rng = np.random.default_rng(seed)
    chosen: set[tuple[int, int]] = set()
    order: list[tuple[int, int]] = []
    while len(order) < n:
        a = rng.integers(0, len(summaries), n)
        b = rng.integers(0, len(sentences), n)
        for pair in zip(a.tolist(), b.tolist(), strict=True):
            if pair not in chosen:
                chosen.add(pair)
                order.append(pair)
                if len(order) == n:
                    break
    return [f"{summaries[i].rstrip('.!? ')}. {sentences[j]}" for i, j in order]


def minilm_set(n: int, queries: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(items, queries) of real MiniLM embeddings; embeds and caches on first use."""
    path = CACHE / f"minilm_pairs_{n}.npy"
    if not path.exists():
        _embed_pairs(n, path)
    vectors = np.load(path, mmap_mode="r")
    return np.ascontiguousarray(vectors[: n - queries]), np.ascontiguousarray(vectors[n - queries:])


def _embed_pairs(n: int, path: Path) -> None:
    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    texts = pair_texts(n)
    encoder = SentenceEncoder(EncoderSpec(model=bundled_model_dir(), runtime="auto",
                                          num_threads=os.cpu_count() or 1))
    print(f"embedding {n} texts (runtime={encoder.runtime}, precision={encoder.precision})",
          flush=True)
    out = np.empty((n, encoder.dimension), dtype=np.float32)
    started, step = time.perf_counter(), 10_000
    for lo in range(0, n, step):
        out[lo: lo + step] = encoder.encode(texts[lo: lo + step])
        done = min(lo + step, n)
        print(f"  {done}/{n} ({done / (time.perf_counter() - started):.0f} texts/s)", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    (path.with_suffix(".txt")).write_text("\n".join(t.replace("\n", " ") for t in texts))


def latent_set(n: int, dim: int = 384, queries: int = 10_000, latent: int = 24,
               clusters: int = 2000, spread: float = 0.9, noise: float = 0.35,
               seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(items, queries): points of a ``latent``-dimensional Gaussian mixture (``clusters``
    centres, each point ``spread`` x unit noise around its centre, so clusters overlap),
    lifted to ``dim`` dimensions by a random map with a decaying spectrum, plus isotropic
    ``noise`` in all ``dim`` dimensions, then L2-normalised like sentence embeddings.

    Difficulty: overlapping clusters (spread 0.9 around unit-normal centres) so that an IVF
    index needs dozens of probes for recall 0.95 (measured: nprobe 40-48 of 1413 lists on
    125k-item partitions), not well-separated blobs, where any IVF reaches recall 1.0 at
    nprobe=1. Real MiniLM pairs are harder still (nprobe 64 of ~270 lists on 11k-item
    partitions; docs/benchmarks.md).
    Generated in blocks, cached as float32 ``.npy`` and memory-mapped.
    """
    name = f"latent_{n}x{dim}_l{latent}_c{clusters}_s{spread}_n{noise}_q{queries}_{seed}.npy"
    path = CACHE / name
    if not path.exists():
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((clusters, latent)).astype(np.float32)
        scale = (1.0 / np.sqrt(np.arange(1, latent + 1))).astype(np.float32)
        lift = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
        lift *= scale[:, None]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for lo in range(0, n, 200_000):
            hi = min(lo + 200_000, n)
            labels = rng.integers(0, clusters, hi - lo)
            z = centres[labels] + spread * rng.standard_normal((hi - lo, latent), dtype=np.float32)
            x = z @ lift + noise / np.sqrt(dim) * rng.standard_normal((hi - lo, dim),
                                                                       dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[lo:hi] = x
        out.flush()
        del out
        tmp.replace(path)
    vectors = np.load(path, mmap_mode="r")
    return vectors[: n - queries], vectors[n - queries:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("kind", choices=("minilm", "latent"))
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    items, queries = (minilm_set if args.kind == "minilm" else latent_set)(args.n)
    print(f"{args.kind}: items {items.shape}, queries {queries.shape} in {CACHE}")


if __name__ == "__main__":
    main()
