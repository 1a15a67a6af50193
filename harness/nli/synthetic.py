"""Synthetic NLI examples written by a model, kept only when they pass two filters.

Variants (``VARIANTS``):

- ``short_simple``: a one-sentence passage on a topic drawn from ``DOMAINS``, and a statement
  with the intended relation to it;
- ``long_simple``: the same with a four-sentence passage;
- ``long_complex``: a four-sentence passage and a statement that depends on several of its
  sentences, written by one of two strategies per label (``STRATEGIES``): entailment by
  ``combine`` (follows only from two or more sentences read together) or ``summarise`` (sums
  up the whole passage); neutral by ``unstated_link`` (a cause or consequence between facts of
  different sentences that the passage never states) or ``added_detail`` (a new detail about
  things several sentences mention); contradiction by ``combined_conflict`` (false only once
  two or more sentences are put together) or ``swapped_details`` (names, numbers, places or
  order mixed up across sentences).

Each generation request is a short chat: one worked example written for this module (same
variant, label and strategy, on a topic of its own) as an earlier turn, then the request. It
goes through the model's chat template when it has one, else as plain text. The model is
asked for two labelled lines, ``Passage: ...`` and ``Statement: ...``; ``parse_pair`` also
accepts other label names (premise/hypothesis/claim/sentence 1/2), markdown, bullets, quotes,
both fields on one line and trailing chatter.

Filters, in order (the first that applies is the recorded reason):

1. the leak filter (``leak_reason`` and ``shape_reason``): an empty field, the words
   premise/hypothesis/label/entailment (whole words, any case), assistant chatter ("Sure",
   "Here is", "As an AI", "I cannot", ...), a field over the variant's length limit, a passage
   with the wrong number of sentences for its variant, a statement that repeats the passage, a
   copy of the worked example, or a duplicate of an earlier output of this call;
2. the vote filter (``vote_filter``): the voter model (default: the generator) predicts the
   label ``votes`` times (8), each time after a different few-shot context of demonstrations
   drawn from ``demos`` (``vote_contexts``: balanced by label, fixed seed; ``labels`` names
   the labels the demonstrations show, all three unless the pool is 2-way), by rank
   classification over the three label words with loglikelihoods; the example is kept only
   if every prediction equals its intended label ("if in doubt, discard").

``generate_synthetic`` runs batches until every label has its count or ``max_attempts``
generations are spent. Getting fewer than asked is not an error: the summary says so.

Files (the API):

- ``log_path`` (JSONL, appended, flushed and fsynced after every batch, so a killed run keeps
  every finished batch): one row per generation attempt with ``run`` (an id per call),
  ``attempt``, ``batch``, ``variant``, ``label``, ``strategy``, ``domain``, ``prompt`` (the
  exact text sent, chat template applied), ``raw`` (the model's output), ``parsed``
  (``{"premise", "hypothesis"}`` or null), ``votes`` (the voter's predictions, or null when
  the vote did not run), ``kept``, ``reason`` (why it was discarded, null when kept) and
  ``id`` (the example's id when kept).
- ``summary_path(log_path)`` (``<log stem>.summary.json``, written atomically at the end of
  each call; ``read_summary`` reads it, ``summarise_log`` rebuilds it from the log rows of a
  run, e.g. after a kill): ``run``, ``variant``, ``model``, ``voter``, ``seed``, ``votes``,
  ``asked``, ``attempted``, ``max_attempts``, ``kept`` (per label), ``short_by`` (per label),
  ``complete``, ``discards`` (count per reason), ``seconds`` (of which ``generate_seconds`` and
  ``vote_seconds``), ``generations_per_s`` (attempts per second, filters included).

Kept examples have ``origin="synthetic:<variant>"``, ``source="synthetic"``, an id derived
from their text, and ``meta`` with the domain, strategy, generator and votes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from harness.nli.examples import LABELS3, Example, NLIStudyError, by_label

log = logging.getLogger(__name__)

VARIANTS = ("short_simple", "long_simple", "long_complex")

#: Topics of the passages: varied, everyday and concrete, so a small model can write about them.
DOMAINS = (
    "cooking at home",
    "vegetable gardening",
    "the weather",
    "city buses",
    "a football match",
    "a primary school classroom",
    "a hospital ward",
    "a bank branch",
    "a dairy farm",
    "space exploration",
    "coral reefs",
    "mountain hiking",
    "a rock concert",
    "an art museum",
    "computer programming",
    "mobile phones",
    "car repair",
    "air travel",
    "a seaside hotel",
    "a family restaurant",
    "a street market",
    "a birthday party",
    "a wedding",
    "pet dogs and cats",
    "wild animals in a national park",
    "forests",
    "rivers and lakes",
    "ancient Rome",
    "a local election",
    "a court case",
    "a newspaper office",
    "making a film",
    "a theatre play",
    "a public library",
    "a chemistry lab",
    "a pharmacy",
    "a gym",
    "board games",
    "video games",
    "a building site",
    "a power station",
    "recycling",
    "fishing",
    "a coffee shop",
    "fashion and clothing",
    "photography",
    "chess",
    "volcanoes and earthquakes",
    "the post office",
    "a dentist's surgery",
    "astronomy",
    "beekeeping",
    "skiing",
    "a job interview",
    "an office meeting",
)

#: The two ways each label is written in the ``long_complex`` variant.
STRATEGIES: dict[str, tuple[str, str]] = {
    "entailment": ("combine", "summarise"),
    "neutral": ("unstated_link", "added_detail"),
    "contradiction": ("combined_conflict", "swapped_details"),
}

#: Why an output was discarded, in the order the checks run.
DISCARD_REASONS = (
    "empty",
    "unparsed",
    "empty_field",
    "leak_word",
    "chatter",
    "too_long",
    "premise_sentences",
    "copies_premise",
    "copied_example",
    "duplicate",
    "vote",
    "surplus",
)

#: Character limits per variant: (passage, statement).
LENGTH_LIMITS = {"short_simple": (300, 250), "long_simple": (1000, 300), "long_complex": (1000, 300)}
#: Sentences a passage may have per variant (a little slack for abbreviations and odd splits).
SENTENCE_RANGE = {"short_simple": (1, 2), "long_simple": (3, 6), "long_complex": (3, 6)}
#: Tokens a generation may use.
MAX_GEN_TOKENS = {"short_simple": 96, "long_simple": 220, "long_complex": 220}
#: Sampling settings (varied outputs for the same request; the torch seed is set per batch).
SAMPLING = {"do_sample": True, "temperature": 0.8, "top_p": 0.95}
#: Demonstrations longer than this are avoided in the vote contexts while enough others exist.
DEMO_MAX_CHARS = 600

Progress = Callable[[int, int, dict[str, int]], None]


# --------------------------------------------------------------------------- prompts

_PASSAGE_SPEC = {
    "short_simple": "Write a passage that is one simple, everyday sentence about the topic.",
    "long_simple": "Write a passage of exactly four simple sentences about the topic, each one adding a new fact.",
    "long_complex": (
        "Write a passage of exactly four sentences about the topic, each one adding a new fact (who, what, where, when, how many, or why)."
    ),
}

_SIMPLE_RELATION = {
    "entailment": "is certainly true if the passage is true (it may say part of the passage in other words)",
    "neutral": "is about the same topic, but that the passage neither confirms nor rules out: it may be true or false",
    "contradiction": "cannot be true if the passage is true",
}

_COMPLEX_RELATION = {
    "combine": (
        "is certainly true if the passage is true, but only when two or more of its sentences are read together; "
        "no single sentence says it alone"
    ),
    "summarise": "sums up what the whole passage says, in different words, and is certainly true if the passage is true",
    "unstated_link": (
        "connects facts from two different sentences of the passage (as a cause, a reason or a result) "
        "in a way the passage never states, so it may be true or false"
    ),
    "added_detail": (
        "adds a new detail about people or things that appear in more than one sentence of the passage; "
        "the passage neither supports nor rules out that detail"
    ),
    "combined_conflict": (
        "cannot be true if the passage is true, but seeing why needs two or more of its sentences put together; "
        "no single sentence rules it out alone"
    ),
    "swapped_details": (
        "mixes up details from different sentences of the passage (names, numbers, places or the order of events), "
        "so that it cannot be true"
    ),
}


class WorkedExample(NamedTuple):
    topic: str
    passage: str
    statement: str


_SHORT_PASSAGE = "The mechanic replaced the flat front tyre on Maria's bicycle before lunch."
_LONG_PASSAGE = (
    "The bakery on Mill Street opens at six every morning. Its owner, Tom, bakes all the bread himself. "
    "On Saturdays a queue forms outside before the doors open. The most popular loaf is a rye bread with sunflower seeds."
)
_COMPLEX_PASSAGE = (
    "Anna caught the 8:10 train from Leeds to York on Monday. The train was delayed by forty minutes because of a "
    "signal failure. Her meeting in York was due to start at nine. The journey normally takes twenty-five minutes."
)

#: One worked example per (variant, label or strategy), written for this module.
WORKED_EXAMPLES: dict[tuple[str, str], WorkedExample] = {
    ("short_simple", "entailment"): WorkedExample("bicycle repair", _SHORT_PASSAGE, "Maria's bicycle had a tyre replaced."),
    ("short_simple", "neutral"): WorkedExample("bicycle repair", _SHORT_PASSAGE, "Maria rides her bicycle to work every day."),
    ("short_simple", "contradiction"): WorkedExample("bicycle repair", _SHORT_PASSAGE, "Nobody worked on Maria's bicycle that day."),
    ("long_simple", "entailment"): WorkedExample("a village bakery", _LONG_PASSAGE, "Tom's bakery sells rye bread."),
    ("long_simple", "neutral"): WorkedExample("a village bakery", _LONG_PASSAGE, "Tom learned to bake from his grandmother."),
    ("long_simple", "contradiction"): WorkedExample("a village bakery", _LONG_PASSAGE, "The bakery on Mill Street is closed on Saturdays."),
    ("long_complex", "combine"): WorkedExample("train travel", _COMPLEX_PASSAGE, "Anna's train reached York later than 8:35."),
    ("long_complex", "summarise"): WorkedExample(
        "train travel", _COMPLEX_PASSAGE, "A signal problem made Anna's Monday train to her meeting in York run late."
    ),
    ("long_complex", "unstated_link"): WorkedExample(
        "train travel", _COMPLEX_PASSAGE, "Anna's meeting was moved to a later time because of the signal failure."
    ),
    ("long_complex", "added_detail"): WorkedExample(
        "train travel", _COMPLEX_PASSAGE, "Anna travelled from Leeds to York with a colleague."
    ),
    ("long_complex", "combined_conflict"): WorkedExample(
        "train travel", _COMPLEX_PASSAGE, "Anna's train arrived in York before her meeting began."
    ),
    ("long_complex", "swapped_details"): WorkedExample(
        "train travel", _COMPLEX_PASSAGE, "Anna caught the train from York to Leeds, and it was twenty-five minutes late."
    ),
}

#: Words that give away an echo of a variant's worked examples (a small model readily reuses
#: their people and things on another topic); two of them in one output count as a copy.
ECHO_WORDS = {
    "short_simple": ("maria", "bicycle", "tyre", "mechanic"),
    "long_simple": ("tom", "bakery", "mill street", "rye", "sunflower"),
    "long_complex": ("anna", "leeds", "york", "signal failure"),
}

_FORMAT = "Do not explain anything. Reply with exactly two lines:\nPassage: <your passage>\nStatement: <your statement>"


def _request_text(variant: str, label: str, strategy: str | None, topic: str) -> str:
    relation = _COMPLEX_RELATION[strategy] if variant == "long_complex" and strategy else _SIMPLE_RELATION[label]
    return f"Topic: {topic}\n{_PASSAGE_SPEC[variant]}\nThen write one statement that {relation}.\n{_FORMAT}"


def generation_messages(variant: str, label: str, domain: str, strategy: str | None = None) -> list[dict[str, str]]:
    """The chat that asks for one example: a worked example as an earlier turn, then the request.

    Args:
        variant: one of ``VARIANTS``.
        label: the intended label (one of ``LABELS3``).
        domain: the topic of the passage.
        strategy: for ``long_complex``, one of ``STRATEGIES[label]``.
    """
    if variant not in VARIANTS:
        raise NLIStudyError(f"unknown synthetic variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if label not in LABELS3:
        raise NLIStudyError(f"unknown label {label!r}; use one of {', '.join(LABELS3)}")
    if variant == "long_complex" and strategy not in STRATEGIES[label]:
        raise NLIStudyError(f"long_complex {label} needs a strategy, one of {', '.join(STRATEGIES[label])}")
    worked = WORKED_EXAMPLES[(variant, strategy if variant == "long_complex" and strategy else label)]
    return [
        {"role": "user", "content": _request_text(variant, label, strategy, worked.topic)},
        {"role": "assistant", "content": f"Passage: {worked.passage}\nStatement: {worked.statement}"},
        {"role": "user", "content": _request_text(variant, label, strategy, domain)},
    ]


def _vote_question(premise: str, hypothesis: str) -> str:
    return (
        f"{premise}\n"
        f"Claim: {hypothesis}\n"
        "Judging only from the text above, is the claim certainly true (entailment), "
        "perhaps true (neutral) or certainly false (contradiction)? Answer with one word."
    )


def _plain_chat(messages: Sequence[dict[str, str]]) -> str:
    """A chat as plain text, for models without a chat template; ends where the answer starts."""
    parts = []
    for message in messages:
        if message["role"] == "assistant":
            parts.append(f"Answer: {message['content']}\n\n")
        elif message["role"] == "user":
            parts.append(f"{message['content']}\n")
        else:
            parts.append(f"{message['content']}\n\n")
    return "".join(parts) + "Answer:"


def uses_chat(lm: Any) -> bool:
    """Whether requests to ``lm`` go through a chat template (as the runner decides it)."""
    from harness.backends.lm_eval import has_chat_template, is_chat_endpoint

    if is_chat_endpoint(lm):
        return True
    if getattr(lm, "tokenized_requests", True) is False:
        return False
    return has_chat_template(lm)


def _context(lm: Any, messages: Sequence[dict[str, str]], chat: bool) -> Any:
    if chat:
        return lm.apply_chat_template(list(messages), add_generation_prompt=True)
    return _plain_chat(messages)


def _prompt_text(context: Any) -> str:
    # A chat endpoint's context is lm-eval's JsonChatStr (the messages as JSON).
    return context if isinstance(context, str) else str(getattr(context, "prompt", context))


# --------------------------------------------------------------------------- parsing


class Pair(NamedTuple):
    premise: str
    hypothesis: str


_PREMISE_KEYS = r"passage|premise|context|text|first\s+sentence|sentence\s*(?:1|one|a)|statement\s*(?:1|one|a)"
_HYPOTHESIS_KEYS = r"statement\s*(?:2|two|b)|second\s+sentence|sentence\s*(?:2|two|b)|hypothesis|claim|statement"
_OTHER_KEYS = r"label|relation(?:ship)?|answer|explanation|reason|note|topic"
_MARKER = re.compile(
    rf"(?:^|(?<=[\s\"'*(\[]))[*_#>\-\s]*(?:\d+[.)]\s*)?[*_]*"
    rf"(?P<key>{_PREMISE_KEYS}|{_HYPOTHESIS_KEYS}|{_OTHER_KEYS}|sentence)"
    rf"\s*[*_]*\s*[:：]\s*[*_]*",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTES = "\"'“”‘’`«»"


def _role(key: str) -> str:
    key = re.sub(r"\s+", " ", key.lower())
    if re.fullmatch(_PREMISE_KEYS, key, re.IGNORECASE):
        return "premise"
    if re.fullmatch(_HYPOTHESIS_KEYS, key, re.IGNORECASE):
        return "hypothesis"
    if key == "sentence":
        return "sentence"
    return "other"


def _clean(text: str) -> str:
    text = re.sub(r"[*_]{2,}", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = text.strip(" -•")
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def parse_pair(text: str) -> Pair | None:
    """The passage and statement in a model's output, or None when there is no such pair.

    Accepts labelled fields under several names (Passage/Premise/Text/Sentence 1 and
    Statement/Hypothesis/Claim/Sentence 2), in any case, with markdown emphasis, bullets,
    numbering and quotes around them, both fields on one line, a passage over several lines,
    and anything after the statement's line (chatter, a "Label:" line) dropped. Without any
    field label, exactly two non-empty lines are read as passage and statement.
    """
    markers = list(_MARKER.finditer(text))
    fields: list[tuple[str, str]] = []
    for n, match in enumerate(markers):
        end = markers[n + 1].start() if n + 1 < len(markers) else len(text)
        fields.append((_role(match.group("key")), text[match.end() : end]))
    premise_at = next((i for i, (role, _) in enumerate(fields) if role in ("premise", "sentence")), None)
    if premise_at is not None:
        hypothesis = next((body for role, body in fields[premise_at + 1 :] if role in ("hypothesis", "sentence")), None)
        if hypothesis is not None:
            # The statement is one line: what follows it (a blank line, chatter) is not part of it.
            first_line = next((line for line in hypothesis.splitlines() if line.strip()), "")
            return Pair(_clean(fields[premise_at][1]), _clean(first_line))
    if not markers:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) == 2:
            return Pair(_clean(lines[0]), _clean(lines[1]))
    return None


# --------------------------------------------------------------------------- the leak filter

_LEAK_WORDS = re.compile(r"\b(?:premises?|hypothes[ie]s|labels?|labell?ed|entailment)\b", re.IGNORECASE)
#: Assistant chatter that gives itself away wherever it appears.
_CHATTER_ANYWHERE = re.compile(
    r"\b(?:as an ai|an ai (?:language )?model|language model|i cannot|i can'?t|i can ?not|i'?m sorry|i am sorry|"
    r"i apologi[sz]e|i hope this helps|let me know|feel free to|happy to help|i'?d be happy|i would be happy|"
    r"here (?:is|are) (?:a|an|the|your|my|two|some)\b.*\b(?:passage|statement|sentence|example|pair)s?)\b",
    re.IGNORECASE,
)
#: ... and chatter that only gives itself away at the start of a field.
_CHATTER_START = re.compile(
    r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|here is|here's|here are|note|let me)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s+[\"'“‘(]?[A-Z0-9]|\s*$)")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def count_sentences(text: str) -> int:
    """Sentences in a passage: ends of . ! ? followed by a capital, a digit or the end."""
    text = text.strip()
    if not text:
        return 0
    ends = len(_SENTENCE_END.findall(text))
    return ends + (0 if re.search(r"[.!?][\"'”’)]*\s*$", text) else 1)


def leak_reason(
    premise: str,
    hypothesis: str,
    *,
    max_premise_chars: int = LENGTH_LIMITS["long_simple"][0],
    max_hypothesis_chars: int = LENGTH_LIMITS["long_simple"][1],
    seen: set[str] | None = None,
) -> str | None:
    """Why a generated pair must be discarded before the vote, or None when it may go on.

    Reasons, the first that applies: ``empty_field``; ``leak_word`` (premise, hypothesis,
    label, entailment as whole words, any case); ``chatter`` (assistant talk such as "Sure",
    "Here is a ...", "As an AI", "I cannot"); ``too_long``; ``copies_premise`` (the statement
    repeats the passage); ``duplicate`` (the same pair, ignoring case and punctuation, is in
    ``seen``; the caller adds the pairs it accepts).
    """
    if not premise.strip() or not hypothesis.strip():
        return "empty_field"
    for text in (premise, hypothesis):
        if _LEAK_WORDS.search(text):
            return "leak_word"
    for text in (premise, hypothesis):
        if _CHATTER_ANYWHERE.search(text) or _CHATTER_START.search(text):
            return "chatter"
    if len(premise) > max_premise_chars or len(hypothesis) > max_hypothesis_chars:
        return "too_long"
    if _key(premise) == _key(hypothesis):
        return "copies_premise"
    if seen is not None and pair_key(premise, hypothesis) in seen:
        return "duplicate"
    return None


def pair_key(premise: str, hypothesis: str) -> str:
    """The form under which two pairs count as duplicates (case and punctuation ignored)."""
    return f"{_key(premise)}\t{_key(hypothesis)}"


def shape_reason(variant: str, premise: str, hypothesis: str, domain: str = "") -> str | None:
    """The variant's own checks: the passage's sentence count (``premise_sentences``), and no
    copy or echo of a worked example of the generation prompts (``copied_example``: a passage
    or statement identical to one, or two of the variant's ``ECHO_WORDS`` that the topic
    ``domain`` does not itself contain)."""
    low, high = SENTENCE_RANGE[variant]
    if not low <= count_sentences(premise) <= high:
        return "premise_sentences"
    worked = {_key(w.passage) for w in WORKED_EXAMPLES.values()} | {_key(w.statement) for w in WORKED_EXAMPLES.values()}
    if _key(premise) in worked or _key(hypothesis) in worked:
        return "copied_example"
    text, topic = f" {_key(premise)} {_key(hypothesis)} ", f" {_key(domain)} "
    echoes = [word for word in ECHO_WORDS[variant] if f" {word} " in text and f" {word} " not in topic]
    if len(echoes) >= 2:
        return "copied_example"
    return None


# --------------------------------------------------------------------------- the vote filter


class VoteResult(NamedTuple):
    """The voter's predictions for one example (one per few-shot context), and the verdict."""

    predictions: tuple[str, ...]
    keep: bool


