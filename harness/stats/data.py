"""The in-memory shape the statistics work on: one record per (task, phrasing), and the
phrasing x document matrix of a task.

Run folders and imports both become :class:`PhrasingResults`; everything downstream reads
only these, so results made elsewhere get the same statistics as our own runs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from harness.results import SampleRow


@dataclass(frozen=True, eq=False)
class PhrasingResults:
    """One phrasing's results on one task.

    Either per-document (``doc_ids`` with ``scores`` and ``correct``, NaN where a document has
    no valid score) or a per-phrasing aggregate only (``reported_score`` over ``reported_n``
    documents), as imports of other people's summaries provide.
    """

    task: str
    instruction_id: str
    status: str = "unobserved"
    seen: bool = False
    doc_ids: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prompt: str = ""
    sha256: str = ""
    reported_score: float | None = None
    reported_n: int | None = None
    #: The metric's maximum when the results declare it (imports: 1, or a ``scale`` column);
    #: None: not declared, and the statistics infer 0-1 or 0-100 from the scores.
    score_scale: float | None = None
    #: Per document (parallel to ``doc_ids``), the option ranked first; None where there is none
    #: (generation tasks, unparsed answers) or the results do not record it (imports).
    predictions: tuple[int | None, ...] = ()

    @property
    def per_document(self) -> bool:
        """True when document-level results exist (not just a reported aggregate)."""
        return self.reported_score is None

    @functools.cached_property
    def valid(self) -> np.ndarray:
        """Mask of the documents with a usable (non-NaN) score and correctness."""
        return ~np.isnan(self.scores) & ~np.isnan(self.correct)

    @functools.cached_property
    def n(self) -> int:
        """Documents behind the phrasing's score."""
        if not self.per_document:
            return int(self.reported_n or 0)
        return int(self.valid.sum())

    @functools.cached_property
    def score(self) -> float:
        """The task metric averaged over documents (NaN with no documents)."""
        if not self.per_document:
            return float("nan") if self.reported_score is None else float(self.reported_score)
        values = self.scores[self.valid]
        return float(values.mean()) if values.size else math.nan

    @functools.cached_property
    def accuracy(self) -> float:
        """Share of documents answered correctly (NaN without per-document data)."""
        if not self.per_document:
            return math.nan
        values = self.correct[self.valid]
        return float(values.mean()) if values.size else math.nan


@dataclass(frozen=True, eq=False)
class TaskMatrix:
    """A task's per-document phrasings on the documents every one of them scored.

    Rows are phrasings, columns documents. Restricting to complete documents keeps every
    paired statistic (consistency, variance decomposition, paired tests) on the same items.
    """

    task: str
    phrasings: tuple[PhrasingResults, ...]
    doc_ids: tuple[str, ...]
    scores: np.ndarray
    correct: np.ndarray
    #: Documents some phrasing scored but not every one (left out of the matrix).
    dropped_documents: int

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.phrasings), len(self.doc_ids))


def phrasings_from_rows(rows: Iterable[SampleRow]) -> list[PhrasingResults]:
    """Group sample rows into one :class:`PhrasingResults` per (task, phrasing).

    A repeated (task, phrasing, document) keeps its last row, as a resumed run would.
    """
    groups: dict[tuple[str, str], dict[str, SampleRow]] = {}
    for row in rows:
        groups.setdefault((row.task, row.instruction_id), {})[row.doc_id] = row
    out = []
    for (task, inst), by_doc in sorted(groups.items()):
        members = list(by_doc.values())
        first = members[0]
        scores = np.array([_nan_if_none(r.score) for r in members], dtype=float)
        out.append(
            PhrasingResults(
                task=task,
                instruction_id=inst,
                status=first.status,
                seen=first.seen,
                doc_ids=tuple(r.doc_id for r in members),
                scores=scores,
                correct=np.array([float(r.correct) for r in members], dtype=float),
                prompt=first.prompt,
                sha256=first.instruction_sha256,
                predictions=tuple(r.prediction for r in members),
            )
        )
    return out


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def group_by_task(phrasings: Iterable[PhrasingResults], tasks: Sequence[str] = ()) -> dict[str, list[PhrasingResults]]:
    """Phrasings per task, keeping tasks listed in ``tasks`` even when they have none."""
    out: dict[str, list[PhrasingResults]] = {t: [] for t in tasks}
    for p in phrasings:
        out.setdefault(p.task, []).append(p)
    return {t: sorted(v, key=lambda p: p.instruction_id) for t, v in sorted(out.items())}


def build_matrix(task: str, phrasings: Sequence[PhrasingResults]) -> TaskMatrix:
    """The phrasing x document matrix of the per-document phrasings of one task."""
    rows = [p for p in phrasings if p.per_document]
    if not rows:
        return TaskMatrix(task, (), (), np.zeros((0, 0)), np.zeros((0, 0)), 0)
    valid_sets = [{d for d, ok in zip(p.doc_ids, p.valid, strict=True) if ok} for p in rows]
    every = set.intersection(*valid_sets)
    anywhere = set.union(*valid_sets)
    # Order documents as the first phrasing lists them, so results do not depend on hashing.
    docs = tuple(d for d in rows[0].doc_ids if d in every)
    scores = np.empty((len(rows), len(docs)))
    correct = np.empty((len(rows), len(docs)))
    for i, p in enumerate(rows):
        index = {d: k for k, d in enumerate(p.doc_ids)}
        cols = [index[d] for d in docs]
        scores[i] = p.scores[cols]
        correct[i] = p.correct[cols]
    return TaskMatrix(task, tuple(rows), docs, scores, correct, len(anywhere) - len(docs))


class TaskInfo(NamedTuple):
    """What the registry says about a task that a run folder does not record."""

    family: str
    category: str = ""


def default_task_info(task: str) -> TaskInfo:
    """Family from the id's prefix (``bbl.strategyqa`` -> ``bbl``); category unknown."""
    return TaskInfo(task.split(".", 1)[0] if "." in task else task, "")
