"""promptsource templates, read from the PyPI sdist ``promptsource==0.2.3`` without installing it.

The sdist holds ``promptsource/templates/<dataset>[/<subset>]/templates.yaml``: YAML with
``!Template`` tags. They are read straight out of the archive with a loader that builds plain
dicts and constructs nothing else (:mod:`harness.importers.safe_yaml`).

A template is imported when its dataset maps onto our tasks, it is an ``original_task``
template, its ``jinja`` has the ``input ||| target`` form, and its input uses only fields we
have. Two kinds of dataset:

- fixed labels (:data:`DATASETS`: NLI, BoolQ, SST-2, MRPC): the target must be
  ``answer_choices[label]``; the input part becomes the phrasing (variables renamed to our
  fields; ``answer_choices`` inlined as a list of words), the answer choices a verbaliser in
  our label order.
- the document's own options (:data:`CHOICE_DATASETS`: ARC, COPA, HellaSwag, ...): the answer
  choices are templated per document (``{{choice1}} ||| {{choice2}}``). The template is
  rendered (in the sandbox) on stand-in rows of the source format and taken over only if its
  answer choices are the options our converter makes of the row, in our order, its target is
  the right option, and the rewritten input renders on our document as the source's on the
  row (:func:`harness.importers.templating.check_choice_template`). The phrasing then scores
  the option texts (``answer_choices: text``). Letters, fixed words, re-ordered or random
  choices, and templates that cover only part of the data are skipped with their reason.

Provenance: observed, collection p3-promptsource. Identical templates shared by several
datasets are kept once (ARC-Easy's and ARC-Challenge's apply to the family ``arc``).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

from harness.data.sources import PROMPTSOURCE, PackageSource, fetch_source
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
from harness.render import TemplateProblem, render_text, template_fields
from harness.schema import AnswerStyle, Instruction, Provenance

AUTHOR = "promptsource contributors (Bach et al. 2022)"

_MEMBER = re.compile(r"^[^/]+/promptsource/templates/(?P<dataset>.+)/templates\.yaml$")
_TARGETS = {"{{answer_choices[label]}}", "{%iflabel!=-1%}{{answer_choices[label]}}{%endif%}"}


_PH = {"premise": "premise", "hypothesis": "hypothesis"}
_GLUE_PAIR = {"sentence1": "premise", "sentence2": "hypothesis"}
_ENC = ("entailment", "neutral", "contradiction")
_TWO = ("entailment", "not_entailment")

#: Datasets with fixed labels (NLI, BoolQ, SST-2, MRPC). Label orders are those of the hub
#: datasets the templates were written for (SuperGLUE CB: 0 entailment, 1 contradiction, 2 neutral).
DATASETS: dict[str, DatasetMapping] = {
    "anli": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "snli": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "multi_nli": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "glue/mnli": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "glue/mnli_matched": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "glue/mnli_mismatched": DatasetMapping("category", "nli-3way", _PH, _ENC),
    "super_glue/cb": DatasetMapping("category", "nli-3way", _PH, ("entailment", "contradiction", "neutral")),
    "super_glue/rte": DatasetMapping("category", "nli-2way", _PH, _TWO),
    "glue/rte": DatasetMapping("category", "nli-2way", _GLUE_PAIR, _TWO),
    "hans": DatasetMapping("category", "nli-2way", _PH, _TWO),
    "scitail/snli_format": DatasetMapping("category", "nli-2way", _GLUE_PAIR, _TWO),
    "scitail/tsv_format": DatasetMapping("category", "nli-2way", _PH, _TWO),
    # super_glue/boolq: label 0 False, 1 True; our labels no, yes. (promptsource has no
    # templates of the plain `boolq` dataset.)
    "super_glue/boolq": DatasetMapping("task", "glue.boolq", {"passage": "passage", "question": "question"}, ("no", "yes")),
    "glue/sst2": DatasetMapping("task", "glue.sst2", {"sentence": "sentence"}, ("negative", "positive")),
    "glue/mrpc": DatasetMapping(
        "task", "glue.mrpc", {"sentence1": "sentence1", "sentence2": "sentence2"}, ("not_equivalent", "equivalent")
    ),
}

_KEYED = {"question": "question", "choices.text": "choices"}
_ARC = ChoiceMapping("family", "arc", "arc.easy", _KEYED, "arc", variable_options=True)

#: Datasets whose options are each document's own texts, with our task, the source fields'
#: counterparts (``choice1`` -> ``choices[0]``: our options are in the converter's order, see
#: harness/data/olmo.py) and the stand-in rows that test each template.
CHOICE_DATASETS: dict[str, ChoiceMapping] = {
    "ai2_arc/ARC-Easy": _ARC,
    "ai2_arc/ARC-Challenge": _ARC,
    "super_glue/copa": ChoiceMapping(
        "task",
        "commonsense.copa",
        "commonsense.copa",
        {"premise": "premise", "question": "question", "choice1": "choices[0]", "choice2": "choices[1]"},
        "copa",
    ),
    "commonsense_qa": ChoiceMapping("task", "commonsense.csqa", "commonsense.csqa", _KEYED, "csqa"),
    # Our context is ctx_a + ctx_b with lm-eval's clean-up; the separate parts are not fields.
    "hellaswag": ChoiceMapping(
        "task",
        "commonsense.hellaswag",
        "commonsense.hellaswag",
        {"ctx": "context", "activity_label": "activity", "endings": "choices"},
        "hellaswag",
    ),
    "openbookqa/main": ChoiceMapping(
        "task", "commonsense.openbookqa", "commonsense.openbookqa", {"question_stem": "question", "choices.text": "choices"}, "openbookqa"
    ),
    "piqa": ChoiceMapping(
        "task", "commonsense.piqa", "commonsense.piqa", {"goal": "goal", "sol1": "choices[0]", "sol2": "choices[1]"}, "piqa"
    ),
    # Our SciQ options are in a seeded shuffle (the source lists the answer last).
    "sciq": ChoiceMapping("task", "science.sciq", "science.sciq", {"question": "question", "support": "support"}, "sciq"),
    "social_i_qa": ChoiceMapping(
        "task",
        "commonsense.siqa",
        "commonsense.siqa",
        {"context": "context", "question": "question", "answerA": "choices[0]", "answerB": "choices[1]", "answerC": "choices[2]"},
        "siqa",
    ),
    "winogrande/winogrande_xl": ChoiceMapping(
        "task",
        "commonsense.winogrande",
        "commonsense.winogrande",
        {"sentence": "sentence", "option1": "choices[0]", "option2": "choices[1]"},
        "winogrande",
    ),
}

#: ``{% if <answer is known> %} ... {% endif %}`` around the whole template (CommonsenseQA):
#: the guard only drops unlabelled rows, so the template inside is the phrasing.
_GUARD = re.compile(
    r"^\s*\{%-?\s*if\s+(?:answerKey\s*!=\s*(?:\"\"|'')|label\s*!=\s*-1)\s*-?%\}(?P<body>.*)\{%-?\s*endif\s*-?%\}\s*$", re.DOTALL
)
#: promptsource's own filters that pick at random per document (not in our sandbox).
_RANDOM = re.compile(r"\|\s*(?:choice|shuffle|random)\b")


def slug(text: str, keep: str = "") -> str:
    """Lower-case id fragment: runs of anything but letters, digits and ``keep`` become one ``-``."""
    return re.sub(rf"[^a-z0-9{re.escape(keep)}]+", "-", text.lower()).strip("-") or "x"


def _jinja_list(words: list[str]) -> str:
    return "[" + ", ".join(repr(w) for w in words) + "]"


def _common_problem(template: dict[str, Any]) -> str | None:
    """Why a template is not imported whatever its dataset, or None."""
    if find_unsupported(template):
        return "unsupported YAML tag (not constructed)"
    metadata = template.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("original_task"):
        return "not an original-task template (original_task is false)"
    jinja = template.get("jinja")
    if not isinstance(jinja, str) or jinja.count("|||") != 1:
        return "jinja is not of the form 'input ||| target'"
    return None


def _rename(source_input: str, fields: dict[str, str]) -> str:
    """The input part with our fields (raises UnmappedPlaceholder, TemplateProblem)."""
    return rename_variables(source_input.strip(), fields)


def _entry(
    template: dict[str, Any],
    dataset: str,
    version: str,
    used_ids: set[str],
    text: str,
    answer_choices: AnswerStyle | dict[str, str],
    mapping: DatasetMapping | ChoiceMapping,
    option_count: int | None = None,
) -> RegisteredInstruction:
    name = str(template.get("name", template.get("id", "?")))
    base = f"ps.{slug(dataset, keep='_')}.{slug(name)}"  # e.g. ps.super_glue-rte.can-we-infer
    inst_id, n = base, 1
    while inst_id in used_ids:
        n += 1
        inst_id = f"{base}-{n}"
    used_ids.add(inst_id)
    rel = f"promptsource/templates/{dataset}/templates.yaml"
    reference = str(template.get("reference") or "").strip()
    instruction = Instruction(
        id=inst_id,
        text=text,
        answer_choices=answer_choices,
        option_count=option_count,
        provenance=Provenance(
            status="observed", author=AUTHOR, collections=["p3-promptsource"], source=f"promptsource {version}:{rel}#{name}"
        ),
        notes=f"promptsource reference: {reference}" if reference else None,
    )
    return RegisteredInstruction(instruction, f"promptsource {version}:{rel}", mapping.target_kind, mapping.target)


def _import_template(
    template: dict[str, Any], dataset: str, mapping: DatasetMapping, version: str, used_ids: set[str]
) -> RegisteredInstruction | str:
    """One template of a fixed-label dataset as a registry entry, or the reason it cannot be imported."""
    problem = _common_problem(template)
    if problem:
        return problem
    source_input, target = str(template["jinja"]).split("|||")
    if re.sub(r"\s+", "", target) not in _TARGETS:
        return "target is not answer_choices[label]; no verbaliser can be derived"
    choices = template.get("answer_choices")
    if not isinstance(choices, str) or not choices.strip():
        return "no answer_choices"
    if "{{" in choices or "{%" in choices:
        return "answer choices are templated per document"
    words = [w.strip() for w in choices.split("|||")]
    if len(words) != len(mapping.labels):
        return f"{len(words)} answer choices for {len(mapping.labels)} labels"
    try:
        text = _rename(source_input, {**mapping.fields, "answer_choices": _jinja_list(words)})
    except UnmappedPlaceholder as exc:
        return exc.skip_reason
    except TemplateProblem as exc:
        return f"template does not parse: {exc}"
    if _words_hidden(text, words):
        return "answer words never appear in the prompt (a verbaliser's words must be shown)"
    return _entry(template, dataset, version, used_ids, text, dict(zip(mapping.labels, words, strict=True)), mapping)


def _words_hidden(text: str, words: list[str]) -> bool:
    """Whether some answer word is not in the prompt rendered on a stand-in document: the
    registry refuses such a verbaliser (harness/registry.py, reachability check)."""
    try:
        shown = render_text(text, {name: f"<{name}>" for name in template_fields(text)}).lower()
    except TemplateProblem:
        return False  # the registry's own checks report it
    return any(word.lower() not in shown for word in words)


def _render_source(jinja: str) -> SourceRenderer:
    """Renders a whole promptsource template on a source row as promptsource does: with the
    row's ``answer_choices`` list, output split at ``|||``, both parts stripped."""

    def render(row: dict[str, Any], answer_choices: list[str] | None) -> tuple[str, str] | str:
        parts = [part.strip() for part in render_text(jinja, {**row, "answer_choices": answer_choices}).split("|||")]
        if len(parts) != 2 or not parts[0]:
            return "renders no prompt for some documents (the template covers only part of the data)"
        return parts[0], parts[1]

    return render


