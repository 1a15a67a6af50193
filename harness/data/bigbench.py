"""BIG-bench Lite tasks from BIG-bench's task.json files (a clone, a tarball, or the 1.0.0 sdist).

Where the copy comes from is :mod:`harness.data.bigbench_sources`' concern; here it is
streamed once and only the 24 BIG-bench Lite tasks are read. A task with
subtasks has an empty top-level task.json and one task.json per subtask, one level down;
their examples are pooled and each document records its subtask as its `group`.
"""

from __future__ import annotations

import json
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BBL_TASKS = (
    "auto_debugging bbq_lite_json code_line_description conceptual_combinations "
    "conlang_translation emoji_movie formal_fallacies_syllogisms_negation hindu_knowledge "
    "known_unknowns language_identification linguistics_puzzles logic_grid_puzzle "
    "logical_deduction misconceptions_russian novel_concepts operators "
    "parsinlu_reading_comprehension play_dialog_same_or_different repeat_copy_logic "
    "strange_stories strategyqa symbol_interpretation vitaminc_fact_verification winowhy"
).split()

#: Subtasks that are also tasks of their own, ``bbl.<task>.<subtask>`` (the same documents
#: and ids as in the pooled task): the InstructionEval study ran strange_stories on its
#: boolean subtask alone (with yes/no labels) and logical_deduction on five objects alone.
BBL_SUBTASKS: dict[str, tuple[str, ...]] = {"strange_stories": ("boolean",), "logical_deduction": ("five_objects",)}
BBL_SUBTASK_NAMES = frozenset(f"{task}.{sub}" for task, subs in BBL_SUBTASKS.items() for sub in subs)

_EMOJI_QUESTION = "What movie does this emoji describe?"
_FALLACY_QUESTION = re.compile(r"\s*Is the argument, given the explicitly stated premises, deductively valid or invalid\?\s*$")
_CONLANG_NAME = re.compile(r"sentences in (.+?) and their English translations")


def _input_fields(task: str, subtask: str, spec: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """Turn one raw example into the fields phrasings use (see tasks/bbl.yaml)."""
    text = str(example.get("input", ""))
    context = str(spec.get("task_prefix") or "").strip()
    fields: dict[str, Any] = {"input": text, "context": context}
    if task == "emoji_movie":
        fields["input"] = text.replace(_EMOJI_QUESTION, "", 1).strip()
    elif task == "formal_fallacies_syllogisms_negation":
        fields["input"] = _FALLACY_QUESTION.sub("", text).strip()
    elif task == "vitaminc_fact_verification":
        passage, _, claim = text.partition("\nClaim: ")
        fields = {"passage": passage.strip(), "claim": claim.strip()}
    elif task == "conlang_translation":
        match = _CONLANG_NAME.search(context)
        language = match.group(1) if match else subtask.rsplit("_", 1)[0].capitalize()
        to_english = subtask.endswith("_from")
        fields["source_language"] = language if to_english else "English"
        fields["target_language"] = "English" if to_english else language
    return fields


def bigbench_documents(task: str, subtask: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for i, example in enumerate(spec.get("examples", [])):
        doc: dict[str, Any] = {
            "id": f"{subtask}/{i}",
            "group": subtask,
            "fields": _input_fields(task, subtask, spec, example),
        }
        if example.get("target_scores"):
            # Surrounding white space (some options end in a newline) is not part of the answer.
            doc["choices"] = [str(k).strip() for k in example["target_scores"]]
            doc["scores"] = [float(v) for v in example["target_scores"].values()]
        if "target" in example:
            target = example["target"]
            doc["targets"] = [str(t) for t in target] if isinstance(target, list) else [str(target)]
        docs.append(doc)
    return docs


def _task_json_path(name: str) -> tuple[str, str] | None:
    """(task, subtask) of a ``.../benchmark_tasks/<task>[/<subtask>]/task.json`` path, else None.

    A task without subtasks is its own subtask; deeper folders are not task files."""
    parts = name.replace("\\", "/").split("/")
    if parts[-1] != "task.json" or "benchmark_tasks" not in parts:
        return None
    rest = parts[parts.index("benchmark_tasks") + 1 : -1]
    if not rest or len(rest) > 2:
        return None
    return rest[0], rest[-1]


def iter_task_json(copy: Path, wanted: set[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (task, subtask, parsed task.json) for the wanted tasks of a copy of BIG-bench.

    ``copy`` is a clone of the repository (a folder holding ``bigbench/benchmark_tasks``, or
    that folder itself), a tarball of it (GitHub's ``.tar.gz``, or the ``bigbench`` sdist:
    the same layout under one top folder) or a ``.zip`` of it. Archives are streamed; only
    the wanted tasks' files are read.
    """
    if copy.is_dir():
        for path in sorted(copy.rglob("task.json")):
            found = _task_json_path(path.as_posix())
            if found and found[0] in wanted:
                yield found[0], found[1], json.loads(path.read_text(encoding="utf-8"))
        return
    if zipfile.is_zipfile(copy):
        with zipfile.ZipFile(copy) as zf:
            for name in zf.namelist():
                found = _task_json_path(name)
                if found and found[0] in wanted:
                    yield found[0], found[1], json.loads(zf.read(name).decode("utf-8"))
        return
    with tarfile.open(copy, "r:*") as tar:
        for member in tar:
            found = _task_json_path(member.name) if member.isfile() else None
            if not found or found[0] not in wanted:
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                yield found[0], found[1], json.loads(fh.read().decode("utf-8"))


def convert_bigbench(copy: Path, tasks: tuple[str, ...] | list[str] = BBL_TASKS) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """Yield (task id, split, documents) for each wanted task, pooling its subtasks, and for
    each of its :data:`BBL_SUBTASKS` present."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for task, subtask, spec in iter_task_json(copy, set(tasks)):
        found.setdefault(task, {})[subtask] = spec
    for task in tasks:
        specs = found.get(task, {})
        docs = [d for sub, spec in sorted(specs.items()) for d in bigbench_documents(task, sub, spec)]
        yield f"bbl.{task}", "test", docs
        for sub in BBL_SUBTASKS.get(task, ()):
            if sub in specs:
                yield f"bbl.{task}.{sub}", "test", bigbench_documents(task, sub, specs[sub])
