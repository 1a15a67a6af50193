"""Run a plan: load the model once, score every (task, phrasing, document), log each row.

``start_run`` creates the run folder and manifest; ``resume_run`` reopens one after a crash,
kill or Ctrl-C and scores only the rows that are missing. Both end in ``execute``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.backends.lm_eval import ServerUnavailable
from harness.backends.models import LoadedModel, ModelSpec, load_model
from harness.budget import TaskGrid, allocate_adaptive_round, allocate_run, task_goals
from harness.data.catalog import choose_documents, dataset_status, load_documents
from harness.plan import RunItem, is_seen
from harness.registry import Registry
from harness.render import render_prompt
from harness.results import (
    BudgetRecord,
    BudgetRound,
    InstructionRecord,
    PlacementEffect,
    RunError,
    RunLock,
    RunManifest,
    SampleRow,
    SampleWriter,
    TaskRecord,
    git_state,
    iter_samples,
    package_versions,
    put_in_plan_order,
    read_manifest,
    utc_now,
    write_manifest,
)
from harness.work import (
    Chunk,
    chat_placement,
    check_same_model,
    items_from_manifest,
    load_run_documents,
    plan_workload,
    score_chunk,
    task_spec_sha256,
    writing_run,
)

Progress = Callable[[int, int], None]


def _slug(text: str) -> str:
    name = Path(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-").lower()[:40] or "model"


def new_run_id(model_label: str) -> str:
    stamp = utc_now().replace("-", "").replace(":", "")
    return f"{stamp}_{_slug(model_label)}_{uuid.uuid4().hex[:6]}"


def start_run(
    registry: Registry,
    items: list[RunItem],
    spec: ModelSpec,
    *,
    reports_dir: Path,
    placement: str,
    seed: int,
    limit: int | None,
    chunk_size: int,
    seen_collections: list[str],
    held_out_tasks: list[str] | None = None,
    observed_sources: list[str] | None = None,
    budget_fraction: float | None = None,
    budget_cells: int | None = None,
    budget_rounds: int = 0,
    noise_check: float = 0.0,
    seen_source: dict[str, Any] | None = None,
) -> tuple[Path, RunManifest]:
    """Choose the documents, create the run folder and write its manifest (status running).

    With ``budget_fraction`` or ``budget_cells``, also choose which (phrasing, document) cells
    of each task are scored (:mod:`harness.budget`); a budget that cannot be met is refused
    before the folder is made. With ``budget_rounds``, only the balanced start is chosen now
    and that many adaptive rounds follow (:func:`execute_budget`). With ``placement`` system,
    what it does to each task's phrasings is recorded (:func:`placement_effects`).
    """
    tasks: dict[str, TaskRecord] = {}
    docs_by_task: dict[str, list[dict[str, Any]]] = {}
    for task in {item.task.id: item.task for item in items}.values():
        docs = load_documents(task.data_name, task.split)
        selection = choose_documents(task, docs, limit, seed)
        chosen = selection.docs
        docs_by_task[task.id] = chosen
        status = dataset_status(task.data_name, task.split)
        tasks[task.id] = TaskRecord(
            spec_sha256=task_spec_sha256(task),
            source=status.source,
            content_sha256=status.content_sha256,
            content_pinned=status.pinned,
            split=task.split,
            documents_total=len(docs),
            doc_ids=[d["id"] for d in chosen],
            family=task.family,
            category=task.category,
            selection=selection.how,
            answer_positions=selection.positions,
        )
    budget = None
    if budget_fraction is not None or budget_cells is not None:
        budget = new_budget(items, tasks, seed, budget_fraction, budget_cells, budget_rounds)
    run_id = new_run_id(spec.label)
    run_dir = reports_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    commit, dirty = git_state(registry.root)
    manifest = RunManifest(
        run_id=run_id,
        created=utc_now(),
        git_commit=commit,
        git_dirty=dirty,
        packages=package_versions(),
        model={"backend": spec.backend, "args": spec.args, "name": spec.label},
        placement=placement,  # type: ignore[arg-type]
        chat_template_applied=False,
        seed=seed,
        limit=limit,
        chunk_size=chunk_size,
        seen_collections=seen_collections,
        held_out_tasks=list(held_out_tasks or []),
        seen_source=seen_source,
        placement_effect=placement_effects(items, docs_by_task, placement) if placement == "system" else None,
        observed_sources=list(observed_sources or []),
        registry_sha256=registry.digest(),
        registry_path=str(registry.root),
        registry_origin=registry.origin,
        tasks=tasks,
        instructions={
            item.entry.id: InstructionRecord(
                target=f"{item.entry.target_kind}:{item.entry.target}",
                sha256=item.entry.sha256,
                status=item.entry.instruction.provenance.status,
                collections=list(item.entry.instruction.provenance.collections),
                # In a collection the model saw; per task, held-out tasks still count unseen.
                seen=item.seen or is_seen(item.entry, seen_collections),
            )
            for item in items
        },
        plan=[(item.task.id, item.entry.id) for item in items],
        budget=budget,
        noise_check_fraction=noise_check,
    )
    write_manifest(run_dir, manifest)
    return run_dir, manifest


def placement_effects(items: list[RunItem], docs_by_task: dict[str, list[dict[str, Any]]], placement: str) -> dict[str, PlacementEffect]:
    """Per task: its phrasings, how many have a system part under ``placement`` on any of the
    run's documents, and how many render on every document exactly as under placement ``user``
    (same system and user text, so the same prompt whatever the chat template)."""
    out: dict[str, PlacementEffect] = {}
    for item in items:
        docs = [d for d in docs_by_task.get(item.task.id, []) if item.entry.instruction.applies_to(d)]
        split = unchanged = False
        if placement == "user":
            unchanged = True
        else:
            placed = [render_prompt(item.entry.instruction, item.task, d, placement) for d in docs]
            split = any(p.system for p in placed)
            unchanged = not split and all(
                p == render_prompt(item.entry.instruction, item.task, d, "user") for p, d in zip(placed, docs, strict=True)
            )
        was = out.get(item.task.id, PlacementEffect(phrasings=0, with_system_part=0, unchanged_from_user=0))
        out[item.task.id] = PlacementEffect(
            phrasings=was.phrasings + 1,
            with_system_part=was.with_system_part + int(split),
            unchanged_from_user=was.unchanged_from_user + int(unchanged),
        )
    return dict(sorted(out.items()))


def describe_placement(manifest: RunManifest) -> list[str]:
    """Lines saying what the placement did per task (empty where run.json records nothing)."""
    effects = manifest.placement_effect
    if not effects:
        return []
    lines = []
    for task, e in effects.items():
        if e.with_system_part == 0:
            lines.append(
                f"placement {manifest.placement}: {task}: none of its {e.phrasings} phrasing(s) has a system part "
                f"(each opens with the document); its prompts are those of --placement user"
            )
        else:
            lines.append(
                f"placement {manifest.placement}: {task}: {e.with_system_part} of {e.phrasings} phrasing(s) have a system part, "
                f"{e.unchanged_from_user} unchanged from --placement user"
            )
    return lines


def _grids(items: list[RunItem], tasks: dict[str, TaskRecord]) -> dict[str, TaskGrid]:
    phrasings: dict[str, list[str]] = {}
    for item in items:
        if item.entry.instruction.option_count is not None:
            # The budget's estimate is of the full phrasings x documents grid, which such a
            # phrasing does not fill.
            raise RunError(
                f"{item.entry.id} is scored only on documents with {item.entry.instruction.option_count} options, so a budgeted "
                f"run cannot estimate the full grid of {item.task.id}; leave it out (--instructions) or run without a budget"
            )
        phrasings.setdefault(item.task.id, []).append(item.entry.id)
    return {task: TaskGrid(ids, list(tasks[task].doc_ids)) for task, ids in phrasings.items()}


def new_budget(
    items: list[RunItem], tasks: dict[str, TaskRecord], seed: int, fraction: float | None, cells: int | None, rounds: int = 0
) -> BudgetRecord:
    """The cells a budgeted run scores first, chosen once when it starts (the balanced start)."""
    grids = _grids(items, tasks)
    chosen = allocate_run(grids, seed, fraction=fraction, cells=cells, rounds=rounds)
    added = sum(len(c) for c in chosen.values())
    return BudgetRecord(
        seed=seed,
        rounds=[BudgetRound(fraction=fraction, cells=cells, cells_added=added, created=utc_now())],
        cells={task: [[c.instruction_id, c.doc_id] for c in task_cells] for task, task_cells in chosen.items()},
        rounds_pending=max(rounds, 0),
        goal_cells=task_goals(grids, fraction=fraction, cells=cells) if rounds > 0 else {},
    )


def extend_budget(manifest: RunManifest, items: list[RunItem], fraction: float | None, cells: int | None, rounds: int = 0) -> RunManifest:
    """A bigger budget for a budgeted run: new cells are added, every cell chosen before is kept.

    Without ``rounds`` the balanced design is extended; with them, the new cells are left to
    that many adaptive rounds (only cells a phrasing or document still lacks are added now).

    Raises:
        RunError: the run is not budgeted (it scores every cell already).
    """
    if manifest.budget is None:
        raise RunError("this run is not budgeted: it scores every cell already; drop --budget/--budget-cells")
    record = manifest.budget
    grids = _grids(items, manifest.tasks)
    already = {task: record.allowed(task) for task in record.cells}
    chosen = allocate_run(grids, record.seed, fraction=fraction, cells=cells, already=already, rounds=rounds)
    merged = {task: list(record.cells.get(task, [])) + [[c.instruction_id, c.doc_id] for c in new] for task, new in chosen.items()}
    added = sum(len(c) for c in chosen.values())
    rounds_record = [*record.rounds, BudgetRound(fraction=fraction, cells=cells, cells_added=added, created=utc_now())]
    update = {
        "cells": merged,
        "rounds": rounds_record,
        "rounds_pending": max(rounds, 0),
        "goal_cells": task_goals(grids, fraction=fraction, cells=cells) if rounds > 0 else {},
    }
    return manifest.model_copy(update={"budget": record.model_copy(update=update)})


def next_adaptive_round(run_dir: Path, manifest: RunManifest, items: list[RunItem]) -> RunManifest:
    """Choose the next adaptive round's cells from the scores so far and record them (run.json).

    The caller holds the folder's lock. The manifest is written with status ``running``: the
    new cells are still to be scored.
    """
    record = manifest.budget
    assert record is not None and record.rounds_pending > 0
    grids = _grids(items, manifest.tasks)
    scored: dict[str, dict[tuple[str, str], float]] = {}
    for row in iter_samples(run_dir):
        if row.score is not None and row.score == row.score:  # NaN: no valid score
            scored.setdefault(row.task, {})[(row.instruction_id, row.doc_id)] = float(row.score)
    index = 1 + sum(1 for r in record.rounds if r.kind == "adaptive")
    chosen = {task: record.allowed(task) for task in grids}
    new = allocate_adaptive_round(grids, scored, chosen, record.goal_cells, record.rounds_pending, record.seed, index)
    merged = {task: list(record.cells.get(task, [])) + [[c.instruction_id, c.doc_id] for c in cells] for task, cells in new.items()}
    request = next((r for r in reversed(record.rounds) if r.kind == "balanced"), None)
    entry = BudgetRound(
        kind="adaptive",
        fraction=request.fraction if request else None,
        cells=request.cells if request else None,
        cells_added=sum(len(c) for c in new.values()),
        created=utc_now(),
    )
    update = {"cells": merged, "rounds": [*record.rounds, entry], "rounds_pending": record.rounds_pending - 1}
    manifest = manifest.model_copy(update={"budget": record.model_copy(update=update), "status": "running", "finished": None})
    write_manifest(run_dir, manifest)
    return manifest


def execute_budget(
    run_dir: Path,
    manifest: RunManifest,
    items: list[RunItem],
    model: LoadedModel | None = None,
    progress: Progress | None = None,
    lock: RunLock | None = None,
    processes: int = 1,
    model_info: dict[str, Any] | None = None,
    say: Callable[[str], Any] | None = None,
) -> RunManifest:
    """Score every missing row (:func:`execute`, or data-parallel); then, while the budget has
    adaptive rounds pending, choose each round's cells from the scores so far and score them;
    then the numerical noise check (:mod:`harness.noise`) if the run asks for one.

    The folder stays locked across the rounds; the model is loaded once for all of them.
    """
    with writing_run(run_dir, lock) as held:
        while True:
            if processes > 1:
                from harness.parallel import execute_parallel

                manifest = execute_parallel(
                    run_dir, manifest, items, processes=processes, progress=progress, lock=held, model_info=model_info
                )
            else:
                if model is None and manifest.budget is not None and manifest.budget.rounds_pending > 0:
                    model = load_model(ModelSpec(manifest.model["backend"], dict(manifest.model["args"]), manifest.model["name"]))
                manifest = execute(run_dir, manifest, items, model=model, progress=progress, lock=held)
            if manifest.status != "complete" or manifest.budget is None or manifest.budget.rounds_pending <= 0:
                break
            manifest = next_adaptive_round(run_dir, manifest, items)
        if manifest.status == "complete" and manifest.noise_check_fraction > 0 and manifest.noise_check is None:
            manifest = _check_noise(run_dir, manifest, items, say)
        return manifest


def _check_noise(run_dir: Path, manifest: RunManifest, items: list[RunItem], say: Callable[[str], Any] | None) -> RunManifest:
    """Score a share of the complete run's cells again in float32 and record the comparison."""
    from harness.noise import run_noise_check

    spec = ModelSpec(manifest.model["backend"], dict(manifest.model["args"]), manifest.model["name"])
    by_pair = {(item.task.id, item.entry.id): (n, item) for n, item in enumerate(items)}
    docs = load_run_documents(manifest, items)

    def score(model: LoadedModel, rows: list[SampleRow]) -> list[SampleRow]:
        chat, placement = chat_placement(manifest, model)
        wanted: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            wanted.setdefault((row.task, row.instruction_id), set()).add(row.doc_id)
        scored: list[SampleRow] = []
        for pair, ids in wanted.items():
            n, item = by_pair[pair]
            chosen = [d for d in docs[item.task.id] if d["id"] in ids]
            for start in range(0, len(chosen), manifest.chunk_size):
                chunk = Chunk(n, start, item, chosen[start : start + manifest.chunk_size])
                scored += score_chunk(model, chunk, placement=placement, chat=chat, seed=manifest.seed)
        return scored

    check = run_noise_check(run_dir, spec, manifest.noise_check_fraction, manifest.seed, score, say)
    manifest = manifest.model_copy(update={"noise_check": check})
    write_manifest(run_dir, manifest)
    if say and check.status == "done":
        for task, noise in check.tasks.items():
            say(
                f"noise check {task}: {noise.flips} of {noise.cells} predictions flip in {check.reference_dtype} "
                f"(floor {noise.floor:.3f}); accuracy {noise.accuracy_run:.3f} -> {noise.accuracy_reference:.3f}"
            )
    elif say:
        say(f"noise check: {check.status}")
    return manifest