def vote_contexts(
    demos: Sequence[Example], votes: int, seed: int, shots_per_label: int = 1, labels: Sequence[str] = LABELS3
) -> list[list[Example]]:
    """``votes`` few-shot contexts of ``shots_per_label`` demonstrations per label each.

    ``labels`` are the labels the contexts show (default all three): a 2-way in-distribution
    pool has no neutral examples, so its study passes ``("entailment", "contradiction")``.

    Each label's demonstrations are shuffled once (``seed``) and dealt out in turn, so the
    contexts use different demonstrations as long as there are enough (``votes *
    shots_per_label`` per label), and otherwise reuse them in other combinations; the order
    within a context is shuffled too. Demonstrations over ``DEMO_MAX_CHARS`` are left out
    while a label has enough shorter ones.
    """
    if votes < 1:
        return []
    unknown = [label for label in labels if label not in LABELS3]
    if unknown or not labels:
        raise NLIStudyError(f"vote labels must be some of {', '.join(LABELS3)}, not {list(labels)}")
    rng = random.Random(f"vote-contexts:{seed}")
    grouped = by_label(demos)
    dealt: dict[str, list[Example]] = {}
    for label in labels:
        pool = sorted(grouped[label], key=lambda ex: ex.id)
        short = [ex for ex in pool if len(ex.premise) + len(ex.hypothesis) <= DEMO_MAX_CHARS]
        pool = short if len(short) >= min(len(pool), votes * shots_per_label) and len(short) >= shots_per_label else pool
        if len(pool) < shots_per_label:
            raise NLIStudyError(
                f"the vote needs at least {shots_per_label} demonstration(s) labelled {label} in demos, got {len(pool)}; "
                "pass more labelled examples as demos"
            )
        rng.shuffle(pool)
        dealt[label] = pool
    contexts = []
    for v in range(votes):
        context = [dealt[label][(v * shots_per_label + j) % len(dealt[label])] for label in labels for j in range(shots_per_label)]
        rng.shuffle(context)
        contexts.append(context)
    return contexts


