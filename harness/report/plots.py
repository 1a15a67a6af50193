"""Plots for the HTML reports, as self-contained PNG data URIs (matplotlib, Agg canvas).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never
pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.stats.analysis import Analysis
from harness.stats.compare import Comparison
from harness.stats.data import PhrasingResults, build_matrix

SEEN_COLOUR = "#E69F00"
UNSEEN_COLOUR = "#0072B2"
#: Tasks per strip-plot figure; longer reports get several figures rather than one very tall one.
TASKS_PER_FIGURE = 40
#: Most phrasing rows drawn in one heatmap.
HEATMAP_MAX_ROWS = 150
#: Most tasks drawn as per-task phrasing x document grids (when no phrasing is shared).
GRID_MAX_TASKS = 48
#: Panels per row of the per-task document grids.
GRID_COLUMNS = 4
RIGHT_COLOUR = "#009E73"
WRONG_COLOUR = "#E4E4E4"
#: Longest task id on an axis before its middle is elided.
TASK_LABEL_MAX = 34
#: Most phrasing tick labels on one comparison panel; beyond it every k-th is named.
COMPARE_MAX_TICKS = 30
#: The chance mark: one short dashed segment per task, at the task's chance score.
CHANCE_STYLE: dict[str, Any] = {"color": "#D55E00", "linestyle": (0, (3, 2)), "linewidth": 1.4, "zorder": 2}


def _horizontal_boxplot() -> dict[str, Any]:
    import matplotlib

    # ``vert`` is deprecated from 3.11; ``orientation`` exists from 3.10.
    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _fitted_title(fig: Any, text: str, fontsize: float) -> Any:
    """Put ``text`` over the whole figure, wrapped at word boundaries into as few lines as keep
    every line inside the figure's width (a long title on a narrow figure was cut at both ends)."""
    renderer = fig.canvas.get_renderer()
    room = 0.96 * fig.bbox.width
    title = fig.suptitle(text, fontsize=fontsize)
    words = text.split()
    for width in range(len(text), 0, -1):
        wrapped = textwrap.fill(text, width, break_long_words=False)
        title.set_text(wrapped)
        if title.get_window_extent(renderer).width <= room or max(len(w) for w in words) >= width:
            break
    return title


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_phrasing_strips(by_task: dict[str, list[PhrasingResults]], chance: Mapping[str, float] | None = None) -> list[str]:
    """Per task, a box of the phrasing scores with every phrasing as a dot, coloured seen/unseen,
    and a dashed mark at the task's chance score where it is known.

    The legend sits below the axes, never over the dots, and names only the kinds drawn.

    Args:
        by_task: phrasings per task.
        chance: task -> expected score of a uniformly random option (see
            :func:`harness.report.sources.chance_from_rows`); tasks without one get no mark.

    Returns:
        One data URI per block of up to ``TASKS_PER_FIGURE`` tasks (none without scores).
    """
    return [_data_uri(fig) for fig in strip_figures(by_task, chance)]


def strip_figures(by_task: dict[str, list[PhrasingResults]], chance: Mapping[str, float] | None = None) -> list[Any]:
    """The figures behind :func:`plot_phrasing_strips` (matplotlib ``Figure`` objects)."""
    from matplotlib.lines import Line2D

    chance = chance or {}
    tasks = [t for t, ps in by_task.items() if any(not math.isnan(p.score) for p in ps)]
    horizontal = _horizontal_boxplot()
    figures = []
    for start in range(0, len(tasks), TASKS_PER_FIGURE):
        block = tasks[start : start + TASKS_PER_FIGURE]
        fig = _figure(8.0, 1.6 + 0.42 * len(block))
        ax = fig.add_subplot()
        rng = np.random.default_rng(0)  # jitter only; fixed so the picture is reproducible
        kinds: set[bool] = set()
        chance_drawn = False
        scaled = {t: task_scale(by_task[t]) for t in block}
        for y, task in enumerate(reversed(block)):
            ps = [p for p in by_task[task] if not math.isnan(p.score)]
            scores = np.array([p.score for p in ps]) / scaled[task]
            if len(scores) >= 2:
                ax.boxplot(
                    scores,
                    positions=[y],
                    **horizontal,
                    widths=0.55,
                    showfliers=False,
                    manage_ticks=False,
                    medianprops={"color": "#444444"},
                    boxprops={"color": "#999999"},
                    whiskerprops={"color": "#999999"},
                    capprops={"color": "#999999"},
                )
            level = chance.get(task)
            if level is not None and not math.isnan(level):
                level /= scaled[task]
                ax.plot([level, level], [y - 0.42, y + 0.42], **CHANCE_STYLE, gid=f"chance:{task}")
                chance_drawn = True
            jitter = rng.uniform(-0.18, 0.18, len(ps))
            kinds.update(p.seen for p in ps)
            colours = [SEEN_COLOUR if p.seen else UNSEEN_COLOUR for p in ps]
            ax.scatter(scores, y + jitter, c=colours, s=28, edgecolors="white", linewidths=0.5, zorder=3)
        ax.set_yticks(range(len(block)), [_scaled_label(t, scaled[t]) for t in reversed(block)], fontsize=8)
        ax.set_ylim(-0.7, len(block) - 0.3)
        ax.set_xlabel("phrasing score (task metric" + ("; 0–100 metrics ÷ 100)" if any(v != 1.0 for v in scaled.values()) else ")"))
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        handles = []
        for seen, colour, label in ((True, SEEN_COLOUR, "seen phrasing"), (False, UNSEEN_COLOUR, "unseen phrasing")):
            if seen in kinds:
                handles.append(Line2D([], [], linestyle="", marker="o", markersize=6, color=colour, label=label))
        if chance_drawn:
            handles.append(Line2D([], [], **CHANCE_STYLE, label="chance (random option)"))
        # Below the axes: inside, it hid the highest (or lowest) scores.
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
        ax.set_title("Score of every phrasing, per task", fontsize=10)
        figures.append(fig)
    return figures