def execute(
    run_dir: Path,
    manifest: RunManifest,
    items: list[RunItem],
    model: LoadedModel | None = None,
    progress: Progress | None = None,
    lock: RunLock | None = None,
) -> RunManifest:
    """Score every missing row of the run; keeps the manifest's status true on any exit.

    The folder is locked (``lock``, or a lock taken here) before the rows already on disk are
    read, so a second process is refused before it reads, loads a model or writes anything.
    A SIGTERM is treated like Ctrl-C (status ``interrupted``); a kill -9 or power loss leaves
    ``running`` behind, with every flushed row intact and a heartbeat that `irh report` and
    ``check_liveness`` recognise as abandoned, and ``--resume`` completes it.
    """
    with writing_run(run_dir, lock) as held:
        return _execute(run_dir, manifest, items, model, progress, held)


def _execute(
    run_dir: Path,
    manifest: RunManifest,
    items: list[RunItem],
    model: LoadedModel | None,
    progress: Progress | None,
    lock: RunLock,
) -> RunManifest:
    # Until this process marks the run `running`, a refusal (changed model, missing data) or
    # a Ctrl-C leaves run.json as it was: an interrupted run stays resumable as it stood.
    # A manifest that already says `running` is ours to correct, though (a fresh run, or one
    # whose writer was killed), or it would claim a writer that no longer exists.
    owns_status = manifest.status == "running"
    try:
        from harness.parallel import merge_shards

        # Rows a data-parallel run left in its ranks' shards join samples.jsonl first.
        merge_shards(run_dir, manifest, lock)
        work = plan_workload(run_dir, manifest, items)
        finished = work.finished
        if progress:
            progress(finished, work.total)
        if finished == work.total:
            put_in_plan_order(run_dir)
            manifest = manifest.model_copy(update={"status": "complete", "finished": manifest.finished or utc_now()})
            write_manifest(run_dir, manifest)
            return manifest
        if model is None:
            spec = ModelSpec(manifest.model["backend"], dict(manifest.model["args"]), manifest.model["name"])
            model = load_model(spec)
        check_same_model(manifest.model, model.info)
        chat, placement = chat_placement(manifest, model)
        manifest = manifest.model_copy(
            update={
                "status": "running",
                "error": None,
                "chat_template_applied": chat,
                "placement_applied": placement,
                "model": {**model.info, **{k: v for k, v in manifest.model.items() if k == "seen_from" and k not in model.info}},
            }
        )
        with SampleWriter(run_dir, lock=lock) as writer:
            write_manifest(run_dir, manifest)
            owns_status = True
            for chunk in work.chunks:
                writer.write(score_chunk(model, chunk, placement=placement, chat=chat, seed=manifest.seed))
                finished += len(chunk.docs)
                if progress:
                    progress(finished, work.total)
        put_in_plan_order(run_dir)
    except KeyboardInterrupt:
        if owns_status:
            _mark(run_dir, manifest, "interrupted", None)
        raise
    except ServerUnavailable as exc:
        # Not the run's fault: once the server answers again, --resume completes it.
        if owns_status:
            _mark(run_dir, manifest, "interrupted", str(exc))
        raise
    except BaseException as exc:
        if owns_status:
            _mark(run_dir, manifest, "failed", f"{type(exc).__name__}: {exc}")
        raise
    manifest = manifest.model_copy(update={"status": "complete", "finished": utc_now()})
    write_manifest(run_dir, manifest)
    return manifest