def vote_messages(context: Sequence[Example], premise: str, hypothesis: str) -> list[dict[str, str]]:
    """The chat of one vote: each demonstration a question and its one-word answer, then the example."""
    messages: list[dict[str, str]] = []
    for demo in context:
        messages.append({"role": "user", "content": _vote_question(demo.premise, demo.hypothesis)})
        messages.append({"role": "assistant", "content": demo.label})
    messages.append({"role": "user", "content": _vote_question(premise, hypothesis)})
    return messages


def vote_filter(
    lm: Any, examples: Sequence[Example], contexts: Sequence[Sequence[Example]], *, chat: bool | None = None
) -> list[VoteResult]:
    """Predict each example's label once per few-shot context; keep it only if all agree with its label.

    Prediction is rank classification: the label word with the highest loglikelihood after
    the context (the chat template applied when the model has one, the word then following
    the assistant turn directly; otherwise plain text, the word after ``Answer:`` and a
    space). All requests of the call go to ``lm.loglikelihood`` at once, so a batching
    backend (irh-fast shares the demonstrations' prefix) sees them together.

    Args:
        lm: an lm-eval LM object that answers loglikelihood requests.
        examples: the candidates, each with its intended label.
        contexts: the few-shot contexts (``vote_contexts``); no context means no vote, and
            every example is kept.
        chat: apply the chat template; by default, when the model has one.
    """
    if not examples:
        return []
    if not contexts:
        return [VoteResult((), True) for _ in examples]
    from lm_eval.api.instance import Instance

    from harness.backends.lm_eval import is_chat_endpoint

    if is_chat_endpoint(lm):
        raise NLIStudyError(
            "a chat-completions endpoint returns no loglikelihoods, so it cannot vote; "
            "give the vote an hf, irh-fast or local-completions model (voter=...)"
        )
    chat = uses_chat(lm) if chat is None else chat
    requests: list[Any] = []
    for ex in examples:
        for context in contexts:
            prefix = _context(lm, vote_messages(context, ex.premise, ex.hypothesis), chat)
            for word in LABELS3:
                continuation = word if chat else f" {word}"
                requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(prefix, continuation), idx=len(requests)))
    answers = lm.loglikelihood(requests, disable_tqdm=True)
    results = []
    per_example = len(contexts) * len(LABELS3)
    for n, ex in enumerate(examples):
        mine = answers[n * per_example : (n + 1) * per_example]
        predictions = []
        for v in range(len(contexts)):
            scores = [float(mine[v * len(LABELS3) + i][0]) for i in range(len(LABELS3))]
            predictions.append(LABELS3[max(range(len(LABELS3)), key=lambda i: scores[i])])
        results.append(VoteResult(tuple(predictions), all(p == ex.label for p in predictions)))
    return results


