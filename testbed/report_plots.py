"""The plots of ``testbed report``, each a matplotlib Figure for a ReportFigure block. Public through
``testbed`` so that a third-party report section draws like the built-in ones. Figures are made
without pyplot (no global state, no display needed) and matplotlib is imported only when drawing."""

from __future__ import annotations

import math

import numpy as np


def new_figure(width: float = 7.0, height: float = 4.0):
    """An empty Figure of ``width`` x ``height`` inches at 100 dpi (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def line_plot(panels: list[tuple[str, dict]], xlabel: str, ylabel: str, colors: dict[str, str] | None = None):
    """Panels side by side, each ``(title, {label: (x, y)})``; a label keeps its color (``colors``) in every panel."""
    fig = new_figure(5.0 * len(panels), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = dict(colors or {})  # one color per cell in every panel
    for _, curves in panels:
        for cell in curves:
            colors.setdefault(cell, f"C{len(colors) % 10}")
    for ax, (title, curves) in zip(axes, panels):
        for cell, (x, y) in curves.items():
            ax.plot(x, y, marker="o", markersize=3, color=colors[cell], label=cell)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def threshold_plot(curves: list[tuple[str, np.ndarray, np.ndarray]]):
    """Thresholds over training: one ``(label, steps, values)`` line each."""
    fig = new_figure(5.5, 3.5)
    ax = fig.subplots()
    for i, (label, x, y) in enumerate(curves):
        ax.plot(x, y, color=f"C{i % 10}", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], colors: dict[str, str] | None = None):
    """Reliability diagram: ``{label: (confidence per bin, accuracy per bin)}`` (NaN bins skipped), and the diagonal."""
    fig = new_figure(4.8, 4.4)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (cell, (conf, acc)) in enumerate(curves.items()):
        keep = ~np.isnan(conf)
        ax.plot(conf[keep], acc[keep], marker="o", markersize=3, color=(colors or {}).get(cell, f"C{i % 10}"), label=cell)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(pivot, row_label: str, column_label: str):
    """A pandas pivot table as a heatmap with its values written in (NaN cells blank)."""
    fig = new_figure(1.6 + 1.1 * pivot.shape[1], 1.2 + 0.5 * pivot.shape[0])
    ax = fig.subplots()
    values = pivot.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), [str(c) for c in pivot.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(pivot.shape[0]), [str(i) for i in pivot.index], fontsize=8)
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    for (i, j), v in np.ndenumerate(values):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def cd_diagram(ranking):
    """Demšar's critical-difference diagram: the rank axis, each cell at its average rank, a bar of
    length CD, and thick lines joining cells that are not significantly different (Nemenyi)."""
    k = len(ranking.names)
    order = list(np.argsort(ranking.average_ranks, kind="stable"))
    ranks = [ranking.average_ranks[i] for i in order]
    names = [ranking.names[i] for i in order]
    fig = new_figure(7.5, 1.6 + 0.3 * k)
    ax = fig.subplots()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k // 2 + 2) * 0.5 - 0.5, 1.6)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.12, color="black", linewidth=1)
        ax.text(r, 0.2, str(r), ha="center", va="bottom", fontsize=8)
    if ranking.cd is not None:
        ax.hlines(1.2, 1, 1 + ranking.cd, color="black", linewidth=2)
        ax.text(1 + ranking.cd / 2, 1.3, f"CD = {ranking.cd:.2f}", ha="center", va="bottom", fontsize=8)
    half = (k + 1) // 2
    for i, (r, name) in enumerate(zip(ranks, names)):
        left = i < half
        level = -(i if left else k - 1 - i) * 0.5 - 0.6
        x_text = 0.6 if left else k + 0.4
        ax.plot([r, r, x_text], [0, level, level], color="black", linewidth=0.8)
        ax.text(x_text, level, f"{name} ({r:.2f})", ha="right" if left else "left", va="center", fontsize=8)
    cliques = []
    for i in range(k):
        j = i
        while j + 1 < k and ranks[j + 1] - ranks[i] < (ranking.cd or 0):
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    for n, (i, j) in enumerate(cliques):
        y = -0.25 - 0.12 * n
        ax.hlines(y, ranks[i] - 0.03, ranks[j] + 0.03, color="C3", linewidth=3)
    fig.tight_layout()
    return fig
