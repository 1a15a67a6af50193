"""Comparing models across phrasings: spread, rank stability, and who wins under a random phrasing.

Only phrasings that both (or all) models ran are compared, matched by phrasing id; a phrasing
whose text hash differs between runs is left out (it is not the same phrasing any more).

- Rank stability: each shared phrasing ranks the models by score. Kendall's tau-b between
  every pair of phrasings' rankings (mean and minimum), and Kendall's W (coefficient of
  concordance, phrasings as raters, tie-corrected) overall. W = 1: every phrasing ranks the
  models the same way.
- P(A beats B): the share of shared phrasings on which A scores higher than B (ties count
  half), i.e. the probability that A wins under a randomly drawn phrasing. Its 95% CI is a
  percentile bootstrap resampling phrasings and, where both models scored the same
  documents, documents too (the same documents for both models: a paired comparison).
- Rank flips: phrasings under which the pair's order is the reverse of their order by mean.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as sps

from harness.stats.bootstrap import DEFAULT_BOOT, make_rng, percentile_ci, resampled_row_means
from harness.stats.data import PhrasingResults, build_matrix, group_by_task

TWO_WAY = "two-way (phrasings x documents)"
PHRASINGS_ONLY = "phrasings only"


class ModelResults(NamedTuple):
    """One model's results: a label and its phrasings (one run folder or one imported model)."""

    label: str
    phrasings: Sequence[PhrasingResults]


class ModelTaskStats(NamedTuple):
    task: str
    model: str
    #: Phrasings the statistics use: those shared by all models, else the model's own.
    phrasings: int
    shared: bool
    mean: float
    std: float
    min: float
    max: float
    #: 1 = best mean on this task (ties share the smaller rank).
    rank: int


class RankStability(NamedTuple):
    task: str
    models: int
    shared_phrasings: int
    kendall_w: float
    mean_tau: float
    min_tau: float
    tau_pairs: int


class PairComparison(NamedTuple):
    task: str
    model_a: str
    model_b: str
    shared_phrasings: int
    mean_a: float
    mean_b: float
    p_a_beats_b: float
    ci_low: float
    ci_high: float
    ci_method: str
    a_wins: int
    b_wins: int
    ties: int
    #: Phrasings whose order of the two models is the reverse of the order by mean.
    flips: int
    flipped: bool
    flipped_phrasings: str


class Comparison(NamedTuple):
    models: list[str]
    per_model: list[ModelTaskStats]
    stability: list[RankStability]
    overall: RankStability
    pairs: list[PairComparison]
    notes: list[str]


def kendalls_w(scores: np.ndarray) -> float:
    """Kendall's coefficient of concordance with the tie correction.

    Args:
        scores: raters x items (here phrasings x models); higher is better.

    Returns:
        W in [0, 1]; NaN with fewer than two raters or items, or when every rater ties all items.
    """
    m, n = scores.shape
    if m < 2 or n < 2:
        return math.nan
    ranks = sps.rankdata(scores, axis=1)
    totals = ranks.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    denom = m**2 * (n**3 - n) - m * ties
    return 12.0 * s / denom if denom > 0 else math.nan


def pairwise_tau(scores: np.ndarray) -> list[float]:
    """Kendall's tau-b between every pair of raters' scores (rows); undefined pairs left out.

    Vectorised: with s_r the signs of rater r's item differences over all item pairs,
    tau-b(r, q) = s_r . s_q / sqrt(nonzero(s_r) nonzero(s_q)), which is scipy's tau-b
    (tied pairs add nothing to concordant minus discordant and drop out of the normaliser).
    """
    m, n = scores.shape
    if m < 2 or n < 2:
        return []
    i, j = np.triu_indices(n, k=1)
    signs = np.sign(scores[:, i] - scores[:, j])
    nonzero = (signs != 0).sum(axis=1).astype(float)
    dots = signs @ signs.T
    r, q = np.triu_indices(m, k=1)
    denom = np.sqrt(nonzero[r] * nonzero[q])
    ok = denom > 0
    return (dots[r, q][ok] / denom[ok]).tolist()


def _stability(task: str, scores: np.ndarray) -> RankStability:
    taus = pairwise_tau(scores) if scores.shape[1] >= 2 else []
    return RankStability(
        task,
        scores.shape[1],
        scores.shape[0],
        kendalls_w(scores),
        float(np.mean(taus)) if taus else math.nan,
        float(np.min(taus)) if taus else math.nan,
        len(taus),
    )


def _shared_ids(tables: Sequence[dict[str, PhrasingResults]]) -> tuple[list[str], list[str]]:
    """Phrasing ids every table holds with a score and the same text hash; and those left out for a changed text."""
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    shared: list[str] = []
    changed: list[str] = []
    for pid in sorted(common):
        hashes = {t[pid].sha256 for t in tables if t[pid].sha256}
        (changed if len(hashes) > 1 else shared).append(pid)
    return shared, changed


def p_beats(a: np.ndarray, b: np.ndarray) -> float:
    """Share of positions where a > b, ties counting half."""
    if a.size == 0:
        return math.nan
    return float(np.mean((a > b) + 0.5 * (a == b)))


