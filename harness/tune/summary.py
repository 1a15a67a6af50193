"""The tuning experiment's comparison: per model (base and each method), per task and overall,
mean and std across seen and across unseen phrasings with CIs, and the seen-unseen gap with its
tests. Reads only run folders, like every report.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from harness.stats.across import summarise_task
from harness.stats.bootstrap import make_rng, percentile_ci
from harness.stats.data import PhrasingResults, build_matrix, group_by_task
from harness.stats.seen_unseen import compare_seen_unseen

OVERALL = "overall (macro)"


class GapRow(NamedTuple):
    model: str
    task: str
    n_seen: int
    n_unseen: int
    seen_mean: float
    seen_mean_ci: tuple[float, float]
    seen_std: float
    seen_std_ci: tuple[float, float]
    unseen_mean: float
    unseen_mean_ci: tuple[float, float]
    unseen_std: float
    unseen_std_ci: tuple[float, float]
    gap: float
    gap_ci: tuple[float, float]
    #: Welch's t across phrasings (per task); stratified permutation of the seen labels within
    #: tasks (overall).
    p_gap: float
    #: Paired per-document Wilcoxon (per task); NaN overall.
    p_paired: float


def _side(
    task: str, phrasings: Sequence[PhrasingResults], n_boot: int, seed: int
) -> tuple[float, tuple[float, float], float, tuple[float, float]]:
    if not phrasings:
        nan = (math.nan, math.nan)
        return math.nan, nan, math.nan, nan
    s = summarise_task(task, phrasings, build_matrix(task, phrasings), n_boot=n_boot, seed=seed)
    return s.mean, (s.mean_ci_low, s.mean_ci_high), s.std, (s.std_ci_low, s.std_ci_high)


def task_rows(model: str, phrasings: Sequence[PhrasingResults], *, n_boot: int = 2000, seed: int = 0) -> list[GapRow]:
    """One row per task and an overall (macro-averaged) row for one model's results."""
    valid = [p for p in phrasings if p.status != "control" and not math.isnan(p.score)]
    rows = []
    by_task = group_by_task(valid)
    for task, ps in by_task.items():
        seen = [p for p in ps if p.seen]
        unseen = [p for p in ps if not p.seen]
        test = compare_seen_unseen(task, ps, build_matrix(task, ps), n_boot=n_boot, seed=seed)
        rows.append(
            GapRow(
                model,
                task,
                len(seen),
                len(unseen),
                *_side(task, seen, n_boot, seed),
                *_side(task, unseen, n_boot, seed),
                test.diff,
                (test.diff_ci_low, test.diff_ci_high),
                test.welch_p,
                test.wilcoxon_p,
            )
        )
    if rows:
        rows.append(_overall(model, by_task, rows, n_boot, seed))
    return rows


