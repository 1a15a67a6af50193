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
    ``complete`` run, planned cells with no row (:func:`_missing_cells`).
    """
    path = run_dir / SAMPLES
    plan = set(manifest.plan)
    docs = {task: set(record.doc_ids) for task, record in manifest.tasks.items()}
    budget = manifest.budget
    allowed = {task: budget.allowed(task) for task in manifest.tasks} if budget else None
    first: dict[tuple[str, str, str], tuple[int, SampleRow]] = {}
    problems: list[str] = []
    for line, row in iter_numbered_samples(path):
        where = f"{path}:{line}"
        pair = (row.task, row.instruction_id)
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
        problems += _missing_cells(path, manifest, {key: row for key, (_, row) in first.items()})
    return problems


def _missing_cells(path: Path, manifest: RunManifest, rows: dict[tuple[str, str, str], SampleRow]) -> list[str]:
    """A complete run's planned cells without a row, one line per phrasing (per cell for a
    budget, whose cells run.json lists). A full run's phrasing must cover every chosen
    document, except one that shows a fixed number of options: it covers the documents with
    that many (a phrasing whose rows all have k options is held to the documents that have k,
    as other phrasings' rows show them)."""
    problems: list[str] = []
    if manifest.budget is not None:
        for task, cells in manifest.budget.cells.items():
            for instruction, doc in cells:
                if (task, instruction, doc) not in rows:
                    problems.append(f"{path}: the run is complete, but the budget's cell {task} / {instruction} / {doc} has no row")
        return problems
    by_pair: dict[tuple[str, str], list[SampleRow]] = {}
    option_count: dict[tuple[str, str], int] = {}
    for (task, instruction, doc), row in rows.items():
        by_pair.setdefault((task, instruction), []).append(row)
        option_count[(task, doc)] = len(row.options)
    for task, instruction in manifest.plan:
        have = by_pair.get((task, instruction), [])
        if not have:
            problems.append(f"{path}: the run is complete, but {task} / {instruction} has no row")
            continue
        counts = {len(row.options) for row in have}
        done = {row.doc_id for row in have}
        doc_ids = manifest.tasks[task].doc_ids if task in manifest.tasks else []
        lacking = [d for d in doc_ids if d not in done and (len(counts) > 1 or option_count.get((task, d), len(have[0].options)) in counts)]
        if lacking:
            shown = ", ".join(lacking[:3]) + (", ..." if len(lacking) > 3 else "")
            problems.append(
                f"{path}: the run is complete, but {task} / {instruction} has no row for {len(lacking)} of its documents ({shown})"
            )
    return problems


def damage_message(run_dir: Path, problems: list[str], hint: str, shown: int = 20) -> str:
    """The refusal: a head line, then one line per problem (the first ``shown``)."""
    lines = [f"{run_dir} is damaged: {len(problems)} problem(s) in samples.jsonl against run.json; {hint}"]
    lines += [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)
