"""Where a report's results come from: a run folder, or results imported from elsewhere.

Both become a :class:`ResultSource`, so every report and comparison is computed the same way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from harness.report.chance import answer_strata_from_rows, chance_from_rows, fixed_answers_from_rows
from harness.results import RunError, RunManifest, SampleRow, iter_samples, read_manifest
from harness.stats.data import PhrasingResults, TaskInfo, default_task_info, phrasings_from_rows
from harness.stats.label_bias import FixedAnswer

#: Longest setting value used in a model label.
LABEL_VALUE_MAX = 24


@dataclass(frozen=True)
class ResultSource:
    """One model's results, ready for the statistics.

    Attributes:
        model: the model's display name.
        origin: what the results were read from (run id, or the imported files).
        phrasings: per (task, phrasing) results.
        tasks: every task the source covers, including tasks without results.
        manifest: the run manifest when the source is a run folder.
        details: extra lines describing the source (import options, formats).
    """

    model: str
    origin: str
    phrasings: list[PhrasingResults]
    tasks: list[str]
    manifest: RunManifest | None = None
    details: list[str] = field(default_factory=list)
    #: Backend arguments and run settings that tell two runs of one model apart in labels.
    settings: dict[str, str] = field(default_factory=dict)
    #: Family and category per task as the run recorded them (run.json); tasks missing here
    #: are looked up in today's registry (:func:`registry_task_info`).
    task_info: dict[str, TaskInfo] = field(default_factory=dict)
    #: Per task, the expected score of an option picked at random (multiple-choice runs only).
    chance: dict[str, float] = field(default_factory=dict)
    #: Per task, the best score of always giving the same option (multiple-choice runs only).
    fixed_answers: dict[str, FixedAnswer] = field(default_factory=dict)
    #: Per task, each document's right option index (multiple-choice runs only): the strata a
    #: budgeted estimate is fitted in (:func:`harness.report.chance.answer_strata_from_rows`).
    answer_strata: dict[str, dict[str, int]] = field(default_factory=dict)

    def info_of(self, task: str) -> TaskInfo:
        """A task's family and category: as recorded by the run, else from the registry or the id."""
        return self.task_info.get(task) or registry_task_info(task)

    @property
    def samples(self) -> int:
        """Scored (phrasing, document) cells, or reported documents for aggregate imports."""
        return sum(p.n for p in self.phrasings)


def load_run(run_dir: Path, force: bool = False) -> ResultSource:
    """Read a run folder (run.json + samples.jsonl) into a :class:`ResultSource`.

    A folder whose rows contradict its run.json (:func:`harness.damage.find_damage`) is
    refused with one line per problem; with ``force`` it is read, and marked damaged.
    """
    from harness.damage import damage_message, find_damage

    manifest = read_manifest(run_dir)
    problems = find_damage(run_dir, manifest)
    if problems and not force:
        raise RunError(damage_message(run_dir, problems, "`irh report --force` reports it anyway, marked damaged"))
    rows = list(iter_samples(run_dir))
    phrasings = phrasings_from_rows(rows)
    args = {str(k): str(v) for k, v in (manifest.model.get("args") or {}).items()}
    args["placement"] = manifest.placement
    # Family and category as they were when the run was made: editing a task file later must not regroup it.
    recorded = {t: TaskInfo(r.family, r.category or "") for t, r in manifest.tasks.items() if r.family is not None}
    unrecorded = sorted(t for t in manifest.tasks if t not in recorded)
    details = (
        [f"family and category of {len(unrecorded)} task(s) from today's tasks/*.yaml (run.json predates recording them)"]
        if unrecorded
        else []
    )
    details += scoring_notes(rows)
    if problems:
        details.insert(0, f"DAMAGED RUN, reported with --force: {len(problems)} problem(s) in samples.jsonl, first: {problems[0]}")
    return ResultSource(
        model=str(manifest.model.get("name") or manifest.model.get("backend") or "?"),
        origin=manifest.run_id,
        phrasings=phrasings,
        tasks=sorted(manifest.tasks),
        manifest=manifest,
        details=details,
        settings=args,
        task_info=recorded,
        chance=chance_from_rows(rows),
        fixed_answers=fixed_answers_from_rows(rows),
        answer_strata=answer_strata_from_rows(rows),
    )


def scoring_notes(rows: list[SampleRow]) -> list[str]:
    """Say how answers were scored wherever some were generated (chat endpoints) rather than
    ranked by loglikelihood, and which tasks mix the two, so no statistic mixes them unsaid."""
    by_task: dict[str, dict[str, int]] = {}
    for row in rows:
        if not row.options:
            continue  # a generation task's answers are always generated; nothing to say
        counts = by_task.setdefault(row.task, {})
        counts[str(row.scoring)] = counts.get(str(row.scoring), 0) + 1
    notes = []
    for task, counts in sorted(by_task.items()):
        generated = counts.get("generated", 0)
        if not generated:
            continue
        unparsed = sum(1 for r in rows if r.task == task and r.options and r.scoring == "generated" and r.prediction is None)
        mixed = " mixed with loglikelihood-ranked rows in the same statistics" if counts.get("loglikelihood") else ""
        notes.append(
            f"{task}: {generated} answer(s) scored by generation and answer parsing (chat endpoint, no prompt "
            f"logprobs){mixed}; {unparsed} named no option and count as wrong"
        )
    return notes


@functools.lru_cache(maxsize=1)
def _registry_tasks() -> dict[str, TaskInfo]:
    # Only tasks/*.yaml, not the phrasings: cheap, and a broken phrasing file must not stop a report.
    from harness.registry import Problem, default_root, load_tasks

    problems: list[Problem] = []
    try:
        specs = load_tasks(default_root(), problems)
    except Exception:  # the registry is optional here: reports must work on foreign results
        return {}
    return {tid: TaskInfo(spec.family, spec.category) for tid, spec in specs.items()}


def registry_task_info(task: str) -> TaskInfo:
    """Family and category from the registry's tasks/ when it knows the task, else from the id."""
    return _registry_tasks().get(task) or default_task_info(task)


def unique_labels(sources: list[ResultSource]) -> list[str]:
    """Display names for several sources; equal model names are told apart by their differing
    backend arguments (``irh-fake [seed=7]``), else by origin."""
    names = [s.model for s in sources]
    labels = []
    for s in sources:
        if names.count(s.model) == 1:
            labels.append(s.model)
            continue
        twins = [t for t in sources if t.model == s.model]
        keys = sorted({k for t in twins for k in t.settings})
        differing = [k for k in keys if len({t.settings.get(k) for t in twins}) > 1]
        # Long values (paths) make unreadable labels; the run id is shorter and still unique.
        differing = [k for k in differing if all(len(t.settings.get(k, "")) <= LABEL_VALUE_MAX for t in twins)]
        extra = ",".join(f"{k}={s.settings.get(k, 'default')}" for k in differing)
        labels.append(f"{s.model} [{extra or s.origin}]")
    # Still equal (e.g. the same args twice): fall back to the origin, which is unique per run.
    return [f"{lab} [{s.origin}]" if labels.count(lab) > 1 else lab for lab, s in zip(labels, sources, strict=True)]
