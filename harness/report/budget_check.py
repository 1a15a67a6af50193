"""Write ``irh budget-check`` results: a CSV, a Markdown table and a PNG of error vs budget."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.stats.budget import ALL_ESTIMATORS, PartialMatrix, document_strata, matrix_from_phrasings
from harness.stats.budget_check import PHRASING, CheckRow, check_budgets

CSV_NAME = "budget_check.csv"
MARKDOWN_NAME = "budget_check.md"
PLOT_NAME = "budget_check.png"
#: Statistics drawn in the plot (all are in the tables).
PLOTTED = ("mean", "std", "p05", "p50", "p95", PHRASING)


def write_check_csv(rows: Sequence[CheckRow], path: Path) -> None:
    """One CSV row per (task, budget, estimator, statistic)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CheckRow._fields)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def format_check_markdown(rows: Sequence[CheckRow], title: str, notes: Sequence[str] = (), level: float = 0.95) -> str:
    """Markdown: per task, one table of error and coverage per budget, estimator and statistic."""
    lines = [f"# Budget check: {title}", ""]
    lines += [
        "Each budget subsamples the full run's cells by the budgeted-run design, many times; "
        "each estimate is compared with the full run's value. "
        f"`phrasing` pools every phrasing's score. Coverage: share of {level:.0%} CIs holding the full-run value "
        f"(a well-calibrated CI covers about {level:.0%}).",
        "",
    ]
    for task in dict.fromkeys(r.task for r in rows):
        lines += [f"## {task}", ""]
        lines += [
            "| budget | cells | estimator | statistic | full run | mean abs error | RMSE | bias | coverage | mean CI width | repeats |"
        ]
        lines += ["|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r.task == task):
            lines.append(
                f"| {r.budget:.0%} | {r.cells} | {r.estimator} | {r.statistic} | {r.full_value:.4f} | {r.mean_abs_error:.4f} | "
                f"{r.rmse:.4f} | {r.bias:+.4f} | {r.coverage:.2f} | {r.mean_ci_width:.4f} | {r.repeats} |"
            )
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def plot_check(rows: Sequence[CheckRow], path: Path, title: str, level: float = 0.95) -> None:
    """Mean absolute error (left) and CI coverage (right) against budget, averaged over tasks."""
    import matplotlib
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Figure and the Agg canvas directly, never pyplot, as harness/report/plots.py does.
    fig = Figure(figsize=(11, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax_err, ax_cov = fig.subplots(1, 2)
    estimators = list(dict.fromkeys(r.estimator for r in rows))
    styles = ["-", "--", ":", "-."]
    colours = matplotlib.colormaps["tab10"]
    for e_i, est in enumerate(estimators):
        for s_i, stat in enumerate(PLOTTED):
            picked = [r for r in rows if r.estimator == est and r.statistic == stat]
            budgets = sorted({r.budget for r in picked})
            if not budgets:
                continue
            err = [sum(r.mean_abs_error for r in picked if r.budget == b) / sum(1 for r in picked if r.budget == b) for b in budgets]
            cov = [sum(r.coverage for r in picked if r.budget == b) / sum(1 for r in picked if r.budget == b) for b in budgets]
            style = {"linestyle": styles[e_i % len(styles)], "color": colours(s_i), "marker": "o", "markersize": 3}
            ax_err.plot([100 * b for b in budgets], err, label=f"{stat} ({est})", **style)
            ax_cov.plot([100 * b for b in budgets], cov, **style)
    ticks = sorted({100 * r.budget for r in rows})
    for ax in (ax_err, ax_cov):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("budget (% of cells)")
        ax.grid(True, alpha=0.3)
    ax_err.set_ylabel("mean absolute error")
    ax_cov.set_ylabel(f"coverage of {level:.0%} CIs")
    ax_cov.axhline(level, color="black", linewidth=0.8)
    ax_cov.axhspan(0.90, 0.98, color="green", alpha=0.08)
    ax_cov.set_ylim(0, 1.02)
    ax_err.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)


def write_check_outputs(rows: Sequence[CheckRow], out_dir: Path, title: str, notes: Sequence[str] = (), level: float = 0.95) -> list[Path]:
    """Write the CSV, the Markdown and (when there are rows) the PNG into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / CSV_NAME, out_dir / MARKDOWN_NAME]
    write_check_csv(rows, paths[0])
    paths[1].write_text(format_check_markdown(rows, title, notes, level), encoding="utf-8")
    if rows:
        paths.append(out_dir / PLOT_NAME)
        plot_check(rows, paths[2], title, level)
    return paths


def run_budget_check(
    paths: Sequence[Path],
    out_dir: Path,
    budgets: Sequence[float],
    repeats: int,
    n_boot: int,
    seed: int = 0,
    estimators: Sequence[str] | None = None,
    level: float = 0.95,
    show_progress: bool = True,
    rounds: int = 0,
) -> tuple[list[Path], list[str]]:
    """Check budgeted estimation on full runs: run folders, import folders or import files.

    Every task with at least two per-document phrasings is checked, by ``estimators`` (default:
    all; ``model-strata`` only where the documents' right options are known, multiple-choice
    run folders, with a note where not); with several models the
    rows' task is ``model/task``.

    Returns:
        (the written files, notes on what was skipped).

    Raises:
        harness.report.imports.ImportProblem: unreadable import files.
        harness.results.RunError: folders that hold no run.
    """
    from tqdm import tqdm

    from harness.report.imports import load_sources
    from harness.stats.data import group_by_task

    sources = load_sources(list(paths))
    jobs: list[tuple[str, PartialMatrix, np.ndarray | None]] = []
    notes: list[str] = []
    for source in sources:
        for task, phrasings in group_by_task(source.phrasings, source.tasks).items():
            name = f"{source.model}/{task}" if len(sources) > 1 else task
            per_doc = [p for p in phrasings if p.per_document and p.n > 0]
            if len(per_doc) < 2:
                notes.append(f"{name}: fewer than two phrasings with per-document scores; skipped")
                continue
            matrix = matrix_from_phrasings(per_doc)
            strata = document_strata(source.answer_strata.get(task, {}), matrix.documents)
            jobs.append((name, matrix, strata))
    rows: list[CheckRow] = []
    with tqdm(total=len(jobs) * len(budgets) * repeats, disable=not show_progress, desc="budget-check", unit="subsample") as bar:
        for name, matrix, strata in jobs:
            chosen = estimators or ALL_ESTIMATORS
            result = check_budgets(
                matrix, name, budgets, repeats, n_boot, seed, chosen, level, progress=bar.update, rounds=rounds, strata=strata
            )
            rows.extend(result.rows)
            notes.extend(result.notes)
    title = ", ".join(s.origin for s in sources) + (f" (balanced start + {rounds} adaptive rounds)" if rounds else "")
    return write_check_outputs(rows, out_dir, title, notes, level), notes
