"""The report of a budgeted run: each task's estimate from its scored cells, with CIs.

A budgeted run (`irh run --budget`) scores a share of each task's (phrasing, document) cells.
Its report's usual tables hold the plain means of the scored cells; this section adds the
model-based estimate of what a full run on the same documents would report (each phrasing's
score, and the mean, std, min, max and percentiles across phrasings), with CIs, beside the
plain means, and says how much of the grid was scored.
"""

from __future__ import annotations

import csv
import io
import math
from typing import NamedTuple

from harness.report.format import md_text
from harness.report.sources import ResultSource


class BudgetSection(NamedTuple):
    """What the report gains for a budgeted run."""

    markdown: str
    csv: str
    header: str


def _cell(value: float, low: float, high: float, scale: float) -> str:
    if math.isnan(value):
        return "–"
    digits = 1 if scale > 1 else 3
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def budget_section(source: ResultSource, n_boot: int = 200, seed: int = 0) -> BudgetSection | None:
    """The budgeted-estimate section of a run's report, or None for a full run.

    Args:
        source: a run folder's results (its manifest records the budget).
        n_boot: bootstrap replicates behind each CI.
        seed: bootstrap seed.
    """
    manifest = source.manifest
    if manifest is None or manifest.budget is None:
        return None
    from harness.stats.budget import MODEL, SAMPLED_MEAN, PartialMatrix, estimate_budget

    budget = manifest.budget
    grid_cells = sum(len(manifest.tasks[t].doc_ids) * sum(1 for task, _ in manifest.plan if task == t) for t in budget.cells)
    scored_by_task = {p.task: 0 for p in source.phrasings}
    for p in source.phrasings:
        scored_by_task[p.task] += int(p.valid.sum()) if p.per_document else 0
    scored = sum(scored_by_task.values())
    share = scored / grid_cells if grid_cells else math.nan
    header = (
        f"budgeted run: {scored} of {grid_cells} (phrasing, document) cells scored ({100 * share:.1f}%), "
        f"{len(budget.rounds)} allocation round(s), seed {budget.seed}. The tables above this report's "
        "'Budgeted estimate' section show plain means of the scored cells; that section estimates the full run."
    )
    lines = [
        "## Budgeted estimate",
        "",
        md_text(
            "Estimated from the scored cells by a logistic phrasing + document model (PromptEval-style; "
            "harness/stats/budget.py): what a full run on the same documents would report, with "
            f"{n_boot}-replicate bootstrap 95% CIs, beside the plain mean of each phrasing's scored cells."
        ),
        "",
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "kind", "name", "estimator", "value", "ci_low", "ci_high", "scored_cells", "grid_cells"])
    for task in sorted(budget.cells):
        phrasings = [inst for t, inst in manifest.plan if t == task]
        documents = list(manifest.tasks[task].doc_ids)
        cells: dict[tuple[str, str], float] = {}
        for p in source.phrasings:
            if p.task != task or not p.per_document:
                continue
            for d, s, ok in zip(p.doc_ids, p.scores, p.valid, strict=True):
                if ok:
                    cells[(p.instruction_id, d)] = float(s)
        if not cells:
            continue
        scale = 100.0 if max(cells.values()) > 1.0 else 1.0
        matrix = PartialMatrix.from_cells(phrasings, documents, cells, scale=scale)
        try:
            model = estimate_budget(matrix, MODEL, n_boot=n_boot, seed=seed)
            plain = estimate_budget(matrix, SAMPLED_MEAN, n_boot=n_boot, seed=seed)
        except ValueError as exc:  # e.g. a phrasing with no scored cell yet (an interrupted run)
            lines += [f"### {md_text(task)}", "", md_text(f"not estimated: {exc}"), ""]
            continue
        grid = len(phrasings) * len(documents)
        lines += [
            f"### {md_text(task)}",
            "",
            f"{len(cells)} of {grid} cells scored ({100 * len(cells) / grid:.1f}%).",
            "",
            "| across phrasings | estimate [95% CI] | plain mean of scored cells [95% CI] |",
            "|---|---|---|",
        ]
        for name, interval in model.across.items():
            other = plain.across[name]
            lines.append(f"| {name} | {_cell(*interval, scale)} | {_cell(*other, scale)} |")
            for est, iv in ((MODEL, interval), (SAMPLED_MEAN, other)):
                writer.writerow([task, "across", name, est, iv.value, iv.low, iv.high, len(cells), grid])
        lines += ["", "| phrasing | estimate [95% CI] | plain mean [95% CI] |", "|---|---|---|"]
        for inst, interval, other in zip(model.phrasings, model.phrasing_scores, plain.phrasing_scores, strict=True):
            lines.append(f"| {md_text(inst)} | {_cell(*interval, scale)} | {_cell(*other, scale)} |")
            for est, iv in ((MODEL, interval), (SAMPLED_MEAN, other)):
                writer.writerow([task, "phrasing", inst, est, iv.value, iv.low, iv.high, len(cells), grid])
        lines.append("")
    return BudgetSection("\n".join(lines) + "\n", out.getvalue(), header)
