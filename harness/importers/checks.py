"""The gates every imported phrasing passes before it reaches the registry.

The same rules as for written phrasings (harness/registry.py): its target names tasks we
have, its placeholders are fields of those tasks, a verbaliser names exactly their labels,
and it renders on a document of each task. On top, imported phrasings that repeat an
earlier one (same text, or near-duplicate within the same tasks) are skipped, so that a
collection's many copies of one template do not fail `irh validate`; two distinct entries of
one source's own listing (``RegisteredInstruction.upstream``) are never repeats of each other.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from harness.importers.result import ImportResult
from harness.registry import NEAR_DUPLICATE_THRESHOLD, RegisteredInstruction, distinct_upstream
from harness.render import TemplateProblem, allowed_fields, render_prompt, template_fields
from harness.schema import TaskSpec, normalise_text

#: How many options a synthetic document gets when the task has no fixed labels (MMLU has 4).
SYNTHETIC_OPTIONS = 4


def synthetic_document(task: TaskSpec, options: int = SYNTHETIC_OPTIONS) -> dict[str, Any]:
    """A made-up document with every field of ``task``, to check that a phrasing renders.

    Args:
        task: the task.
        options: how many options, where the task has no fixed labels.
    """
    fields = {name: f"[{name} of a {task.id} document]" for name in task.fields if name != "choices"}
    choices = list(task.labels) if task.labels else [f"[option {i + 1}]" for i in range(options)]
    return {
        "id": "synthetic-0",
        "group": "",
        "fields": fields,
        "choices": choices,
        "scores": [1.0] + [0.0] * (len(choices) - 1),
        "targets": ["[target]"],
    }


_OPTION_INDEX = re.compile(r"choices\[(\d+)\]")


def options_shown(text: str) -> int:
    """How many options a template shows by index (``choices[10]``: 11), at least the default.

    A template written for a task whose documents all have 11 options is checked on an
    11-option document.
    """
    return max([SYNTHETIC_OPTIONS] + [int(i) + 1 for i in _OPTION_INDEX.findall(text)])


def target_tasks(entry: RegisteredInstruction, tasks: Mapping[str, TaskSpec]) -> list[TaskSpec]:
    """Tasks the entry's target names (before any field check)."""
    if entry.target_kind == "task":
        return [tasks[entry.target]] if entry.target in tasks else []
    if entry.target_kind == "family":
        return [t for t in tasks.values() if t.family == entry.target]
    return [t for t in tasks.values() if t.category == entry.target]


def applicable_tasks(entry: RegisteredInstruction, tasks: Mapping[str, TaskSpec]) -> list[TaskSpec]:
    """Tasks the entry applies to: its targets whose fields hold all its placeholders."""
    try:
        used = template_fields(entry.instruction.text)
    except TemplateProblem:
        return []
    return [t for t in target_tasks(entry, tasks) if used <= allowed_fields(t)]


def check_phrasing(entry: RegisteredInstruction, tasks: Mapping[str, TaskSpec]) -> str | None:
    """Why ``entry`` cannot join the registry, or None when it can."""
    inst = entry.instruction
    targets = target_tasks(entry, tasks)
    if not targets:
        return f"no task matches {entry.target_kind} {entry.target!r}"
    try:
        used = template_fields(inst.text)
    except TemplateProblem as exc:
        return f"template does not parse: {exc}"
    fitting = [t for t in targets if used <= allowed_fields(t)]
    if entry.target_kind == "category":
        if not fitting:
            return f"placeholders {sorted(used)} fit no task of category {entry.target}"
    elif len(fitting) != len(targets):
        bad = next(t for t in targets if t not in fitting)
        return f"placeholder(s) {sorted(used - allowed_fields(bad))} are not fields of {bad.id}"
    for task in fitting:
        if task.output_type == "generate_until" and inst.answer_choices != "text":
            return f"answer_choices only applies to multiple-choice tasks ({task.id} generates)"
        if isinstance(inst.answer_choices, dict):
            if not task.labels:
                return f"a verbaliser needs fixed labels; {task.id} has none"
            if set(inst.answer_choices) != set(task.labels):
                return f"verbaliser keys {sorted(inst.answer_choices)} are not the labels of {task.id} {task.labels}"
        if inst.until is not None and task.output_type != "generate_until":
            return "`until` only applies to generation tasks"
        try:
            render_prompt(inst, task, synthetic_document(task, options_shown(inst.text)))
        except (TemplateProblem, KeyError, IndexError, TypeError, ValueError) as exc:
            return f"does not render on a {task.id} document: {exc}"
    return None


def check_result(result: ImportResult, tasks: Mapping[str, TaskSpec]) -> ImportResult:
    """Move every phrasing of ``result`` that fails :func:`check_phrasing` to its skipped list."""
    kept: list[RegisteredInstruction] = []
    for entry in result.phrasings:
        reason = check_phrasing(entry, tasks)
        if reason is None:
            kept.append(entry)
        else:
            result.skip(entry.id, reason)
    result.phrasings = kept
    return result


def _similar(a: str, b: str) -> float:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < NEAR_DUPLICATE_THRESHOLD or matcher.quick_ratio() < NEAR_DUPLICATE_THRESHOLD:
        return 0.0
    return matcher.ratio()


def drop_repeats(results: Iterable[ImportResult], tasks: Mapping[str, TaskSpec]) -> None:
    """Skip phrasings that repeat an earlier one of any result: same id, same text, or near-duplicate.

    Earlier results (and earlier phrasings within a result) win, so the order in which
    sources are given decides which copy is kept.
    """
    ids: set[str] = set()
    texts: dict[str, list[RegisteredInstruction]] = {}
    by_task: dict[str, list[tuple[RegisteredInstruction, str]]] = {}
    for result in results:
        kept: list[RegisteredInstruction] = []
        for entry in result.phrasings:
            norm = normalise_text(entry.instruction.text)
            same = [e for e in texts.get(norm, []) if not distinct_upstream(e, entry)]
            if same:
                earlier = same[0].id
                same_words = same[0].instruction.answer_choices == entry.instruction.answer_choices
                result.skip(
                    f"{entry.id} (same as {earlier})",
                    "same text as an earlier phrasing" if same_words else "same text as an earlier phrasing, with other answer words",
                )
                continue
            if entry.id in ids:
                result.skip(entry.id, "duplicate id")
                continue
            applies = [t.id for t in applicable_tasks(entry, tasks)]
            near = None
            candidates = {p[0].id: p for task_id in applies for p in by_task.get(task_id, [])}
            for other, other_norm in candidates.values():
                if distinct_upstream(other, entry):
                    continue  # two of one source's own listed instructions (see distinct_upstream)
                # Earlier text first, as the registry compares (SequenceMatcher is not symmetric).
                ratio = _similar(other_norm, norm)
                if ratio >= NEAR_DUPLICATE_THRESHOLD:
                    near = (other.id, ratio)
                    break
            if near:
                result.skip(
                    f"{entry.id} (like {near[0]}, {near[1]:.2f})",
                    f"near-duplicate of an earlier phrasing (similarity >= {NEAR_DUPLICATE_THRESHOLD})",
                )
                continue
            ids.add(entry.id)
            texts.setdefault(norm, []).append(entry)
            for task_id in applies:
                by_task.setdefault(task_id, []).append((entry, norm))
            kept.append(entry)
        result.phrasings = kept
