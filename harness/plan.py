"""Expand models x tasks x phrasings into run items over one shared set of documents."""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.registry import RegisteredInstruction, Registry
from harness.schema import COLLECTIONS, TaskSpec

FAMILIES_FILE = Path(__file__).with_name("model_families.yaml")


class PlanError(HarnessError, ValueError):
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
                raise PlanError(_unknown_selector(sel, ids, sorted({t.family for t in registry.tasks.values()}))) from None
        chosen.extend(h for h in hits if h not in chosen)
    return [registry.tasks[i] for i in chosen]


def _unknown_selector(selector: str, ids: list[str], families: list[str]) -> str:
    """The error for a task selector that names nothing, with the closest families, ids or globs."""
    is_glob = any(c in selector for c in "*?[")
    # A glob is compared by its literal head (`bbll.*` -> `bbll.`), against families and ids.
    literal = selector.split("*")[0].split("?")[0].split("[")[0].rstrip(".") if is_glob else selector
    candidates = families + ids
    close = difflib.get_close_matches(literal, candidates, n=3, cutoff=0.6) if literal else []
    if is_glob:
        close = [f"{c}.*" if c in families else c for c in close]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    kind = "task glob" if is_glob else "task"
    return f"unknown {kind} {selector!r} (no task id or family matches it).{hint} See `irh list tasks`."


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


def seen_source_for(model_name: str, override: list[str] | None = None, families_file: Path = FAMILIES_FILE) -> dict[str, Any]:
    """Where a run's seen flags come from, as run.json records it (``seen_source``): the user's
    ``--seen`` (``declared``), the family map (``family-map``, with the family's reference line),
    or nothing (``none``). A tune.json source is recorded by the caller that reads it."""
    where = "harness/model_families.yaml"
    if override is not None:
        return {"kind": "declared", "option": f"--seen {','.join(override)}", "collections": list(override)}
    family = _family(model_name, families_file)
    if family:
        return {
            "kind": "family-map",
            "file": where,
            "family": family.get("family"),
            "reference": family.get("reference"),
            "collections": list(family.get("collections", [])),
            "held_out_tasks": list(family.get("held_out_tasks", [])),
        }
    return {"kind": "none", "file": where}


def held_out_tasks_for(model_name: str, override: list[str] | None = None, families_file: Path = FAMILIES_FILE) -> list[str]:
    """Task globs the model's family held out of tuning (e.g. T0 and NLI): phrasings of those
    tasks are unseen even where a collection the model saw carries them. An explicit
    ``--seen`` override replaces the family entry, held-out tasks included."""
    if override is not None:
        return []
    return list(_family(model_name, families_file).get("held_out_tasks", []))


#: How the report names the ``--observed`` sources.
SOURCE_NAMES = {"flan": "FLAN", "promptsource": "promptsource", "promptbench": "PromptBench", "instructioneval": "InstructionEval"}


def _task_names(task_ids: list[str]) -> str:
    """Task ids, with a family of two or more written as its glob (``mmlu.*``)."""
    by_family: dict[str, list[str]] = {}
    for task_id in task_ids:
        by_family.setdefault(task_id.split(".", 1)[0], []).append(task_id)
    return ", ".join(f"{family}.* ({len(ids)} tasks in this run)" if len(ids) > 1 else ids[0] for family, ids in by_family.items())


def _no_observed(items: list[RunItem], observed_sources: list[str], registry: Registry | None) -> str:
    """Why a plan holds no observed phrasing: none loaded, none for its tasks, or none drawn."""
    if not observed_sources:
        return "no observed phrasings are loaded (add some with --observed)"
    task_ids = list(dict.fromkeys(item.task.id for item in items))
    available = (
        sum(1 for t in task_ids for e in registry.instructions_for(t) if e.instruction.provenance.status == "observed")
        if registry is not None
        else 0
    )
    if available:
        return f"--max-instructions drew none of the {available} observed phrasing pairs of these tasks"
    names = [SOURCE_NAMES.get(s.partition("=")[0].strip().lower(), s) for s in observed_sources]
    names = ["the file " + s.partition("=")[2] if s.startswith("file=") else n for s, n in zip(observed_sources, names, strict=True)]
    has = "has" if len(names) == 1 else "have"
    return f"{' and '.join(names)} {has} no phrasings for {_task_names(task_ids)}"


