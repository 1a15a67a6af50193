"""The numerical noise floor beside the wording effects (run.json's ``noise_check``,
harness/noise.py): per task, how many predictions flip when the same cells are scored in
float32, and which across-phrasing differences are no larger than that."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

from harness.report.format import fmt, fmt_ci, md_text
from harness.results import RunManifest, TaskNoise
from harness.stats.analysis import Analysis

WITHIN = "within numerical noise"
BEYOND = "larger than numerical noise"


@dataclass(frozen=True)
class NoiseRow:
    task: str
    #: run.json's record of the task's check.
    noise: TaskNoise
    #: The task's across-phrasing range (best minus worst phrasing) and how many pairs of
    #: phrasings differ by more than the floor.
    range: float
    pairs_beyond: int
    pairs: int
    #: Seen minus unseen mean, where the task has both.
    seen_unseen_diff: float | None

    @property
    def floor(self) -> float:
        return self.noise.floor

    @property
    def verdict(self) -> str:
        return WITHIN if not self.range > self.floor else BEYOND

    @property
    def seen_unseen_verdict(self) -> str:
        if self.seen_unseen_diff is None or math.isnan(self.seen_unseen_diff):
            return "–"
        return WITHIN if abs(self.seen_unseen_diff) <= self.floor else BEYOND


def noise_rows(manifest: RunManifest | None, analysis: Analysis) -> list[NoiseRow]:
    """One row per task the run's noise check covered (none without a check)."""
    check = manifest.noise_check if manifest is not None else None
    if check is None or check.status != "done":
        return []
    summaries = {t.task: t for t in analysis.tasks}
    scores: dict[str, list[float]] = {}
    for p in analysis.phrasings:
        scores.setdefault(p.task, []).append(p.score)
    seen_unseen = {s.task: s.diff for s in analysis.seen_unseen if s.applicable}
    rows = []
    for task, noise in check.tasks.items():
        floor = noise.floor
        values = [v for v in scores.get(task, []) if not math.isnan(v)]
        pairs = list(combinations(values, 2))
        summary = summaries.get(task)
        rows.append(
            NoiseRow(
                task=task,
                noise=noise,
                range=summary.range if summary is not None else float("nan"),
                pairs_beyond=sum(abs(a - b) > floor for a, b in pairs),
                pairs=len(pairs),
                seen_unseen_diff=seen_unseen.get(task),
            )
        )
    return rows


def noise_status(manifest: RunManifest | None) -> str:
    """One line on the check: what it compared, or why there was none."""
    if manifest is None:
        return "no noise check: the results were imported, not run here"
    check = manifest.noise_check
    if check is None:
        if manifest.noise_check_fraction <= 0:
            return "no noise check: the run was made with --noise-check 0 or before the check existed"
        return "no noise check yet: `irh run --resume` on the run folder makes it"
    if check.status != "done":
        return f"no noise check: {check.status}"
    return (
        f"{check.fraction:g} of each task's cells (at least 50), seeded, scored again in {check.reference_dtype} against the run's "
        f"{check.run_dtype}; rows in noise_check.jsonl"
    )


def noise_lines(manifest: RunManifest | None, analysis: Analysis) -> list[str]:
    """The report.md section."""
    rows = noise_rows(manifest, analysis)
    lines = ["", "## Numerical noise floor", "", f"- {md_text(noise_status(manifest))}"]
    if not rows:
        return lines
    lines += [
        "- floor: the upper end of the 95% CI (Wilson) of the share of predictions that flip. A difference between two "
        "phrasings' scores no larger than it can be precision alone.",
        "",
        "| task | cells | flips | flip share | flip CI | floor | accuracy (run) | accuracy (float32) | max \\|Δ loglik\\| "
        "| range across phrasings | phrasing pairs beyond floor | verdict | seen − unseen |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        n = r.noise
        lines.append(
            f"| {md_text(r.task)} | {n.cells} | {n.flips} | {fmt(n.flip_share)} | {fmt_ci(*n.flip_ci)} | {fmt(r.floor)} | "
            f"{fmt(n.accuracy_run)} | {fmt(n.accuracy_reference)} | {fmt(n.max_abs_loglikelihood_diff)} | {fmt(r.range)} | "
            f"{r.pairs_beyond} of {r.pairs} | {r.verdict} | {r.seen_unseen_verdict} |"
        )
    return lines
