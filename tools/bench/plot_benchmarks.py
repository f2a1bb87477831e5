"""Draw the figures of docs/benchmarks.md from tools/bench/results/figures.json.

    .venv/bin/pip install -e '.[bench]'            # matplotlib
    .venv/bin/python tools/bench/plot_benchmarks.py [--data FILE] [--out docs/img]

Writes three PNGs: embedding throughput by runtime and precision against the peers measured
in the same runs, ANN recall against search time, and the quickstart's end-to-end seconds;
and a fourth, the k-NN's growth with items, from results/ann_scaling.json (ann_scaling.py).
The JSON holds the numbers the document quotes (no benchmark runs here): update it with the
document, then run this script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEER, OURS, OTHER = "#9e9e9e", "#1f77b4", "#ff7f0e"


def embedding(fig_data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    cpu, gpu = fig_data["embed_cpu"], fig_data["embed_gpu"]
    fig, axes = plt.subplots(1, 1 + len(gpu["panels"]), figsize=(14, 4.6),
                             gridspec_kw={"width_ratios": [1.25] + [1] * len(gpu["panels"])})
    ax = axes[0]
    bars = cpu["bars"]
    ax.bar(range(len(bars)), [b["value"] for b in bars],
           color=[PEER if b.get("peer") else OURS for b in bars])
    for x, b in enumerate(bars):
        ax.text(x, b["value"], f"{b['value']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b["label"] for b in bars], fontsize=7.5)
    ax.set_ylabel(cpu["unit"])
    ax.set_title("CPU, 2 cores, all-MiniLM-L6-v2\n(grey: SynapseML's stage, same run)",
                 fontsize=9.5)

    for ax, panel in zip(axes[1:], gpu["panels"], strict=True):
        runs = panel["runs"]
        keys = list(runs[0]["values"])
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            xs = [k + (i - (len(runs) - 1) / 2) * width for k in range(len(keys))]
            values = [run["values"][key] for key in keys]
            colors = [PEER if key.startswith("sentence-transformers") else (OURS, OTHER)[i % 2]
                      for key in keys]
            ax.bar(xs, values, width, color=colors, edgecolor="black", linewidth=0.4,
                   hatch="//" if i else None, label=run["machine"])
            base = run["values"][keys[0]]
            for x, v in zip(xs, values, strict=True):
                ax.text(x, v, f"{v / base:.2f}x", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(keys)), [k.replace(" ", "\n", 1) for k in keys], fontsize=7.5)
        ax.set_ylabel(gpu["unit"])
        ax.set_title(panel["title"] + "\n(x: vs sentence-transformers fp16, same machine)",
                     fontsize=9.5)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.set_ylim(0, 1.15 * max(max(r["values"].values()) for r in runs))
        ax.legend(fontsize=7.5, loc="upper left")
    fig.suptitle("Embedding throughput by runtime and precision (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ann(fig_data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels = fig_data["ann"]["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8))
    styles = {"ours (": ("o", OURS), "ours, exact": ("s", "#2ca02c"),
              "faiss": ("D", "#7f7f7f"), "Annoy": ("^", OTHER)}
    for ax, panel in zip(axes, panels, strict=True):
        if "sweep" in panel:
            sweep = panel["sweep"]
            pts = sweep["points"]
            ax.plot([p["seconds"] for p in pts], [p["recall"] for p in pts], "o-",
                    color=OURS, label=sweep["method"])
            for p in pts:
                ax.annotate(p.get("label", str(p["nprobe"])), (p["seconds"], p["recall"]),
                            textcoords="offset points", xytext=(4, -7), va="top", fontsize=7)
        for p in panel["points"]:
            marker, color = next(v for k, v in styles.items() if p["method"].startswith(k))
            filled = "first search" not in p["method"]
            ax.plot(p["seconds"], p["recall"], marker, color=color, markersize=8,
                    markerfacecolor=color if filled else "white", linestyle="none",
                    label=f"{p['method']}: {p['recall']:.4g} in {p['seconds']:g} s")
        if "other_run" in panel:
            other = panel["other_run"]
            pts = other["points"]
            ax.plot([p["seconds"] for p in pts], [p["recall"] for p in pts], "^--",
                    color=OTHER, markerfacecolor="white", label=other["label"])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15, y=0.12)
        ax.set_xlabel("seconds to search 10k queries, k=10 (log)")
        ax.set_ylabel("recall@10")
        ax.set_title(panel["title"] + "\n" + panel["machine"], fontsize=8.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    fig.suptitle("ANN on CPU, Spark local[2]: recall against search time "
                 "(up and left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quickstart(fig_data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    data = fig_data["quickstart"]
    rows, series = data["rows"], data["series"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, s in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(rows))]
        ax.bar(xs, s["seconds"], width, label=s["label"], color=(OURS, PEER, OTHER)[i % 3])
    ax.set_xticks(range(len(rows)), [f"{n:,}" for n in rows])
    ax.set_yscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("seconds, end to end (log; lower is better)")
    ax.set_title(data["title"], fontsize=9.5)
    ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ann_scaling(runs_data: dict, path: Path) -> None:
    """results/ann_scaling.json (``ann_scaling.py``): time, local disk and memory against
    the number of items."""
    import matplotlib.pyplot as plt

    runs = runs_data["runs"]
    items = [r["items"] / 1e6 for r in runs]
    gib = 2**30
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 4.4))
    left.plot(items, [r["fit_s"] for r in runs], "o-", color=OURS, label="fit")
    left.plot(items, [r["first_s"] for r in runs], "s--", color=OTHER,
              markerfacecolor="white", label=f"first search ({runs_data['queries']:,} queries)")
    left.plot(items, [r["warm_s"] for r in runs], "s-", color=OTHER, label="warm search")
    left.set_ylabel("seconds")
    left.set_title("time (lower is better)", fontsize=9.5)
    mid.plot(items, [r["vector_bytes"] / gib for r in runs], ":", color=PEER,
             label="the vectors (float32)")
    mid.plot(items, [2 * r["vector_bytes"] / gib for r in runs], "--", color=PEER,
             label="2x the vectors (the target)")
    mid.plot(items, [r["fit_peak_disk"] / gib for r in runs], "o-", color=OURS,
             label="peak during fit")
    mid.plot(items, [r["after_fit_disk"] / gib for r in runs], "s--", color=OURS,
             markerfacecolor="white", label="after fit")
    mid.set_ylabel("GiB on Spark's local disk")
    mid.set_title("local disk", fontsize=9.5)
    right.plot(items, [r["peak_tree_rss"] / gib for r in runs], "o-", color=OURS,
               label="all processes (JVM with a 6 GB heap, Python workers)")
    right.plot(items, [r["peak_driver_rss"] / gib for r in runs], "s-", color=OTHER,
               label="the Python driver")
    right.set_ylabel("peak resident memory, GiB")
    right.set_title("memory", fontsize=9.5)
    for ax in (left, mid, right):
        ax.set_xlabel("items, millions (384 dimensions)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    facts = runs_data["facts"]
    fig.suptitle("k-NN fit and search against the number of items: 2-core "
                 f"{facts['cpu']}, 24 GB, Spark local[2] (same-run fp32 matmul "
                 f"{facts['matmul_fp32_gflops']:g} GFLOP/s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE / "results" / "figures.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    fig_data = json.loads(args.data.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("embedding_throughput.png", embedding), ("ann_recall_time.png", ann),
                       ("quickstart_end_to_end.png", quickstart)):
        draw(fig_data, args.out / name)
        print(args.out / name)
    scaling = HERE / "results" / "ann_scaling.json"
    if scaling.exists():
        ann_scaling(json.loads(scaling.read_text()), args.out / "ann_scaling.png")
        print(args.out / "ann_scaling.png")


if __name__ == "__main__":
    main()