# --------------------------------------------------------------------------- the loop


class _Attempt(NamedTuple):
    label: str
    strategy: str | None
    domain: str


def summary_path(log_path: Path) -> Path:
    """Where the summary of the latest call writing ``log_path`` goes: ``<stem>.summary.json`` beside it."""
    return log_path.with_name(f"{log_path.stem}.summary.json")


def read_summary(log_path: Path) -> dict[str, Any]:
    """The summary the latest finished call wrote beside ``log_path``."""
    path = summary_path(log_path)
    if not path.is_file():
        raise NLIStudyError(f"no synthetic-data summary at {path}; run the synthetic stage first")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def summarise_log(log_path: Path, run: str | None = None) -> dict[str, Any]:
    """Counts rebuilt from the log rows of one call (``run``; by default the last one in the log).

    Useful after a killed run, whose summary file was never written: ``attempted``, ``kept``
    per label and ``discards`` per reason, as in the summary.
    """
    rows = []
    with log_path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
    if run is None and rows:
        run = rows[-1]["run"]
    mine = [row for row in rows if row.get("run") == run]
    kept = Counter(row["label"] for row in mine if row["kept"])
    return {
        "run": run,
        "attempted": len(mine),
        "kept": {label: kept.get(label, 0) for label in LABELS3},
        "discards": dict(sorted(Counter(row["reason"] for row in mine if not row["kept"]).items())),
    }


