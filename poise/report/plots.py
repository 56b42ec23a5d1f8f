"""Plots of learning curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

CURVE_KEYS = ("reward", "accuracy", "validity", "entropy", "response_length", "kl", "clip_frac", "grad_norm")


def plot_curves(groups: dict[str, list[list[dict]]], path: Path, keys=CURVE_KEYS) -> None:
    """One panel per curve; one line per algorithm (mean over seeds) with a min-max band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = 4
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, trajs in groups.items():
            trajs = [t for t in trajs if t]
            if not trajs:
                continue
            n = min(len(t) for t in trajs)
            y = np.array([[row[key] for row in t[:n]] for t in trajs], dtype=float)
            x = np.arange(n)
            (line,) = ax.plot(x, y.mean(0), label=name, lw=1.4)
            if len(trajs) > 1:
                ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
