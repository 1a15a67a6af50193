"""FLAN templates shipped inside the installed lm-eval package.

lm-eval carries FLAN prompts in two places, read here as YAML (never imported):

- ``tasks/benchmarks/flan/flan_held_in.yaml``: the Flan 2021 templates of datasets in the
  Flan tuning mixture (ANLI R1-R3, ARC, BoolQ, RTE), one lm-eval task per template, with
  ``doc_to_text`` (the prompt) and ``doc_to_target`` (``{{[word, ...][label]}}``, or for
  ARC the right option's text). They are *observed* for models tuned on FLAN (collections
  flan-2021, flan-2022).
- ``tasks/mmlu/flan_*/**/_*template_yaml``: the Flan-T5 paper's MMLU prompt. MMLU is held
  out of the Flan mixture (lm-eval lists it under ``flan_held_out``), so this prompt is
  imported as *unobserved*: an evaluation prompt, not tuning data.

Templates are mapped onto our tasks by the dataset they were written for (:data:`DATASETS`):
their variables are renamed to our fields and their answer words become a verbaliser in our
label order. ANLI and RTE templates target the NLI categories (nli-3way, nli-2way), as in the
literature, so they apply to every NLI task with that label scheme; BoolQ's the task
glue.boolq. ARC's (:data:`CHOICE_DATASETS`) list the document's options and target the right
one's text: they are taken over with ``answer_choices: text`` (the model scores each option)
for the family ``arc`` once stand-in rows show that they list our options in our order and
target the right one (:func:`harness.importers.templating.check_choice_template`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
from pathlib import Path
from typing import Any

from harness.importers.result import ImportResult
from harness.importers.safe_yaml import find_unsupported, load_plain_yaml
from harness.importers.templating import (
    ChoiceMapping,
    DatasetMapping,
    SourceRenderer,
    UnmappedPlaceholder,
    check_choice_template,
    rename_variables,
    stated_option_count,
)
from harness.registry import RegisteredInstruction
from harness.render import TemplateProblem, render_text
from harness.schema import AnswerStyle, Instruction, Provenance

FLAN_HELD_IN = "benchmarks/flan/flan_held_in.yaml"
MMLU_GLOB = "mmlu/flan_*/**/_*template_yaml"
AUTHOR_HELD_OUT = "Chung et al. 2022 (Flan-T5 evaluation prompt)"


_NLI3 = DatasetMapping(
    "category", "nli-3way", {"premise": "premise", "hypothesis": "hypothesis"}, ("entailment", "neutral", "contradiction"), "anli"
)
# GLUE naming: sentence1 is the premise, sentence2 the hypothesis; label 0 = entailment.
_RTE = DatasetMapping("category", "nli-2way", {"sentence1": "premise", "sentence2": "hypothesis"}, ("entailment", "not_entailment"), "rte")

# SuperGLUE BoolQ: label 0 False, 1 True; our labels no, yes.
_BOOLQ = DatasetMapping("task", "glue.boolq", {"passage": "passage", "question": "question"}, ("no", "yes"), "boolq")

DATASETS: dict[str, DatasetMapping] = {"anli_r1": _NLI3, "anli_r2": _NLI3, "anli_r3": _NLI3, "rte": _RTE, "boolq": _BOOLQ}

# ARC-Easy and ARC-Challenge share one template list; both apply to the family.
_ARC = ChoiceMapping(
    "family", "arc", "arc.easy", {"question": "question", "choices.text": "choices"}, "arc", variable_options=True, stem="arc"
)

#: Datasets whose options are each document's own texts (see harness/importers/templating.py).
CHOICE_DATASETS: dict[str, ChoiceMapping] = {"arc_easy": _ARC, "arc_challenge": _ARC}

_TASK_NAME = re.compile(r"^(?P<dataset>.+)_prompt-(?P<index>\d+)$")
_TARGET_LIST = re.compile(r"^\{\{\s*(?P<words>\[.*\])\s*\[\s*label\s*\]\s*\}\}$", re.DOTALL)


def lm_eval_tasks_dir() -> tuple[Path, str]:
    """The installed lm-eval's ``tasks`` folder and its version, found without importing it."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("lm-eval is not installed; `pip install lm-eval` (see scripts/install.sh)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    try:
        version = importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return folder, version


def _held_in_templates(data: Any) -> list[dict[str, Any]]:
    """Every lm-eval task entry (a dict with ``task`` and ``doc_to_text``) in a group file, in order."""
    found: list[dict[str, Any]] = []
    if isinstance(data, dict):
        if "doc_to_text" in data and "task" in data:
            found.append(data)
        for value in data.values():
            found.extend(_held_in_templates(value))
    elif isinstance(data, list):
        for value in data:
            found.extend(_held_in_templates(value))
    return found


def _verbaliser(doc_to_target: Any, labels: tuple[str, ...]) -> dict[str, str] | str:
    """Our verbaliser from ``{{[word, ...][label]}}``, or the reason it cannot be built."""
    match = _TARGET_LIST.match(str(doc_to_target).strip())
    if not match:
        return "doc_to_target is not a list of answer words indexed by label"
    try:
        words = ast.literal_eval(match.group("words"))
    except (ValueError, SyntaxError):
        return "answer words are not a plain list of strings"
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return "answer words are not a plain list of strings"
    if len(words) != len(labels):
        return f"{len(words)} answer words for {len(labels)} labels"
    return dict(zip(labels, words, strict=True))


