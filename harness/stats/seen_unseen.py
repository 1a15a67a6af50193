"""Seen vs unseen phrasings for the evaluated model (the ``seen`` flag of each row).

Across phrasings: the difference of means (seen - unseen) with a two-way bootstrap CI
(documents resampled once per replicate, phrasings resampled within each group), Welch's t
and the Mann-Whitney U test (two-sided), Cohen's d / Hedges' g with the pooled ddof=1 std,
and the rank-biserial correlation 2U/(n_seen n_unseen) - 1 (positive: seen phrasings score
higher). Paired: on the documents every phrasing scored, each document's mean score under
the seen phrasings minus under the unseen ones, tested with the Wilcoxon signed-rank test
(zero differences dropped, scipy's default) with the matched-pairs rank-biserial as effect.
p-values are corrected across tasks per test with Holm's step-down method and
Benjamini-Hochberg (``scipy.stats.false_discovery_control``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as sps

from harness.stats.bootstrap import DEFAULT_BOOT, make_rng, percentile_ci, resampled_row_means
from harness.stats.data import PhrasingResults, TaskMatrix

#: The tests whose p-values get multiple-task corrections: field prefixes in SeenUnseen.
TESTS = ("welch", "mwu", "wilcoxon")


class SeenUnseen(NamedTuple):
    task: str
    applicable: bool
    #: Why the comparison is not applicable, or caveats when it is.
    note: str
    n_seen: int
    n_unseen: int
    seen_mean: float
    unseen_mean: float
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    welch_t: float
    welch_df: float
    welch_p: float
    welch_p_holm: float
    welch_q_bh: float
    mwu_u: float
    mwu_p: float
    mwu_p_holm: float
    mwu_q_bh: float
    cohens_d: float
    hedges_g: float
    rank_biserial: float
    paired_documents: int
    paired_diff: float
    wilcoxon_w: float
    wilcoxon_p: float
    wilcoxon_p_holm: float
    wilcoxon_q_bh: float
    paired_rank_biserial: float


def _not_applicable(
    task: str, note: str, n_seen: int = 0, n_unseen: int = 0, seen_mean: float = math.nan, unseen_mean: float = math.nan
) -> SeenUnseen:
    values: dict[str, object] = dict.fromkeys(SeenUnseen._fields, math.nan)
    values.update(
        task=task,
        applicable=False,
        note=note,
        n_seen=n_seen,
        n_unseen=n_unseen,
        seen_mean=seen_mean,
        unseen_mean=unseen_mean,
        paired_documents=0,
    )
    return SeenUnseen(**values)  # type: ignore[arg-type]


def cohens_d(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Cohen's d, Hedges' g) of a - b with the pooled ddof=1 standard deviation.

    Undefined (NaN) unless each group has two values: a single phrasing has no spread of its
    own, and a pooled std taken from the other group alone would report a size for a
    difference the data cannot scale.
    """
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return (math.nan, math.nan)
    v1 = float(np.var(a, ddof=1))
    v2 = float(np.var(b, ddof=1))
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    if pooled == 0.0:
        return (math.nan, math.nan)
    d = (float(np.mean(a)) - float(np.mean(b))) / pooled
    # Hedges' small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9).
    return (d, d * (1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)))


def matched_rank_biserial(diffs: np.ndarray) -> float:
    """(T+ - T-) / (T+ + T-) over the ranks of the non-zero paired differences."""
    nonzero = diffs[diffs != 0]
    if nonzero.size == 0:
        return math.nan
    ranks = sps.rankdata(np.abs(nonzero))
    plus, minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return float((plus - minus) / (plus + minus))


