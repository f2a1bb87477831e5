"""Our embedding stage on both Spark lines in one run: Spark 4.2 (.venv) against 3.5 (.venv-spark35).

    .venv/bin/python tools/bench/embed_spark_lines.py [--csv REVIEWS] [--rounds 2]

The same stage (tools/bench/embed_cpu.py's rows: the 1000 reviews, all-MiniLM-L6-v2,
local[2], 2 cached partitions) with runtime cpu (fp32), onnx and the defaults (auto), each
run twice per application (cold, then warm), in one fresh application per line; the lines
alternate (4.2, 3.5, 4.2, 3.5, ...) so that a machine's drift falls on both. Reports each
line's median warm rows/s per runtime and the ratio 3.5 / 4.2, with the CPU flags and a
same-run matmul rate. Results: tools/bench/results/embed_spark_lines.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    DEFAULT_REVIEWS,
    cpu_facts,
    markdown_table,
    matmul_gflops,
    save_results,
    seed_texts_from_csv,
)

REPO = Path(__file__).resolve().parents[2]
LINES = {"4.2": REPO / ".venv/bin/python", "3.5": REPO / ".venv-spark35/bin/python"}
RUNTIMES = (("cpu", "fp32"), ("onnx", "auto"), ("auto", "auto"))


def worker(csv: Path, cache_dir: str) -> None:
    """One application: every runtime cold then warm; prints one JSON line."""
    os.environ.setdefault("SYNAPSEML_EXT_LOG_LEVEL", "WARNING")
    import pyspark

    from synapseml_ext._spark import bundled_model_dir, local_spark
    from synapseml_ext.hf import HuggingFaceSentenceEmbedder

    texts = seed_texts_from_csv(csv)
    spark = local_spark("local[2]", "embed_spark_lines",
                        conf={"spark.ui.showConsoleProgress": "false"})
    df = spark.createDataFrame(list(enumerate(texts)), "id long, data string")
    df = df.repartition(2, "id").cache()
    df.count()
    rates = {}
    for runtime, precision in RUNTIMES:
        stage = HuggingFaceSentenceEmbedder(modelName=bundled_model_dir(), inputCol="data",
                                            outputCol="embeddings", runtime=runtime,
                                            precision=precision, cacheDir=cache_dir)
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            stage.transform(df).select("id", "embeddings").collect()
            seconds.append(time.perf_counter() - started)
        rates[runtime] = {"cold": len(texts) / seconds[0], "warm": len(texts) / seconds[1]}
    spark.stop()
    print(json.dumps({"pyspark": pyspark.__version__, "rates": rates}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_REVIEWS)
    parser.add_argument("--cache-dir", default="/tmp/synapseml-ext-bench-cache")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.csv, args.cache_dir)
        return

    facts = cpu_facts()
    fp32, bf16 = matmul_gflops("float32", threads=2), matmul_gflops("bfloat16", threads=2)
    print(f"CPU: {facts['cpu']} ({facts['cores']} cores)\nflags: {facts['flags']}")
    print(f"same-run torch matmul, 2 threads: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    runs: dict[str, list[dict]] = {line: [] for line in LINES}
    versions = {}
    for _ in range(args.rounds):
        for line, python in LINES.items():
            done = subprocess.run([str(python), __file__, "--worker", "--csv", str(args.csv),
                                   "--cache-dir", args.cache_dir], capture_output=True,
                                  text=True, check=True, env={**os.environ,
                                                              "PYTHONPATH": str(REPO / "python")})
            result = json.loads(done.stdout.strip().splitlines()[-1])
            versions[line] = result["pyspark"]
            runs[line].append(result["rates"])
            print(line, json.dumps(result["rates"]))

    def median(line: str, runtime: str) -> float:
        return statistics.median(r[runtime]["warm"] for r in runs[line])

    rows = [[runtime, f"{median('4.2', runtime):.1f}", f"{median('3.5', runtime):.1f}",
             f"{median('3.5', runtime) / median('4.2', runtime):.3f}"]
            for runtime, _ in RUNTIMES]
    table = markdown_table(["runtime", f"pyspark {versions['4.2']} rows/s",
                            f"pyspark {versions['3.5']} rows/s", "3.5 / 4.2"], rows)
    text = (f"{table}\n\nMedian warm run of {args.rounds} applications per line, alternating; "
            f"same-run matmul fp32 {fp32:.0f}, bf16 {bf16:.0f} GFLOP/s (2 threads); "
            f"{facts['cpu']}.\n")
    print(text)
    save_results("embed_spark_lines", text,
        {"versions": versions, "runs": runs, "matmul": {"fp32": fp32, "bf16": bf16},
         "cpu": facts})


if __name__ == "__main__":
    main()
