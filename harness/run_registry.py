"""The registry a run reads: tasks/ and instructions/ with the observed phrasings asked for
(``--observed``) and, for an existing run folder, the observed sources and controls it was
started with. Light to import: the registry is loaded by the functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.registry import Registry
    from harness.results import RunManifest

Say = Callable[[str], None]


def split_names(value: str | Sequence[str] | None) -> list[str]:
    """Comma lists, or sequences of them, as a flat list of names."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def load_run_registry(observed: str | Sequence[str] | None = None, *, strict: bool = True, say: Say | None = None) -> Registry:
    """The registry (``tasks/`` + ``instructions/``, see ``harness.registry.find_root``), with
    the phrasings of the observed collections named in ``observed`` (``flan,promptsource,...``)."""
    from harness.registry import load_registry

    sources = split_names(observed)
    if not sources:
        return load_registry(strict=strict)
    from harness.importers import load_registry_with_observed, parse_sources

    registry, results = load_registry_with_observed(sources=parse_sources(sources), strict=strict)
    for result in results:
        c = result.counts()
        if say:
            say(
                f"observed {c.importer}: {c.imported} phrasing(s) from {c.origin}, {c.skipped} skipped "
                "(`irh import list --skipped` says why)"
            )
    return registry


def registry_for_run(manifest: RunManifest, observed: str | Sequence[str] | None = None, say: Say | None = None) -> Registry:
    """The registry as a run saw it: with the observed phrasings and controls it was started with."""
    registry = load_run_registry(manifest.observed_sources or observed, say=say)
    from harness.controls import is_control_id, with_controls

    if any(is_control_id(inst) for _, inst in manifest.plan):
        registry = with_controls(registry, [registry.task(t) for t in manifest.tasks], seed=manifest.seed)
    return registry
