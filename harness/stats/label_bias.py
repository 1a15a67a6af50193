"""Label bias: phrasings that give (nearly) one answer whatever the document, and what a fixed
answer would score.

A phrasing's *answer* is the option it ranks first on a document (its position among the
task's options; for tasks with fixed labels, such as NLI, position k is the k-th label).
Per phrasing: the share of its most frequent answer and the Shannon entropy of its answers
(bits; 0 when it always gives the same answer). A phrasing that gives one answer on at least
:data:`DEGENERATE_SHARE` of its documents is *degenerate*: its score is mostly the share of
documents whose right answer is its favourite, not a reading of the instruction.

Per task: the *constant-answer baseline*, the best mean score that any single fixed answer
(always option k) gets on the task's documents, next to chance (a uniformly random option).
The across-phrasing statistics are also given over the *informative* (non-degenerate)
phrasings only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from harness.stats.across import declared_scale, describe_scores
from harness.stats.data import PhrasingResults

#: A phrasing giving one answer on at least this share of its documents is degenerate.
DEGENERATE_SHARE = 0.9


class AnswerSpread(NamedTuple):
    """How a phrasing's answers spread over the options."""

    #: Documents with an answer (an option ranked first).
    answered: int
    #: The most frequent answer, as ``option N`` (1-based); empty without answers.
    top_answer: str
    top_answer_share: float
    #: Shannon entropy of the answers, in bits.
    answer_entropy: float
    degenerate: bool


class FixedAnswer(NamedTuple):
    """The best score a single fixed answer gets on a task's documents."""

    score: float
    #: Which fixed answer, as ``option N`` (1-based); empty without options.
    answer: str


class LabelBias(NamedTuple):
    """Per task: chance, the constant-answer baseline, and the statistics across informative phrasings."""

    task: str
    chance: float
    constant_answer: float
    constant_answer_is: str
    degenerate_phrasings: int
    informative_phrasings: int
    informative_mean: float
    informative_std: float
    informative_min: float
    informative_max: float
    informative_range: float
    informative_best: str
    informative_worst: str
    #: Said where the informative statistics differ from or are missing beside the ones over all phrasings.
    note: str


def option_name(index: int) -> str:
    """How an answer is named in tables: ``option 1`` for the first option."""
    return f"option {index + 1}"


def answer_spread(predictions: Sequence[int | None], threshold: float = DEGENERATE_SHARE) -> AnswerSpread:
    """The spread of one phrasing's answers (None: no answer on that document, left out).

    Args:
        predictions: the option index the phrasing ranked first, per document.
        threshold: the share of one answer from which the phrasing is degenerate.

    Returns:
        Counts, top answer and its share, entropy in bits; NaN and not degenerate without answers.
    """
    counts = Counter(p for p in predictions if p is not None)
    total = sum(counts.values())
    if not total:
        return AnswerSpread(0, "", math.nan, math.nan, False)
    # Ties go to the lower option so the answer named does not depend on document order.
    top, top_count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    entropy = -sum((c / total) * math.log2(c / total) for c in counts.values())
    share = top_count / total
    return AnswerSpread(total, option_name(top), share, abs(entropy), share >= threshold)


def phrasing_spread(phrasing: PhrasingResults) -> AnswerSpread:
    """:func:`answer_spread` over the documents the phrasing scored (aggregate imports have none)."""
    if not phrasing.per_document or not phrasing.predictions:
        return answer_spread([])
    valid = phrasing.valid
    return answer_spread([p for p, ok in zip(phrasing.predictions, valid, strict=True) if ok])


def constant_answer(option_scores: Iterable[Sequence[float]]) -> FixedAnswer:
    """The best mean score of always giving the same answer (option k) on these documents.

    Args:
        option_scores: per document, the score of each option (each document once).

    Returns:
        The best score and which option gives it (ties: the lower option); NaN without options.
        A document with fewer than k+1 options scores 0 for option k.
    """
    docs = [[float(v) for v in scores] for scores in option_scores if len(scores)]
    if not docs:
        return FixedAnswer(math.nan, "")
    width = max(len(d) for d in docs)
    means = [sum(d[k] if k < len(d) and not math.isnan(d[k]) else 0.0 for d in docs) / len(docs) for k in range(width)]
    best = max(range(width), key=lambda k: (means[k], -k))
    return FixedAnswer(means[best], option_name(best))


def summarise_label_bias(
    task: str, phrasings: Sequence[PhrasingResults], chance: float = math.nan, fixed: FixedAnswer | None = None
) -> LabelBias:
    """Chance, constant-answer baseline and the across-phrasing statistics of the informative phrasings of one task."""
    fixed = fixed or FixedAnswer(math.nan, "")
    scored = [p for p in phrasings if not math.isnan(p.score)]
    degenerate = [p for p in scored if phrasing_spread(p).degenerate]
    informative = [p for p in scored if p not in degenerate]
    stats = describe_scores([p.instruction_id for p in informative], [p.score for p in informative], declared_scale(informative))
    if not scored:
        note = ""
    elif not informative:
        note = f"no informative phrasing: all {len(scored)} give one answer on ≥ {DEGENERATE_SHARE:.0%} of their documents"
    elif degenerate:
        note = f"{len(degenerate)} of {len(scored)} phrasing(s) degenerate (one answer on ≥ {DEGENERATE_SHARE:.0%} of documents)"
    else:
        note = ""
    return LabelBias(
        task=task,
        chance=float(chance),
        constant_answer=fixed.score,
        constant_answer_is=fixed.answer,
        degenerate_phrasings=len(degenerate),
        informative_phrasings=stats.phrasings,
        informative_mean=stats.mean,
        informative_std=stats.std,
        informative_min=stats.min,
        informative_max=stats.max,
        informative_range=stats.range,
        informative_best=stats.best,
        informative_worst=stats.worst,
        note=note,
    )


def label_bias_by_task(
    by_task: Mapping[str, Sequence[PhrasingResults]],
    chance: Mapping[str, float] | None = None,
    fixed: Mapping[str, FixedAnswer] | None = None,
) -> list[LabelBias]:
    """:func:`summarise_label_bias` for every task, in the order of ``by_task``."""
    chance = chance or {}
    fixed = fixed or {}
    return [summarise_label_bias(t, ps, chance.get(t, math.nan), fixed.get(t)) for t, ps in by_task.items()]
