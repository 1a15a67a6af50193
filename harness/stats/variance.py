"""Variance decomposition of correctness into phrasing, document and interaction.

Two-way random-effects ANOVA on the phrasing x document 0/1 correctness matrix (documents
every phrasing scored). With one observation per cell the phrasing x document interaction
cannot be separated from residual noise: the "interaction" term is interaction + residual.

Reported two ways: shares of the total sum of squares (descriptive: how the observed
variation splits), and variance components from the expected mean squares,
sigma2_phrasing = (MS_p - MS_res) / D, sigma2_document = (MS_d - MS_res) / P,
sigma2_interaction = MS_res, negative estimates truncated at 0 (the usual convention).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from harness.stats.data import TaskMatrix


class VarianceDecomposition(NamedTuple):
    task: str
    applicable: bool
    note: str
    phrasings: int
    documents: int
    ss_total: float
    ss_phrasing: float
    ss_document: float
    ss_interaction: float
    share_phrasing: float
    share_document: float
    share_interaction: float
    var_phrasing: float
    var_document: float
    var_interaction: float
    #: Each component's share of their sum.
    component_share_phrasing: float
    component_share_document: float
    component_share_interaction: float


def decompose_matrix(task: str, y: np.ndarray) -> VarianceDecomposition:
    """Decompose a phrasings x documents matrix (0/1 correctness, or any scores).

    Args:
        task: task id, carried into the result.
        y: matrix with one row per phrasing and one column per document, no NaNs.

    Returns:
        Sums of squares, their shares, and variance components. Needs at least two phrasings
        and two documents; a matrix without variation has NaN shares.
    """
    p, d = y.shape
    nan = math.nan
    if p < 2 or d < 2:
        note = "not applicable: needs at least two phrasings and two documents scored by all of them"
        return VarianceDecomposition(task, False, note, p, d, *([nan] * 13))
    grand = float(y.mean())
    row = y.mean(axis=1)
    col = y.mean(axis=0)
    ss_total = float(((y - grand) ** 2).sum())
    ss_p = float(d * ((row - grand) ** 2).sum())
    ss_d = float(p * ((col - grand) ** 2).sum())
    # Clamp float noise: the remainder cannot be negative.
    ss_i = max(0.0, ss_total - ss_p - ss_d)
    ms_p = ss_p / (p - 1)
    ms_d = ss_d / (d - 1)
    ms_i = ss_i / ((p - 1) * (d - 1))
    var_p = max(0.0, (ms_p - ms_i) / d)
    var_d = max(0.0, (ms_d - ms_i) / p)
    var_i = ms_i
    comp_total = var_p + var_d + var_i
    note = "interaction is confounded with residual (one observation per phrasing x document cell)"
    if ss_total == 0.0:
        note = "no variation: every cell has the same value"

    def share(x: float, total: float) -> float:
        return x / total if total > 0 else nan

    return VarianceDecomposition(
        task,
        True,
        note,
        p,
        d,
        ss_total,
        ss_p,
        ss_d,
        ss_i,
        share(ss_p, ss_total),
        share(ss_d, ss_total),
        share(ss_i, ss_total),
        var_p,
        var_d,
        var_i,
        share(var_p, comp_total),
        share(var_d, comp_total),
        share(var_i, comp_total),
    )


def decompose_task(matrix: TaskMatrix) -> VarianceDecomposition:
    """Variance decomposition of a task's correctness matrix."""
    if matrix.shape[0] == 0:
        nan = math.nan
        return VarianceDecomposition(matrix.task, False, "not applicable: no per-document results", 0, 0, *([nan] * 13))
    return decompose_matrix(matrix.task, matrix.correct)
