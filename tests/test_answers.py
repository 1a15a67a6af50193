"""Reading generated answers as options (multiple-choice tasks on chat-only endpoints)."""

from __future__ import annotations

import pytest

from harness.answers import parse_choice, score_parsed


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("B", ["A", "B", "C", "D"], 1),
        ("b)", ["A", "B", "C", "D"], 1),
        ("(C) Paris", ["A", "B", "C", "D"], 2),
        ("The answer is D.", ["A", "B", "C", "D"], 3),
        ("Answer: 2", ["1", "2", "3"], 1),
        ("Yes, because diamonds are dense.", ["Yes", "No"], 0),
        ("no", ["Yes", "No"], 1),
        ("I think it is a contradiction here.", ["entailment", "neutral", "contradiction"], 2),
        ("not_entailment", ["entailment", "not_entailment"], 1),
        ("It is not entailment.", ["entailment", "not entailment"], 1),
        ("Either entailment or contradiction.", ["entailment", "neutral", "contradiction"], None),
        ("a cat sat", ["A", "B"], 0),  # starts with the letter, as written
        ("I am not sure.", ["A", "B", "C", "D"], None),
        ("", ["Yes", "No"], None),
        ("\u000eIIs garbage", ["Yes", "No"], None),
    ],
)
def test_parse_choice(text: str, options: list[str], expected: int | None) -> None:
    assert parse_choice(text, options) == expected


def test_options_that_read_the_same_cannot_be_told_apart() -> None:
    assert parse_choice("yes", ["Yes", "yes."]) is None


def test_an_unparseable_answer_is_wrong_with_the_lowest_score() -> None:
    assert score_parsed(None, [0.0, 1.0]) == (0.0, False)
    assert score_parsed(1, [0.0, 1.0]) == (1.0, True)
    assert score_parsed(0, [0.5, 1.0]) == (0.5, False)
