"""How one answer is scored: rank classification for options, string metrics for generations."""

from __future__ import annotations

from typing import NamedTuple


class Score(NamedTuple):
    score: float
    correct: bool


def score_choice(loglikelihoods: list[float], option_scores: list[float]) -> tuple[int, Score]:
    """Pick the option with the highest loglikelihood (first on ties) and score it.

    The score is the option's target score: 1/0 for single-answer tasks, and BIG-bench's
    multiple_choice_grade (which allows partial credit) where target_scores say so. An
    answer is correct when it has the best target score.
    """
    best = max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))
    score = option_scores[best]
    return best, Score(score, score >= max(option_scores))


def score_generation(text: str, targets: list[str], metric: str) -> Score:
    """Score a generated answer against the acceptable targets with the task's metric."""
    answer = text.strip()
    exact = any(answer == t.strip() for t in targets)
    if metric == "exact_str_match":
        return Score(float(exact), exact)
    if metric == "rougeLsum":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)
        best = max(scorer.score(t, answer)["rougeLsum"].fmeasure for t in targets)
        return Score(100.0 * best, exact)
    if metric == "bleu":
        import sacrebleu

        return Score(float(sacrebleu.sentence_bleu(answer, targets).score), exact)
    raise ValueError(f"unknown generation metric {metric!r}")
