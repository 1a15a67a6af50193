"""promptsource templates, read from the PyPI sdist ``promptsource==0.2.3`` without installing it.

The sdist holds ``promptsource/templates/<dataset>[/<subset>]/templates.yaml``: YAML with
``!Template`` tags. They are read straight out of the archive with a loader that builds plain
dicts and constructs nothing else (:mod:`harness.importers.safe_yaml`).

A template is imported when its dataset maps onto our tasks (:data:`DATASETS`), it is an
``original_task`` template, its ``jinja`` has the ``input ||| target`` form with target
``answer_choices[label]``, and its input uses only fields we have. The input part becomes the
phrasing (variables renamed to our fields; ``answer_choices`` inlined as a list of words), the
answer choices a verbaliser in our label order. Provenance: observed, collection
p3-promptsource. Identical templates shared by several datasets are kept once.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

from harness.data.sources import PROMPTSOURCE, PackageSource, fetch_source
from harness.importers.result import ImportResult
from harness.importers.safe_yaml import find_unsupported, load_plain_yaml
from harness.importers.templating import DatasetMapping, UnmappedPlaceholder, rename_variables
from harness.registry import RegisteredInstruction
from harness.render import TemplateProblem
from harness.schema import Instruction, Provenance

AUTHOR = "promptsource contributors (Bach et al. 2022)"

_MEMBER = re.compile(r"^[^/]+/promptsource/templates/(?P<dataset>.+)/templates\.yaml$")
_TARGETS = {"{{answer_choices[label]}}", "{%iflabel!=-1%}{{answer_choices[label]}}{%endif%}"}


_PH = {"premise": "premise", "hypothesis": "hypothesis"}
_GLUE_PAIR = {"sentence1": "premise", "sentence2": "hypothesis"}
_ENC = ("entailment", "neutral", "contradiction")
_TWO = ("entailment", "not_entailment")

#: Datasets whose data our NLI tasks hold. Label orders are those of the hub datasets the
#: templates were written for (SuperGLUE CB: 0 entailment, 1 contradiction, 2 neutral).
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
}


def slug(text: str, keep: str = "") -> str:
    """Lower-case id fragment: runs of anything but letters, digits and ``keep`` become one ``-``."""
    return re.sub(rf"[^a-z0-9{re.escape(keep)}]+", "-", text.lower()).strip("-") or "x"


def _jinja_list(words: list[str]) -> str:
    return "[" + ", ".join(repr(w) for w in words) + "]"


def _import_template(
    template: dict[str, Any], dataset: str, mapping: DatasetMapping, version: str, used_ids: set[str]
) -> RegisteredInstruction | str:
    """One template as a registry entry, or the reason it cannot be imported."""
    name = str(template.get("name", template.get("id", "?")))
    if find_unsupported(template):
        return "unsupported YAML tag (not constructed)"
    metadata = template.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("original_task"):
        return "not an original-task template (original_task is false)"
    jinja = template.get("jinja")
    if not isinstance(jinja, str) or jinja.count("|||") != 1:
        return "jinja is not of the form 'input ||| target'"
    source_input, target = jinja.split("|||")
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
        text = rename_variables(source_input.strip(), {**mapping.fields, "answer_choices": _jinja_list(words)})
    except UnmappedPlaceholder as exc:
        return exc.skip_reason
    except TemplateProblem as exc:
        return f"template does not parse: {exc}"
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
        answer_choices=dict(zip(mapping.labels, words, strict=True)),
        provenance=Provenance(
            status="observed", author=AUTHOR, collections=["p3-promptsource"], source=f"promptsource {version}:{rel}#{name}"
        ),
        notes=f"promptsource reference: {reference}" if reference else None,
    )
    return RegisteredInstruction(instruction, f"promptsource {version}:{rel}", mapping.target_kind, mapping.target)


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
    order = {name: i for i, name in enumerate(DATASETS)}
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
        for key, template in templates.items():
            name = template.get("name", key) if isinstance(template, dict) else key
            item = f"{rel}#{name}"
            if mapping is None:
                result.skip(item, "dataset has no task in this registry")
                continue
            if not isinstance(template, dict):
                result.skip(item, "unsupported YAML tag (not constructed)" if find_unsupported(template) else "not a template")
                continue
            outcome = _import_template(template, dataset, mapping, version, used_ids)
            if isinstance(outcome, str):
                result.skip(item, outcome)
            else:
                result.add(outcome)
    return result
