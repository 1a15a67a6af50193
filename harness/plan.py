"""Expand models x tasks x phrasings into run items over one shared set of documents."""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.registry import RegisteredInstruction, Registry
from harness.schema import COLLECTIONS, TaskSpec

FAMILIES_FILE = Path(__file__).with_name("model_families.yaml")


class PlanError(ValueError):
    """A run request that names something the registry does not have."""


@dataclass(frozen=True)
class RunItem:
    """One task under one phrasing, for one model."""

    task: TaskSpec
    entry: RegisteredInstruction
    seen: bool


def _match(patterns: list[str], names: list[str]) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise PlanError(f"{pattern!r} matches nothing")
        out.extend(h for h in hits if h not in out)
    return out


def select_tasks(registry: Registry, selectors: list[str]) -> list[TaskSpec]:
    """Tasks named by id, glob (``bbl.*``) or family (``mmlu``)."""
    ids = list(registry.tasks)
    chosen: list[str] = []
    for sel in selectors:
        families = [t.id for t in registry.tasks.values() if t.family == sel]
        if families:
            hits = families
        else:
            try:
                hits = _match([sel], ids)
            except PlanError:
                registry.task(sel)  # raises with close matches
                raise
        chosen.extend(h for h in hits if h not in chosen)
    return [registry.tasks[i] for i in chosen]


def _family(model_name: str, families_file: Path) -> dict[str, Any]:
    data = yaml.safe_load(families_file.read_text(encoding="utf-8")) or {}
    name = model_name.lower()
    for family in data.get("families", []):
        if any(fnmatch.fnmatchcase(name, p) for p in family.get("patterns", [])):
            return dict(family)
    return {}


def seen_collections_for(model_name: str, override: list[str] | None = None, families_file: Path = FAMILIES_FILE) -> list[str]:
    """Collections the model saw in tuning: ``override`` if given, else the family map."""
    if override is not None:
        unknown = [c for c in override if c not in COLLECTIONS]
        if unknown:
            raise PlanError(f"unknown collection(s) {unknown}; known: {', '.join(COLLECTIONS)}")
        return list(override)
    return list(_family(model_name, families_file).get("collections", []))


def held_out_tasks_for(model_name: str, override: list[str] | None = None, families_file: Path = FAMILIES_FILE) -> list[str]:
    """Task globs the model's family held out of tuning (e.g. T0 and NLI): phrasings of those
    tasks are unseen even where a collection the model saw carries them. An explicit
    ``--seen`` override replaces the family entry, held-out tasks included."""
    if override is not None:
        return []
    return list(_family(model_name, families_file).get("held_out_tasks", []))


def is_held_out(task_id: str, held_out_tasks: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(task_id, pattern) for pattern in held_out_tasks)


def is_seen(entry: RegisteredInstruction, seen_collections: list[str]) -> bool:
    prov = entry.instruction.provenance
    return prov.status == "observed" and bool(set(prov.collections) & set(seen_collections))


def build_plan(
    registry: Registry,
    tasks: list[TaskSpec],
    *,
    instruction_patterns: list[str] | None = None,
    max_instructions: int | None = None,
    seen_collections: list[str] = (),  # type: ignore[assignment]
    held_out_tasks: list[str] = (),  # type: ignore[assignment]
    seed: int = 1234,
) -> list[RunItem]:
    """Every (task, phrasing) pair to score, with the phrasing's seen flag for this model.

    ``max_instructions`` keeps a seeded random subset of each task's phrasings (the same
    subset for every model with the same seed), in registry order.
    """
    items: list[RunItem] = []
    for task in tasks:
        entries = registry.instructions_for(task.id)
        if instruction_patterns:
            wanted = set(_match(instruction_patterns, [e.id for e in registry.instructions.values()]))
            entries = [e for e in entries if e.id in wanted]
        if max_instructions is not None and len(entries) > max_instructions:
            keep = set(random.Random(f"{seed}:{task.id}").sample([e.id for e in entries], max_instructions))
            entries = [e for e in entries if e.id in keep]
        if not entries:
            raise PlanError(f"no phrasing applies to {task.id}; add one under instructions/ (see README)")
        held_out = is_held_out(task.id, list(held_out_tasks))
        items.extend(RunItem(task, e, not held_out and is_seen(e, list(seen_collections))) for e in entries)
    return items
