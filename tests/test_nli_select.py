"""The budget, replacement and selection rules (pure), and the model scores they use (tiny model)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.nli import scoring
from harness.nli.examples import LABELS3, Example, NLIStudyError
from harness.nli.select import (
    STRATEGIES,
    concat_label,
    concatenate,
    draw_budget,
    entropy,
    per_class_k,
    replace,
    run_strategy,
    select_concat,
    select_difficulty,
    select_misclassified,
    select_random,
    select_uncertainty,
)


def make_pool(n_per_label: int = 20, per_premise: int = 6) -> list[Example]:
    """Examples cycling through the labels, ``per_premise`` hypotheses sharing each premise."""
    out = []
    for i in range(3 * n_per_label):
        label = LABELS3[i % 3]
        out.append(Example(f"x{i}", f"Premise {i // per_premise}.", f"Hypothesis {i}", label, "toy"))
    return out


def counts(examples: list[Example]) -> Counter[str]:
    return Counter(ex.label for ex in examples)


# --------------------------------------------------------------------------- budget


def test_draw_budget_splits_the_pool_deterministically() -> None:
    pool = make_pool()
    initial, rest = draw_budget(pool, 25, seed=1)
    assert len(initial) == 25 and len(rest) == len(pool) - 25
    assert {ex.id for ex in initial} | {ex.id for ex in rest} == {ex.id for ex in pool}
    assert not {ex.id for ex in initial} & {ex.id for ex in rest}
    assert draw_budget(pool, 25, seed=1) == (initial, rest)
    assert draw_budget(pool, 25, seed=2)[0] != initial
    assert draw_budget(pool, len(pool), seed=1)[1] == []


def test_per_class_k_is_k_percent_of_each_class_rounded_down() -> None:
    initial = make_pool(20)[:50]  # 17 entailment, 17 neutral, 16 contradiction
    assert per_class_k(initial, 10) == {"entailment": 1, "neutral": 1, "contradiction": 1}
    assert per_class_k(initial, 50) == {"entailment": 8, "neutral": 8, "contradiction": 8}
    assert per_class_k(make_pool(20), 5) == {label: 1 for label in LABELS3}
    assert per_class_k(initial, 0) == {label: 0 for label in LABELS3}
    assert per_class_k(initial, 100) == dict(counts(initial))


def test_replace_keeps_the_budget_and_the_class_counts() -> None:
    pool = make_pool()
    initial, rest = draw_budget(pool, 30, seed=4)
    k = per_class_k(initial, 20)
    # More than k of one class, fewer of another, none of the third.
    replacement = [ex for ex in rest if ex.label == "entailment"][: k["entailment"] + 3] + [ex for ex in rest if ex.label == "neutral"][:1]
    result = replace(initial, replacement, k, seed=0)
    assert len(result) == len(initial) and counts(result) == counts(initial)
    added = [ex for ex in result if ex.id not in {i.id for i in initial}]
    assert Counter(ex.label for ex in added) == {"entailment": k["entailment"], "neutral": 1}
    assert [ex.id for ex in added if ex.label == "entailment"] == [ex.id for ex in replacement[: k["entailment"]]]
    assert replace(initial, replacement, k, seed=0) == result
    assert replace(initial, [], k, seed=0) == initial
    with pytest.raises(NLIStudyError, match="repeats"):
        replace(initial, initial[:1], k, seed=0)


def test_budget_and_k_out_of_range_are_refused() -> None:
    pool = make_pool(2)
    with pytest.raises(NLIStudyError, match=r"budget 7 is larger than the pool \(6 examples\)"):
        draw_budget(pool, 7, seed=0)
    with pytest.raises(NLIStudyError, match="at least 1"):
        draw_budget(pool, 0, seed=0)
    for bad in (-1, 100.5, float("nan")):
        with pytest.raises(NLIStudyError, match="between 0 and 100"):
            per_class_k(pool, bad)
    with pytest.raises(NLIStudyError, match="unknown strategy"):
        run_strategy("smartest", pool, {"entailment": 1}, seed=0)


# --------------------------------------------------------------------------- strategies

K = {"entailment": 2, "neutral": 3, "contradiction": 1}


def test_random_takes_k_per_class_from_the_rest() -> None:
    rest = make_pool()
    chosen = select_random(rest, K, seed=5)
    assert counts(chosen) == K and all(ex.origin == "select:random" for ex in chosen)
    assert select_random(rest, K, seed=5) == chosen and select_random(rest, K, seed=6) != chosen


def test_uncertainty_takes_the_highest_entropy_first_per_class() -> None:
    rest = make_pool(10)
    # Entropy rises with the example's number: probabilities flatten out along the pool.
    probs = {}
    for i, ex in enumerate(rest):
        top = 0.98 - 0.6 * i / len(rest)
        probs[ex.id] = [top, (1 - top) / 2, (1 - top) / 2]
    chosen = select_uncertainty(rest, K, probs=probs, seed=0)
    assert counts(chosen) == K
    for label in LABELS3:
        members = [ex for ex in rest if ex.label == label]
        expected = sorted(members, key=lambda ex: -entropy(probs[ex.id]))[: K[label]]
        assert [ex.id for ex in chosen if ex.label == label] == [ex.id for ex in expected]
    assert all(ex.origin == "select:uncertainty" and ex.meta["entropy"] > 0 for ex in chosen)
    # Only scored examples are considered.
    some = {ex_id: p for ex_id, p in probs.items() if ex_id in {"x0", "x1"}}
    assert {ex.id for ex in select_uncertainty(rest, K, probs=some, seed=0)} == {"x0", "x1"}


def test_misclassified_takes_only_wrong_predictions_up_to_k() -> None:
    rest = make_pool(10)
    wrong_ids = {"x0", "x3", "x6", "x1"}  # three entailment items, one neutral
    probs = {}
    for ex in rest:
        right = LABELS3.index(ex.label)
        predicted = (right + 1) % 3 if ex.id in wrong_ids else right
        probs[ex.id] = [0.8 if i == predicted else 0.1 for i in range(3)]
    chosen = select_misclassified(rest, K, probs=probs, seed=0)
    assert {ex.id for ex in chosen} <= wrong_ids
    assert counts(chosen) == {"entailment": 2, "neutral": 1}
    assert all(ex.meta["predicted"] != ex.label for ex in chosen)


def test_misclassified_reads_a_2way_example_as_the_2way_scoring_does() -> None:
    # An RTE pool item (2-way): not-entailment is kept as contradiction with meta["label2"].
    def two_way(i: int, label: str) -> Example:
        label2 = "entailment" if label == "entailment" else "not_entailment"
        return Example(f"r{i}", f"P{i}.", f"H{i}.", label, "rte", meta={"label2": label2})

    rest = [two_way(0, "contradiction"), two_way(1, "contradiction"), two_way(2, "entailment"), two_way(3, "entailment")]
    probs = {"r0": [0.1, 0.8, 0.1], "r1": [0.8, 0.1, 0.1], "r2": [0.1, 0.8, 0.1], "r3": [0.8, 0.1, 0.1]}
    chosen = select_misclassified(rest, {"entailment": 5, "neutral": 0, "contradiction": 5}, probs=probs, seed=0)
    assert {ex.id for ex in chosen} == {"r1", "r2"}  # neutral on a not-entailment item is right


def test_difficulty_takes_the_highest_ratings_first_and_unparsed_last() -> None:
    rest = make_pool(4)
    ratings = {ex.id: float(i % 10) for i, ex in enumerate(rest)}
    ratings["x9"] = math.nan  # the best-rated entailment item, were it parsed
    chosen = select_difficulty(rest, {"entailment": 2}, ratings=ratings, seed=0)
    entailed = sorted((ex for ex in rest if ex.label == "entailment" and ex.id != "x9"), key=lambda ex: -ratings[ex.id])
    assert [ex.id for ex in chosen] == [ex.id for ex in entailed[:2]]


def test_concatenation_label_rule() -> None:
    assert concat_label(["entailment", "entailment", "entailment"]) == "entailment"
    assert concat_label(["entailment", "neutral", "entailment"]) == "neutral"
    assert concat_label(["neutral", "contradiction", "entailment"]) == "contradiction"
    assert concat_label(["contradiction", "contradiction", "neutral"]) == "contradiction"


def test_concatenation_needs_a_shared_premise() -> None:
    a, b, c = make_pool(2, per_premise=2)[:3]  # c has another premise
    with pytest.raises(NLIStudyError, match="share their premise"):
        concatenate([a, b, c])
    joined = concatenate([a, b, a.replace(id="x99", hypothesis="Third one.")])
    assert joined.hypothesis == "Hypothesis 0. Hypothesis 1. Third one." and joined.label == "neutral"


def test_select_concat_joins_three_hypotheses_of_one_premise_with_the_rule() -> None:
    rest = make_pool(30, per_premise=9)  # each premise: 3 entailed, 3 neutral, 3 contradicted
    chosen = select_concat(rest, {"entailment": 2, "neutral": 3, "contradiction": 4}, seed=0)
    assert counts(chosen) == {"entailment": 2, "neutral": 3, "contradiction": 4}
    by_id = {ex.id: ex for ex in rest}
    used = [part for ex in chosen for part in ex.meta["parts"]]
    assert len(used) == len(set(used)) == 3 * len(chosen)
    for ex in chosen:
        parts = [by_id[p] for p in ex.meta["parts"]]
        assert {p.premise for p in parts} == {ex.premise}
        assert ex.label == concat_label([p.label for p in parts]) and ex.origin == "select:concat"
        assert all(p.hypothesis in ex.hypothesis for p in parts)
    # Premises with fewer than three hypotheses give nothing.
    assert select_concat(make_pool(10, per_premise=2), {"contradiction": 5}, seed=0) == []


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_keeps_the_budget_after_replacement(name: str) -> None:
    pool = make_pool(40, per_premise=9)
    initial, rest = draw_budget(pool, 60, seed=2)
    k = per_class_k(initial, 10)
    probs = {ex.id: [0.2, 0.5, 0.3] if i % 2 else [0.6, 0.3, 0.1] for i, ex in enumerate(rest)}
    ratings = {ex.id: float(i % 7) for i, ex in enumerate(rest)}
    chosen = run_strategy(name, rest, k, seed=2, probs=probs, ratings=ratings)
    assert chosen and all(ex.origin == f"select:{name}" for ex in chosen)
    assert all(n <= k[label] for label, n in counts(chosen).items())
    result = replace(initial, chosen, k, seed=2)
    assert len(result) == len(initial) and counts(result) == counts(initial)


# --------------------------------------------------------------------------- model scores (tiny model)


@pytest.fixture()
def tiny_spec(tiny_model: Path) -> Iterator[str]:
    scoring.release_model()
    yield f"irh-fast:pretrained={tiny_model},dtype=float32,device=cpu"
    scoring.release_model()


def test_label_probabilities_are_normalised_for_every_example(tiny_spec: str) -> None:
    examples = make_pool(3)
    probs = scoring.label_probabilities(tiny_spec, examples, phrasing="nli3.w01")
    assert list(probs) == [ex.id for ex in examples]
    for p in probs.values():
        assert len(p) == 3 and all(0 < x < 1 for x in p) and math.isclose(sum(p), 1.0, rel_tol=1e-6)
    assert len({tuple(p) for p in probs.values()}) > 1  # the text matters
    with pytest.raises(NLIStudyError, match="unknown phrasing"):
        scoring.label_probabilities(tiny_spec, examples, phrasing="nli3.nope")
    with pytest.raises(NLIStudyError, match="does not apply to 3-way NLI"):
        scoring.label_probabilities(tiny_spec, examples, phrasing="bbl.strategyqa.w03")


def test_difficulty_ratings_rank_and_chain_of_thought(tiny_spec: str, tmp_path: Path) -> None:
    examples = make_pool(2)
    ranked = scoring.difficulty_ratings(tiny_spec, examples, mode="rank", log=tmp_path / "rank.jsonl")
    assert list(ranked) == [ex.id for ex in examples] and all(1 <= r <= 10 for r in ranked.values())
    records = [json.loads(line) for line in (tmp_path / "rank.jsonl").read_text().splitlines()]
    assert len(records) == len(examples) and all(math.isclose(sum(r["probs"]), 1.0, rel_tol=1e-6) for r in records)
    log = tmp_path / "cot.jsonl"
    cot = scoring.difficulty_ratings(tiny_spec, examples[:2], mode="cot", log=log, max_tokens=4)
    assert list(cot) == [ex.id for ex in examples[:2]]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    # Every prompt is logged as the model saw it: chat template, three worked examples, the item.
    assert [r["id"] for r in rows] == list(cot) and all("<|im_start|>user" in r["prompt"] for r in rows)
    assert rows[0]["prompt"].count("\nDifficulty: ") == 3 and f"Premise: {examples[0].premise}\n" in rows[0]["prompt"]
    assert all(r["rating"] is None or 1 <= r["rating"] <= 10 for r in rows)
    with pytest.raises(NLIStudyError, match="rank or cot"):
        scoring.difficulty_ratings(tiny_spec, examples, mode="guess")


def test_parse_rating_reads_the_last_difficulty() -> None:
    assert scoring.parse_rating("It is subtle.\nDifficulty: 8") == 8.0
    assert scoring.parse_rating("Difficulty: 3 ... on reflection, Difficulty: 10") == 10.0
    assert scoring.parse_rating("Step one, step 2.\nI would say 6") == 6.0
    assert math.isnan(scoring.parse_rating("Rated 12 of 20"))
    assert math.isnan(scoring.parse_rating("no idea"))
