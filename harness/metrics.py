"""How one answer is scored: rank classification for options, string metrics for generations.

Generation metrics follow BIG-bench's definitions (bigbench 1.0.0, ``api/task_metrics.py``
and ``models/model_utils.py``) wherever a task says how BIG-bench reads an answer
(``output_regex`` / ``stop_string`` in its task spec):

- the answer is post-processed first: cut after the first ``stop_string``, then replaced by
  the first match of ``output_regex`` ("" when nothing matches); a BIG-bench task that gives
  neither uses :data:`BIGBENCH_DEFAULT_REGEX` (the text up to the first ``.?!;`` or newline);
- ``exact_str_match``: the post-processed answer equals one of the targets, unaltered;
- ``rougeLsum``: ROUGE-Lsum F-measure x 100 against the best-scoring target, after T5's
  summary preparation (" . " becomes " .\\n", so each sentence is a summary line);
- ``exact_match_norm`` (open-domain QA, not a BIG-bench metric): SQuAD's answer normalisation
  (lower case, punctuation and the articles a/an/the removed, white space collapsed) on both
  sides, then equality with any target, as lm-eval's triviaqa and nq_open score;
- ``bleu``: sacrebleu corpus BLEU as T5 computes it (``intl`` tokenizer, ``exp`` smoothing
  with value 0, no effective order), with every target as a reference.

Where this departs from BIG-bench, on purpose:

- white space at the *start* of the answer is dropped before post-processing: BIG-bench's
  prompts end in an output prefix with a trailing space (``"A: "``, ``" = "``), so its
  models' answers start without one, while ours follow the prompt directly;
- scores are per answer. BIG-bench's task-level BLEU is a corpus BLEU over all answers and
  its ROUGE a bootstrap mean; the mean of per-answer BLEU is not the corpus BLEU.

Tasks without ``output_regex`` and ``stop_string`` (none of BIG-bench's) compare the stripped
answer with the stripped targets, as lm-eval's ``exact_match`` with whitespace stripping does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

#: BIG-bench's answer extraction for a task that gives neither output_regex nor stop_string.
BIGBENCH_DEFAULT_REGEX = r"[^\.\?\!\;\n]+"


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


def postprocess_output(text: str, output_regex: str | None = None, stop_string: str | None = None) -> str:
    """BIG-bench's post-processing of a generated answer.

    Args:
        text: the generated answer.
        output_regex: keep only the first match of this pattern (its group when it has one);
            "" when nothing matches. None: no matching.
        stop_string: cut the text just after its first occurrence (an occurrence at position
            0 does not cut, as in BIG-bench). None: no cut.
    """
    if stop_string:
        index = text.find(stop_string)
        if index > 0:
            text = text[: index + len(stop_string)]
    if output_regex:
        found = re.findall(output_regex, text)
        text = found[0] if found else ""
        if isinstance(text, tuple):
            raise ValueError(f"output_regex {output_regex!r} has several groups; BIG-bench requires at most one")
    return text


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def rouge_lsum(target: str, answer: str) -> float:
    """ROUGE-Lsum F-measure (0-1) of ``answer`` against ``target``, as T5 and BIG-bench compute it."""
    from rouge_score import rouge_scorer

    def prepare(summary: str) -> str:
        # T5's preparation: one summary line per sentence, so rougeLsum sees sentences.
        return summary.replace(" . ", " .\n")

    scorer = rouge_scorer.RougeScorer(["rougeLsum"])
    return float(scorer.score(prepare(target), prepare(answer))["rougeLsum"].fmeasure)


def bleu(targets: list[str], answer: str) -> float:
    """BLEU (0-100) of one answer with every target as a reference, as T5 and BIG-bench compute it."""
    import sacrebleu

    references = [[t] for t in targets]  # sacrebleu wants one stream per reference
    result = sacrebleu.corpus_bleu(
        [answer],
        references,
        smooth_method="exp",
        smooth_value=0.0,
        force=False,
        lowercase=False,
        tokenize="intl",
        use_effective_order=False,
    )
    return float(result.score)


def score_generation(
    text: str,
    targets: list[str],
    metric: str,
    output_regex: str | None = None,
    stop_string: str | None = None,
) -> Score:
    """Score a generated answer against the acceptable targets with the task's metric.

    Args:
        text: the generated answer, as the model produced it.
        targets: the acceptable answers.
        metric: ``exact_str_match``, ``exact_match_norm``, ``rougeLsum`` (0-100) or ``bleu`` (0-100).
        output_regex: BIG-bench's answer pattern for the task (see :func:`postprocess_output`).
        stop_string: BIG-bench's stop string for the task.

    ``correct`` is the exact match in every case.
    """
    if output_regex is None and stop_string is None:
        answer = text.strip()
        exact = any(answer == t.strip() for t in targets)
    else:
        answer = postprocess_output(text.lstrip(), output_regex, stop_string)
        exact = answer in targets
    if metric == "exact_str_match":
        return Score(float(exact), exact)
    if metric == "exact_match_norm":
        normal = normalise_answer(answer)
        matched = any(normal == normalise_answer(t) for t in targets)
        return Score(float(matched), matched)
    if metric == "rougeLsum":
        return Score(100.0 * max(rouge_lsum(t, answer) for t in targets), exact)
    if metric == "bleu":
        return Score(bleu(targets, answer), exact)
    raise ValueError(f"unknown generation metric {metric!r}")