def compare_seen_unseen(
    task: str,
    phrasings: Sequence[PhrasingResults],
    matrix: TaskMatrix,
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    level: float = 0.95,
) -> SeenUnseen:
    """Seen vs unseen phrasings of one task (uncorrected p-values; see :func:`correct_across_tasks`)."""
    scored = [p for p in phrasings if not math.isnan(p.score)]
    seen = np.array([p.score for p in scored if p.seen])
    unseen = np.array([p.score for p in scored if not p.seen])
    seen_mean = float(seen.mean()) if seen.size else math.nan
    unseen_mean = float(unseen.mean()) if unseen.size else math.nan
    if not scored:
        return _not_applicable(task, "not applicable: no scored phrasings")
    if seen.size == 0:
        return _not_applicable(task, "not applicable: no seen phrasings for this model", 0, unseen.size, seen_mean, unseen_mean)
    if unseen.size == 0:
        return _not_applicable(task, "not applicable: no unseen phrasings", seen.size, 0, seen_mean, unseen_mean)
    notes = []
    with warnings.catch_warnings():
        # scipy warns (and returns NaN) on degenerate input such as one phrasing per group.
        warnings.simplefilter("ignore", RuntimeWarning)
        if seen.size >= 2 and unseen.size >= 2:
            welch = sps.ttest_ind(seen, unseen, equal_var=False)
            welch_t, welch_p, welch_df = float(welch.statistic), float(welch.pvalue), float(welch.df)
        else:
            welch_t = welch_p = welch_df = math.nan
            notes.append("Welch's t and Cohen's d / Hedges' g need two phrasings per group")
        mwu = sps.mannwhitneyu(seen, unseen, alternative="two-sided")
        mwu_u, mwu_p = float(mwu.statistic), float(mwu.pvalue)
    rank_biserial = 2.0 * mwu_u / (seen.size * unseen.size) - 1.0
    d, g = cohens_d(seen, unseen)

    rng = make_rng(seed, "seen-unseen", task)
    seen_mask = np.array([p.seen for p in matrix.phrasings], dtype=bool)
    two_way = matrix.shape[1] > 0 and len(matrix.phrasings) == len(scored)
    if two_way:
        means = resampled_row_means(matrix.scores, rng, n_boot)
        seen_reps, unseen_reps = means[:, seen_mask], means[:, ~seen_mask]
    else:
        seen_reps = np.broadcast_to(seen, (n_boot, seen.size))
        unseen_reps = np.broadcast_to(unseen, (n_boot, unseen.size))
        notes.append("difference CI resamples phrasings only (no shared per-document results)")
    pick_s = np.take_along_axis(seen_reps, rng.integers(0, seen_reps.shape[1], (n_boot, seen_reps.shape[1])), axis=1)
    pick_u = np.take_along_axis(unseen_reps, rng.integers(0, unseen_reps.shape[1], (n_boot, unseen_reps.shape[1])), axis=1)
    diff_ci = percentile_ci(pick_s.mean(axis=1) - pick_u.mean(axis=1), level)

    paired_docs = matrix.shape[1] if two_way else 0
    paired_diff = wil_w = wil_p = paired_rb = math.nan
    if paired_docs:
        diffs = matrix.scores[seen_mask].mean(axis=0) - matrix.scores[~seen_mask].mean(axis=0)
        paired_diff = float(diffs.mean())
        paired_rb = matched_rank_biserial(diffs)
        if np.any(diffs != 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                wil = sps.wilcoxon(diffs)
            wil_w, wil_p = float(wil.statistic), float(wil.pvalue)
        else:
            notes.append("every document scores the same under seen and unseen phrasings: no paired test")
    else:
        notes.append("no paired per-document test (per-document results missing)")

    return SeenUnseen(
        task=task,
        applicable=True,
        note="; ".join(notes),
        n_seen=int(seen.size),
        n_unseen=int(unseen.size),
        seen_mean=seen_mean,
        unseen_mean=unseen_mean,
        diff=seen_mean - unseen_mean,
        diff_ci_low=diff_ci[0],
        diff_ci_high=diff_ci[1],
        welch_t=welch_t,
        welch_df=welch_df,
        welch_p=welch_p,
        welch_p_holm=math.nan,
        welch_q_bh=math.nan,
        mwu_u=mwu_u,
        mwu_p=mwu_p,
        mwu_p_holm=math.nan,
        mwu_q_bh=math.nan,
        cohens_d=d,
        hedges_g=g,
        rank_biserial=rank_biserial,
        paired_documents=paired_docs,
        paired_diff=paired_diff,
        wilcoxon_w=wil_w,
        wilcoxon_p=wil_p,
        wilcoxon_p_holm=math.nan,
        wilcoxon_q_bh=math.nan,
        paired_rank_biserial=paired_rb,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaNs stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg q-values (scipy's false_discovery_control); NaNs stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    mask = ~np.isnan(p)
    if mask.any():
        out[mask] = sps.false_discovery_control(p[mask], method="bh")
    return out.tolist()


def correct_across_tasks(results: Sequence[SeenUnseen]) -> list[SeenUnseen]:
    """Fill the Holm and Benjamini-Hochberg columns: one family of tests per test kind."""
    updates: list[dict[str, Any]] = [{} for _ in results]
    for test in TESTS:
        raw = [getattr(r, f"{test}_p") for r in results]
        for i, (h, q) in enumerate(zip(holm(raw), benjamini_hochberg(raw), strict=True)):
            updates[i][f"{test}_p_holm"] = h
            updates[i][f"{test}_q_bh"] = q
    return [r._replace(**u) for r, u in zip(results, updates, strict=True)]
