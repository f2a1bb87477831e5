"""Engine throughput of two versions of the code in one run: a git revision against the
working tree, on every CPU runtime and precision, on the 1000 fine-food reviews.

    flock /tmp/bench.lock .venv/bin/python tools/bench/engine_before_after.py [--before REV]

The default --before is the commit before the embedder loaded models through
sentence-transformers' module stack (92ae04a^): issue 21's target is throughput within 3% of
it on every runtime and precision. Each measurement is a fresh Python process with
PYTHONPATH on that version's python/ (the same venv, model and cache), which encodes once to
warm up and then --repeats times; the versions alternate (before, after, after, before) x
--rounds to cancel drift, and the table takes the median per version. The vectors of the two
versions are compared by cosine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_REVIEWS, REPO, cosines, cpu_facts, markdown_table, matmul_gflops

CONFIGS = (("cpu", "fp32"), ("cpu", "bf16"), ("onnx", "fp32"))

# Runs in the measured version's process: only the API both versions share.
WORKER = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from common import seed_texts_from_csv
from synapseml_ext._spark import bundled_model_dir
from synapseml_ext.engine import EncoderSpec, SentenceEncoder
csv, runtime, precision, cache, repeats, out = sys.argv[2:8]
texts = seed_texts_from_csv(csv)
encoder = SentenceEncoder(EncoderSpec(model=bundled_model_dir(), runtime=runtime,
                                      precision=precision, cache_dir=cache))
vectors = encoder.encode(texts)
times = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    encoder.encode(texts)
    times.append(time.perf_counter() - start)
np.save(out, vectors)
print(json.dumps({"rows_per_s": len(texts) / min(times)}))
"""


def checkout(rev: str, into: Path) -> Path:
    """``python/`` of ``rev``, unpacked under ``into``."""
    archive = subprocess.run(["git", "archive", rev, "python"], cwd=REPO, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "python"


def measure(python_dir: Path, runtime: str, precision: str, args: argparse.Namespace,
            out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(python_dir), "SYNAPSEML_EXT_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", WORKER, str(Path(__file__).parent),
                           str(args.csv), runtime, precision, args.cache_dir,
                           str(args.repeats), str(out)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python_dir} {runtime}/{precision} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["rows_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--before", default="92ae04a^")
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--repeats", type=int, default=2, help="timed encodes per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", action="append", metavar="RUNTIME/PRECISION",
                        help="measure only these (repeatable), e.g. --only cpu/bf16")
    args = parser.parse_args()

    facts = cpu_facts()
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {matmul_gflops('float32', threads=2):.0f} "
          f"GFLOP/s, bf16 {matmul_gflops('bfloat16', threads=2):.0f} GFLOP/s")
    before_rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=REPO,
                                check=True, capture_output=True, text=True).stdout.strip()
    after_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"before": checkout(args.before, Path(tmp) / "before"),
                    "after": REPO / "python"}
        configs = [c for c in CONFIGS if not args.only or "/".join(c) in args.only]
        for runtime, precision in configs:
            rates: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):
                for name in ("before", "after", "after", "before"):
                    out = Path(tmp) / f"{name}.npy"
                    rates[name].append(measure(versions[name], runtime, precision, args, out))
            cos = cosines(np.load(Path(tmp) / "before.npy"), np.load(Path(tmp) / "after.npy"))
            before, after = (statistics.median(rates[k]) for k in ("before", "after"))
            print(f"{runtime}/{precision}: before {rates['before']}, after {rates['after']}")
            rows.append([f"{runtime} / {precision}", f"{before:.1f}", f"{after:.1f}",
                         f"{after / before:.3f}", f"{cos.min():.6f}"])
    print(f"\nbefore = {before_rev} ({args.before}), after = {after_rev} (working tree); "
          f"rows/s = median over {2 * args.rounds} processes of the best of {args.repeats} "
          "encodes of the 1000 reviews")
    print(markdown_table(["runtime / precision", "before rows/s", "after rows/s",
                          "after / before", "min cosine"], rows))


if __name__ == "__main__":
    main()
