"""Does int8 on CPU keep minimum cosine >= 0.99 on the reviews, and at what speed?

    .venv/bin/python tools/bench/int8_probe.py [--threads 1]

ONNX Runtime dynamic quantisation (int8 weights per output channel, int8 activations per
tensor) of our cached MiniLM export, with groups of MatMuls left in fp32, against the fp32
export in the same run. The verdict behind "int8 is not shipped" in docs/cpu-precision.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_REVIEWS, cosines, cpu_facts, markdown_table, seed_texts_from_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from synapseml_ext._spark import bundled_model_dir
    from synapseml_ext.engine import EncoderSpec, SentenceEncoder
    from synapseml_ext.engine.paths import cache_root
    from synapseml_ext.engine.runtimes.onnx_export import export_key, load_artifacts

    facts = cpu_facts()
    print(f"CPU: {facts['cpu']}\nflags: {facts['flags']}")
    texts = seed_texts_from_csv(args.csv)
    encoder = SentenceEncoder(EncoderSpec(model=bundled_model_dir(), runtime="onnx",
                                          num_threads=args.threads, cache_dir=args.cache_dir))
    # The encoder above built (or found) the export; read it back from the cache.
    key = export_key(encoder.model.files, 0)
    artifacts = load_artifacts(cache_root(args.cache_dir) / "onnx" / key)
    raw = artifacts.raw
    matmuls = [n.name for n in onnx.load(str(raw)).graph.node
               if n.op_type == "MatMul" and "encoder" in n.name]
    groups = {
        "none (all MatMuls int8)": [],
        "FFN down-projection": [n for n in matmuls if re.search(r"layer\.\d+/output/dense", n)],
        "FFN up-projection": [n for n in matmuls if "intermediate" in n],
        "both FFN MatMuls (attention-only int8)": [
            n for n in matmuls if "intermediate" in n or re.search(r"layer\.\d+/output/dense", n)],
        "FFN down-projection + layers 3-5": [
            n for n in matmuls if re.search(r"layer\.\d+/output/dense", n)
            or any(f"layer.{i}/" in n for i in (3, 4, 5))],
    }

    def measure(path: Path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        backend = encoder.model.backend
        backend.session, backend._inputs = session, {i.name for i in session.get_inputs()}
        encoder.encode(texts[:32])
        started = time.perf_counter()
        out = encoder.encode(texts)
        return len(texts) / (time.perf_counter() - started), out

    fp32_rate, reference = measure(artifacts.for_onnxruntime)
    rows = [["fp32 (ONNX Runtime, fused)", round(fp32_rate, 1), "1.00x", "1.000000", "1.0000000"]]
    with tempfile.TemporaryDirectory() as tmp:
        for label, excluded in groups.items():
            out_path = Path(tmp) / "q.onnx"
            quantize_dynamic(str(raw), str(out_path), weight_type=QuantType.QInt8,
                             per_channel=True, nodes_to_exclude=excluded,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            rate, out = measure(out_path)
            cos = cosines(out, reference)
            rows.append([f"int8, fp32 kept: {label}", round(rate, 1),
                         f"{rate / fp32_rate:.2f}x", f"{cos.min():.6f}", f"{cos.mean():.7f}"])
    print(markdown_table(["variant", "rows/s", "vs fp32", "min cos to fp32", "mean cos"], rows))


if __name__ == "__main__":
    main()
