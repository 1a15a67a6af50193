"""The report of a budgeted run: the model's estimates of the full run, in the usual tables.

A budgeted run (`irh run --budget`) scores a share of each task's (phrasing, document) cells.
Its report shows, in the same tables as a full run's, the model-based estimate of what a full
run on the same documents would report (:mod:`harness.stats.budget`): each phrasing's score and
the mean, std, min, max and percentiles across phrasings, with their CIs; the CI-method column
and the notes mark them as estimated, with the share of cells scored. A "Budgeted estimate"
section (and ``budget_estimate.csv``) lists them beside the plain means of the scored cells.
Statistics that need every cell (consistency, the variance decomposition) and the seen vs
unseen tests use the scored cells only, as the notes say.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import TYPE_CHECKING, NamedTuple

from harness.report.format import md_text
from harness.report.sources import ResultSource

if TYPE_CHECKING:
    from harness.stats.analysis import Analysis
    from harness.stats.budget import BudgetEstimate


class TaskEstimate(NamedTuple):
    """One task's estimates from its scored cells."""

    model: BudgetEstimate
    plain: BudgetEstimate
    scored_cells: int
    grid_cells: int
    documents: int
    #: Every scored value is 0 or the maximum (the score is then an accuracy).
    binary: bool
    scale: float

    @property
    def share(self) -> float:
        return self.scored_cells / self.grid_cells if self.grid_cells else math.nan


class BudgetSection(NamedTuple):
    """What the report gains for a budgeted run."""

    markdown: str
    csv: str
    header: str
    estimates: dict[str, TaskEstimate]


def _cell(value: float, low: float, high: float, scale: float) -> str:
    if math.isnan(value):
        return "–"
    digits = 1 if scale > 1 else 3
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def budget_section(source: ResultSource, n_boot: int | None = None, seed: int = 0, estimator: str = "model") -> BudgetSection | None:
    """The budgeted-estimate section of a run's report, or None for a full run.

    Args:
        source: a run folder's results (its manifest records the budget).
        n_boot: posterior draws (model) and bootstrap replicates (plain means) behind each CI.
        seed: the draws' seed.
        estimator: ``model``, or ``model-strata`` (each phrasing's effect per stratum of
            documents sharing their right option; tasks without known right options fall back to ``model``).
    """
    manifest = source.manifest
    if manifest is None or manifest.budget is None:
        return None
    from harness.stats.budget import DEFAULT_BUDGET_BOOT, MODEL, MODEL_STRATA, SAMPLED_MEAN, PartialMatrix, document_strata, estimate_budget

    if estimator not in (MODEL, MODEL_STRATA):
        raise ValueError(f"unknown budget estimator {estimator!r}; choose {MODEL} or {MODEL_STRATA}")

    n_boot = n_boot or DEFAULT_BUDGET_BOOT
    budget = manifest.budget
    grid_cells = sum(len(manifest.tasks[t].doc_ids) * sum(1 for task, _ in manifest.plan if task == t) for t in budget.cells)
    scored = sum(int(p.valid.sum()) for p in source.phrasings if p.per_document and p.task in budget.cells)
    share = scored / grid_cells if grid_cells else math.nan
    adaptive = sum(1 for r in budget.rounds if r.kind == "adaptive")
    pending = f", {budget.rounds_pending} adaptive round(s) still to run" if budget.rounds_pending else ""
    header = (
        f"budgeted run: {scored} of {grid_cells} (phrasing, document) cells scored ({100 * share:.1f}%), "
        f"{len(budget.rounds) - adaptive} balanced and {adaptive} adaptive allocation round(s){pending}, seed {budget.seed}. "
        "Phrasing scores, CIs and across-phrasing statistics in the tables are estimates of the full run "
        "(model-based; CI method 'estimated'); 'Budgeted estimate' shows them beside the plain means of the scored cells."
    )
    lines = [
        "## Budgeted estimate",
        "",
        md_text(
            "Estimated from the scored cells by a logistic phrasing + document model (PromptEval-style; "
            "harness/stats/budget.py): what a full run on the same documents would report, with 95% CIs from "
            f"{n_boot} posterior draws of the full run, beside the plain mean of each phrasing's scored cells "
            "(percentile bootstrap over documents; after adaptive rounds the plain means are biased). In the tables "
            "above, the estimates stand in for the budgeted tasks' phrasing scores, their CIs and the statistics "
            "across phrasings, in place of the methods listed under Methods for those."
        ),
        "",
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "kind", "name", "estimator", "value", "ci_low", "ci_high", "scored_cells", "grid_cells"])
    estimates: dict[str, TaskEstimate] = {}
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
            strata = document_strata(source.answer_strata.get(task, {}), documents) if estimator == MODEL_STRATA else None
            if estimator == MODEL_STRATA and strata is None:
                lines += [md_text(f"{task}: no right option known for every document; estimated with {MODEL}, not {MODEL_STRATA}."), ""]
            used = MODEL_STRATA if strata is not None else MODEL
            model = estimate_budget(matrix, used, n_boot=n_boot, seed=seed, strata=strata)
            plain = estimate_budget(matrix, SAMPLED_MEAN, n_boot=n_boot, seed=seed)
        except ValueError as exc:  # e.g. a phrasing with no scored cell yet (an interrupted run)
            lines += [f"### {md_text(task)}", "", md_text(f"not estimated: {exc}"), ""]
            continue
        grid = len(phrasings) * len(documents)
        binary = all(v in (0.0, scale) for v in cells.values())
        estimates[task] = TaskEstimate(model, plain, len(cells), grid, len(documents), binary, scale)
        lines += [
            f"### {md_text(task)}",
            "",
            f"{len(cells)} of {grid} cells scored ({100 * len(cells) / grid:.1f}%); estimator: {md_text(model.details['model'])}; "
            f"{md_text(model.details['penalties'])}; CIs: {md_text(model.details['ci'])}.",
            "",
            "| across phrasings | estimate [95% CI] | plain mean of scored cells [95% CI] |",
            "|---|---|---|",
        ]
        for name, interval in model.across.items():
            other = plain.across[name]
            lines.append(f"| {name} | {_cell(*interval, scale)} | {_cell(*other, scale)} |")
            for est, iv in ((used, interval), (SAMPLED_MEAN, other)):
                writer.writerow([task, "across", name, est, iv.value, iv.low, iv.high, len(cells), grid])
        lines += ["", "| phrasing | estimate [95% CI] | plain mean [95% CI] |", "|---|---|---|"]
        for inst, interval, other in zip(model.phrasings, model.phrasing_scores, plain.phrasing_scores, strict=True):
            lines.append(f"| {md_text(inst)} | {_cell(*interval, scale)} | {_cell(*other, scale)} |")
            for est, iv in ((used, interval), (SAMPLED_MEAN, other)):
                writer.writerow([task, "phrasing", inst, est, iv.value, iv.low, iv.high, len(cells), grid])
        lines.append("")
    return BudgetSection("\n".join(lines) + "\n", out.getvalue(), header, estimates)


