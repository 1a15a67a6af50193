"""Across phrasings: how much a task's score moves with the wording.

Standard deviations use ddof=1 (the sample std: the phrasings are a sample of the ways the
instruction could be written). Percentiles and the IQR use numpy's default linear
interpolation. CPS is Mizrahi et al. (2024)'s Combined Performance Score,
``(1 - (MaxP - AvgP)) * MaxP`` with MaxP the best phrasing's score and AvgP the mean over
phrasings, computed on scores in [0, 1] (metrics on a 0-100 scale are divided by 100 first).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from harness.stats.bootstrap import DEFAULT_BOOT, make_rng, percentile_ci, resampled_row_means
from harness.stats.data import PhrasingResults, TaskInfo, TaskMatrix, default_task_info

TWO_WAY = "two-way (phrasings x documents)"
PHRASINGS_ONLY = "phrasings only"


class AcrossStats(NamedTuple):
    """Descriptive statistics of one set of phrasing scores."""

    phrasings: int
    mean: float
    std: float
    min: float
    max: float
    range: float
    iqr: float
    p05: float
    p95: float
    best: str
    worst: str
    max_p: float
    avg_p: float
    cps: float
    #: 100 when the scores were on a 0-100 scale and CPS was computed on score / 100.
    score_scale: float


class TaskSummary(NamedTuple):
    task: str
    family: str
    category: str
    phrasings: int
    documents: int
    mean: float
    mean_ci_low: float
    mean_ci_high: float
    std: float
    std_ci_low: float
    std_ci_high: float
    ci_method: str
    min: float
    max: float
    range: float
    iqr: float
    p05: float
    p95: float
    best: str
    worst: str
    max_p: float
    avg_p: float
    cps: float
    score_scale: float
    #: Share of matrix documents right under every phrasing / under none (per-document data only).
    all_right: float
    none_right: float
    matrix_documents: int
    observed_mean: float
    unobserved_mean: float
    seen_mean: float
    unseen_mean: float
    per_document: bool
    phrasings_without_score: int


class GroupSummary(NamedTuple):
    """A family or category: task statistics macro-averaged, plus phrasings shared by all its tasks."""

    kind: str
    name: str
    tasks: int
    phrasings: int
    macro_mean: float
    macro_std: float
    macro_range: float
    macro_cps: float
    macro_all_right: float
    macro_none_right: float
    shared_phrasings: int
    shared_mean: float
    shared_std: float
    shared_min: float
    shared_max: float
    shared_iqr: float
    shared_best: str
    shared_worst: str
    shared_cps: float


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def describe_scores(ids: Sequence[str], values: Sequence[float], scale: float | None = None) -> AcrossStats:
    """Spread of phrasing scores; NaN scores are left out.

    Args:
        ids: phrasing ids, parallel to ``values``.
        values: each phrasing's score.
        scale: the metric's maximum when declared (used for CPS); None: 100 when a score
            exceeds 1, else 1.

    Returns:
        The statistics; with one phrasing the std is NaN (ddof=1 needs two), with none
        everything is NaN and best/worst are empty.
    """
    pairs = [(i, float(v)) for i, v in zip(ids, values, strict=True) if not math.isnan(float(v))]
    if not pairs:
        nan = math.nan
        return AcrossStats(0, nan, nan, nan, nan, nan, nan, nan, nan, "", "", nan, nan, nan, 1.0)
    arr = np.array([v for _, v in pairs])
    # Ties go to the smaller id so best/worst do not depend on input order.
    best = min(pairs, key=lambda p: (-p[1], p[0]))[0]
    worst = min(pairs, key=lambda p: (p[1], p[0]))[0]
    q05, q25, q75, q95 = np.percentile(arr, [5, 25, 75, 95])
    if scale is None:
        scale = 100.0 if arr.max() > 1.0 else 1.0
    max_p, avg_p = float(arr.max()), float(arr.mean())
    cps = (1.0 - (max_p - avg_p) / scale) * max_p / scale
    return AcrossStats(
        phrasings=len(arr),
        mean=avg_p,
        std=float(arr.std(ddof=1)) if len(arr) >= 2 else math.nan,
        min=float(arr.min()),
        max=max_p,
        range=float(arr.max() - arr.min()),
        iqr=float(q75 - q25),
        p05=float(q05),
        p95=float(q95),
        best=best,
        worst=worst,
        max_p=max_p,
        avg_p=avg_p,
        cps=float(cps),
        score_scale=scale,
    )


def declared_scale(phrasings: Iterable[PhrasingResults]) -> float | None:
    """The score scale the phrasings declare, when they all declare the same one; else None (inferred)."""
    scales = {p.score_scale for p in phrasings}
    if len(scales) == 1:
        (scale,) = scales
        return None if scale is None else float(scale)
    return None


def bootstrap_mean_std(
    phrasings: Sequence[PhrasingResults], matrix: TaskMatrix, rng: np.random.Generator, n_boot: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Replicates of the across-phrasing mean and std.

    Two-way when every phrasing has per-document results on shared documents: each replicate
    resamples documents (the same for all phrasings) and phrasings together. Otherwise only
    the phrasings' scores are resampled.

    Returns:
        (mean replicates, std replicates, method name).
    """
    if matrix.shape[1] > 0 and len(matrix.phrasings) == len(phrasings):
        means = resampled_row_means(matrix.scores, rng, n_boot)
        method = TWO_WAY
    else:
        scores = np.array([p.score for p in phrasings if not math.isnan(p.score)])
        means = np.broadcast_to(scores, (n_boot, scores.size))
        method = PHRASINGS_ONLY
    count = means.shape[1]
    if count == 0:
        return np.full(n_boot, math.nan), np.full(n_boot, math.nan), method
    picked = np.take_along_axis(means, rng.integers(0, count, size=(n_boot, count)), axis=1)
    stds = picked.std(axis=1, ddof=1) if count >= 2 else np.full(n_boot, math.nan)
    return picked.mean(axis=1), stds, method


