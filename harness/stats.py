"""Statistics over a run's sample rows: per phrasing, and across phrasings per task.

Everything here reads rows, never a model, so results made elsewhere can be reported too.
Standard deviations across phrasings use ddof=1 (the sample std: phrasings are a sample of
the ways the instruction could be written).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import NamedTuple

from harness.results import SampleRow


class PhrasingScore(NamedTuple):
    task: str
    instruction_id: str
    status: str
    seen: bool
    n: int
    score: float
    accuracy: float


class TaskSummary(NamedTuple):
    task: str
    phrasings: int
    documents: int
    mean: float
    std: float
    min: float
    max: float
    range: float
    best: str
    worst: str
    observed_mean: float
    unobserved_mean: float
    seen_mean: float
    unseen_mean: float


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else math.nan


def per_phrasing(rows: Iterable[SampleRow]) -> list[PhrasingScore]:
    """Mean score and accuracy of each (task, phrasing) over its documents."""
    groups: dict[tuple[str, str], list[SampleRow]] = {}
    for row in rows:
        groups.setdefault((row.task, row.instruction_id), []).append(row)
    out = []
    for (task, inst), members in sorted(groups.items()):
        first = members[0]
        out.append(
            PhrasingScore(
                task,
                inst,
                first.status,
                first.seen,
                len(members),
                _mean([r.score for r in members]),
                _mean([float(r.correct) for r in members]),
            )
        )
    return out


def per_task(scores: Iterable[PhrasingScore]) -> list[TaskSummary]:
    """Spread of the phrasing scores of each task."""
    groups: dict[str, list[PhrasingScore]] = {}
    for s in scores:
        groups.setdefault(s.task, []).append(s)
    out = []
    for task, members in sorted(groups.items()):
        values = [m.score for m in members]
        best = max(members, key=lambda m: (m.score, m.instruction_id))
        worst = min(members, key=lambda m: (m.score, m.instruction_id))
        out.append(
            TaskSummary(
                task=task,
                phrasings=len(members),
                documents=max(m.n for m in members),
                mean=_mean(values),
                std=_std(values),
                min=min(values),
                max=max(values),
                range=max(values) - min(values),
                best=best.instruction_id,
                worst=worst.instruction_id,
                observed_mean=_mean([m.score for m in members if m.status == "observed"]),
                unobserved_mean=_mean([m.score for m in members if m.status == "unobserved"]),
                seen_mean=_mean([m.score for m in members if m.seen]),
                unseen_mean=_mean([m.score for m in members if not m.seen]),
            )
        )
    return out
