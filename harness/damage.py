"""What in a run folder contradicts its own record: samples.jsonl read against run.json.

A report computed from a damaged samples.jsonl is wrong without looking wrong: a duplicated
row with another score silently replaces the first, a foreign row becomes a phrasing, a score
outside its range moves a mean. Each problem is one line naming the file and line; reports
refuse a damaged run unless forced (and then say so in every output), and ``--resume``
refuses rows it would otherwise take as done.
"""

from __future__ import annotations

from pathlib import Path

from harness.results import SAMPLES, RunManifest, SampleRow, iter_numbered_samples

#: Generation metrics score 0-100 (BLEU, ROUGE) or 0-1 (exact match).
_GENERATION_MAX = 100.0


def _score_range(row: SampleRow) -> tuple[float, float]:
    if row.options and row.option_scores:
        return min(row.option_scores), max(row.option_scores)
    return 0.0, _GENERATION_MAX


def find_damage(run_dir: Path, manifest: RunManifest, *, missing: bool = True) -> list[str]:
    """Every contradiction between samples.jsonl and run.json, one line each.

    Checked: rows for a (task, phrasing) the plan does not hold, for a document the task did
    not choose, or for a cell a budgeted run did not choose; rows that repeat a cell (saying
    whether they conflict); scores outside the row's own range; and, with ``missing`` and a
    ``complete`` run, planned phrasings with no row at all.
    """
    path = run_dir / SAMPLES
    plan = set(manifest.plan)
    docs = {task: set(record.doc_ids) for task, record in manifest.tasks.items()}
    budget = manifest.budget
    allowed = {task: budget.allowed(task) for task in manifest.tasks} if budget else None
    first: dict[tuple[str, str, str], tuple[int, SampleRow]] = {}
    seen_pairs: set[tuple[str, str]] = set()
    problems: list[str] = []
    for line, row in iter_numbered_samples(path):
        where = f"{path}:{line}"
        pair = (row.task, row.instruction_id)
        seen_pairs.add(pair)
        if pair not in plan:
            problems.append(f"{where}: {row.task} / {row.instruction_id} is not in the run's plan (run.json)")
        elif row.doc_id not in docs.get(row.task, set()):
            problems.append(f"{where}: document {row.doc_id} is not one of {row.task}'s chosen documents")
        elif allowed is not None and (row.instruction_id, row.doc_id) not in allowed[row.task]:
            problems.append(f"{where}: cell {row.instruction_id} x {row.doc_id} is not one the budget chose")
        if row.key in first:
            earlier_line, earlier = first[row.key]
            conflict = (earlier.score, earlier.correct, earlier.prediction) != (row.score, row.correct, row.prediction)
            kind = "with another result" if conflict else "with the same result"
            problems.append(f"{where}: repeats the cell of line {earlier_line} ({row.task} / {row.instruction_id} / {row.doc_id}), {kind}")
        else:
            first[row.key] = (line, row)
        low, high = _score_range(row)
        if row.score == row.score and not low <= row.score <= high:  # NaN is "no valid score", not damage
            problems.append(f"{where}: score {row.score:g} is outside {low:g}..{high:g}, the range of this row's options")
    if missing and manifest.status == "complete":
        for task, instruction in manifest.plan:
            if (task, instruction) not in seen_pairs:
                problems.append(f"{path}: the run is complete, but {task} / {instruction} has no row")
    return problems


def damage_message(run_dir: Path, problems: list[str], hint: str, shown: int = 20) -> str:
    """The refusal: a head line, then one line per problem (the first ``shown``)."""
    lines = [f"{run_dir} is damaged: {len(problems)} problem(s) in samples.jsonl against run.json; {hint}"]
    lines += [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)