def consistency(matrix: TaskMatrix) -> tuple[float, float]:
    """Share of the matrix's documents right under every phrasing, and under none."""
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        return (math.nan, math.nan)
    right = matrix.correct.astype(bool)
    return (float(right.all(axis=0).mean()), float((~right).all(axis=0).mean()))


def summarise_task(
    task: str,
    phrasings: Sequence[PhrasingResults],
    matrix: TaskMatrix,
    info: TaskInfo | None = None,
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> TaskSummary:
    """Across-phrasing statistics of one task, with two-way bootstrap CIs of mean and std."""
    info = info or default_task_info(task)
    scored = [p for p in phrasings if not math.isnan(p.score)]
    stats = describe_scores([p.instruction_id for p in scored], [p.score for p in scored], declared_scale(scored))
    mean_reps, std_reps, method = bootstrap_mean_std(scored, matrix, make_rng(seed, "across", task), n_boot)
    mean_ci = percentile_ci(mean_reps, level)
    std_ci = percentile_ci(std_reps, level)
    all_right, none_right = consistency(matrix)
    documents = len({d for p in phrasings if p.per_document for d in p.doc_ids})
    documents = max([documents] + [p.n for p in phrasings if not p.per_document])
    return TaskSummary(
        task=task,
        family=info.family,
        category=info.category,
        phrasings=stats.phrasings,
        documents=documents,
        mean=stats.mean,
        mean_ci_low=mean_ci[0],
        mean_ci_high=mean_ci[1],
        std=stats.std,
        std_ci_low=std_ci[0],
        std_ci_high=std_ci[1],
        ci_method=method if stats.phrasings else "",
        min=stats.min,
        max=stats.max,
        range=stats.range,
        iqr=stats.iqr,
        p05=stats.p05,
        p95=stats.p95,
        best=stats.best,
        worst=stats.worst,
        max_p=stats.max_p,
        avg_p=stats.avg_p,
        cps=stats.cps,
        score_scale=stats.score_scale,
        all_right=all_right,
        none_right=none_right,
        matrix_documents=matrix.shape[1],
        observed_mean=_nanmean([p.score for p in scored if p.status == "observed"]),
        unobserved_mean=_nanmean([p.score for p in scored if p.status == "unobserved"]),
        seen_mean=_nanmean([p.score for p in scored if p.seen]),
        unseen_mean=_nanmean([p.score for p in scored if not p.seen]),
        per_document=bool(phrasings) and all(p.per_document for p in phrasings),
        phrasings_without_score=len(phrasings) - len(scored),
    )


def summarise_groups(summaries: Sequence[TaskSummary], by_task: Mapping[str, Sequence[PhrasingResults]], kind: str) -> list[GroupSummary]:
    """Per family or category (``kind``): macro-averages of the task statistics, and the
    across-phrasing statistics of the phrasings run on every task of the group, each scored
    by its mean over those tasks (e.g. MMLU's shared pool). Groups with an empty name are skipped.
    """
    groups: dict[str, list[TaskSummary]] = {}
    for s in summaries:
        name = s.family if kind == "family" else s.category
        if name:
            groups.setdefault(name, []).append(s)
    out = []
    for name, members in sorted(groups.items()):
        per_task_scores = [{p.instruction_id: p.score for p in by_task.get(s.task, ()) if not math.isnan(p.score)} for s in members]
        shared = sorted(set.intersection(*(set(d) for d in per_task_scores))) if per_task_scores else []
        declared = declared_scale([p for s in members for p in by_task.get(s.task, ())])
        shared_stats = describe_scores(shared, [float(np.mean([d[i] for d in per_task_scores])) for i in shared], declared)
        out.append(
            GroupSummary(
                kind=kind,
                name=name,
                tasks=len(members),
                phrasings=sum(s.phrasings for s in members),
                macro_mean=_nanmean([s.mean for s in members]),
                macro_std=_nanmean([s.std for s in members]),
                macro_range=_nanmean([s.range for s in members]),
                macro_cps=_nanmean([s.cps for s in members]),
                macro_all_right=_nanmean([s.all_right for s in members]),
                macro_none_right=_nanmean([s.none_right for s in members]),
                shared_phrasings=shared_stats.phrasings,
                shared_mean=shared_stats.mean,
                shared_std=shared_stats.std,
                shared_min=shared_stats.min,
                shared_max=shared_stats.max,
                shared_iqr=shared_stats.iqr,
                shared_best=shared_stats.best,
                shared_worst=shared_stats.worst,
                shared_cps=shared_stats.cps,
            )
        )
    return out