def _append(log_path: Path, rows: list[dict[str, Any]]) -> None:
    with log_path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _load(model: Any, what: str) -> tuple[Any, str]:
    """An lm-eval LM object and its name, from an ``irh --model`` spec or an already loaded object."""
    if model is None or isinstance(model, str):
        from harness.backends.models import ModelError, load_model, parse_model_spec

        try:
            spec = parse_model_spec(model)
            loaded = load_model(spec)
        except ModelError as exc:
            raise NLIStudyError(f"{what}: {exc}") from None
        return loaded.lm, spec.label
    if hasattr(model, "lm") and hasattr(model, "spec"):  # a LoadedModel from harness.backends.models
        return model.lm, model.spec.label
    return model, type(model).__name__


def _check(variant: str, counts: dict[str, int], max_attempts: int, votes: int, batch_size: int) -> None:
    if variant not in VARIANTS:
        raise NLIStudyError(f"unknown synthetic variant {variant!r}; use one of {', '.join(VARIANTS)}")
    unknown = sorted(set(counts) - set(LABELS3))
    if unknown:
        raise NLIStudyError(f"counts has unknown label(s) {', '.join(unknown)}; use {', '.join(LABELS3)}")
    bad = [label for label, n in counts.items() if not isinstance(n, int) or n < 0]
    if bad:
        raise NLIStudyError(f"counts for {', '.join(bad)} must be whole numbers >= 0")
    if max_attempts < 1:
        raise NLIStudyError(f"max_attempts must be at least 1, got {max_attempts}")
    if votes < 0:
        raise NLIStudyError(f"votes must be >= 0 (0 turns the vote filter off), got {votes}")
    if batch_size < 1:
        raise NLIStudyError(f"batch_size must be at least 1, got {batch_size}")


