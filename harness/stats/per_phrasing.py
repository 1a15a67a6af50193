"""Per phrasing: the task metric over documents, with a bootstrap CI over documents."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from harness.stats.bootstrap import DEFAULT_BOOT, bootstrap_mean_ci, make_rng
from harness.stats.data import PhrasingResults
from harness.stats.label_bias import phrasing_spread


class PhrasingScore(NamedTuple):
    task: str
    instruction_id: str
    status: str
    seen: bool
    n: int
    score: float
    accuracy: float
    #: 95% percentile-bootstrap interval of ``score`` over documents (NaN without them).
    ci_low: float
    ci_high: float
    per_document: bool
    #: Label bias (:mod:`harness.stats.label_bias`): the most frequent answer, its share of the
    #: documents, the answers' entropy in bits, and whether one answer covers >= 90% of documents.
    top_answer: str = ""
    top_answer_share: float = math.nan
    answer_entropy: float = math.nan
    degenerate: bool = False


def score_phrasings(
    phrasings: Iterable[PhrasingResults], *, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = 0.95
) -> list[PhrasingScore]:
    """Score each phrasing: mean metric, accuracy, and a CI from resampling its documents.

    Args:
        phrasings: per-phrasing results (run folder or import).
        n_boot: bootstrap replicates.
        seed: base seed; each phrasing's stream is keyed by its task and id.
        level: confidence level of the interval.

    Returns:
        One row per phrasing, sorted by task then phrasing id. Aggregate-only imports get NaN
        intervals: without per-document results there is nothing to resample.
    """
    out = []
    for p in sorted(phrasings, key=lambda p: (p.task, p.instruction_id)):
        if p.per_document:
            rng = make_rng(seed, "phrasing", p.task, p.instruction_id)
            low, high = bootstrap_mean_ci(p.scores[p.valid], rng, n_boot, level)
        else:
            low, high = math.nan, math.nan
        spread = phrasing_spread(p)
        out.append(
            PhrasingScore(
                p.task,
                p.instruction_id,
                p.status,
                p.seen,
                p.n,
                p.score,
                p.accuracy,
                low,
                high,
                p.per_document,
                spread.top_answer,
                spread.top_answer_share,
                spread.answer_entropy,
                spread.degenerate,
            )
        )
    return out