def task_scale(phrasings: Sequence[PhrasingResults]) -> float:
    """100 for a task scored on 0-100 (a score above 1, as the statistics infer it), else 1: plots
    draw every task on 0-1 so that one such task does not squash the others."""
    return 100.0 if any(p.score > 1.0 for p in phrasings if not math.isnan(p.score)) else 1.0


def _scaled_label(task: str, scale: float) -> str:
    return _short_task(task) + (f" (÷{scale:g})" if scale != 1.0 else "")


def _short_task(task: str, width: int = TASK_LABEL_MAX) -> str:
    """A task id short enough for an axis label (middle elided; the tables give it in full)."""
    return task if len(task) <= width else task[: width - 9] + "…" + task[-8:]


def plot_seen_unseen(analysis: Analysis) -> str | None:
    """Per task where it applies: seen minus unseen mean with its 95% CI (None if nowhere)."""
    rows = [s for s in analysis.seen_unseen if s.applicable]
    if not rows:
        return None
    fig = _figure(7.5, 1.4 + 0.38 * len(rows))
    ax = fig.add_subplot()
    scaled = {s.task: task_scale(analysis.by_task.get(s.task, [])) for s in rows}
    for y, s in enumerate(reversed(rows)):
        k = scaled[s.task]
        low, high = s.diff_ci_low / k, s.diff_ci_high / k
        if not (math.isnan(low) or math.isnan(high)):
            ax.plot([low, high], [y, y], color="#555555", linewidth=1.5)
        ax.scatter([s.diff / k], [y], color=SEEN_COLOUR if s.diff > 0 else UNSEEN_COLOUR, s=40, zorder=3)
    ax.axvline(0.0, color="#888888", linestyle="--", linewidth=0.8)
    labels = [f"{_scaled_label(s.task, scaled[s.task])} ({s.n_seen} vs {s.n_unseen})" for s in reversed(rows)]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    rescaled = "; 0–100 metrics ÷ 100" if any(v != 1.0 for v in scaled.values()) else ""
    ax.set_xlabel(f"seen mean − unseen mean ({round(100 * analysis.level)}% bootstrap CI{rescaled})")
    ax.set_title("Seen vs unseen phrasings", fontsize=10)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    return _data_uri(fig)


def shared_phrasings(by_task: Mapping[str, Sequence[PhrasingResults]]) -> list[str]:
    """Phrasing ids scored on two or more tasks, in the order the tasks list them."""
    counts: dict[str, int] = {}
    for ps in by_task.values():
        for pid in {p.instruction_id for p in ps if not math.isnan(p.score)}:
            counts[pid] = counts.get(pid, 0) + 1
    ids: list[str] = []
    for ps in by_task.values():
        ids.extend(p.instruction_id for p in ps if counts.get(p.instruction_id, 0) >= 2 and p.instruction_id not in ids)
    return ids


def plot_heatmap(by_task: dict[str, list[PhrasingResults]]) -> str | None:
    """Scores per phrasing and task, for the phrasings run on two or more tasks; when no phrasing
    is shared, per task a phrasing x document grid of right and wrong answers instead.

    Returns:
        A data URI, or None when there is nothing to draw.
    """
    fig = heatmap_figure(by_task)
    return None if fig is None else _data_uri(fig)


def heatmap_figure(by_task: Mapping[str, Sequence[PhrasingResults]]) -> Any | None:
    """The figure behind :func:`plot_heatmap` (a matplotlib ``Figure``, or None)."""
    ids = shared_phrasings(by_task)[:HEATMAP_MAX_ROWS]
    if not ids:
        return document_grid_figure(by_task)
    wanted = set(ids)
    tasks = [t for t, ps in by_task.items() if any(p.instruction_id in wanted for p in ps)]
    grid = np.full((len(ids), len(tasks)), np.nan)
    index = {i: k for k, i in enumerate(ids)}
    for col, t in enumerate(tasks):
        for p in by_task[t]:
            if p.instruction_id in index:
                grid[index[p.instruction_id], col] = p.score
    fig = _figure(min(3.5 + 0.45 * len(tasks), 12.0), min(2.2 + 0.2 * len(ids), 40.0))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(tasks)), [_short_task(t) for t in tasks], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(ids)), ids, fontsize=7 if len(ids) <= 60 else 5)
    ax.set_facecolor("#f4f4f4")
    fig.colorbar(image, ax=ax, label="score", shrink=0.8)
    _fitted_title(fig, "Score per phrasing and task (phrasings run on 2+ tasks; grey: not run)", 10)
    return fig


