"""The labelled NLI example every stage of the study reads and writes, and its JSONL files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: Canonical 3-way labels, in the order phrasings list them.
LABELS3 = ("entailment", "neutral", "contradiction")
#: Canonical 2-way labels.
LABELS2 = ("entailment", "not_entailment")


class NLIStudyError(HarnessError, ValueError):
    """Bad input to the study: one line that names the fix."""


@dataclass(frozen=True)
class Example:
    """One premise/hypothesis pair with its canonical label.

    ``origin`` says how it entered a training set: ``pool`` (the initial random draw),
    ``select:<strategy>`` (chosen by a selection strategy) or ``synthetic:<variant>``.
    ``meta`` carries anything a stage wants to keep (a difficulty rating, an entropy, the ids
    of concatenated hypotheses); it is written to the JSONL files as is.
    """

    id: str
    premise: str
    hypothesis: str
    label: str
    source: str
    origin: str = "pool"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label not in LABELS3:
            raise NLIStudyError(f"example {self.id}: label {self.label!r} is not one of {', '.join(LABELS3)}; map it first")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        return cls(**data)

    def replace(self, **changes: Any) -> Example:
        data = self.to_json()
        data.update(changes)
        return Example.from_json(data)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows atomically: a reader sees the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_examples(path: Path, examples: Iterable[Example]) -> None:
    write_jsonl(path, (ex.to_json() for ex in examples))


def read_examples(path: Path) -> list[Example]:
    return [Example.from_json(row) for row in read_jsonl(path)]


def by_label(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Examples grouped by label, every canonical 3-way label present (possibly empty)."""
    out: dict[str, list[Example]] = {label: [] for label in LABELS3}
    for ex in examples:
        out[ex.label].append(ex)
    return out
