"""Reading a generated answer as one of a multiple-choice document's options.

Chat-only endpoints (``local-chat-completions``, vendor chat APIs) return no prompt
logprobs, so a multiple-choice task cannot be scored there by rank classification; the model
generates an answer instead, and this module reads which option it names: the letter, number,
label word or option text the phrasing asked for. An answer that names no option, or several
equally, is unparseable: it is scored wrong, and the row says so (``prediction`` is None).
"""

from __future__ import annotations

import re

from harness.metrics import Score

#: Phrases that introduce the answer proper ("The answer is B", "Answer: yes").
_LEAD_INS = re.compile(r"\b(?:final answer|answer|option|choice)\s*(?:is|:|=|-)?\s*", re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _leading(answer: str, options: list[str]) -> int | None:
    """The option the answer starts with (the longest, when one option begins another)."""
    hits = [i for i, option in enumerate(options) if option and (answer == option or answer.startswith(option + " "))]
    if not hits:
        return None
    longest = max(len(options[i]) for i in hits)
    best = [i for i in hits if len(options[i]) == longest]
    return best[0] if len(best) == 1 else None


def parse_choice(text: str, options: list[str]) -> int | None:
    """The index of the option a generated answer names, or None when it names none (or several).

    Args:
        text: the generated answer.
        options: the scored continuations of the options (``A``, ``1``, ``yes``, an option's text).

    Tried in order: the answer starts with an option (``B``, ``B) Paris``, ``yes, because``);
    the text after a lead-in (``The answer is B``); and, for options longer than two
    characters, exactly one option anywhere in the answer as whole words.
    """
    normal = [normalise(o) for o in options]
    if len(set(normal)) != len(normal):
        # Options that read the same once normalised cannot be told apart in text.
        return None
    answer = normalise(text)
    found = _leading(answer, normal)
    if found is not None:
        return found
    for match in reversed(list(_LEAD_INS.finditer(text))):
        found = _leading(normalise(text[match.end() :]), normal)
        if found is not None:
            return found
    padded = f" {answer} "
    anywhere = [i for i, option in enumerate(normal) if len(option) > 2 and f" {option} " in padded]
    if len(anywhere) == 1:
        return anywhere[0]
    # One option inside another ("not entailment" holds "entailment"): the longer one, alone.
    if anywhere:
        outer = [i for i in anywhere if not any(i != j and normal[i] in normal[j] for j in anywhere)]
        if len(outer) == 1:
            return outer[0]
    return None


def score_parsed(choice: int | None, option_scores: list[float]) -> Score:
    """Score the option a generated answer named; an unparseable answer (None) is wrong and
    gets the lowest target score."""
    if choice is None:
        return Score(min(option_scores), False)
    score = option_scores[choice]
    return Score(score, score >= max(option_scores))