def _plan_batch(rng: random.Random, variant: str, needed: dict[str, int], size: int, turn: int) -> list[_Attempt]:
    """The next batch's requests: labels still short in turn, a random topic (and strategy) each."""
    short = [label for label in LABELS3 if needed[label] > 0]
    plan = []
    for i in range(size):
        label = short[(turn + i) % len(short)]
        strategy = STRATEGIES[label][rng.randrange(2)] if variant == "long_complex" else None
        plan.append(_Attempt(label, strategy, rng.choice(DOMAINS)))
    return plan


def _example_id(variant: str, premise: str, hypothesis: str) -> str:
    digest = hashlib.sha256(f"{premise}\n{hypothesis}".encode()).hexdigest()[:12]
    return f"synthetic-{variant}-{digest}"


def generate_synthetic(
    model: Any,
    variant: str,
    counts: dict[str, int],
    *,
    demos: list[Example],
    seed: int,
    log_path: Path,
    max_attempts: int,
    votes: int = 8,
    voter: Any = None,
    batch_size: int = 8,
    shots_per_label: int = 1,
    labels: Sequence[str] = LABELS3,
    progress: Progress | None = None,
) -> list[Example]:
    """Generate NLI examples with ``model`` and keep those that pass both filters.

    Batches of ``batch_size`` requests (labels still short, in turn; random topics and, for
    ``long_complex``, strategies) are generated with sampling, parsed, leak-filtered and voted
    on, until every label has ``counts[label]`` examples or ``max_attempts`` generations are
    spent. Every attempt is appended to ``log_path`` and the summary is written beside it
    (see the module docstring); fewer examples than asked is reported there and logged as a
    warning, not raised.

    Args:
        model: the generator: an ``irh --model`` spec (``default``, ``hf:pretrained=...``,
            ``local-completions:...``, ``local-chat-completions:...``), a ``LoadedModel`` or
            an lm-eval LM object.
        variant: one of ``VARIANTS``.
        counts: examples wanted per label.
        demos: labelled examples the vote's few-shot contexts are drawn from.
        seed: seeds the topics, strategies, vote contexts and sampling.
        log_path: the JSONL log (appended).
        max_attempts: the most generations this call may spend.
        votes: few-shot predictions per example (0 turns the vote filter off).
        voter: the model that votes (spec or LM object); by default the generator.
        batch_size: generations per batch (and per log flush).
        shots_per_label: demonstrations per label in each vote context.
        labels: the labels the vote contexts show demonstrations of (default all three; a
            2-way pool, which has no neutral demos: entailment and contradiction).
        progress: called after each batch with (attempts so far, max_attempts, kept per label).

    Returns:
        The kept examples, at most ``counts[label]`` per label, in the order they were kept.

    Raises:
        NLIStudyError: bad arguments, a voter that cannot score, or a generator whose first
            batch came back entirely empty.
    """
    counts = {label: counts.get(label, 0) for label in LABELS3} | counts
    _check(variant, counts, max_attempts, votes, batch_size)
    contexts = vote_contexts(demos, votes, seed, shots_per_label, labels) if votes and any(counts.values()) else []
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:12]
    lm, model_name = _load(model, "generator")
    if voter is None:
        voter_lm, voter_name = lm, model_name
    else:
        voter_lm, voter_name = _load(voter, "voter")
    if contexts:
        from harness.backends.lm_eval import is_chat_endpoint

        if is_chat_endpoint(voter_lm):
            raise NLIStudyError(
                f"{voter_name} is a chat-completions endpoint, which returns no loglikelihoods and so cannot vote; "
                "give voter= an hf, irh-fast or local-completions model"
            )
    chat = uses_chat(lm)
    voter_chat = uses_chat(voter_lm) if contexts else False
    from lm_eval.api.instance import Instance

    rng = random.Random(f"synthetic:{variant}:{seed}")
    gen_kwargs = dict(SAMPLING, max_gen_toks=MAX_GEN_TOKENS[variant], until=["\n\n\n"] if chat else ["\n\n"])
    kept: list[Example] = []
    have = dict.fromkeys(LABELS3, 0)
    seen: set[str] = set()
    discards: Counter[str] = Counter()
    timing = {"generate": 0.0, "vote": 0.0}
    attempts = batch = 0
    any_output = False
    start = time.perf_counter()
    while attempts < max_attempts and any(have[label] < counts[label] for label in LABELS3):
        needed = {label: counts[label] - have[label] for label in LABELS3}
        plan = _plan_batch(rng, variant, needed, min(batch_size, max_attempts - attempts), batch)
        prompts = [_context(lm, generation_messages(variant, a.label, a.domain, a.strategy), chat) for a in plan]
        requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen_kwargs)), idx=i) for i, p in enumerate(prompts)]
        if "torch" in sys.modules:
            sys.modules["torch"].manual_seed(seed * 100_003 + batch)
        began = time.perf_counter()
        outputs = [o if isinstance(o, str) else "" for o in lm.generate_until(requests, disable_tqdm=True)]
        timing["generate"] += time.perf_counter() - began
        rows: list[dict[str, Any]] = []
        candidates: list[tuple[int, Example]] = []
        for i, (attempt, prompt, raw) in enumerate(zip(plan, prompts, outputs, strict=True)):
            row: dict[str, Any] = {
                "run": run,
                "attempt": attempts + i,
                "batch": batch,
                "variant": variant,
                "label": attempt.label,
                "strategy": attempt.strategy,
                "domain": attempt.domain,
                "model": model_name,
                "prompt": _prompt_text(prompt),
                "raw": raw,
                "parsed": None,
                "votes": None,
                "kept": False,
                "reason": None,
                "id": None,
            }
            rows.append(row)
            if not raw.strip():
                row["reason"] = "empty"
                continue
            any_output = True
            pair = parse_pair(raw)
            if pair is None:
                row["reason"] = "unparsed"
                continue
            row["parsed"] = pair._asdict()
            max_premise, max_hypothesis = LENGTH_LIMITS[variant]
            reason = leak_reason(
                pair.premise, pair.hypothesis, max_premise_chars=max_premise, max_hypothesis_chars=max_hypothesis, seen=seen
            )
            reason = reason or shape_reason(variant, pair.premise, pair.hypothesis, attempt.domain)
            if reason:
                row["reason"] = reason
                continue
            seen.add(pair_key(pair.premise, pair.hypothesis))
            meta = {
                "domain": attempt.domain,
                "strategy": attempt.strategy,
                "generator": model_name,
                "voter": voter_name if contexts else None,
            }
            example = Example(
                id=_example_id(variant, pair.premise, pair.hypothesis),
                premise=pair.premise,
                hypothesis=pair.hypothesis,
                label=attempt.label,
                source="synthetic",
                origin=f"synthetic:{variant}",
                meta=meta,
            )
            candidates.append((i, example))
        if not any_output:
            _append(log_path, rows)
            raise NLIStudyError(
                f"the generator {model_name} returned only empty outputs for {len(rows)} prompts (logged in {log_path}); "
                "check the model spec, that it is a generation model, and its stop sequences"
            )
        began = time.perf_counter()
        results = vote_filter(voter_lm, [ex for _, ex in candidates], contexts, chat=voter_chat)
        timing["vote"] += time.perf_counter() - began
        for (i, example), result in zip(candidates, results, strict=True):
            row = rows[i]
            row["votes"] = list(result.predictions) if contexts else None
            if not result.keep:
                row["reason"] = "vote"
            elif have[example.label] >= counts[example.label]:
                row["reason"] = "surplus"
            else:
                have[example.label] += 1
                kept.append(example.replace(meta={**example.meta, "votes": list(result.predictions)}))
                row["kept"] = True
                row["id"] = example.id
        _append(log_path, rows)
        discards.update(row["reason"] for row in rows if not row["kept"])
        attempts += len(plan)
        batch += 1
        if progress:
            progress(attempts, max_attempts, dict(have))
    seconds = time.perf_counter() - start
    short_by = {label: counts[label] - have[label] for label in LABELS3}
    summary = {
        "run": run,
        "variant": variant,
        "model": model_name,
        "voter": voter_name if contexts else None,
        "seed": seed,
        "votes": len(contexts),
        "asked": {label: counts[label] for label in LABELS3},
        "attempted": attempts,
        "max_attempts": max_attempts,
        "kept": have,
        "short_by": short_by,
        "complete": not any(short_by.values()),
        "discards": {reason: discards[reason] for reason in DISCARD_REASONS if discards[reason]},
        "seconds": round(seconds, 3),
        "generate_seconds": round(timing["generate"], 3),
        "vote_seconds": round(timing["vote"], 3),
        "generations_per_s": round(attempts / seconds, 4) if seconds > 0 else None,
        "log": str(log_path),
    }
    _write_summary(summary_path(log_path), summary)
    if not summary["complete"]:
        missing = ", ".join(f"{label} {n}" for label, n in short_by.items() if n)
        log.warning("synthetic %s: %d attempts kept fewer examples than asked (short by %s); see %s", variant, attempts, missing, log_path)
    return kept


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    # write_jsonl is atomic; a one-row JSONL would not be a JSON file, so write the same way by hand.
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


__all__ = [
    "DOMAINS",
    "STRATEGIES",
    "VARIANTS",
    "Pair",
    "VoteResult",
    "generate_synthetic",
    "generation_messages",
    "leak_reason",
    "parse_pair",
    "read_summary",
    "shape_reason",
    "summarise_log",
    "summary_path",
    "vote_contexts",
    "vote_filter",
]