#: Phrases of analysis notes about a budgeted task that its estimates make moot.
_REPLACED_NOTES = ("not scored under every phrasing", "scored on fewer than")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def estimated_method(estimate: TaskEstimate) -> str:
    """The CI-method cell of a task whose statistics are estimates."""
    return f"estimated from {100 * estimate.share:.1f}% of cells ({estimate.model.estimator})"


def apply_budget_estimates(analysis: Analysis, section: BudgetSection) -> Analysis:
    """The analysis with each budgeted task's phrasing scores and across-phrasing statistics
    replaced by the model's estimates of the full run (and its family/category rows redone).

    Consistency (all right / none right) needs every cell and is left empty; the seen vs
    unseen tests and the variance decomposition keep using the scored cells, as a note says.
    """
    from harness.stats.across import summarise_groups

    estimates = section.estimates
    if not estimates:
        return analysis
    phrasings = []
    for p in analysis.phrasings:
        est = estimates.get(p.task)
        if est is None or p.instruction_id not in est.model.phrasings:
            phrasings.append(p)
            continue
        iv = est.model.phrasing_scores[est.model.phrasings.index(p.instruction_id)]
        accuracy = iv.value / est.scale if est.binary else math.nan
        phrasings.append(p._replace(score=iv.value, ci_low=iv.low, ci_high=iv.high, accuracy=accuracy))
    by_task = dict(analysis.by_task)
    tasks = []
    # The notes on documents or phrasings with fewer scored cells describe the plain
    # statistics that the estimates replace: the budget's own note says what holds instead.
    notes = [n for n in analysis.notes if not (n.split(":")[0] in estimates and any(k in n for k in _REPLACED_NOTES))]
    for t in analysis.tasks:
        est = estimates.get(t.task)
        if est is None:
            tasks.append(t)
            continue
        scores = dict(zip(est.model.phrasings, (iv.value for iv in est.model.phrasing_scores), strict=True))
        by_task[t.task] = [
            dataclasses.replace(p, reported_score=scores[p.instruction_id], reported_n=est.documents) if p.instruction_id in scores else p
            for p in analysis.by_task.get(t.task, [])
        ]
        pairs = [(p, scores[p.instruction_id]) for p in analysis.by_task.get(t.task, []) if p.instruction_id in scores]
        a = est.model.across
        max_p, avg_p = a["max"].value, a["mean"].value
        unit = t.score_scale if t.score_scale and t.score_scale > 1 else 1.0
        tasks.append(
            t._replace(
                phrasings=len(scores),
                documents=est.documents,
                mean=a["mean"].value,
                mean_ci_low=a["mean"].low,
                mean_ci_high=a["mean"].high,
                std=a["std"].value,
                std_ci_low=a["std"].low,
                std_ci_high=a["std"].high,
                ci_method=estimated_method(est),
                min=a["min"].value,
                max=max_p,
                range=max_p - a["min"].value,
                iqr=a["p75"].value - a["p25"].value,
                p05=a["p05"].value,
                p95=a["p95"].value,
                best=max(scores, key=lambda k: scores[k]),
                worst=min(scores, key=lambda k: scores[k]),
                max_p=max_p,
                avg_p=avg_p,
                cps=(1.0 - (max_p - avg_p) / unit) * max_p / unit,
                all_right=math.nan,
                none_right=math.nan,
                observed_mean=_mean([v for p, v in pairs if p.status == "observed"]),
                unobserved_mean=_mean([v for p, v in pairs if p.status == "unobserved"]),
                seen_mean=_mean([v for p, v in pairs if p.seen]),
                unseen_mean=_mean([v for p, v in pairs if not p.seen]),
            )
        )
        notes.insert(
            0,
            f"{t.task}: budgeted, {est.scored_cells} of {est.grid_cells} cells scored ({100 * est.share:.1f}%): phrasing scores, "
            "their CIs and the statistics across phrasings are model estimates of the full run (see 'Budgeted estimate'); "
            "seen vs unseen tests and the variance decomposition use the scored cells only, consistency is not estimated",
        )
    return dataclasses.replace(
        analysis,
        phrasings=phrasings,
        tasks=tasks,
        families=summarise_groups(tasks, by_task, "family"),
        categories=summarise_groups(tasks, by_task, "category"),
        notes=notes,
    )
