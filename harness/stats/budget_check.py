"""How well budgeted estimates recover a full run: subsample its matrix and compare.

For each budget (a share of the full run's cells) and each repeat, cells are chosen by the
same design as a budgeted run (:func:`harness.budget.allocate_cells`, a new seed per repeat;
with ``rounds``, a balanced start and that many adaptive rounds, each scored from the full run
before the next is chosen),
every estimator is applied to them, and its estimates are compared with the full run's values:
each across-phrasing statistic, and each phrasing's score (pooled over phrasings as
``phrasing``). The summary per (budget, estimator, statistic) is the mean absolute error, the
RMSE, the bias, the CIs' coverage and their mean width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from harness.budget import BudgetError, adaptive_round, allocate_cells, minimum_cells, round_cells, start_cells
from harness.stats.budget import (
    ACROSS_STATISTICS,
    ALL_ESTIMATORS,
    DEFAULT_BUDGET_BOOT,
    MODEL_STRATA,
    PartialMatrix,
    across_statistics,
    estimate_budget,
)

#: Budgets checked unless asked otherwise (shares of the full run's cells).
DEFAULT_BUDGETS = (0.01, 0.02, 0.05, 0.10, 0.20, 0.50)
DEFAULT_REPEATS = 50
#: The name under which per-phrasing scores are summarised (pooled over phrasings).
PHRASING = "phrasing"
CHECK_STATISTICS = (*ACROSS_STATISTICS, PHRASING)


class CheckRow(NamedTuple):
    """One (task, budget, estimator, statistic) summary over repeats, on the metric's scale."""

    task: str
    budget: float
    cells: int
    estimator: str
    statistic: str
    repeats: int
    full_value: float
    mean_abs_error: float
    rmse: float
    bias: float
    coverage: float
    mean_ci_width: float


class CheckResult(NamedTuple):
    """Summaries plus the budgets that could not be checked, with why."""

    rows: list[CheckRow]
    notes: list[str]


def _summarise(
    task: str, budget: float, cells: int, estimator: str, full: dict[str, np.ndarray], found: dict[str, list[np.ndarray]]
) -> list[CheckRow]:
    out = []
    for stat in CHECK_STATISTICS:
        draws = np.array(found[stat])  # (repeats, 3, n) rows: value, low, high
        truth = full[stat]
        err = draws[:, 0] - truth
        covered = (draws[:, 1] <= truth + 1e-12) & (truth - 1e-12 <= draws[:, 2])
        out.append(
            CheckRow(
                task=task,
                budget=budget,
                cells=cells,
                estimator=estimator,
                statistic=stat,
                repeats=draws.shape[0],
                full_value=float(np.mean(truth)),
                mean_abs_error=float(np.nanmean(np.abs(err))),
                rmse=float(math.sqrt(np.nanmean(err**2))),
                bias=float(np.nanmean(err)),
                coverage=float(np.mean(covered)),
                mean_ci_width=float(np.nanmean(draws[:, 2] - draws[:, 1])),
            )
        )
    return out


def _design_cells(
    matrix: PartialMatrix, cells_wanted: int, seed: int, available: set[tuple[str, str]], rounds: int
) -> list[tuple[str, str]]:
    """The cells a budgeted run would score: the balanced design, or its start plus adaptive
    rounds that each see the full run's scores of the cells chosen before them."""
    n_p, n_d = matrix.shape
    start = start_cells(cells_wanted, n_p, n_d, rounds)
    cells: list[tuple[str, str]] = list(allocate_cells(matrix.phrasings, matrix.documents, start, seed, available=available))
    p_index = {p: i for i, p in enumerate(matrix.phrasings)}
    d_index = {d: j for j, d in enumerate(matrix.documents)}
    for k in range(1, rounds + 1):
        size = round_cells(cells_wanted, len(cells), rounds - k + 1)
        scored = {(p, d): float(matrix.values[p_index[p], d_index[d]]) for p, d in cells}
        cells += adaptive_round(matrix.phrasings, matrix.documents, scored, size, seed, k, available=available, scale=1.0, exclude=cells)
    return cells