def _pair(
    task: str,
    label_a: str,
    label_b: str,
    table_a: dict[str, PhrasingResults],
    table_b: dict[str, PhrasingResults],
    rng: np.random.Generator,
    n_boot: int,
    level: float,
) -> PairComparison:
    ids, _ = _shared_ids([table_a, table_b])
    a = np.array([table_a[i].score for i in ids])
    b = np.array([table_b[i].score for i in ids])
    mean_a = float(a.mean()) if ids else math.nan
    mean_b = float(b.mean()) if ids else math.nan
    # Resample documents too where both models scored the same documents under every shared phrasing.
    mat_a = build_matrix(task, [table_a[i] for i in ids])
    mat_b = build_matrix(task, [table_b[i] for i in ids])
    docs = [d for d in mat_a.doc_ids if d in set(mat_b.doc_ids)]
    method = PHRASINGS_ONLY
    if ids and docs and len(mat_a.phrasings) == len(ids) and len(mat_b.phrasings) == len(ids):
        cols_a = [mat_a.doc_ids.index(d) for d in docs]
        cols_b = [mat_b.doc_ids.index(d) for d in docs]
        both = np.vstack([mat_a.scores[:, cols_a], mat_b.scores[:, cols_b]])
        means = resampled_row_means(both, rng, n_boot)
        reps_a, reps_b = means[:, : len(ids)], means[:, len(ids) :]
        method = TWO_WAY
    else:
        reps_a = np.broadcast_to(a, (n_boot, a.size))
        reps_b = np.broadcast_to(b, (n_boot, b.size))
    if ids:
        pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        ra, rb = np.take_along_axis(reps_a, pick, axis=1), np.take_along_axis(reps_b, pick, axis=1)
        ci = percentile_ci(np.mean((ra > rb) + 0.5 * (ra == rb), axis=1), level)
    else:
        ci = (math.nan, math.nan)
    order = np.sign(mean_a - mean_b) if ids else 0.0
    flipped_ids = [i for i, x, y in zip(ids, a, b, strict=True) if order != 0 and np.sign(x - y) == -order]
    return PairComparison(
        task=task,
        model_a=label_a,
        model_b=label_b,
        shared_phrasings=len(ids),
        mean_a=mean_a,
        mean_b=mean_b,
        p_a_beats_b=p_beats(a, b),
        ci_low=ci[0],
        ci_high=ci[1],
        ci_method=method if ids else "",
        a_wins=int((a > b).sum()),
        b_wins=int((a < b).sum()),
        ties=int((a == b).sum()),
        flips=len(flipped_ids),
        flipped=bool(flipped_ids),
        flipped_phrasings=";".join(flipped_ids),
    )


def compare_models(models: Sequence[ModelResults], *, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = 0.95) -> Comparison:
    """Compare two or more models task by task over the phrasings they share.

    Args:
        models: each model's label (unique) and phrasings.
        n_boot: bootstrap replicates for the P(A beats B) intervals.
        seed: base seed; streams are keyed by task and model pair.
        level: confidence level.

    Returns:
        Per task and model: mean and spread; per task: rank stability; per task and model pair:
        P(A beats B) with CI and rank flips; and an overall Kendall's W over every (task, phrasing).
    """
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique, got {labels}")
    tables: list[dict[str, dict[str, PhrasingResults]]] = []
    for m in models:
        # Control phrasings (harness/controls.py) are no phrasing of the task: never compared.
        by_task = group_by_task(p for p in m.phrasings if p.status != "control")
        tables.append({t: {p.instruction_id: p for p in ps if not math.isnan(p.score)} for t, ps in by_task.items()})
    tasks = sorted({t for table in tables for t in table})
    per_model: list[ModelTaskStats] = []
    stability: list[RankStability] = []
    pairs: list[PairComparison] = []
    notes: list[str] = []
    overall_rows: list[np.ndarray] = []
    for task in tasks:
        present = [(label, table[task]) for label, table in zip(labels, tables, strict=True) if table.get(task)]
        missing = [label for label, table in zip(labels, tables, strict=True) if not table.get(task)]
        if missing:
            notes.append(f"{task}: no results for {', '.join(missing)}")
        shared, changed = _shared_ids([t for _, t in present])
        if changed:
            notes.append(f"{task}: left out {len(changed)} phrasing(s) whose text differs between runs: {', '.join(changed)}")
        means = []
        for label, table in present:
            ids = shared or sorted(table)
            values = np.array([table[i].score for i in ids])
            means.append(float(values.mean()))
            per_model.append(
                ModelTaskStats(
                    task,
                    label,
                    len(ids),
                    bool(shared),
                    float(values.mean()),
                    float(values.std(ddof=1)) if len(values) >= 2 else math.nan,
                    float(values.min()),
                    float(values.max()),
                    0,
                )
            )
        ranks = sps.rankdata([-m for m in means], method="min") if means else []
        start = len(per_model) - len(present)
        for k, r in enumerate(ranks):
            per_model[start + k] = per_model[start + k]._replace(rank=int(r))
        if len(present) >= 2 and shared:
            matrix = np.array([[table[i].score for _, table in present] for i in shared])
            stability.append(_stability(task, matrix))
            if len(present) == len(models):
                overall_rows.extend(matrix)
        else:
            stability.append(RankStability(task, len(present), len(shared), math.nan, math.nan, math.nan, 0))
        for (la, ta), (lb, tb) in itertools.combinations(present, 2):
            pairs.append(_pair(task, la, lb, ta, tb, make_rng(seed, "compare", task, la, lb), n_boot, level))
    overall = (
        _stability("(all tasks)", np.array(overall_rows))
        if overall_rows
        else RankStability("(all tasks)", len(models), 0, math.nan, math.nan, math.nan, 0)
    )
    if len(models) == 2:
        notes.append("with two models Kendall's tau between two phrasings is +1 (same order) or -1 (flipped)")
    return Comparison(labels, per_model, stability, overall, pairs, notes)