def document_grid_figure(by_task: Mapping[str, Sequence[PhrasingResults]]) -> Any | None:
    """Per task, which documents each phrasing answered correctly (phrasings sorted by score,
    documents by how many phrasings got them right): the matrix behind the variance decomposition."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    matrices = [m for m in (build_matrix(t, ps) for t, ps in by_task.items()) if m.shape[0] and m.shape[1]][:GRID_MAX_TASKS]
    if not matrices:
        return None
    cols = min(GRID_COLUMNS, len(matrices))
    nrows = math.ceil(len(matrices) / cols)
    tallest = min(max(m.shape[0] for m in matrices), HEATMAP_MAX_ROWS)
    fig = _figure(3.0 * cols + 0.4, 0.9 + nrows * (0.9 + 0.13 * tallest))
    axes = fig.subplots(nrows, cols, squeeze=False)
    colours = ListedColormap([WRONG_COLOUR, RIGHT_COLOUR])
    for k, m in enumerate(matrices):
        ax = axes[k // cols][k % cols]
        rows = np.argsort(-np.nanmean(m.correct, axis=1), kind="stable")[:HEATMAP_MAX_ROWS]
        docs = np.argsort(-np.nanmean(m.correct, axis=0), kind="stable")
        ax.imshow(m.correct[np.ix_(rows, docs)], aspect="auto", cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        labels = [_phrasing_label(m.phrasings[i].instruction_id, m.task) for i in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=6 if len(rows) <= 30 else 4)
        ax.set_xticks([])
        ax.set_xlabel(f"{m.shape[1]} documents", fontsize=7)
        ax.set_title(_short_task(m.task), fontsize=8)
    for k in range(len(matrices), nrows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.legend(
        handles=[Patch(color=RIGHT_COLOUR, label="right"), Patch(color=WRONG_COLOUR, label="wrong")],
        loc="outside lower center",
        ncols=2,
        fontsize=8,
        frameon=False,
    )
    _fitted_title(fig, "Right and wrong answers per phrasing and document, per task (no phrasing is shared by two tasks)", 10)
    return fig


def _phrasing_label(instruction_id: str, task: str) -> str:
    """A phrasing id without its task's prefix (``bbl.winowhy.w07`` -> ``w07``) where it has one."""
    prefix = task + "."
    return instruction_id[len(prefix) :] if instruction_id.startswith(prefix) and len(instruction_id) > len(prefix) else instruction_id


def plot_model_lines(comparison: Comparison, scores: dict[str, dict[str, dict[str, float]]], tasks: Sequence[str]) -> list[str]:
    """Per task, each model's score under every shared phrasing (phrasings sorted by their mean
    over models, named on the axis): crossing lines are rank flips.

    Args:
        comparison: the model comparison (for model order).
        scores: task -> model -> phrasing id -> score.
        tasks: tasks to draw.
    """
    return [_data_uri(fig) for fig in model_line_figures(comparison, scores, tasks)]


def model_line_figures(comparison: Comparison, scores: dict[str, dict[str, dict[str, float]]], tasks: Sequence[str]) -> list[Any]:
    """The figures behind :func:`plot_model_lines` (matplotlib ``Figure`` objects)."""
    from matplotlib.lines import Line2D

    out = []
    colours = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]
    per_fig = 12
    for start in range(0, len(tasks), per_fig):
        block = list(tasks[start : start + per_fig])
        cols = min(3, len(block))
        nrows = math.ceil(len(block) / cols)
        fig = _figure(4.0 * cols + 0.4, 0.8 + 3.3 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False)
        drawn: list[str] = []
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
                    if model not in drawn:
                        drawn.append(model)
            ax.set_title(_short_task(task), fontsize=9)
            # Name the phrasings (without the task's prefix), every k-th one where there are many.
            step = max(1, math.ceil(len(shared) / COMPARE_MAX_TICKS))
            ticks = list(range(0, len(shared), step))
            names = [_phrasing_label(shared[i], task) for i in ticks]
            ax.set_xticks(ticks, names, rotation=0 if max(map(len, names), default=0) <= 4 else 90, fontsize=6)
            ax.set_xlabel("shared phrasing (sorted by mean over models)", fontsize=7)
            ax.set_ylabel("score", fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        for k in range(len(block), nrows * cols):
            axes[k // cols][k % cols].set_visible(False)
        # One legend for the figure, below the panels, where it covers no line.
        handles = [
            Line2D([], [], marker="o", markersize=3, linewidth=1.2, color=colours[comparison.models.index(m) % len(colours)], label=m)
            for m in drawn
        ]
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
        out.append(fig)
    return out