def check_budgets(
    matrix: PartialMatrix,
    task: str = "",
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    repeats: int = DEFAULT_REPEATS,
    n_boot: int = DEFAULT_BUDGET_BOOT,
    seed: int = 0,
    estimators: Sequence[str] = ALL_ESTIMATORS,
    level: float = 0.95,
    progress: Callable[[int], None] | None = None,
    rounds: int = 0,
    strata: np.ndarray | None = None,
) -> CheckResult:
    """Subsample a full run's matrix at several budgets and score each estimator against it.

    Args:
        matrix: the full run (its scored cells are the target; a ragged run is fine).
        task: the task id written into the rows.
        budgets: shares of the full run's scored cells.
        repeats: subsamples per budget (each with its own design seed).
        n_boot: bootstrap replicates per estimate.
        seed: the first design seed; repeat ``r`` uses ``seed + r``.
        estimators: names from :data:`harness.stats.budget.ALL_ESTIMATORS` (default: all).
        level: the CIs' confidence level.
        progress: called with 1 after each (budget, repeat).
        rounds: adaptive rounds after a balanced start (0: the balanced design alone).
        strata: label per document of ``matrix`` (its right option), for the ``model-strata``
            estimator (see :func:`harness.stats.budget.estimate_budget`); without them that
            estimator is left out with a note.

    Returns:
        The summaries, and notes on budgets skipped (below one cell per phrasing and document).
    """
    scale = matrix.scale
    observed = matrix.observed
    full_scores = matrix.full_scores()
    full = {stat: np.array([v]) * scale for stat, v in zip(ACROSS_STATISTICS, across_statistics(full_scores), strict=True)}
    full[PHRASING] = full_scores * scale
    rows_i, cols_i = np.nonzero(observed)
    available = {(matrix.phrasings[i], matrix.documents[j]) for i, j in zip(rows_i.tolist(), cols_i.tolist(), strict=True)}
    n_p, n_d = matrix.shape
    total = len(available)
    rows: list[CheckRow] = []
    notes: list[str] = []
    if MODEL_STRATA in estimators and strata is None:
        notes.append(f"{task}: no right option known per document; the {MODEL_STRATA} estimator is left out")
        estimators = [e for e in estimators if e != MODEL_STRATA]
    for budget in budgets:
        # A share of the cells the full run has (all of the grid unless it is ragged).
        cells_wanted = min(total, math.ceil(budget * total - 1e-9))
        if cells_wanted < minimum_cells(n_p, n_d):
            notes.append(
                f"{task}: budget {budget:.0%} ({cells_wanted} cells) is below one cell per phrasing and document "
                f"({minimum_cells(n_p, n_d)} cells); skipped"
            )
            if progress:
                progress(repeats)
            continue
        found: dict[str, dict[str, list[np.ndarray]]] = {e: {s: [] for s in CHECK_STATISTICS} for e in estimators}
        for r in range(repeats):
            try:
                cells = _design_cells(matrix, cells_wanted, seed + r, available, rounds)
            except BudgetError as exc:
                notes.append(f"{task}: budget {budget:.0%}: {exc}")
                break
            sub = matrix.subsample(cells)
            for est in estimators:
                by_stratum = strata if est == MODEL_STRATA else None
                result = estimate_budget(sub, est, n_boot=n_boot, seed=seed + r, level=level, strata=by_stratum)
                for stat in ACROSS_STATISTICS:
                    iv = result.across[stat]
                    found[est][stat].append(np.array([[iv.value], [iv.low], [iv.high]]))
                found[est][PHRASING].append(
                    np.array(
                        [
                            [iv.value for iv in result.phrasing_scores],
                            [iv.low for iv in result.phrasing_scores],
                            [iv.high for iv in result.phrasing_scores],
                        ]
                    )
                )
            if progress:
                progress(1)
        for est in estimators:
            if found[est][PHRASING]:
                rows.extend(_summarise(task, budget, cells_wanted, est, full, found[est]))
    return CheckResult(rows, notes)