def _mark(run_dir: Path, manifest: RunManifest, status: str, error: str | None) -> None:
    """Record how the run ended (the caller holds the folder's lock)."""
    write_manifest(run_dir, manifest.model_copy(update={"status": status, "error": error}))


def resume_run(
    registry: Registry,
    run_dir: Path,
    progress: Progress | None = None,
    budget_fraction: float | None = None,
    budget_cells: int | None = None,
    processes: int = 1,
    budget_rounds: int = 0,
    say: Callable[[str], Any] | None = None,
) -> RunManifest:
    """Complete an interrupted or failed run without repeating or losing rows.

    The folder is locked before its manifest and rows are read, so that two overlapping
    resumes cannot both decide which rows are missing: the second is refused at once.
    With ``processes`` > 1 the missing rows are scored data-parallel (:mod:`harness.parallel`),
    whatever number of processes the run was started with. A bigger budget extends a
    budgeted run (with ``budget_rounds``, in that many adaptive rounds); adaptive rounds left
    pending by an interruption are run after the missing rows.
    """
    read_manifest(run_dir)  # a folder that is not a run is refused before it is touched
    with RunLock(run_dir) as lock:
        manifest = read_manifest(run_dir)
        from harness.damage import damage_message, find_damage

        # Rows that repeat a cell or lie outside the plan would be taken as done: refuse them.
        problems = find_damage(run_dir, manifest, missing=False)
        if problems:
            raise RunError(damage_message(run_dir, problems, "remove those lines from samples.jsonl, then resume"))
        items = items_from_manifest(registry, manifest)
        if budget_fraction is not None or budget_cells is not None:
            # A bigger budget: the new cells join the plan; every row scored so far is kept.
            manifest = extend_budget(manifest, items, budget_fraction, budget_cells, budget_rounds)
            write_manifest(run_dir, manifest)
        elif budget_rounds:
            raise RunError("--rounds needs --budget or --budget-cells with --resume: the bigger budget the rounds spend")
        return execute_budget(run_dir, manifest, items, progress=progress, lock=lock, processes=processes, say=say)