def _render_source(entry: dict[str, Any]) -> SourceRenderer:
    """Renders an lm-eval task's ``doc_to_text`` and ``doc_to_target`` on a source row (sandboxed)."""

    def render(row: dict[str, Any], answer_choices: list[str] | None) -> tuple[str, str] | str:
        return render_text(str(entry["doc_to_text"]), row), render_text(str(entry.get("doc_to_target", "")), row)

    return render


def _import_held_in(path: Path, rel: str, version: str, result: ImportResult) -> None:
    data = load_plain_yaml(path.read_text(encoding="utf-8"))
    position: dict[str, int] = {}
    for entry in _held_in_templates(data):
        name = str(entry["task"])
        item = f"{rel}#{name}"
        match = _TASK_NAME.match(name)
        dataset = match.group("dataset") if match else name
        # Template numbers follow the order in the file: lm-eval 0.4.13 names two RTE
        # templates `rte_prompt-1`, so the names cannot serve as ids.
        index = position[dataset] = position.get(dataset, -1) + 1
        mapping: DatasetMapping | ChoiceMapping | None = DATASETS.get(dataset) or CHOICE_DATASETS.get(dataset)
        if mapping is None:
            result.skip(item, f"no task in this registry for FLAN dataset {dataset!r}")
            continue
        if find_unsupported(entry):
            result.skip(item, "uses YAML tags (e.g. !function) that are not imported")
            continue
        option_count = None
        answer_choices: dict[str, str] | AnswerStyle = "text"
        if isinstance(mapping, ChoiceMapping):
            problem = check_choice_template(mapping, _render_source(entry))
        else:
            verbaliser = _verbaliser(entry.get("doc_to_target"), mapping.labels)
            problem = verbaliser if isinstance(verbaliser, str) else None
            if isinstance(verbaliser, dict):
                answer_choices = verbaliser
        if problem:
            result.skip(item, problem)
            continue
        try:
            text = rename_variables(str(entry["doc_to_text"]), mapping.fields)
        except UnmappedPlaceholder as exc:
            result.skip(item, exc.skip_reason)
            continue
        except TemplateProblem as exc:
            result.skip(item, f"template does not parse: {exc}")
            continue
        if isinstance(mapping, ChoiceMapping):
            problem = check_choice_template(mapping, _render_source(entry), text=text)
            if problem:
                result.skip(item, problem)
                continue
            option_count = stated_option_count(str(entry["doc_to_text"])) if mapping.variable_options else None
        instruction = Instruction(
            id=f"flan.{mapping.stem}.t{index:02d}",
            text=text,
            answer_choices=answer_choices,
            option_count=option_count,
            provenance=Provenance(status="observed", collections=["flan-2021", "flan-2022"], source=f"lm-eval {version}:tasks/{item}"),
        )
        result.add(RegisteredInstruction(instruction, f"lm-eval {version}:tasks/{rel}", mapping.target_kind, mapping.target))


def _import_mmlu(path: Path, rel: str, version: str, result: ImportResult) -> None:
    variant = "-".join(Path(rel).parent.parts[1:]).removeprefix("flan_")  # e.g. n_shot-loglikelihood
    data = load_plain_yaml(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "doc_to_text" not in data:
        result.skip(rel, "no doc_to_text in the template file")
        return
    if "cot" in variant:
        result.skip(rel, "chain-of-thought prompt: it expects a generated rationale, not a scored option")
        return
    choices = data.get("doc_to_choice")
    if data.get("output_type") != "multiple_choice" or choices != ["(A)", "(B)", "(C)", "(D)"]:
        result.skip(rel, "not a multiple-choice variant scored on (A)-(D)")
        return
    try:
        text = rename_variables(str(data["doc_to_text"]), {"question": "question", "choices": "choices"})
    except UnmappedPlaceholder as exc:
        result.skip(rel, exc.skip_reason)
        return
    instruction = Instruction(
        id=f"flan.mmlu.{variant}",
        text=text,
        # lm-eval scores " (A)"; ours scores the letter after the delimiter " (", i.e. " (A".
        answer_choices="letters",
        target_delimiter=" (",
        provenance=Provenance(status="unobserved", author=AUTHOR_HELD_OUT, source=f"lm-eval {version}:tasks/{rel}"),
        notes="Flan-T5's MMLU evaluation prompt (MMLU is held out of the Flan mixture); "
        "lm-eval scores '(A)'...'(D)', here the continuation is ' (' + letter.",
    )
    result.add(RegisteredInstruction(instruction, f"lm-eval {version}:tasks/{rel}", "family", "mmlu"))


def import_flan(tasks_dir: Path | None = None, version: str | None = None) -> ImportResult:
    """Read the FLAN templates of lm-eval's task folder.

    Args:
        tasks_dir: lm-eval's ``tasks`` folder; default: the installed lm-eval's.
        version: lm-eval version for the source references; default: the installed one.

    Returns:
        The mapped phrasings (not yet checked against the registry's tasks) and the skips.
    """
    if tasks_dir is None:
        tasks_dir, installed = lm_eval_tasks_dir()
        version = version or installed
    version = version or "unknown"
    result = ImportResult("flan", f"lm-eval {version}")
    held_in = tasks_dir / FLAN_HELD_IN
    if held_in.exists():
        _import_held_in(held_in, FLAN_HELD_IN, version, result)
    else:
        result.skip(FLAN_HELD_IN, "file not found in this lm-eval version")
    # Multiple-choice variants first, so that a generative copy of the same text is the one skipped.
    paths = sorted(tasks_dir.glob(MMLU_GLOB), key=lambda p: ("loglikelihood" not in str(p), str(p)))
    for path in paths:
        _import_mmlu(path, path.relative_to(tasks_dir).as_posix(), version, result)
    return result
