"""Plots for the HTML reports, as self-contained PNG data URIs (matplotlib, Agg canvas).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never
pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.stats.analysis import Analysis
from harness.stats.compare import Comparison
from harness.stats.data import PhrasingResults

SEEN_COLOUR = "#E69F00"
UNSEEN_COLOUR = "#0072B2"
#: Tasks per strip-plot figure; longer reports get several figures rather than one very tall one.
TASKS_PER_FIGURE = 40
#: Most phrasing rows drawn in one heatmap.
HEATMAP_MAX_ROWS = 150


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_phrasing_strips(by_task: dict[str, list[PhrasingResults]]) -> list[str]:
    """Per task, a box of the phrasing scores with every phrasing as a dot, coloured seen/unseen.

    Returns:
        One data URI per block of up to ``TASKS_PER_FIGURE`` tasks (none without scores).
    """
    tasks = [t for t, ps in by_task.items() if any(not math.isnan(p.score) for p in ps)]
    out = []
    for start in range(0, len(tasks), TASKS_PER_FIGURE):
        block = tasks[start : start + TASKS_PER_FIGURE]
        fig = _figure(8.0, 1.2 + 0.42 * len(block))
        ax = fig.add_subplot()
        rng = np.random.default_rng(0)  # jitter only; fixed so the picture is reproducible
        for y, task in enumerate(reversed(block)):
            ps = [p for p in by_task[task] if not math.isnan(p.score)]
            scores = np.array([p.score for p in ps])
            if len(scores) >= 2:
                ax.boxplot(
                    scores,
                    positions=[y],
                    vert=False,
                    widths=0.55,
                    showfliers=False,
                    manage_ticks=False,
                    medianprops={"color": "#444444"},
                    boxprops={"color": "#999999"},
                    whiskerprops={"color": "#999999"},
                    capprops={"color": "#999999"},
                )
            jitter = rng.uniform(-0.18, 0.18, len(ps))
            colours = [SEEN_COLOUR if p.seen else UNSEEN_COLOUR for p in ps]
            ax.scatter(scores, y + jitter, c=colours, s=28, edgecolors="white", linewidths=0.5, zorder=3)
        ax.set_yticks(range(len(block)), list(reversed(block)), fontsize=8)
        ax.set_ylim(-0.7, len(block) - 0.3)
        ax.set_xlabel("phrasing score (task metric)")
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.scatter([], [], c=SEEN_COLOUR, label="seen phrasing")
        ax.scatter([], [], c=UNSEEN_COLOUR, label="unseen phrasing")
        ax.legend(loc="lower right", fontsize=8, frameon=True)
        ax.set_title("Score of every phrasing, per task", fontsize=10)
        out.append(_data_uri(fig))
    return out


def plot_seen_unseen(analysis: Analysis) -> str | None:
    """Per task where it applies: seen minus unseen mean with its 95% CI (None if nowhere)."""
    rows = [s for s in analysis.seen_unseen if s.applicable]
    if not rows:
        return None
    fig = _figure(7.5, 1.4 + 0.38 * len(rows))
    ax = fig.add_subplot()
    for y, s in enumerate(reversed(rows)):
        low, high = s.diff_ci_low, s.diff_ci_high
        if not (math.isnan(low) or math.isnan(high)):
            ax.plot([low, high], [y, y], color="#555555", linewidth=1.5)
        ax.scatter([s.diff], [y], color=SEEN_COLOUR if s.diff > 0 else UNSEEN_COLOUR, s=40, zorder=3)
    ax.axvline(0.0, color="#888888", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{s.task} ({s.n_seen} vs {s.n_unseen})" for s in reversed(rows)], fontsize=8)
    ax.set_xlabel("seen mean − unseen mean (95% bootstrap CI)")
    ax.set_title("Seen vs unseen phrasings", fontsize=10)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    return _data_uri(fig)


def plot_heatmap(by_task: dict[str, list[PhrasingResults]]) -> str | None:
    """Phrasing x task heatmap of scores; blank where a phrasing was not run on a task."""
    tasks = [t for t, ps in by_task.items() if ps]
    if not tasks:
        return None
    ids: list[str] = []
    for t in tasks:
        ids.extend(p.instruction_id for p in by_task[t] if p.instruction_id not in ids)
    ids = ids[:HEATMAP_MAX_ROWS]
    grid = np.full((len(ids), len(tasks)), np.nan)
    index = {i: k for k, i in enumerate(ids)}
    for col, t in enumerate(tasks):
        for p in by_task[t]:
            if p.instruction_id in index:
                grid[index[p.instruction_id], col] = p.score
    fig = _figure(min(3.0 + 0.45 * len(tasks), 18.0), min(1.8 + 0.2 * len(ids), 40.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(ids)), ids, fontsize=7 if len(ids) <= 60 else 5)
    ax.set_facecolor("#f4f4f4")
    fig.colorbar(image, ax=ax, label="score", shrink=0.8)
    ax.set_title("Score per phrasing and task", fontsize=10)
    return _data_uri(fig)


def plot_model_lines(comparison: Comparison, scores: dict[str, dict[str, dict[str, float]]], tasks: Sequence[str]) -> list[str]:
    """Per task, each model's score under every shared phrasing (phrasings sorted by their mean
    over models): crossing lines are rank flips.

    Args:
        comparison: the model comparison (for model order).
        scores: task -> model -> phrasing id -> score.
        tasks: tasks to draw.
    """
    out = []
    colours = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]
    per_fig = 12
    for start in range(0, len(tasks), per_fig):
        block = list(tasks[start : start + per_fig])
        cols = min(3, len(block))
        nrows = math.ceil(len(block) / cols)
        fig = _figure(4.0 * cols, 2.8 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False)
        for k, task in enumerate(block):
            ax = axes[k // cols][k % cols]
            per_model = scores.get(task, {})
            shared = sorted(set.intersection(*(set(v) for v in per_model.values()))) if per_model else []
            shared.sort(key=lambda i: float(np.mean([per_model[m][i] for m in per_model])))
            for c, model in enumerate(comparison.models):
                if model in per_model and shared:
                    ax.plot(
                        range(len(shared)),
                        [per_model[model][i] for i in shared],
                        marker="o",
                        markersize=3,
                        color=colours[c % len(colours)],
                        label=model,
                        linewidth=1.2,
                    )
            ax.set_title(task, fontsize=9)
            ax.set_xticks([])
            ax.set_xlabel("shared phrasings (sorted by mean)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        for k in range(len(block), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        axes[0][0].legend(fontsize=7, loc="best")
        out.append(_data_uri(fig))
    return out
