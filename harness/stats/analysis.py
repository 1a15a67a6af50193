"""Every per-run statistic in one call: what a report needs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.stats.across import GroupSummary, TaskSummary, summarise_groups, summarise_task
from harness.stats.bootstrap import DEFAULT_BOOT
from harness.stats.data import PhrasingResults, TaskInfo, TaskMatrix, build_matrix, default_task_info, group_by_task
from harness.stats.label_bias import FixedAnswer, LabelBias, label_bias_by_task
from harness.stats.per_phrasing import PhrasingScore, score_phrasings
from harness.stats.seen_unseen import SeenUnseen, compare_seen_unseen, correct_across_tasks
from harness.stats.variance import VarianceDecomposition, decompose_task


@dataclass(frozen=True)
class Analysis:
    """The statistics of one model's results, plus the inputs the plots need."""

    phrasings: list[PhrasingScore]
    tasks: list[TaskSummary]
    families: list[GroupSummary]
    categories: list[GroupSummary]
    seen_unseen: list[SeenUnseen]
    variance: list[VarianceDecomposition]
    by_task: dict[str, list[PhrasingResults]]
    matrices: dict[str, TaskMatrix]
    #: Control phrasings' own scores: outside every other statistic.
    controls: list[PhrasingScore] = field(default_factory=list)
    #: Per task, parallel to ``tasks``: chance, constant-answer baseline, informative phrasings' statistics.
    label_bias: list[LabelBias] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_boot: int = DEFAULT_BOOT
    seed: int = 0
    level: float = 0.95

    def degenerate_ids(self, task: str) -> set[str]:
        """The phrasings of ``task`` flagged degenerate (:mod:`harness.stats.label_bias`)."""
        return {p.instruction_id for p in [*self.phrasings, *self.controls] if p.task == task and p.degenerate}


def analyse(
    phrasings: Iterable[PhrasingResults],
    tasks: Sequence[str] = (),
    task_info: Callable[[str], TaskInfo] = default_task_info,
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    level: float = 0.95,
    chance: Mapping[str, float] | None = None,
    fixed_answers: Mapping[str, FixedAnswer] | None = None,
) -> Analysis:
    """Compute per-phrasing, across-phrasing, seen/unseen and variance statistics.

    Args:
        phrasings: the results, per document or per phrasing.
        tasks: tasks to report even when they have no results (a run's planned tasks).
        task_info: family and category of a task id.
        n_boot: bootstrap replicates (small numbers keep tests fast).
        seed: base seed for every bootstrap.
        level: confidence level of every interval.
        chance: per task, the expected score of a random option (multiple-choice runs).
        fixed_answers: per task, the best score of always giving one answer (the constant-answer baseline).

    Returns:
        The :class:`Analysis`; ``notes`` says what could not be computed and why.
    """
    phrasings = list(phrasings)
    # Control phrasings (harness/controls.py) are scored alone and shown beside the range;
    # no across-phrasing, seen/unseen or variance statistic counts them.
    controls = [p for p in phrasings if p.status == "control"]
    by_task = group_by_task([p for p in phrasings if p.status != "control"], tasks)
    matrices = {t: build_matrix(t, ps) for t, ps in by_task.items()}
    opts = {"n_boot": n_boot, "seed": seed, "level": level}
    summaries = [summarise_task(t, ps, matrices[t], task_info(t), **opts) for t, ps in by_task.items()]  # type: ignore[arg-type]
    seen = correct_across_tasks([compare_seen_unseen(t, ps, matrices[t], **opts) for t, ps in by_task.items()])  # type: ignore[arg-type]
    notes = []
    for t, ps in by_task.items():
        if not ps or all(p.n == 0 for p in ps):
            notes.append(f"{t}: no documents scored; its statistics are empty")
            continue
        aggregate = [p for p in ps if not p.per_document]
        if aggregate:
            notes.append(
                f"{t}: {len(aggregate)} of {len(ps)} phrasing(s) have a per-phrasing score only; per-document statistics "
                "(phrasing CIs, consistency, variance decomposition, paired test) are not available and CIs of the "
                "mean and std resample phrasings only"
            )
        nan_cells = sum(int((~p.valid).sum()) for p in ps if p.per_document)
        if nan_cells:
            notes.append(
                f"{t}: {nan_cells} NaN score(s) left out; per-document statistics use the {matrices[t].shape[1]} "
                "document(s) every phrasing scored"
            )
        elif matrices[t].dropped_documents:
            notes.append(
                f"{t}: {matrices[t].dropped_documents} document(s) not scored under every phrasing are left out of per-document statistics"
            )
        most = max(p.n for p in ps)
        fewer = sorted((p for p in ps if 0 < p.n < most), key=lambda p: p.instruction_id)
        if fewer:
            # Such a score is over other documents than the rest: say which, so that no one
            # compares it with the others as if they were paired.
            shown = ", ".join(f"{p.instruction_id} (n={p.n})" for p in fewer[:6]) + (", ..." if len(fewer) > 6 else "")
            notes.append(
                f"{t}: {len(fewer)} phrasing(s) scored on fewer than the {most} documents of the task's most-scored one, each "
                f"score over its own documents (a budget's sample, or a phrasing that shows a fixed number of options, scored "
                f"only on the documents with that many): {shown}"
            )
        if any(np.isnan(p.score) for p in ps):
            notes.append(f"{t}: {sum(1 for p in ps if np.isnan(p.score))} phrasing(s) without any valid score are left out")
    label_bias = label_bias_by_task(by_task, chance, fixed_answers)
    notes += [f"{b.task}: {b.note}" for b in label_bias if b.degenerate_phrasings]
    return Analysis(
        phrasings=score_phrasings([p for ps in by_task.values() for p in ps], **opts),  # type: ignore[arg-type]
        tasks=summaries,
        families=summarise_groups(summaries, by_task, "family"),
        categories=summarise_groups(summaries, by_task, "category"),
        seen_unseen=seen,
        variance=[decompose_task(matrices[t]) for t in by_task],
        by_task=by_task,
        matrices=matrices,
        controls=score_phrasings(sorted(controls, key=lambda p: (p.task, p.instruction_id)), **opts),  # type: ignore[arg-type]
        label_bias=label_bias,
        notes=notes,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
