"""Synthetic NLI data: the parser, the leak filter, the 8-vote filter, the generation loop and its log."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.model import LM

from harness.nli.examples import LABELS3, Example, NLIStudyError
from harness.nli.synthetic import (
    DISCARD_REASONS,
    DOMAINS,
    STRATEGIES,
    VARIANTS,
    count_sentences,
    generate_synthetic,
    generation_messages,
    leak_reason,
    parse_pair,
    read_summary,
    shape_reason,
    summarise_log,
    summary_path,
    vote_contexts,
    vote_filter,
)

#: Each label's marker word in the stub generator's outputs, which the stub voter reads back.
FRUIT = {"entailment": "apples", "neutral": "pears", "contradiction": "plums"}
RELATION_HINT = {"entailment": "certainly true if", "neutral": "neither confirms", "contradiction": "cannot be true"}


def make_demos(per_label: int = 8) -> list[Example]:
    return [
        Example(id=f"demo-{label}-{i}", premise=f"Demo passage {label} {i}.", hypothesis=f"Demo claim {i}.", label=label, source="test")
        for label in LABELS3
        for i in range(per_label)
    ]


def last_claim(context: str) -> str:
    return re.findall(r"Claim: (.*)", context)[-1]


class StubLM(LM):
    """An lm-eval model whose generations and label preferences the test controls.

    ``write(prompt, n)`` gives the n-th generation; ``choose(context)`` names the label word
    that gets the highest loglikelihood after a vote context.
    """

    def __init__(self, write: Callable[[str, int], str], choose: Callable[[str], str], chat: bool = False) -> None:
        super().__init__()
        self.write, self.choose, self.chat = write, choose, chat
        self.generated = 0
        self.loglikelihood_calls: list[list[tuple[str, str]]] = []

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            out.append(self.write(req.args[0], self.generated))
            self.generated += 1
        return out

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        self.loglikelihood_calls.append(pairs)
        return [(0.0 if cont.strip() == self.choose(ctx) else -3.0, False) for ctx, cont in pairs]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return [0.0 for _ in requests]

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return "stub" if self.chat else ""

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in chat_history) + "<assistant>"


def intended(prompt: str) -> str:
    """The label a generation request asks for (from its last request turn)."""
    request = prompt.rsplit("Topic:", 1)[-1]
    return next(label for label, hint in RELATION_HINT.items() if hint in request)


def good_writer(prompt: str, n: int) -> str:
    label = intended(prompt)
    return f"Passage: Sam bought {n} {FRUIT[label]} at the market.\nStatement: Sam went shopping for {FRUIT[label]} {n}."


def fruit_voter(context: str) -> str:
    claim = last_claim(context)
    return next(label for label, fruit in FRUIT.items() if fruit in claim)


def run(tmp_path: Path, lm: Any, counts: dict[str, int], **kwargs: Any) -> list[Example]:
    options: dict[str, Any] = {"demos": make_demos(), "seed": 1, "log_path": tmp_path / "synthetic.jsonl", "max_attempts": 30}
    options.update(kwargs)
    return generate_synthetic(lm, "short_simple", counts, **options)


def log_rows(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "synthetic.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- the parser


@pytest.mark.parametrize(
    "raw",
    [
        "Passage: The dog sleeps on the sofa.\nStatement: An animal is sleeping.",
        "**Passage:** The dog sleeps on the sofa.\n**Statement:** An animal is sleeping.",
        "passage: The dog sleeps on the sofa.\n\nstatement: An animal is sleeping.\n\nI hope this helps!",
        '1. Premise: "The dog sleeps on the sofa."\n2. Hypothesis: “An animal is sleeping.”',
        "Passage: The dog sleeps on the sofa. Statement: An animal is sleeping.",
        "- Text: The dog sleeps on the sofa.\n- Claim: An animal is sleeping.\n- Label: entailment",
        "Sentence 1: The dog sleeps on the sofa.\nSentence 2: An animal is sleeping.",
        "The dog sleeps on the sofa.\nAn animal is sleeping.",
        "  Passage:   The dog   sleeps on the sofa.  \n Statement : An animal is sleeping.  ",
    ],
)
def test_parse_pair_reads_messy_outputs(raw: str) -> None:
    pair = parse_pair(raw)
    assert pair is not None
    assert pair.premise == "The dog sleeps on the sofa."
    assert pair.hypothesis == "An animal is sleeping."


def test_parse_pair_keeps_a_passage_over_several_lines() -> None:
    pair = parse_pair("Passage: The shop opens at nine.\nIt sells bread.\nStatement: The shop sells bread.")
    assert pair == ("The shop opens at nine. It sells bread.", "The shop sells bread.")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "Passage: The dog sleeps on the sofa.",
        "I cannot help with that.",
        "one\ntwo\nthree",
        "Statement: An animal is sleeping.\nLabel: entailment",
    ],
)
def test_parse_pair_refuses_what_has_no_pair(raw: str) -> None:
    assert parse_pair(raw) is None


# --------------------------------------------------------------------------- the leak filter


@pytest.mark.parametrize(
    ("premise", "hypothesis", "reason"),
    [
        ("The premise is that cats sleep.", "Cats sleep.", "leak_word"),
        ("Cats sleep.", "This HYPOTHESIS is true.", "leak_word"),
        ("Cats sleep.", "The hypotheses differ.", "leak_word"),
        ("Cats sleep.", "The Label says entailment.", "leak_word"),
        ("The jars had labels on them.", "Jars were there.", "leak_word"),
        ("Sure! Cats sleep a lot.", "Cats sleep.", "chatter"),
        ("Here is a passage about cats: cats sleep.", "Cats sleep.", "chatter"),
        ("Cats sleep.", "As an AI, I think cats sleep.", "chatter"),
        ("I cannot write about cats.", "Cats sleep.", "chatter"),
        ("Certainly, cats sleep.", "Cats sleep.", "chatter"),
        ("", "Cats sleep.", "empty_field"),
        ("Cats sleep.", "   ", "empty_field"),
        ("Cats sleep. " * 40, "Cats sleep.", "too_long"),
        ("Cats sleep.", "cats sleep", "copies_premise"),
    ],
)
def test_leak_reason_drops_leaks_and_chatter(premise: str, hypothesis: str, reason: str) -> None:
    assert leak_reason(premise, hypothesis, max_premise_chars=300) == reason


@pytest.mark.parametrize(
    ("premise", "hypothesis"),
    [
        ("Make sure the oven is hot before baking.", "The oven should be hot."),
        ("The library here is quiet on Mondays.", "The library is quiet sometimes."),
        ("The labelling machine broke down.", "A machine broke."),
        ("Her hypothetical plan failed.", "A plan failed."),
        ("The neutral referee stopped the match.", "The match stopped."),
    ],
)
def test_leak_reason_passes_ordinary_text(premise: str, hypothesis: str) -> None:
    assert leak_reason(premise, hypothesis) is None


def test_leak_reason_finds_duplicates_ignoring_case_and_punctuation() -> None:
    seen = {"cats sleep\tanimals rest"}
    assert leak_reason("Cats sleep!", "Animals  rest.", seen=seen) == "duplicate"
    assert leak_reason("Cats sleep!", "Dogs rest.", seen=seen) is None


def test_shape_reason_counts_the_passage_sentences() -> None:
    one = "The bus was late."
    four = "The bus was late. It rained all day. Tom waited at the stop. He read a book."
    assert count_sentences(one) == 1 and count_sentences(four) == 4 and count_sentences("No final stop") == 1
    assert shape_reason("short_simple", one, "A bus was late.") is None
    assert shape_reason("short_simple", four, "A bus was late.") == "premise_sentences"
    assert shape_reason("long_simple", four, "A bus was late.") is None
    assert shape_reason("long_complex", one, "A bus was late.") == "premise_sentences"
    assert shape_reason("short_simple", one, "Maria's bicycle had a tyre replaced.") == "copied_example"
    # An echo of the worked example's people and things on another topic is a copy too ...
    assert shape_reason("short_simple", "The farm sold milk.", "Maria's bicycle is owned by the farm.") == "copied_example"
    assert shape_reason("short_simple", "The farm sold milk.", "Maria bought milk.") is None
    # ... unless the topic asked for them.
    assert shape_reason("short_simple", "The mechanic fixed a bicycle.", "A bicycle was fixed.", "bicycle repair") is None


def test_generation_messages_cover_every_variant_label_and_strategy() -> None:
    assert len(DOMAINS) >= 50 and len(set(DOMAINS)) == len(DOMAINS)
    prompts = set()
    for variant in VARIANTS:
        for label in LABELS3:
            for strategy in STRATEGIES[label] if variant == "long_complex" else (None,):
                messages = generation_messages(variant, label, "chess", strategy)
                assert [m["role"] for m in messages] == ["user", "assistant", "user"]
                assert "Topic: chess" in messages[-1]["content"]
                prompts.add(messages[-1]["content"])
    assert len(prompts) == 3 + 3 + 6  # every request says something different
    with pytest.raises(NLIStudyError, match="strategy"):
        generation_messages("long_complex", "neutral", "chess", "combine")


# --------------------------------------------------------------------------- the vote filter


def test_vote_contexts_are_balanced_distinct_and_seeded() -> None:
    demos = make_demos(per_label=8)
    contexts = vote_contexts(demos, votes=8, seed=3)
    assert len(contexts) == 8
    for context in contexts:
        assert sorted(ex.label for ex in context) == sorted(LABELS3)
    ids = [ex.id for context in contexts for ex in context]
    assert len(set(ids)) == len(ids) == 24  # enough demos: no demonstration used twice
    assert [[ex.id for ex in c] for c in vote_contexts(demos, votes=8, seed=3)] == [[ex.id for ex in c] for c in contexts]
    assert [[ex.id for ex in c] for c in vote_contexts(demos, votes=8, seed=4)] != [[ex.id for ex in c] for c in contexts]
    two_shot = vote_contexts(demos, votes=4, seed=3, shots_per_label=2)
    assert all(len(c) == 6 for c in two_shot)


def test_vote_contexts_need_every_label() -> None:
    demos = [ex for ex in make_demos() if ex.label != "neutral"]
    with pytest.raises(NLIStudyError, match="neutral"):
        vote_contexts(demos, votes=8, seed=0)
    # A 2-way pool (RTE) has no neutral demos: its study asks for the two labels it has.
    contexts = vote_contexts(demos, votes=4, seed=0, labels=("entailment", "contradiction"))
    assert all(sorted(ex.label for ex in c) == ["contradiction", "entailment"] for c in contexts)
    with pytest.raises(NLIStudyError, match="vote labels"):
        vote_contexts(demos, votes=4, seed=0, labels=("not_entailment",))


def test_vote_filter_keeps_only_unanimous_agreement() -> None:
    demos = make_demos()
    contexts = vote_contexts(demos, votes=8, seed=0)
    odd_demo = contexts[5][0].premise  # one context out of eight dissents for one example

    def choose(context: str) -> str:
        claim = last_claim(context)
        if claim == "dissent" and odd_demo in context:
            return "neutral"
        if claim == "always neutral":
            return "neutral"
        return "contradiction"

    examples = [
        Example(id="a", premise="P.", hypothesis="agree", label="contradiction", source="t"),
        Example(id="b", premise="P.", hypothesis="dissent", label="contradiction", source="t"),
        Example(id="c", premise="P.", hypothesis="always neutral", label="contradiction", source="t"),
        Example(id="d", premise="P.", hypothesis="always neutral", label="neutral", source="t"),
    ]
    lm = StubLM(good_writer, choose)
    results = vote_filter(lm, examples, contexts)
    assert [r.keep for r in results] == [True, False, False, True]
    assert results[1].predictions.count("neutral") == 1 and results[1].predictions.count("contradiction") == 7
    # One batched call: every example x context x label word, plain text with a space before the word.
    assert len(lm.loglikelihood_calls) == 1 and len(lm.loglikelihood_calls[0]) == 4 * 8 * 3
    assert {cont for _, cont in lm.loglikelihood_calls[0]} == {f" {w}" for w in LABELS3}


def test_vote_filter_uses_the_chat_template_when_there_is_one() -> None:
    lm = StubLM(good_writer, lambda ctx: "entailment", chat=True)
    example = Example(id="a", premise="P.", hypothesis="H.", label="entailment", source="t")
    (result,) = vote_filter(lm, [example], vote_contexts(make_demos(), votes=2, seed=0))
    assert result == (("entailment", "entailment"), True)
    contexts = {ctx for ctx, _ in lm.loglikelihood_calls[0]}
    assert all(ctx.endswith("<assistant>") and ctx.count("<assistant>entailment</assistant>") == 1 for ctx in contexts)
    assert {cont for _, cont in lm.loglikelihood_calls[0]} == set(LABELS3)


# --------------------------------------------------------------------------- the loop and its log


def test_counts_per_label_are_respected_and_logged(tmp_path: Path) -> None:
    lm = StubLM(good_writer, fruit_voter)
    counts = {"entailment": 3, "neutral": 1, "contradiction": 2}
    kept = run(tmp_path, lm, counts, batch_size=4)
    assert {label: sum(ex.label == label for ex in kept) for label in LABELS3} == counts
    assert all(ex.origin == "synthetic:short_simple" and ex.meta["votes"] == [ex.label] * 8 for ex in kept)
    assert all(FRUIT[ex.label] in ex.hypothesis for ex in kept)
    rows = log_rows(tmp_path)
    assert len(rows) == lm.generated  # one line per attempt
    assert {row["attempt"] for row in rows} == set(range(len(rows)))
    assert sum(row["kept"] for row in rows) == 6
    assert all(row["reason"] is None for row in rows if row["kept"])
    assert all(row["reason"] == "surplus" for row in rows if not row["kept"])  # passed both filters, label full
    summary = read_summary(tmp_path / "synthetic.jsonl")
    assert summary["kept"] == counts and summary["complete"] and summary["attempted"] == len(rows)
    assert summary["asked"] == counts and summary["votes"] == 8
    assert summary_path(tmp_path / "synthetic.jsonl") == tmp_path / "synthetic.summary.json"


def test_every_discard_has_its_reason_in_the_log(tmp_path: Path) -> None:
    script = [
        "",  # empty
        "I would rather not.",  # unparsed
        "Passage: The premise is that Sam bought plums.\nStatement: Sam bought plums.",  # leak_word
        "Passage: Sure! Sam bought pears.\nStatement: Sam bought pears today.",  # chatter
        "Passage: Sam bought apples. He paid. He left. He ate them.\nStatement: Sam had apples.",  # premise_sentences
        "Passage: Sam bought apples.\nStatement: Sam had apples.",  # kept
        "Passage: Sam bought apples!\nStatement: sam had apples",  # duplicate
        "Passage: Sam bought pears.\nStatement: Sam had plums.",  # vote (the voter reads plums: contradiction)
    ]
    labels = ["entailment"] * 8

    def write(prompt: str, n: int) -> str:
        assert intended(prompt) == labels[n]
        return script[n]

    lm = StubLM(write, fruit_voter)
    kept = run(tmp_path, lm, {"entailment": 5}, batch_size=8, max_attempts=8)
    assert [ex.hypothesis for ex in kept] == ["Sam had apples."]
    rows = log_rows(tmp_path)
    reasons = ["empty", "unparsed", "leak_word", "chatter", "premise_sentences", None, "duplicate", "vote"]
    assert [row["reason"] for row in rows] == reasons
    assert [row["kept"] for row in rows] == [reason is None for reason in reasons]
    assert rows[5]["id"] == kept[0].id and rows[5]["votes"] == ["entailment"] * 8
    assert rows[7]["parsed"] == {"premise": "Sam bought pears.", "hypothesis": "Sam had plums."}
    assert rows[7]["votes"] == ["contradiction"] * 8 and rows[7]["label"] == "entailment"
    assert rows[0]["parsed"] is None and rows[0]["votes"] is None  # the vote runs only on what passed the leak filter
    assert all(row["prompt"] and "raw" in row for row in rows)
    summary = read_summary(tmp_path / "synthetic.jsonl")
    # Fewer than asked is reported, not raised.
    assert summary["kept"]["entailment"] == 1 and summary["short_by"]["entailment"] == 4 and not summary["complete"]
    expected = {"empty": 1, "unparsed": 1, "leak_word": 1, "chatter": 1, "premise_sentences": 1, "duplicate": 1, "vote": 1}
    assert summary["discards"] == expected
    assert summarise_log(tmp_path / "synthetic.jsonl")["discards"] == summary["discards"]


def test_a_generator_that_returns_nothing_is_refused(tmp_path: Path) -> None:
    lm = StubLM(lambda prompt, n: "  \n", fruit_voter)
    with pytest.raises(NLIStudyError) as info:
        run(tmp_path, lm, {"entailment": 2, "neutral": 2}, batch_size=4)
    assert "\n" not in str(info.value) and "empty outputs" in str(info.value)
    assert lm.generated == 4  # stopped after the first batch
    assert [row["reason"] for row in log_rows(tmp_path)] == ["empty"] * 4
    assert not summary_path(tmp_path / "synthetic.jsonl").exists()  # no summary of a refused run


def test_fewer_than_asked_stops_at_max_attempts(tmp_path: Path) -> None:
    lm = StubLM(good_writer, lambda ctx: "neutral")  # the voter never agrees with entailment
    kept = run(tmp_path, lm, {"entailment": 2, "neutral": 1}, batch_size=4, max_attempts=10)
    assert [ex.label for ex in kept] == ["neutral"]
    assert lm.generated == 10
    summary = read_summary(tmp_path / "synthetic.jsonl")
    assert summary["attempted"] == 10 and summary["short_by"] == {"entailment": 2, "neutral": 0, "contradiction": 0}
    assert summary["discards"] == {"vote": 8, "surplus": 1}  # the first batch asked for neutral twice


def test_the_log_keeps_finished_batches_when_a_run_is_killed(tmp_path: Path) -> None:
    def write(prompt: str, n: int) -> str:
        if n >= 4:
            raise KeyboardInterrupt
        return good_writer(prompt, n)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, StubLM(write, lambda ctx: "neutral"), {"entailment": 5}, batch_size=4)
    rows = log_rows(tmp_path)
    assert len(rows) == 4 and all(row["reason"] == "vote" for row in rows)
    assert summarise_log(tmp_path / "synthetic.jsonl")["attempted"] == 4


def test_votes_zero_turns_the_vote_off(tmp_path: Path) -> None:
    lm = StubLM(good_writer, lambda ctx: "neutral")
    kept = run(tmp_path, lm, {"contradiction": 2}, batch_size=2, votes=0)
    assert len(kept) == 2 and not lm.loglikelihood_calls
    assert all(row["votes"] is None for row in log_rows(tmp_path))


def test_a_separate_voter_votes(tmp_path: Path) -> None:
    generator = StubLM(good_writer, lambda ctx: "neutral")
    voter = StubLM(good_writer, fruit_voter)
    kept = run(tmp_path, generator, {"neutral": 1, "contradiction": 1}, batch_size=2, voter=voter)
    assert len(kept) == 2 and not generator.loglikelihood_calls and voter.loglikelihood_calls


@pytest.mark.parametrize(
    ("variant", "counts", "match"),
    [
        ("medium", {"entailment": 1}, "unknown synthetic variant"),
        ("short_simple", {"yes": 1}, "unknown label"),
        ("short_simple", {"neutral": -1}, ">= 0"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path: Path, variant: str, counts: dict[str, int], match: str) -> None:
    with pytest.raises(NLIStudyError, match=match):
        generate_synthetic(
            StubLM(good_writer, fruit_voter), variant, counts, demos=make_demos(), seed=0, log_path=tmp_path / "log.jsonl", max_attempts=3
        )
    assert not (tmp_path / "log.jsonl").exists()


def test_end_to_end_on_the_tiny_model(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.nli import synthetic

    monkeypatch.setitem(synthetic.MAX_GEN_TOKENS, "long_complex", 12)  # random weights: a short ramble is enough
    log_path = tmp_path / "synthetic.jsonl"
    kept = generate_synthetic(
        f"irh-fast:pretrained={tiny_model},dtype=float32,device=cpu",
        "long_complex",
        {"entailment": 1, "neutral": 1, "contradiction": 1},
        demos=make_demos(),
        seed=0,
        log_path=log_path,
        max_attempts=3,
        votes=2,
        batch_size=3,
    )
    rows = log_rows(tmp_path)
    assert len(rows) == 3 and {row["label"] for row in rows} == set(LABELS3)
    assert all(row["prompt"].startswith("<|im_start|>user") for row in rows)  # the tiny model's chat template
    assert all(row["strategy"] in STRATEGIES[row["label"]] for row in rows)
    assert all(row["reason"] in (None, *(r for r in DISCARD_REASONS if r != "surplus")) for row in rows)
    summary = read_summary(log_path)
    assert summary["attempted"] == 3 and sum(summary["kept"].values()) == len(kept)
    # The vote's real path (irh-fast loglikelihoods through the chat template) on the same model.
    from harness.backends.models import load_model, parse_model_spec

    lm = load_model(parse_model_spec(f"irh-fast:pretrained={tiny_model},dtype=float32,device=cpu")).lm
    examples = make_demos(per_label=1)
    results = vote_filter(lm, examples, vote_contexts(make_demos(), votes=4, seed=0))
    assert all(len(r.predictions) == 4 and set(r.predictions) <= set(LABELS3) for r in results)
    assert [r.keep for r in results] == [set(r.predictions) == {ex.label} for r, ex in zip(results, examples, strict=True)]