def describe_seen(
    items: list[RunItem],
    model_name: str,
    override: list[str] | None,
    families_file: Path = FAMILIES_FILE,
    *,
    observed_sources: list[str] = (),  # type: ignore[assignment]
    registry: Registry | None = None,
) -> str:
    """One line that says what *seen* means for this model in this plan, and where it comes from.

    A user should learn before the run, not from a "not applicable" row in the report, that the
    model saw none of the loaded phrasings, and what to do about it: with ``observed_sources``
    (the ``--observed`` names) that carry nothing for the plan's tasks, which sources and tasks.
    """
    n_seen = sum(1 for item in items if item.seen)
    n_observed = sum(1 for item in items if item.entry.instruction.provenance.status == "observed")
    if override is not None:
        origin = f"--seen {','.join(override) or '(none)'}"
        collections = override
    else:
        family = _family(model_name, families_file)
        collections = list(family.get("collections", []))
        where = "harness/model_families.yaml"
        origin = f"family {family['family']} in {where}" if family else f"no family in {where} matches this model"
    line = (
        f"seen vs unseen: {n_seen} of {len(items)} (task, phrasing) pairs seen "
        f"(collections counted as seen: {', '.join(collections) or 'none'}; from {origin})"
    )
    if n_seen == 0:
        why = (
            _no_observed(items, list(observed_sources), registry)
            if n_observed == 0
            else f"none of the {n_observed} observed phrasing pairs comes from a collection this model saw"
        )
        line += (
            f"; {why}, so the report's seen-vs-unseen comparison will read 'not applicable'. "
            "Declare collections with --seen COLL,... (see README: Seen vs unseen)"
        )
    return line


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
    seen_ids: Mapping[str, Collection[str]] | None = None,
) -> list[RunItem]:
    """Every (task, phrasing) pair to score, with the phrasing's seen flag for this model.

    ``max_instructions`` keeps a seeded random subset of each task's phrasings (the same
    subset for every model with the same seed, and for every task with the same phrasings,
    as MMLU's subjects), in registry order; control phrasings are not drawn but kept on top. ``seen_ids`` (per task,
    the phrasing ids a tuned model was trained on, from its tune.json) decides the seen flag
    of its tasks' phrasings instead of the collections; control phrasings are never seen.
    """
    items: list[RunItem] = []
    for task in tasks:
        entries = registry.instructions_for(task.id)
        if instruction_patterns:
            wanted = set(_match(instruction_patterns, [e.id for e in registry.instructions.values()]))
            entries = [e for e in entries if e.id in wanted]
        if max_instructions is not None:
            entries = _draw(entries, max_instructions, seed)
        if not entries:
            raise PlanError(f"no phrasing applies to {task.id}; add one under instructions/ (see README)")
        held_out = is_held_out(task.id, list(held_out_tasks))
        if seen_ids is not None and task.id in seen_ids:
            tuned = set(seen_ids[task.id])
            items.extend(RunItem(task, e, e.id in tuned and not is_control(e)) for e in entries)
            continue
        items.extend(RunItem(task, e, not held_out and is_seen(e, list(seen_collections))) for e in entries)
    return items


def _draw(entries: list[RegisteredInstruction], k: int, seed: int) -> list[RegisteredInstruction]:
    """``k`` of the phrasings that are not controls, seeded by the pool itself (so tasks sharing
    a pool draw the same ones), and every control phrasing besides."""
    pool = [e.id for e in entries if not is_control(e)]
    if len(pool) <= k:
        return entries
    key = hashlib.sha256("\n".join(pool).encode()).hexdigest()[:16]
    keep = set(random.Random(f"{seed}:{key}").sample(pool, k))
    return [e for e in entries if e.id in keep or is_control(e)]


def is_control(entry: RegisteredInstruction) -> bool:
    """A control phrasing (harness/controls.py): scored, but kept out of every statistic."""
    return str(entry.instruction.provenance.status) == "control"


def check_tuned_documents(registry: Registry, record: Any, tasks: list[TaskSpec], limit: int | None, seed: int) -> None:
    """Refuse a run of a tuned model that would score documents it was trained on.

    ``record`` is the model's tune.json (harness.tune.record.TuneRecord). The run scores
    ``choose_documents(task, docs, limit, seed)`` of each task, as `irh run` does.
    """
    from harness.data.catalog import choose_documents, load_documents

    for task in tasks:
        split = record.tasks.get(task.id)
        if split is None or split.train_split != task.split:
            continue
        chosen = {d["id"] for d in choose_documents(task, load_documents(task.data_name, task.split), limit, seed).docs}
        overlap = chosen & set(split.train_doc_ids)
        if overlap:
            raise PlanError(
                f"{len(overlap)} of the {len(chosen)} documents of {task.id} this run would score were trained on "
                f"(tune.json); evaluate with --limit {split.eval_limit} --seed {split.eval_seed}, as the tuning recorded"
            )