def _import_choice_template(
    template: dict[str, Any], dataset: str, mapping: ChoiceMapping, version: str, used_ids: set[str]
) -> RegisteredInstruction | str:
    """One template of a dataset whose options are the document's own texts, or why not."""
    problem = _common_problem(template)
    if problem:
        return problem
    jinja = str(template["jinja"])
    choices = template.get("answer_choices")
    if not isinstance(choices, str) or not choices.strip():
        return "no answer_choices"
    if _RANDOM.search(jinja) or _RANDOM.search(choices):
        return "picks its wording or option order at random per document (promptsource's choice filter)"
    render = _render_source(jinja)
    problem = check_choice_template(mapping, render, answer_choices=choices)
    if problem:
        return problem
    guard = _GUARD.match(jinja)
    body = guard.group("body") if guard and guard.group("body").count("|||") == 1 else jinja
    source_input = body.split("|||")[0]
    try:
        text = _rename(source_input, {**mapping.fields, "answer_choices": "choices"})
    except UnmappedPlaceholder as exc:
        return exc.skip_reason
    except TemplateProblem as exc:
        return f"template does not parse: {exc}"
    problem = check_choice_template(mapping, render, answer_choices=choices, text=text)
    if problem:
        return problem
    count = stated_option_count(source_input) if mapping.variable_options else None
    return _entry(template, dataset, version, used_ids, text, "text", mapping, option_count=count)


