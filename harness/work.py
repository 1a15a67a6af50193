"""The work of a run, shared by the one-process runner and the data-parallel ranks: its plan
read back from run.json, the chunks still to score (cut as one process cuts them), how one
chunk is scored into rows, and the folder held while writing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from harness.backends.lm_eval import evaluate_chunk, has_chat_template, is_chat_endpoint
from harness.backends.models import LoadedModel
from harness.data.catalog import load_documents
from harness.plan import RunItem, is_held_out
from harness.registry import Registry
from harness.render import option_scores, render_prompt
from harness.results import RunError, RunLock, RunManifest, SampleRow, iter_samples


def task_spec_sha256(task: Any) -> str:
    import hashlib

    return hashlib.sha256(task.model_dump_json(exclude={"description"}).encode()).hexdigest()


def items_from_manifest(registry: Registry, manifest: RunManifest) -> list[RunItem]:
    """Rebuild the plan of a run, refusing phrasings whose text changed since it started."""
    for task_id, task_record in manifest.tasks.items():
        if task_record.spec_sha256 and task_record.spec_sha256 != task_spec_sha256(registry.task(task_id)):
            raise RunError(
                f"task {task_id} changed (tasks/*.yaml) since this run started; its old results cannot be "
                f"merged with new ones. Restore it, or start a new run with `irh run`"
            )
    items = []
    for task_id, inst_id in manifest.plan:
        entry = registry.instruction(inst_id)
        record = manifest.instructions[inst_id]
        if entry.sha256 != record.sha256:
            raise RunError(
                f"phrasing {inst_id} changed since this run started; its old results cannot be "
                f"merged with new ones. Restore it, or start a new run with `irh run`"
            )
        items.append(RunItem(registry.task(task_id), entry, record.seen and not is_held_out(task_id, manifest.held_out_tasks)))
    return items


def _rows_for_chunk(item: RunItem, docs: list[dict[str, Any]], results: list[Any], scores: list[list[float]]) -> list[SampleRow]:
    rows = []
    for doc, res, opt_scores in zip(docs, results, scores, strict=True):
        rows.append(
            SampleRow(
                task=item.task.id,
                instruction_id=item.entry.id,
                instruction_sha256=item.entry.sha256,
                status=item.entry.instruction.provenance.status,
                seen=item.seen,
                doc_id=doc["id"],
                group=str(doc.get("group", "")),
                prompt=res.context,
                options=res.options,
                option_scores=opt_scores,
                loglikelihoods=res.loglikelihoods,
                prediction=res.prediction,
                generation=res.generation,
                targets=doc.get("targets") if item.task.output_type == "generate_until" else None,
                score=res.score,
                correct=res.correct,
            )
        )
    return rows


#: What must be the same when a run is resumed with a freshly loaded model.
#: What must not change between the model a run recorded and the one that resumes it.
MODEL_IDENTITY = ("backend", "file_sha256", "chat_template_sha256", "dtype")


def check_same_model(recorded: dict[str, Any], loaded: dict[str, Any]) -> None:
    if "chat_template_sha256" not in recorded:
        return  # the model was never loaded for this run
    changed = [key for key in MODEL_IDENTITY if recorded.get(key) != loaded.get(key)]
    if changed:
        raise RunError(
            f"the model now resolves differently ({', '.join(changed)} changed) from the one this run "
            f"started with; its rows cannot be merged. Start a new run with `irh run`"
        )


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def writing_run(run_dir: Path, lock: RunLock | None) -> Iterator[RunLock]:
    """Hold the run folder (the given lock, or a new one) with SIGTERM treated as Ctrl-C.

    The lock is released only after the body has written the final status, so the next
    holder sees it; a lock passed in stays the caller's to release.
    """
    import signal
    import threading

    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, raise_interrupt)
    own_lock = lock is None
    try:
        held = lock if lock is not None else RunLock(run_dir)
        try:
            yield held
        finally:
            if own_lock:
                held.release()
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


class Chunk(NamedTuple):
    """One unit of work: up to ``chunk_size`` documents of one (task, phrasing), scored in one
    lm-eval call. ``position`` is the item's place in the plan and ``start`` the chunk's offset in
    the item's pending documents: together they name the call (and its lm-eval task)."""

    position: int
    start: int
    item: RunItem
    docs: list[dict[str, Any]]


