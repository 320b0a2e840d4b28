"""Every figure the stages draw (matplotlib, headless), each written atomically beside its run's files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..files import save_figure
from .synthesis import VERDICTS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(path: Path, gold, predicted, labels, title: str) -> None:
    """distill's confusion_matrix.png: gold labels down, the student's across."""
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()

    matrix = confusion_matrix(gold, predicted, labels=list(labels))
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("student's label")
    ax.set_ylabel("gold label")
    top = matrix.max() or 1
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, matrix[i, j], ha="center", va="center", color="white" if matrix[i, j] > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def learning_curve_png(path: Path, curve: dict, title: str) -> None:
    """distill's learning_curve.png: the student's macro-F1 against the pool texts it learnt from (log), the teacher
    as a line, and the fitted rate carried on to where it would meet the teacher (student/curve.py)."""
    plt = _pyplot()

    n = np.array([p["texts"] for p in curve["points"]], dtype=np.float64)
    f1 = np.array([p["macro_f1"] for p in curve["points"]])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(n, f1, "o-", color="#1f77b4", label="student")
    ax.axhline(curve["teacher_macro_f1"], color="#8c564b", linestyle="--", label="teacher")
    if curve["gain_per_doubling"] > 0:
        end = curve["texts_needed"] or n.max() * 4
        xs = np.geomspace(n.max(), end, 20)
        ax.plot(xs, f1[n.argmax()] + curve["gain_per_doubling"] * np.log2(xs / n.max()), ":", color="#1f77b4",
                label=f"{curve['gain_per_doubling']:+.3f} a doubling")
    ax.set_xscale("log")
    ax.set_xlabel("pool texts the student learnt from (log)")
    ax.set_ylabel("macro-F1 on the eval texts")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def bench_png(path: Path, results: dict, report: dict) -> None:
    """bench's bench.png: latency and throughput of each model side by side and, with gold labels, the frontier:
    macro-F1 against texts/s (log), each model a point."""
    plt = _pyplot()

    names = [n for n in ("teacher", "pytorch", "onnx-fp32", "onnx-int8") if n in results]
    colours = {"teacher": "#8c564b", "pytorch": "#1f77b4", "onnx-fp32": "#2ca02c", "onnx-int8": "#17becf"}
    panels = [("p50 latency per text, batch 1 (ms, log)", "p50_ms", True),
              (f"throughput at batch {report['batch_size']} (texts/s, log)", "texts_per_s", True)]
    frontier = bool(report["gold"]) and all("macro_f1" in results[n] for n in names)
    fig, axes = plt.subplots(1, len(panels) + frontier, figsize=(4.2 * (len(panels) + frontier), 3.6))
    if frontier:
        ax = np.atleast_1d(axes)[-1]
        for n in names:
            ax.scatter([results[n]["texts_per_s"]], [results[n]["macro_f1"]], color=colours[n], s=40, label=n)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"texts/s at batch {report['batch_size']} (log)", fontsize=8)
        ax.set_title("macro-F1 on gold labels against speed", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    for ax, (title, key, log) in zip(np.atleast_1d(axes), panels):
        values = [results[n][key] for n in names]
        bars = ax.bar(names, values, color=[colours[n] for n in names])
        if key == "p50_ms":
            p95 = [results[n]["p95_ms"] for n in names]
            ax.errorbar(names, values, yerr=[np.zeros(len(names)), np.subtract(p95, values)], fmt="none",
                        ecolor="black", capsize=4, label="p95")
            ax.legend(loc="upper right", fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], label_type="center", color="white", fontsize=8,
                     fontweight="bold")  # inside the bars, clear of the p95 whiskers
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"{report['texts']} texts, {report['machine']['threads']} threads, {report['machine']['cpu']}",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def evolve_png(path: Path, history: list[dict], labels: list[str]) -> None:
    """evolve's evolve.png: macro-F1 per round next to each round's texts by verdict."""
    plt = _pyplot()

    if not history:
        return
    rounds = [0] + [h["round"] for h in history]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for part, style in (("eval", "o-"), ("validation", "s--")):
        points = [history[0]["before"]] + [h["after"] for h in history]
        values = [p[part]["macro_f1"] if p and p.get(part) else math.nan for p in points]
        if not all(math.isnan(v) for v in values):
            ax.plot(rounds, values, style, label=f"{part} macro-F1")
    ax.set_xlabel("round (0: the distill run's student)")
    ax.set_ylabel("macro-F1")
    ax.set_xticks(rounds)
    ax.legend()
    ax.grid(alpha=0.3)
    bottom = np.zeros(len(history))
    for verdict in VERDICTS:
        counts = np.array([h["verdicts"].get(verdict, 0) for h in history])
        if counts.any():
            bx.bar(rounds[1:], counts, bottom=bottom, label=verdict.replace("_", " "))
            bottom += counts
    bx.set_xlabel("round")
    bx.set_ylabel("generated texts")
    bx.set_xticks(rounds[1:])
    bx.legend(fontsize=8)
    fig.suptitle(f"evolve: {len(labels)} labels")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
