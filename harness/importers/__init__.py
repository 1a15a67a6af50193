"""Observed-phrasing importers: phrasings read at run time from the projects that carry them.

Nothing imported here is ever written into this repository: each importer reads its source
(an installed package, a pinned PyPI file in the cache, a user's checkout or file), maps the
templates onto our tasks' fields and labels, and returns registry entries that
:func:`harness.registry.load_registry` validates along with the written phrasings.

Sources are named on the command line as a comma list (``--observed``)::

    flan                      FLAN templates inside the installed lm-eval
    promptsource              promptsource 0.2.3 sdist (pinned; fetched into the cache once)
    promptbench               PromptBench 0.0.4 wheel (pinned; fetched into the cache once)
    instructioneval=PATH      a checkout of InstructionEval (Sun, Shaib & Wallace 2023)
    file=PATH                 a JSONL, CSV or YAML file of phrasings

``flan=DIR``, ``promptsource=FILE`` and ``promptbench=FILE`` read from a given place instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from harness.errors import HarnessError
from harness.importers.result import ImportCounts, ImportResult, Skip

if TYPE_CHECKING:
    from harness.registry import RegisteredInstruction, Registry
    from harness.schema import TaskSpec

__all__ = [
    "IMPORTERS",
    "ImportCounts",
    "ImportResult",
    "Importer",
    "ObservedSourceError",
    "Skip",
    "SourceSpec",
    "load_registry_with_observed",
    "parse_sources",
    "run_importers",
]


class ObservedSourceError(HarnessError, ValueError):
    """An ``--observed`` source that is misspelt, missing, or cannot be read; says what to do."""


def _flan(path: Path | None) -> ImportResult:
    from harness.importers.flan import import_flan

    return import_flan(path)


def _promptsource(path: Path | None) -> ImportResult:
    from harness.importers.promptsource import import_promptsource

    return import_promptsource(path)


def _promptbench(path: Path | None) -> ImportResult:
    from harness.importers.promptbench import import_promptbench

    return import_promptbench(path)


def _instructioneval(path: Path | None) -> ImportResult:
    from harness.importers.instructioneval import import_instructioneval

    assert path is not None  # parse_sources requires it
    return import_instructioneval(path)


def _file(path: Path | None) -> ImportResult:
    from harness.importers.files import import_file

    assert path is not None  # parse_sources requires it
    return import_file(path)


@dataclass(frozen=True)
class Importer:
    """One kind of source."""

    name: str
    description: str
    #: Whether ``NAME=PATH`` must give a path (else the default location is used).
    needs_path: bool
    run: Callable[[Path | None], ImportResult]


IMPORTERS: dict[str, Importer] = {
    "flan": Importer("flan", "FLAN templates shipped inside the installed lm-eval", False, _flan),
    "promptsource": Importer("promptsource", "promptsource 0.2.3 templates (PyPI sdist, cached)", False, _promptsource),
    "promptbench": Importer("promptbench", "PromptBench 0.0.4 prompts (PyPI wheel, cached; unobserved)", False, _promptbench),
    "instructioneval": Importer("instructioneval", "InstructionEval checkout: instructioneval=PATH", True, _instructioneval),
    "file": Importer("file", "JSONL/CSV/YAML file of phrasings: file=PATH", True, _file),
}

#: What `irh import list` reads when no source is named: everything that needs no path.
DEFAULT_SOURCES = ("flan", "promptsource", "promptbench")


class SourceSpec(NamedTuple):
    """One parsed ``--observed`` entry."""

    importer: str
    path: Path | None

    def __str__(self) -> str:
        return f"{self.importer}={self.path}" if self.path else self.importer


def parse_sources(values: str | Iterable[str]) -> list[SourceSpec]:
    """Parse ``flan,promptsource,file=PATH`` (one string or several) into source specs.

    Raises:
        ObservedSourceError: an unknown importer, or a missing path where one is needed.
    """
    texts = [values] if isinstance(values, str) else list(values)
    specs: list[SourceSpec] = []
    for text in texts:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            name, _, path = part.partition("=")
            name = name.strip().lower()
            importer = IMPORTERS.get(name)
            if importer is None:
                raise ObservedSourceError(f"unknown observed source {name!r}; known: {', '.join(IMPORTERS)} (see `irh import list`)")
            if importer.needs_path and not path.strip():
                raise ObservedSourceError(f"{name} needs a path: --observed {name}=PATH")
            spec = SourceSpec(name, Path(path.strip()).expanduser() if path.strip() else None)
            if spec not in specs:
                specs.append(spec)
    return specs


def run_one(spec: SourceSpec) -> ImportResult:
    """Run one importer, turning its failures into an :class:`ObservedSourceError`."""
    from harness.data.cache import DataMissing

    try:
        return IMPORTERS[spec.importer].run(spec.path)
    except (DataMissing, OSError, ValueError) as exc:
        raise ObservedSourceError(f"--observed {spec}: {exc}") from exc


def run_importers(specs: Iterable[SourceSpec], tasks: Mapping[str, TaskSpec], *, together: bool = True) -> list[ImportResult]:
    """Run importers and keep only phrasings that pass the registry's checks.

    Args:
        specs: the sources, in order (earlier sources win when two carry the same text).
        tasks: the registry's tasks, by id.
        together: drop repeats across sources (else each source is deduplicated alone,
            which makes each source's counts independent of the others).
    """
    from harness.importers.checks import check_result, drop_repeats

    results = [check_result(run_one(spec), tasks) for spec in specs]
    if together:
        drop_repeats(results, tasks)
    else:
        for result in results:
            drop_repeats([result], tasks)
    return results


def imported_entries(results: Iterable[ImportResult]) -> list[RegisteredInstruction]:
    """All phrasings of the results, in order."""
    return [entry for result in results for entry in result.phrasings]


def load_registry_with_observed(
    root: Path | None = None, sources: Iterable[SourceSpec] = (), *, strict: bool = True
) -> tuple[Registry, list[ImportResult]]:
    """Load the registry with the phrasings of ``sources`` validated along with the written ones.

    Returns:
        The registry and each source's import result (counts and skip reasons).

    Raises:
        ObservedSourceError: a source cannot be read.
        RegistryError: (when ``strict``) the registry, imports included, has problems.
    """
    from harness.registry import default_root, load_registry, load_tasks

    root = Path(root) if root is not None else default_root()
    specs = list(sources)
    results: list[ImportResult] = []
    if specs:
        # Task problems are reported by load_registry below; here the tasks only guide mapping.
        results = run_importers(specs, load_tasks(root, []))
    registry = load_registry(root, strict=strict, extra=imported_entries(results))
    return registry, results