def _members(archive: Path) -> list[tuple[str, str]]:
    """(dataset, YAML text) for every templates.yaml in the sdist, in a stable order."""
    out = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():
            match = _MEMBER.match(member.name)
            if not match or not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                out.append((match.group("dataset"), handle.read().decode("utf-8")))
    # Datasets in DATASETS order first (so ids name the first dataset that has a template).
    order = {name: i for i, name in enumerate([*DATASETS, *CHOICE_DATASETS])}
    return sorted(out, key=lambda m: (order.get(m[0], len(order)), m[0]))


def import_promptsource(archive: Path | None = None, source: PackageSource = PROMPTSOURCE) -> ImportResult:
    """Read promptsource's templates from its sdist.

    Args:
        archive: the sdist (``.tar.gz``); default: the pinned one in the cache, fetched
            (checksum-verified) on first use.
        source: the pin, for the version in source references.

    Returns:
        The mapped phrasings (not yet checked against the registry's tasks) and the skips.
    """
    if archive is None:
        archive = fetch_source(source)
    version = source.version
    result = ImportResult("promptsource", f"promptsource {version} (sdist)")
    used_ids: set[str] = set()
    for dataset, text in _members(archive):
        rel = f"promptsource/templates/{dataset}/templates.yaml"
        try:
            data = load_plain_yaml(text)
        except Exception as exc:  # a broken file must not stop the others
            result.skip(rel, f"YAML does not parse: {type(exc).__name__}")
            continue
        templates = data.get("templates") if isinstance(data, dict) else None
        if not isinstance(templates, dict):
            result.skip(rel, "no templates mapping")
            continue
        mapping = DATASETS.get(dataset)
        choice_mapping = CHOICE_DATASETS.get(dataset)
        for key, template in templates.items():
            name = template.get("name", key) if isinstance(template, dict) else key
            item = f"{rel}#{name}"
            if mapping is None and choice_mapping is None:
                result.skip(item, "dataset has no task in this registry")
                continue
            if not isinstance(template, dict):
                result.skip(item, "unsupported YAML tag (not constructed)" if find_unsupported(template) else "not a template")
                continue
            if choice_mapping is not None:
                outcome = _import_choice_template(template, dataset, choice_mapping, version, used_ids)
            else:
                assert mapping is not None
                outcome = _import_template(template, dataset, mapping, version, used_ids)
            if isinstance(outcome, str):
                result.skip(item, outcome)
            else:
                result.add(outcome)
    return result
