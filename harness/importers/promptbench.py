"""PromptBench's prompts, read from its PyPI wheel with ``ast`` (never imported or executed).

``promptbench/prompts/task_oriented.py`` and ``role_oriented.py`` define dicts (dataset name ->
list of prompt strings) with ``str.format`` placeholders: ``{content}`` for the document as
PromptBench lays it out, and ``{task}`` for an MMLU subject. They are evaluation prompts
written for PromptBench (Zhu et al. 2023), not instruction-tuning data, so they are imported
as *unobserved*.

``{content}`` becomes our fields in PromptBench's layout for the dataset (:data:`DATASETS`);
a prompt without ``{content}`` would not show the document and is skipped.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.data.sources import PROMPTBENCH, PackageSource, fetch_source
from harness.importers.result import ImportResult
from harness.importers.templating import UnmappedPlaceholder, format_to_jinja
from harness.registry import RegisteredInstruction
from harness.schema import AnswerStyle, Instruction, Provenance

AUTHOR = "PromptBench authors (Zhu et al. 2023)"
FILES = {"task": "promptbench/prompts/task_oriented.py", "role": "promptbench/prompts/role_oriented.py"}


@dataclass(frozen=True)
class DatasetMapping:
    """How one PromptBench dataset's prompts map onto our tasks."""

    target_kind: str
    target: str
    #: Placeholder -> jinja text. ``content`` follows PromptBench's document layout.
    placeholders: dict[str, str]
    answer_choices: AnswerStyle | dict[str, str]


DATASETS: dict[str, DatasetMapping] = {
    # PromptBench's GLUE loader joins the pair on one line with these labels.
    "rte": DatasetMapping(
        "category",
        "nli-2way",
        {"content": "Sentence 1: {{ premise }} Sentence 2: {{ hypothesis }}"},
        {"entailment": "entailment", "not_entailment": "not_entailment"},
    ),
    "mnli": DatasetMapping(
        "category",
        "nli-3way",
        {"content": "Premise: {{ premise }} Hypothesis: {{ hypothesis }}"},
        {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"},
    ),
    # PromptBench 0.0.4 leaves the MMLU layout to the caller: the question, then lettered options.
    "mmlu": DatasetMapping(
        "family",
        "mmlu",
        {
            "content": "{{ question }}\nA. {{ choices[0] }}\nB. {{ choices[1] }}\nC. {{ choices[2] }}\nD. {{ choices[3] }}",
            "task": "{{ subject }}",
        },
        "letters",
    ),
}


def read_prompt_dicts(source: str) -> dict[str, dict[str, list[str]]]:
    """Top-level ``NAME = {dataset: [prompt, ...]}`` literals of a Python file, by name.

    The file is parsed, never run; only literal values are read (``ast.literal_eval``).
    """
    found: dict[str, dict[str, list[str]]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        if not isinstance(node.value, ast.Dict):
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
            found[node.targets[0].id] = {str(k): [p for p in v if isinstance(p, str)] for k, v in value.items()}
    return found


def import_promptbench(wheel: Path | None = None, source: PackageSource = PROMPTBENCH) -> ImportResult:
    """Read PromptBench's task- and role-oriented prompts from its wheel.

    Args:
        wheel: the ``.whl`` file; default: the pinned one in the cache, fetched
            (checksum-verified) on first use.
        source: the pin, for the version in source references.
    """
    if wheel is None:
        wheel = fetch_source(source)
    version = source.version
    result = ImportResult("promptbench", f"promptbench {version} (wheel)")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for kind, rel in FILES.items():
            if rel not in names:
                result.skip(rel, "file not found in the wheel")
                continue
            dicts = read_prompt_dicts(archive.read(rel).decode("utf-8"))
            if not dicts:
                result.skip(rel, "no literal prompt dict found")
                continue
            for dataset, prompts in (item for d in dicts.values() for item in d.items()):
                mapping = DATASETS.get(dataset)
                for index, prompt in enumerate(prompts):
                    item = f"{rel}#{dataset}[{index}]"
                    if mapping is None:
                        result.skip(item, "dataset has no task in this registry")
                        continue
                    if "{content}" not in prompt:
                        result.skip(item, "no {content} placeholder: the document would not be shown")
                        continue
                    try:
                        text = format_to_jinja(prompt.strip(), mapping.placeholders)
                    except UnmappedPlaceholder as exc:
                        result.skip(item, exc.skip_reason)
                        continue
                    except ValueError as exc:
                        result.skip(item, f"malformed format string: {exc}")
                        continue
                    instruction = Instruction(
                        id=f"pb.{dataset}.{kind}{index:02d}",
                        text=text,
                        answer_choices=mapping.answer_choices,
                        provenance=Provenance(status="unobserved", author=AUTHOR, source=f"promptbench {version}:{item}"),
                    )
                    result.add(RegisteredInstruction(instruction, f"promptbench {version}:{rel}", mapping.target_kind, mapping.target))
    return result
