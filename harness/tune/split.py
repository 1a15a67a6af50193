"""The phrasing split (train vs held-out) and the document split (train vs evaluation) of a tuning run.

Phrasings: per task, the registry's phrasings split into ``train`` (the original, the first
in registry order, plus paraphrases) and ``held_out``, either by explicit globs or by a seeded
draw. Tasks that share a phrasing pool (MMLU's 57 subjects) draw the same split.

Documents: MMLU trains on its dev (and validation, where cached) documents and is evaluated
on test; every other task on a seeded split of its documents. The evaluation documents are
exactly the ones `irh run --limit EVAL_LIMIT --seed SEED` scores, so a run with those flags
never meets a training document.
"""

from __future__ import annotations

import fnmatch
import hashlib
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

from harness.data.catalog import choose_documents, is_cached, load_documents, select_documents
from harness.registry import RegisteredInstruction, Registry
from harness.schema import TaskSpec
from harness.tune.record import TaskSplit, TuneError

#: Fewest training documents a task may have: below this the adapter would learn nothing
#: but the handful of answers.
MIN_TRAIN_DOCS = 4
#: Splits that MMLU's training documents come from (never its evaluation split).
MMLU_TRAIN_SPLITS = ("dev", "validation")


class PhrasingSplit(NamedTuple):
    original: str
    train: list[str]
    held_out: list[str]
    how: str


class DocumentSplit(NamedTuple):
    train_split: str
    train: list[dict[str, Any]]
    eval_split: str
    eval_ids: list[str]


def _pool_key(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def split_phrasings(
    entries: Sequence[RegisteredInstruction],
    task_id: str,
    *,
    seed: int,
    train_fraction: float = 0.5,
    train_patterns: Sequence[str] | None = None,
    max_phrasings: int | None = None,
) -> PhrasingSplit:
    """Split a task's phrasings into train (original first) and held-out.

    ``max_phrasings`` first keeps the original and a seeded sample of the others (the same for
    every task sharing the pool); the rest take no part in the tuning or its evaluation.

    Raises:
        TuneError: fewer than three phrasings, or globs that leave no train or no held-out one.
    """
    ids = [e.id for e in entries if e.instruction.provenance.status != "control"]
    if max_phrasings is not None and len(ids) > max_phrasings >= 1:
        kept = set(random.Random(f"keep:{seed}:{_pool_key(ids)}").sample(ids[1:], max_phrasings - 1))
        ids = [ids[0]] + [i for i in ids[1:] if i in kept]
    if train_patterns:
        train = [i for i in ids if any(fnmatch.fnmatchcase(i, p) for p in train_patterns)]
        held = [i for i in ids if i not in train]
        if not train or not held:
            which = "no phrasing" if not train else "every phrasing"
            raise TuneError(
                f"--train-instructions {','.join(train_patterns)} matches {which} of {task_id}; leave at least one on each side"
            )
        return PhrasingSplit(train[0], train, held, "explicit")
    if len(ids) < 3:
        raise TuneError(f"{task_id} has {len(ids)} phrasing(s); tuning needs at least 3 (original, a paraphrase, a held-out one)")
    if not 0.0 < train_fraction < 1.0:
        raise TuneError(f"--train-fraction must be between 0 and 1, not {train_fraction}")
    original, rest = ids[0], ids[1:]
    n_train = min(max(2, round(train_fraction * len(ids))), len(ids) - 1)
    # Keyed by the pool, not the task: tasks sharing a pool get the same split.
    chosen = set(random.Random(f"{seed}:{_pool_key(ids)}").sample(rest, n_train - 1))
    train = [original] + [i for i in rest if i in chosen]
    return PhrasingSplit(original, train, [i for i in rest if i not in chosen], "seeded")


def split_documents(task: TaskSpec, *, seed: int, eval_limit: int | None, train_docs: int) -> DocumentSplit:
    """Training documents and evaluation ids of one task, disjoint by construction.

    Raises:
        TuneError: too few documents to split, or no training split cached for MMLU.
    """
    docs = load_documents(task.data_name, task.split)
    eval_docs = choose_documents(task, docs, eval_limit, seed).docs
    eval_ids = [d["id"] for d in eval_docs]
    if task.family == "mmlu":
        splits = [s for s in MMLU_TRAIN_SPLITS if s != task.split and is_cached(task.data_name, s)]
        if not splits:
            raise TuneError(f"{task.id} has no dev or validation documents cached to train on; run `irh data fetch mmlu`")
        pool = [d for s in splits for d in load_documents(task.data_name, s)]
        train_split = "+".join(splits)
    else:
        taken = set(eval_ids)
        pool = [d for d in docs if d["id"] not in taken]
        train_split = task.split
    if len(pool) < MIN_TRAIN_DOCS:
        need = f"lower --eval-limit (now {eval_limit})" if task.family != "mmlu" else "choose another subject"
        raise TuneError(f"{task.id} leaves {len(pool)} document(s) to train on (fewer than {MIN_TRAIN_DOCS}); {need}")
    train = select_documents(pool, train_docs, seed, f"{task.id}:train")
    check_disjoint(task.id, [d["id"] for d in train] if train_split == task.split else [], eval_ids)
    return DocumentSplit(train_split, train, task.split, eval_ids)


def check_disjoint(task_id: str, train_ids: Sequence[str], eval_ids: Sequence[str]) -> None:
    """Refuse training and evaluation documents that overlap (same split, same ids)."""
    overlap = sorted(set(train_ids) & set(eval_ids))
    if overlap:
        raise TuneError(f"{task_id}: {len(overlap)} document(s) are both trained on and evaluated (e.g. {overlap[0]}); the split is broken")


def build_task_split(
    registry: Registry,
    task: TaskSpec,
    *,
    seed: int,
    train_fraction: float,
    train_patterns: Sequence[str] | None,
    eval_limit: int | None,
    train_docs: int,
    max_phrasings: int | None = None,
) -> tuple[TaskSplit, list[dict[str, Any]]]:
    """The recorded split of one task, and its training documents."""
    if task.output_type != "multiple_choice":
        raise TuneError(f"{task.id} is a generation task; `irh tune` trains multiple-choice tasks only")
    entries = registry.instructions_for(task.id)
    phrasings = split_phrasings(
        entries, task.id, seed=seed, train_fraction=train_fraction, train_patterns=train_patterns, max_phrasings=max_phrasings
    )
    documents = split_documents(task, seed=seed, eval_limit=eval_limit, train_docs=train_docs)
    by_id = {e.id: e for e in entries}
    record = TaskSplit(
        original=phrasings.original,
        train=phrasings.train,
        held_out=phrasings.held_out,
        sha256={i: by_id[i].sha256 for i in phrasings.train + phrasings.held_out},
        phrasing_split=phrasings.how,  # type: ignore[arg-type]
        train_split=documents.train_split,
        train_doc_ids=[d["id"] for d in documents.train],
        eval_split=documents.eval_split,
        eval_doc_ids=documents.eval_ids,
        eval_limit=eval_limit,
        eval_seed=seed,
    )
    return record, documents.train
