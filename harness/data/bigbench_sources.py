"""Where BIG-bench comes from: a local copy, the Hugging Face hub's export, a package index.

PyPI stopped serving the ``bigbench==1.0.0`` sdist in December 2026, so no single place can
be relied on. The sources are tried in this order, each verified, and the first that serves
wins:

1. **a local copy** the user names: ``irh data fetch bbl --from PATH`` or ``IRH_BIGBENCH=PATH``;
   PATH is a clone of the BIG-bench repository, GitHub's tarball or zip of it, or the 1.0.0
   sdist file (whose own sha256 is then checked against :data:`~harness.data.sources.BIGBENCH`);
2. **the hub export** ``tasksource/bigbench`` (network; BIG-bench Lite only, read with
   ``datasets``; the columns of the ``bigbench`` dataset on the hub: ``idx``, ``inputs``,
   ``targets``, ``multiple_choice_targets``, ``multiple_choice_scores``, in train and
   validation splits, capped at 50,000 examples a task). It keeps the options and their
   scores per example, but the scores are integers (the hub's features declare int32), so
   BIG-bench's fractional target scores (half credit under ``multiple_choice_grade``) are
   lost; and it lacks what the task.json files have: the raw ``input`` (its ``inputs`` carry
   BIG-bench's own prefixes and, for most tasks, the options appended), each example's
   subtask and the subtask's ``task_prefix``, and the examples' order and ids. Its documents
   therefore differ from those of a task.json copy and never match a content pin, and tasks
   whose fields are cut out of the raw input (VitaminC, conlang) are not served;
3. **a package index** that still serves the sdist: ``IRH_PYPI_SIMPLE`` (a PEP 503 simple
   index), else pip's configured index, else PyPI; the file must match the pinned sha256.

When none serves, the error has one line per source tried: why it failed and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from harness.data.cache import DataMissing, sha256_file
from harness.data.sources import BIGBENCH, fetch_source, package_index_url

#: A local copy of BIG-bench (clone, tarball, zip or the 1.0.0 sdist), used before any network source.
BIGBENCH_ENV = "IRH_BIGBENCH"
#: The hub export read by :func:`hub_documents` (users with network).
HUB_EXPORT = "tasksource/bigbench"
#: BIG-bench Lite tasks whose fields are cut out of the raw input; the export cannot serve them.
HUB_UNSERVED = {
    "vitaminc_fact_verification": "needs the raw input to split passage and claim",
    "conlang_translation": "needs each subtask's name and task_prefix",
}

Converted = Iterator[tuple[str, str, list[dict[str, Any]]]]


class Tried(NamedTuple):
    """One source that did not serve: which, why, and what the user can do."""

    source: str
    why: str
    fix: str

    def line(self) -> str:
        return f"  - {self.source}: {self.why}; {self.fix}"


class BigBenchCopy(NamedTuple):
    """A copy of BIG-bench's task.json files on this machine, and how to name it in records."""

    path: Path
    label: str
    sha256: str | None


class NoBigBench(DataMissing):
    """No source served BIG-bench; the message has one line per source tried."""

    def __init__(self, what: str, tried: list[Tried]):
        self.tried = tried
        lines = [f"could not fetch {what} from any source:", *(t.line() for t in tried)]
        super().__init__("\n".join(lines))


def local_copy(from_path: Path | None) -> BigBenchCopy | Tried:
    """The user's own copy (``--from`` first, then ``IRH_BIGBENCH``), or why there is none."""
    where = from_path if from_path is not None else (Path(os.environ[BIGBENCH_ENV]) if os.environ.get(BIGBENCH_ENV) else None)
    how = "--from" if from_path is not None else BIGBENCH_ENV
    if where is None:
        return Tried(
            "local copy",
            f"none given (--from PATH or {BIGBENCH_ENV})",
            f"pass --from PATH or set {BIGBENCH_ENV}=PATH: a BIG-bench clone, its GitHub tarball or zip, or {BIGBENCH.filename}",
        )
    where = where.expanduser()
    if not where.exists():
        return Tried(f"local copy {where} ({how})", "does not exist", "check the path")
    if where.is_file() and where.name == BIGBENCH.filename:
        digest = sha256_file(where)
        if digest != BIGBENCH.sha256:
            return Tried(
                f"local copy {where} ({how})",
                f"sha256 {digest[:12]}… is not the pinned {BIGBENCH.sha256[:12]}… of {BIGBENCH.spec}",
                "use an unmodified sdist, or a clone or tarball of the repository",
            )
        return BigBenchCopy(where, f"local:{BIGBENCH.filename} (sha256 verified)", digest)
    return BigBenchCopy(where, f"local:{where}", None)


def package_index_copy() -> BigBenchCopy | Tried:
    """The 1.0.0 sdist from a package index (cached after the first download), or why not."""
    index = package_index_url()
    try:
        path = fetch_source(BIGBENCH)
    except DataMissing as exc:
        return Tried(
            f"package index {index}",
            str(exc).split(". Check the network")[0],
            f"serve {BIGBENCH.filename} from your own index (IRH_PYPI_SIMPLE=URL of a simple index), "
            f"or put the file into {BIGBENCH.path.parent}",
        )
    return BigBenchCopy(path, f"pypi:{BIGBENCH.spec}", BIGBENCH.sha256)


def hub_documents(tasks: list[str], load: Callable[..., Any] | None = None) -> Converted:
    """BIG-bench Lite tasks from the hub export (see the module docstring for what is lost).

    Args:
        tasks: BIG-bench task names (``strategyqa``), each one of the export's configs.
        load: ``datasets.load_dataset`` (tests pass a stand-in).
    """
    if load is None:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            raise DataMissing("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set")
        from datasets import load_dataset

        load = load_dataset
    for task in tasks:
        if task in HUB_UNSERVED:
            continue
        docs: list[dict[str, Any]] = []
        for split in ("train", "validation"):
            for row in load(HUB_EXPORT, task, split=split):
                doc: dict[str, Any] = {
                    "id": f"hub/{split}/{row['idx']}",
                    "group": "",
                    "fields": {"input": str(row["inputs"]), "context": ""},
                }
                if row.get("multiple_choice_targets"):
                    doc["choices"] = [str(c).strip() for c in row["multiple_choice_targets"]]
                    doc["scores"] = [float(s) for s in row["multiple_choice_scores"]]
                if row.get("targets"):
                    doc["targets"] = [str(t) for t in row["targets"]]
                docs.append(doc)
        # Subtask tasks (bbl.<task>.<subtask>) need each example's subtask, which the export drops.
        yield f"bbl.{task}", "test", docs