class Workload(NamedTuple):
    """What is left of a run: the chunks still to score, in one-process order, and the counts."""

    chunks: list[Chunk]
    total: int
    finished: int


def load_run_documents(manifest: RunManifest, items: list[RunItem]) -> dict[str, list[dict[str, Any]]]:
    """Each task's documents of the run, in the order the manifest records them.

    Raises:
        RunError: documents the run chose are gone from the data cache.
    """
    tasks = {item.task.id: item.task for item in items}
    docs_by_task: dict[str, list[dict[str, Any]]] = {}
    for task_id, record in manifest.tasks.items():
        task = tasks[task_id]
        by_id = {d["id"]: d for d in load_documents(task.data_name, task.split)}
        missing = [d for d in record.doc_ids if d not in by_id]
        if missing:
            raise RunError(f"{len(missing)} documents of {task_id} are gone from the data cache; run `irh data fetch {task.data_name}`")
        docs_by_task[task_id] = [by_id[d] for d in record.doc_ids]
    return docs_by_task


def plan_workload(run_dir: Path, manifest: RunManifest, items: list[RunItem]) -> Workload:
    """The chunks a run still has to score, from the rows already in samples.jsonl.

    Chunks are cut exactly as one process cuts them, so a data-parallel run that hands them
    out to ranks makes the same lm-eval calls (same documents, same batches) as one process.
    """
    done = {row.key for row in iter_samples(run_dir)}
    docs_by_task = load_run_documents(manifest, items)
    # A budgeted run scores only its chosen cells; a full run every (phrasing, document).
    allowed = {t: manifest.budget.allowed(t) for t in manifest.tasks} if manifest.budget else None

    def wanted(item: RunItem) -> list[dict[str, Any]]:
        # A phrasing that shows a fixed number of options is scored on those documents only.
        docs = [d for d in docs_by_task[item.task.id] if item.entry.instruction.applies_to(d)]
        if allowed is None:
            return docs
        cells = allowed[item.task.id]
        return [d for d in docs if (item.entry.id, d["id"]) in cells]

    chunks: list[Chunk] = []
    total = finished = 0
    for n, item in enumerate(items):
        docs = wanted(item)
        total += len(docs)
        pending = [d for d in docs if (item.task.id, item.entry.id, d["id"]) not in done]
        finished += len(docs) - len(pending)
        for start in range(0, len(pending), manifest.chunk_size):
            chunks.append(Chunk(n, start, item, pending[start : start + manifest.chunk_size]))
    return Workload(chunks, total, finished)


def chat_placement(manifest: RunManifest, model: LoadedModel) -> tuple[bool, str]:
    """Whether the chat template is applied, and the placement actually used."""
    if is_chat_endpoint(model.lm):
        # The server applies its own chat template; a chat endpoint has no plain-text mode.
        return True, manifest.placement if manifest.placement != "none" else "user"
    if getattr(model.lm, "tokenized_requests", True) is False:
        # lm-eval sends a completions endpoint's chat-templated prompts as tokens only; with
        # tokenized_requests=False the prompt goes as plain text (recorded in run.json).
        return False, "none"
    chat = manifest.placement != "none" and has_chat_template(model.lm)
    # Without a chat template there is no system turn: the whole prompt is one text.
    return chat, manifest.placement if chat else "none"


def score_chunk(model: LoadedModel, chunk: Chunk, *, placement: str, chat: bool, seed: int) -> list[SampleRow]:
    """Score one chunk through lm-eval; one row per document."""
    item = chunk.item
    prompts = [render_prompt(item.entry.instruction, item.task, d, placement) for d in chunk.docs]
    scores = [option_scores(item.task, d) if item.task.output_type == "multiple_choice" else [] for d in chunk.docs]
    results = evaluate_chunk(
        model.lm,
        name=f"irh_{chunk.position}_{chunk.start}",
        task=item.task,
        instruction=item.entry.instruction,
        docs=chunk.docs,
        prompts=prompts,
        option_scores=scores,
        placement=placement,
        chat=chat,
        seed=seed,
    )
    return _rows_for_chunk(item, chunk.docs, results, scores)
