"""Plots of learning curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from poise.evaluation.keys import CURVE_KEYS

__all__ = ["CURVE_KEYS", "plot_curves", "plot_lineage"]


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


LINEAGE_KEYS = ("reward", "accuracy", "entropy", "response_length", "kl")


def plot_lineage(groups: dict[str, list[list[dict]]], path: Path | None = None, keys=LINEAGE_KEYS,
                 dpi: int = 80) -> bytes:
    """A candidate's learning curves beside its parent's: one small panel per key, in one row, one line
    per label (mean over seeds). Returns the PNG bytes, and writes them to `path` when given."""
    import io

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a bare Figure with fixed margins: no pyplot state, and one draw instead of tight_layout's two
    # (the report draws one of these per candidate)
    fig = Figure(figsize=(2.7 * len(keys), 2.3))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.12, top=0.88, wspace=0.28)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    styles = ({"color": "#1f77b4", "lw": 1.5}, {"color": "#999999", "lw": 1.2, "ls": "--"})
    for ax, key in zip(axes, keys):
        for style, (name, trajs) in zip(styles, groups.items()):
            trajs = [t for t in trajs if t and key in t[0]]
            if not trajs:
                continue
            n = min(len(t) for t in trajs)
            y = np.array([[row[key] for row in t[:n]] for t in trajs], dtype=float).mean(0)
            ax.plot(np.arange(n), y, label=name, **style)
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
