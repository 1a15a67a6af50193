"""harness/metrics.py against values derived by hand from BIG-bench's and T5's definitions.

Each expected value below is worked out in the comment beside it (LCS, n-gram counts,
brevity penalty), not by calling the library the code uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.metrics import BIGBENCH_DEFAULT_REGEX, postprocess_output, score_choice, score_generation
from harness.registry import load_tasks

OPERATORS_REGEX = r"([-+]?\d+)[.]{0,1}$"


# --- multiple choice: BIG-bench's multiple_choice_grade ------------------------------------


def test_tie_goes_to_the_first_option() -> None:
    # numpy.argmax (BIG-bench) returns the first of equal maxima.
    best, score = score_choice([-2.0, -1.0, -1.0], [0.0, 0.0, 1.0])
    assert best == 1
    assert score == (0.0, False)


def test_partial_credit_is_the_chosen_options_target_score() -> None:
    # target_scores {"a": 0.5, "b": 1.0, "c": 0.0}; the model prefers "a": grade 0.5, not the best.
    best, score = score_choice([-0.1, -3.0, -5.0], [0.5, 1.0, 0.0])
    assert best == 0
    assert score.score == 0.5
    assert score.correct is False


def test_several_best_options_all_count_as_correct() -> None:
    best, score = score_choice([-4.0, -0.5], [1.0, 1.0])
    assert (best, score) == (1, (1.0, True))


# --- BIG-bench's post-processing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris. It is the capital", "Paris"),  # up to the first '.'
        ("yes; because", "yes"),
        ("What? No", "What"),
        ("two\nthree", "two"),
        ("...", ""),  # no character outside the set: no match, empty answer
    ],
)
def test_default_regex_keeps_text_up_to_the_first_stop_character(text: str, expected: str) -> None:
    assert postprocess_output(text, BIGBENCH_DEFAULT_REGEX) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("17", "17"),
        ("17.", "17"),  # one optional full stop before the end
        ("The answer is -4", "-4"),
        ("17 ", ""),  # `$` right after the number (or its full stop): a trailing space fails
        ("17\nand then 18", "17"),  # cut after the stop string '\n'; `$` matches before it
        # a stop string at position 0 does not cut (BIG-bench cuts only past position 0);
        # the regex then finds the number at the end
        ("\n17", "17"),
    ],
)
def test_operators_regex_and_stop_string(text: str, expected: str) -> None:
    assert postprocess_output(text, OPERATORS_REGEX, "\n") == expected


def test_operators_is_scored_on_the_extracted_number() -> None:
    # Rows like those logged on bbl.operators: BIG-bench scores 1 where the number is followed
    # by a full stop or preceded by words, and 0 where a space follows it.
    def score(text: str) -> float:
        return score_generation(text, ["17"], "exact_str_match", OPERATORS_REGEX, "\n").score

    assert score(" 17.") == 1.0
    assert score(" The result is 17") == 1.0
    assert score(" 17 ") == 0.0
    assert score("18") == 0.0


def test_default_postprocessing_applies_before_exact_match() -> None:
    result = score_generation(" Paris. Paris is the capital.", ["Paris"], "exact_str_match", BIGBENCH_DEFAULT_REGEX)
    assert result == (1.0, True)
    # BIG-bench compares with the target unaltered: a target with a full stop cannot match.
    assert score_generation("Paris.", ["Paris."], "exact_str_match", BIGBENCH_DEFAULT_REGEX).score == 0.0


def test_tasks_without_extraction_compare_stripped_text() -> None:
    assert score_generation(" 17 ", ["17"], "exact_str_match").score == 1.0


# --- ROUGE-Lsum (T5's rouge, as BIG-bench calls it), on a 0-100 scale ----------------------


def test_rouge_lsum_from_the_longest_common_subsequence() -> None:
    # target: the cat sat on the mat (6 tokens); answer: the cat on the mat (5 tokens)
    # LCS = "the cat on the mat" = 5; P = 5/5, R = 5/6, F = 2PR/(P+R) = 10/11.
    result = score_generation("the cat on the mat", ["the cat sat on the mat"], "rougeLsum", BIGBENCH_DEFAULT_REGEX)
    assert result.score == pytest.approx(100 * 10 / 11)
    assert result.correct is False


def test_rouge_lsum_splits_sentences_at_spaced_full_stops() -> None:
    # T5 turns " . " into " .\n", so the summaries have two lines each:
    # target lines [a b], [c d]; answer lines [c d], [a b]. Each target line's union LCS with
    # the answer lines is 2 tokens: 4 of 4 both ways, F = 1. Read as one line, the LCS of
    # "a b c d" and "c d a b" would be 2 and F 0.5.
    assert score_generation("c d . a b", ["a b . c d"], "rougeLsum").score == pytest.approx(100.0)


def test_rouge_takes_the_best_target() -> None:
    # vs "x y": no overlap; vs "the cat": P = R = 1.
    assert score_generation("the cat", ["x y", "the cat"], "rougeLsum").score == pytest.approx(100.0)


# --- BLEU (T5's sacrebleu call, as BIG-bench makes it), 0-100 ------------------------------


def test_bleu_from_ngram_precisions() -> None:
    # answer: the cat sat on the mat; reference: the cat sat on a mat (6 tokens each, BP = 1)
    # 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3: BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    result = score_generation("the cat sat on the mat", ["the cat sat on a mat"], "bleu", BIGBENCH_DEFAULT_REGEX)
    assert result.score == pytest.approx(expected)
    assert result.score == pytest.approx(53.728, abs=1e-3)


def test_bleu_of_an_answer_shorter_than_four_tokens_is_zero() -> None:
    # BIG-bench's BLEU is BLEU-4 without effective order: a 3-token answer has no 4-gram, its
    # 4-gram precision is 0 and so is the geometric mean, although all its n-grams match.
    assert score_generation("the cat sat", ["the cat sat down"], "bleu").score == 0.0


def test_bleu_uses_every_target_as_a_reference() -> None:
    # answer a b c d e; references "a b c d x" and "y b c d e": every n-gram of the answer is
    # in one of them (5/5, 4/4, 3/3, 2/2), lengths 5 = 5 so BP = 1: BLEU 100.
    assert score_generation("a b c d e", ["a b c d x", "y b c d e"], "bleu").score == pytest.approx(100.0)
    # with the first reference alone: 4/5, 3/4, 2/3, 1/2 -> (1/5) ** (1/4)
    assert score_generation("a b c d e", ["a b c d x"], "bleu").score == pytest.approx(100 * 0.2**0.25)


def test_bleu_brevity_penalty() -> None:
    # answer q c d e z (5 tokens) inside reference p q c d e z (6): all precisions 1,
    # BP = exp(1 - 6/5).
    assert math.isclose(score_generation("q c d e z", ["p q c d e z"], "bleu").score, 100 * math.exp(1 - 6 / 5), rel_tol=1e-9)


# --- the task specs carry BIG-bench's extraction ------------------------------------------


def test_bbl_generation_tasks_read_answers_as_bigbench() -> None:
    tasks = load_tasks(Path(__file__).resolve().parent.parent, [])
    assert tasks["bbl.operators"].output_regex == OPERATORS_REGEX
    assert tasks["bbl.operators"].stop_string == "\n"
    for task in tasks.values():
        if task.family == "bbl" and task.output_type == "generate_until" and task.id != "bbl.operators":
            assert task.output_regex == BIGBENCH_DEFAULT_REGEX, task.id
            assert task.stop_string is None, task.id
