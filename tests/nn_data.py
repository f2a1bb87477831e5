"""Data for the nearest-neighbour tests: brute-force truth, a clustered-latent synthetic set,
and Spark DataFrames of vectors."""

from __future__ import annotations

import numpy as np


def clustered_latent(n: int, dim: int = 384, latent: int = 24, clusters: int = 500,
                     spread: float = 0.9, noise: float = 0.35, seed: int = 3) -> np.ndarray:
    """Unit vectors from an overlapping Gaussian mixture in a ``latent``-dim space lifted to
    ``dim`` dims plus isotropic noise: neighbours are not separated blobs, so an IVF index
    needs several probes (the same generator as tools/bench/ann_data.py, smaller)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32)
    scale = (1.0 / np.sqrt(np.arange(1, latent + 1))).astype(np.float32)
    lift = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    lift *= scale[:, None]
    z = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal(
        (n, latent), dtype=np.float32)
    x = z @ lift + noise / np.sqrt(dim) * rng.standard_normal((n, dim), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(items: np.ndarray, queries: np.ndarray, k: int, metric: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of the exact k nearest items, in float64."""
    x, q = items.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        dist = 1.0 - q @ x.T
    elif metric == "inner_product":
        dist = -(q @ x.T)
    else:
        dist = ((q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * q @ x.T).clip(0)
        if metric in ("euclidean", "l2"):
            dist = np.sqrt(dist)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(dist, order, axis=1)
    return order, (-values if metric == "inner_product" else values)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def vector_df(spark, vectors: np.ndarray, id_offset: int = 0, partitions: int = 2,
              id_type: str = "long", column: str = "v"):
    """A DataFrame (id, <column>) of float vectors via Arrow."""
    import pandas as pd

    ids = np.arange(id_offset, id_offset + len(vectors))
    pdf = pd.DataFrame({"id": ids if id_type == "long" else [f"doc-{i}" for i in ids],
                        column: list(vectors.astype(np.float32))})
    schema = f"id {'long' if id_type == 'long' else 'string'}, {column} array<float>"
    return spark.createDataFrame(pdf, schema).repartition(partitions)


def knn_arrays(knn_df, id_col: str = "id") -> tuple[list, list[list], np.ndarray]:
    rows = knn_df.collect()
    return ([r[f"query_{id_col}"] for r in rows], [list(r.indices) for r in rows],
            np.array([r.distances for r in rows], dtype=np.float64))


def review_embeddings(texts: list[str], model_dir: str) -> np.ndarray:
    """All-MiniLM-L6-v2 fp32 embeddings of ``texts`` (the 1000 reviews), computed once with
    the engine's CPU runtime and cached under ~/.cache/synapseml-ext-tests (or
    $SYNAPSEML_EXT_TEST_CACHE), keyed by the texts and the model's weights: encoding them
    takes 1-2 minutes on 2 cores, reading them back milliseconds."""
    import hashlib
    import os
    from pathlib import Path

    key = hashlib.sha256("\n".join(texts).encode("utf-8"))
    for weights in sorted(Path(model_dir).glob("*.safetensors")):
        key.update(weights.name.encode() + weights.stat().st_size.to_bytes(8, "little"))
    root = Path(os.environ.get("SYNAPSEML_EXT_TEST_CACHE")
                or Path.home() / ".cache" / "synapseml-ext-tests")
    path = root / f"minilm-{key.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder

    encoder = SentenceEncoder(EncoderSpec(model=model_dir, runtime="cpu", precision="fp32",
                                          cache_dir=str(root / "engine")))
    vectors = np.asarray(encoder.encode(texts), dtype=np.float32)
    root.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, vectors)
    partial.replace(path)  # whole or absent, for runs in parallel
    return vectors