def _overall(model: str, by_task: dict[str, list[PhrasingResults]], rows: list[GapRow], n_boot: int, seed: int) -> GapRow:
    """Macro averages over tasks; CIs from a two-way bootstrap within each task (documents,
    then phrasings within each side), the gap's p from permuting the seen labels within each task."""
    rng = make_rng(seed, "tune-overall", model)
    sides = {t: (np.array([p.score for p in ps if p.seen]), np.array([p.score for p in ps if not p.seen])) for t, ps in by_task.items()}
    usable = {t: (s, u) for t, (s, u) in sides.items() if s.size and u.size}
    matrices = {t: build_matrix(t, by_task[t]) for t in usable}
    reps: dict[str, list[float]] = {"seen_mean": [], "unseen_mean": [], "seen_std": [], "unseen_std": [], "gap": []}
    for _ in range(n_boot):
        sm, um, ss, us = [], [], [], []
        for t in usable:
            # Two-way, as per task: documents, then phrasings within each side.
            m = matrices[t]
            seen_mask = np.array([p.seen for p in m.phrasings], dtype=bool)
            means = (
                m.scores[:, rng.integers(0, m.shape[1], m.shape[1])].mean(axis=1)
                if m.shape[1]
                else np.array([p.score for p in m.phrasings])
            )
            s_rows, u_rows = means[seen_mask], means[~seen_mask]
            if not s_rows.size or not u_rows.size:
                continue
            bs, bu = rng.choice(s_rows, s_rows.size), rng.choice(u_rows, u_rows.size)
            sm.append(bs.mean())
            um.append(bu.mean())
            ss.append(bs.std(ddof=1) if bs.size > 1 else math.nan)
            us.append(bu.std(ddof=1) if bu.size > 1 else math.nan)
        reps["seen_mean"].append(float(np.mean(sm)) if sm else math.nan)
        reps["unseen_mean"].append(float(np.mean(um)) if um else math.nan)
        reps["seen_std"].append(float(np.nanmean(ss)) if ss and not np.all(np.isnan(ss)) else math.nan)
        reps["unseen_std"].append(float(np.nanmean(us)) if us and not np.all(np.isnan(us)) else math.nan)
        reps["gap"].append(float(np.mean(sm) - np.mean(um)) if sm else math.nan)

    def ci(key: str) -> tuple[float, float]:
        values = np.array(reps[key], dtype=float)
        values = values[~np.isnan(values)]
        return percentile_ci(values) if values.size else (math.nan, math.nan)

    def macro(values: list[float]) -> float:
        arr = np.array(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        return float(arr.mean()) if arr.size else math.nan

    task_rows_ = [r for r in rows if r.task in usable]
    gap = macro([r.gap for r in task_rows_])
    observed = abs(gap)
    hits = 0
    for _ in range(n_boot):
        diffs = []
        for s, u in usable.values():
            pooled = rng.permutation(np.concatenate([s, u]))
            diffs.append(pooled[: s.size].mean() - pooled[s.size :].mean())
        hits += abs(float(np.mean(diffs))) >= observed - 1e-12
    p = (hits + 1) / (n_boot + 1) if usable else math.nan
    return GapRow(
        model,
        OVERALL,
        sum(r.n_seen for r in rows),
        sum(r.n_unseen for r in rows),
        macro([r.seen_mean for r in rows]),
        ci("seen_mean"),
        macro([r.seen_std for r in rows]),
        ci("seen_std"),
        macro([r.unseen_mean for r in rows]),
        ci("unseen_mean"),
        macro([r.unseen_std for r in rows]),
        ci("unseen_std"),
        gap,
        ci("gap"),
        p,
        math.nan,
    )


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ci(pair: tuple[float, float]) -> str:
    return "–" if any(math.isnan(v) for v in pair) else f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def render_table(rows: Sequence[GapRow]) -> str:
    """The comparison as one Markdown table (models in the order given, tasks then overall)."""
    lines = [
        "| model | task | seen / unseen | seen mean [95% CI] | seen std [95% CI] | unseen mean [95% CI] | unseen std [95% CI] "
        "| gap seen−unseen [95% CI] | p (gap) | p (paired) |",
        "|---|---|---|---|---|---|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.task} | {r.n_seen} / {r.n_unseen} | {_f(r.seen_mean)} {_ci(r.seen_mean_ci)} | "
            f"{_f(r.seen_std)} {_ci(r.seen_std_ci)} | {_f(r.unseen_mean)} {_ci(r.unseen_mean_ci)} | "
            f"{_f(r.unseen_std)} {_ci(r.unseen_std_ci)} | {_f(r.gap)} {_ci(r.gap_ci)} | {_p(r.p_gap)} | {_p(r.p_paired)} |"
        )
    return "\n".join(lines)


def write_csv(rows: Sequence[GapRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "model",
                "task",
                "n_seen",
                "n_unseen",
                "seen_mean",
                "seen_mean_ci_low",
                "seen_mean_ci_high",
                "seen_std",
                "seen_std_ci_low",
                "seen_std_ci_high",
                "unseen_mean",
                "unseen_mean_ci_low",
                "unseen_mean_ci_high",
                "unseen_std",
                "unseen_std_ci_low",
                "unseen_std_ci_high",
                "gap",
                "gap_ci_low",
                "gap_ci_high",
                "p_gap",
                "p_paired",
            ]
        )
        for r in rows:
            writer.writerow(
                [
                    r.model,
                    r.task,
                    r.n_seen,
                    r.n_unseen,
                    r.seen_mean,
                    *r.seen_mean_ci,
                    r.seen_std,
                    *r.seen_std_ci,
                    r.unseen_mean,
                    *r.unseen_mean_ci,
                    r.unseen_std,
                    *r.unseen_std_ci,
                    r.gap,
                    *r.gap_ci,
                    r.p_gap,
                    r.p_paired,
                ]
            )


def plot_gaps(rows: Sequence[GapRow], path: Path) -> None:
    """Seen and unseen means (overall, with CIs) per model, and each task's gap as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    overall = {r.model: r for r in rows if r.task == OVERALL}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(models))
    for offset, side, colour in ((-0.12, "seen", "tab:blue"), (0.12, "unseen", "tab:orange")):
        means = [getattr(overall[m], f"{side}_mean") if m in overall else math.nan for m in models]
        cis = [getattr(overall[m], f"{side}_mean_ci") if m in overall else (math.nan, math.nan) for m in models]
        err = np.array([[max(0.0, mu - lo), max(0.0, hi - mu)] for mu, (lo, hi) in zip(means, cis, strict=True)]).T
        left.errorbar(x + offset, means, yerr=np.nan_to_num(err), fmt="o", capsize=4, color=colour, label=f"{side} phrasings")
    left.set_xticks(x, models, rotation=20)
    left.set_ylabel("mean score across phrasings (macro over tasks)")
    left.legend()
    tasks = sorted({r.task for r in rows if r.task != OVERALL})
    for k, task in enumerate(tasks):
        gaps = {r.model: r.gap for r in rows if r.task == task}
        right.plot(x + (k - len(tasks) / 2) * 0.05, [gaps.get(m, math.nan) for m in models], "o", alpha=0.7, label=task)
    overall_gaps = [overall[m].gap if m in overall else math.nan for m in models]
    right.plot(x, overall_gaps, "k_", markersize=20, label=OVERALL)
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xticks(x, models, rotation=20)
    right.set_ylabel("seen − unseen")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
