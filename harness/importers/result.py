"""What an importer hands back: the phrasings it could map, and what it skipped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from harness.registry import RegisteredInstruction


class Skip(NamedTuple):
    """One source item that was not imported."""

    item: str
    reason: str


class ImportCounts(NamedTuple):
    """Summary numbers of one import, for `irh import list` and the README table."""

    importer: str
    origin: str
    imported: int
    observed: int
    unobserved: int
    skipped: int
    reasons: dict[str, int]


@dataclass
class ImportResult:
    """The phrasings one importer produced from one source, and the skipped items.

    Attributes:
        importer: importer name (``flan``, ``promptsource``, ...).
        origin: what was read, e.g. ``lm-eval 0.4.13`` or a file path.
        phrasings: the imported phrasings, in source order.
        skipped: every item that was not imported, each with its reason.
    """

    importer: str
    origin: str
    phrasings: list[RegisteredInstruction] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def add(self, entry: RegisteredInstruction) -> None:
        self.phrasings.append(entry)

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append(Skip(item, reason))

    def reasons(self) -> dict[str, int]:
        """Skip reasons with how often each occurred, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def counts(self) -> ImportCounts:
        statuses = Counter(e.instruction.provenance.status for e in self.phrasings)
        return ImportCounts(
            importer=self.importer,
            origin=self.origin,
            imported=len(self.phrasings),
            observed=statuses["observed"],
            unobserved=statuses["unobserved"],
            skipped=len(self.skipped),
            reasons=self.reasons(),
        )
