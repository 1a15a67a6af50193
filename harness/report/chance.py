"""The score a task gives to answers picked at random: the reference line of the report's plots.

A multiple-choice document scored ``option_scores[choice]`` has, under a uniformly random
choice, the expected score ``mean(option_scores)``: ``1/n`` with one right option among ``n``
(0/1 scores), more where several options score. A task's chance is that expectation averaged
over its documents. Generated answers have no options and no chance score.

The same option scores give each document's right option (:func:`answer_strata_from_rows`),
the strata of the ``model-strata`` budgeted estimator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from harness.results import SampleRow
from harness.stats.label_bias import FixedAnswer, constant_answer


def document_chance(option_scores: Sequence[float]) -> float | None:
    """Expected score of a uniformly random option (None without options)."""
    values = [float(v) for v in option_scores if not math.isnan(float(v))]
    return sum(values) / len(values) if values else None


def chance_from_rows(rows: Iterable[SampleRow]) -> dict[str, float]:
    """Per task, the mean over its documents of :func:`document_chance`.

    Every phrasing scores the same documents with the same options, so each (task, document)
    counts once; tasks whose rows carry no option scores (generation tasks) are left out.
    """
    per_doc: dict[str, dict[str, float]] = {}
    for row in rows:
        value = document_chance(row.option_scores)
        if value is not None:
            per_doc.setdefault(row.task, {})[row.doc_id] = value
    return {task: sum(docs.values()) / len(docs) for task, docs in sorted(per_doc.items())}


def fixed_answers_from_rows(rows: Iterable[SampleRow]) -> dict[str, FixedAnswer]:
    """Per task, the constant-answer baseline (:func:`harness.stats.label_bias.constant_answer`):
    the best score of always giving the same option, on the task's documents (each once)."""
    per_doc: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row.option_scores:
            per_doc.setdefault(row.task, {})[row.doc_id] = list(row.option_scores)
    return {task: constant_answer(docs.values()) for task, docs in sorted(per_doc.items())}


def answer_strata_from_rows(rows: Iterable[SampleRow]) -> dict[str, dict[str, int]]:
    """Per task, each document's right option (the index of its single best option score).

    Budgeted estimation gives each phrasing an effect per stratum of documents that share the
    right option's position, so a phrasing that prefers one answer is estimated from the documents' known
    answers rather than from chance. Documents with no single best option, and tasks whose
    documents disagree between phrasings on it, are left out.
    """
    found: dict[str, dict[str, int]] = {}
    broken: set[str] = set()
    for row in rows:
        scores = [float(v) for v in row.option_scores]
        if not scores or row.task in broken:
            continue
        best = max(scores)
        if math.isnan(best) or scores.count(best) != 1:
            continue
        index = scores.index(best)
        known = found.setdefault(row.task, {})
        if known.setdefault(row.doc_id, index) != index:
            broken.add(row.task)
    return {task: docs for task, docs in sorted(found.items()) if task not in broken}
