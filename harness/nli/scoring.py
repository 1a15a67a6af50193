"""Model calls of the selection strategies: label probabilities and difficulty ratings.

Both go through the harness's own path, so a score here is computed on exactly the text an
evaluation run scores: the model spec is parsed and loaded by harness/backends/models.py,
every prompt is rendered by harness/render.py and scored by the runner's
:func:`harness.runner.score_chunk` (lm-eval's request building, the chat template with the
phrasing in the user turn as `irh run` places it by default, and the irh-fast scorer), in
chunks of many documents per lm-eval call.

- :func:`label_probabilities`: the three label answers of a registry NLI phrasing, each
  answer's loglikelihood normalised over the three (softmax).
- :func:`difficulty_ratings`: the un-tuned model rates how hard each labelled example is,
  1 (trivial) to 10 (very hard). ``rank`` mode (fast): rank classification over the answers
  "1".."10" after the prompt, the rating being the expected value under the normalised
  answer probabilities (multi-token answers such as "10" are scored as whole continuations,
  as every multiple-choice answer is). ``cot`` mode: three worked examples, then the model
  reasons and ends with "Difficulty: N", which is parsed (NaN when it gives none).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, cast

from harness.nli.examples import LABELS3, Example, NLIStudyError

#: Documents per lm-eval call: one call's fixed cost (task config, dataset, request building)
#: spread over many documents; the scorer batches inside a call by tokens.
CHUNK_SIZE = 256
#: Generation documents per call (chain-of-thought ratings), for steady progress.
GENERATION_CHUNK = 16
SCORING_SEED = 1234
AUTHOR = "instruction-robustness contributors"
Progress = Callable[[int, int], None]

_LOADED: dict[tuple[str, str | None], Any] = {}


class _Placement(NamedTuple):
    """What :func:`harness.runner.chat_placement` reads of a run manifest."""

    placement: str


def loaded_model(model: str, dtype: str | None = None) -> Any:
    """The model of an ``irh --model`` spec, loaded once and kept for the next call (one at a time)."""
    from harness.backends.models import ModelError, load_model, parse_model_spec

    key = (model, dtype)
    if key not in _LOADED:
        _LOADED.clear()  # one model in memory at a time
        try:
            _LOADED[key] = load_model(parse_model_spec(model, dtype=dtype))
        except ModelError as exc:
            raise NLIStudyError(str(exc)) from None
    return _LOADED[key]


def release_model() -> None:
    """Forget the loaded model (e.g. before fine-tuning needs the memory)."""
    _LOADED.clear()


def _score(loaded: Any, task: Any, entry: Any, docs: list[dict[str, Any]], chunk_size: int, progress: Progress | None) -> list[Any]:
    """Score documents under one phrasing exactly as `irh run` does; one SampleRow per document."""
    from harness.plan import RunItem
    from harness.results import RunManifest
    from harness.runner import Chunk, chat_placement, score_chunk

    chat, placement = chat_placement(cast(RunManifest, _Placement("user")), loaded)
    item = RunItem(task, entry, False)
    rows: list[Any] = []
    for start in range(0, len(docs), chunk_size):
        chunk = Chunk(0, start, item, docs[start : start + chunk_size])
        rows.extend(score_chunk(loaded, chunk, placement=placement, chat=chat, seed=SCORING_SEED))
        if progress:
            progress(len(rows), len(docs))
    return rows


@lru_cache(maxsize=1)
def _registry() -> Any:
    """The registry, read once per process (tasks/ and instructions/ do not change under a study)."""
    from harness.registry import load_registry

    return load_registry()


def _check_examples(examples: Sequence[Example]) -> None:
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise NLIStudyError("examples repeat an id; scores are keyed by id, so ids must be unique")


def softmax(logliks: Sequence[float]) -> list[float]:
    top = max(logliks)
    weights = [math.exp(x - top) for x in logliks]
    total = sum(weights)
    return [w / total for w in weights]


def _nli_task() -> Any:
    from harness.schema import TaskSpec

    return TaskSpec(
        id="nlis.scoring", family="nlis", category="nli-3way", fields=["premise", "hypothesis"], labels=list(LABELS3), split="test"
    )


def _documents(
    examples: Sequence[Example], fields: Callable[[Example], dict[str, str]], choices: list[str], label_of: Callable[[Example], str]
) -> list[dict[str, Any]]:
    return [
        {
            "id": ex.id,
            "group": ex.label,
            "fields": fields(ex),
            "choices": choices,
            "scores": [1.0 if c == label_of(ex) else 0.0 for c in choices],
        }
        for ex in examples
    ]


def label_probabilities(
    model: str,
    examples: Sequence[Example],
    *,
    phrasing: str,
    dtype: str | None = None,
    progress: Progress | None = None,
) -> dict[str, list[float]]:
    """Each example's probabilities of the three labels (LABELS3 order) under a registry phrasing.

    Args:
        model: an ``irh --model`` spec (``default``, ``irh-fast:pretrained=DIR,peft=ADAPTER``, ...).
        examples: the examples (unique ids).
        phrasing: a registry phrasing id that applies to 3-way NLI (``nli3.w01``).
        dtype: the model dtype (default: as `irh run` chooses).
        progress: called with (done, total) after each chunk.
    """
    _check_examples(examples)
    if not examples:
        return {}
    task = _nli_task()
    registry = _registry()
    try:
        entry = registry.instruction(phrasing)
    except KeyError as exc:
        raise NLIStudyError(str(exc.args[0])) from None
    if not registry.applies(entry, task):
        raise NLIStudyError(f"phrasing {phrasing} does not apply to 3-way NLI; pick one from `irh list instructions --task nlis.cb`")
    docs = _documents(examples, lambda ex: {"premise": ex.premise, "hypothesis": ex.hypothesis}, list(LABELS3), lambda ex: ex.label)
    rows = _score(loaded_model(model, dtype), task, entry, docs, CHUNK_SIZE, progress)
    out = {}
    for ex, row in zip(examples, rows, strict=True):
        if row.loglikelihoods is None:
            raise NLIStudyError(f"model {model} returns no loglikelihoods (a chat-only endpoint); label probabilities need one that does")
        out[ex.id] = softmax(row.loglikelihoods)
    return out


# --------------------------------------------------------------------------- difficulty

RATINGS = [str(n) for n in range(1, 11)]

_RELATIONS = (
    "entailment: the premise makes the hypothesis true; neutral: the premise leaves it open; contradiction: the premise makes it false"
)

_RANK_PROMPT = (
    f"You will see a premise, a hypothesis, and the correct relation between them ({_RELATIONS}).\n"
    "Judge how hard it is to arrive at that relation from the two texts alone. Use a scale from 1 to 10, "
    "where 1 means anyone would see it at a glance and 10 means it takes careful, expert reading.\n"
    "\n"
    "Premise: {{ premise }}\n"
    "Hypothesis: {{ hypothesis }}\n"
    "Correct relation: {{ relation }}\n"
    "\n"
    "Difficulty (1-10):"
)

_COT_PROMPT = (
    f"For each pair below, the correct relation between premise and hypothesis is given ({_RELATIONS}). "
    "Explain briefly what a reader must notice to reach that relation, then rate how hard that is from "
    '1 (obvious at a glance) to 10 (needs careful, expert reading). End with a line "Difficulty: N".\n'
    "\n"
    "{{ demonstrations }}\n"
    "\n"
    "Premise: {{ premise }}\n"
    "Hypothesis: {{ hypothesis }}\n"
    "Correct relation: {{ relation }}\n"
    "Reasoning:"
)

#: The three worked examples of the chain-of-thought prompt (written for this project).
COT_DEMOS: tuple[dict[str, str], ...] = (
    {
        "premise": "A woman in a red coat is feeding pigeons on a park bench.",
        "hypothesis": "Someone is outdoors with birds.",
        "relation": "entailment",
        "reasoning": "A park is outdoors and pigeons are birds; both follow directly from the words, with no hidden step.",
        "difficulty": "2",
    },
    {
        "premise": (
            "The committee postponed the vote after two members failed to arrive, citing the rule that a quorum of seven is required."
        ),
        "hypothesis": "The committee has exactly eight members.",
        "relation": "neutral",
        "reasoning": (
            "The quorum rule and two absences hint at the committee's size, but they fit many sizes; "
            "one must resist the tempting arithmetic and see that the number is never fixed."
        ),
        "difficulty": "7",
    },
    {
        "premise": (
            "Although the bakery advertises that every loaf is made on site, "
            "its bread arrives each morning on a truck from a factory two towns away."
        ),
        "hypothesis": "The bakery makes all of its bread on its own premises.",
        "relation": "contradiction",
        "reasoning": (
            "The hypothesis repeats the advertisement, while the main clause says the bread is delivered from a factory; "
            "the reader has to separate the claim from the fact."
        ),
        "difficulty": "5",
    },
)

_DIFFICULTY = re.compile(r"difficulty\s*[:=]?\s*(10|[1-9])\b", re.I)
_NUMBER = re.compile(r"\b(10|[1-9])\b")


def _demo_block(demos: Sequence[dict[str, str]]) -> str:
    return "\n\n".join(
        f"Premise: {d['premise']}\nHypothesis: {d['hypothesis']}\nCorrect relation: {d['relation']}\n"
        f"Reasoning: {d['reasoning']}\nDifficulty: {d['difficulty']}"
        for d in demos
    )


def _demos_from_examples(demos: Sequence[Example]) -> list[dict[str, str]]:
    """Worked examples given as Examples: each needs ``meta["reasoning"]`` and ``meta["difficulty"]``."""
    out = []
    for ex in demos:
        if not ex.meta.get("reasoning") or str(ex.meta.get("difficulty", "")) not in RATINGS:
            raise NLIStudyError(f"demonstration {ex.id} needs meta['reasoning'] and meta['difficulty'] (1-10)")
        out.append(
            {
                "premise": ex.premise,
                "hypothesis": ex.hypothesis,
                "relation": ex.label,
                "reasoning": str(ex.meta["reasoning"]),
                "difficulty": str(ex.meta["difficulty"]),
            }
        )
    return out


def parse_rating(text: str) -> float:
    """The rating in a chain-of-thought answer: the last "Difficulty: N", else the last number 1-10 of its last line; NaN when none."""
    found = _DIFFICULTY.findall(text)
    if found:
        return float(found[-1])
    lines = [line for line in text.strip().splitlines() if line.strip()]
    numbers = _NUMBER.findall(lines[-1]) if lines else []
    return float(numbers[-1]) if numbers else math.nan


def _difficulty_entry(text: str, answers: str | dict[str, str]) -> Any:
    from harness.registry import RegisteredInstruction
    from harness.schema import Instruction, Provenance

    instruction = Instruction(
        id="nlis.difficulty",
        text=text,
        answer_choices=answers,  # type: ignore[arg-type]
        provenance=Provenance(status="unobserved", author=AUTHOR),
    )
    return RegisteredInstruction(instruction=instruction, file=__file__, target_kind="task", target="nlis.difficulty")


def difficulty_ratings(
    model: str,
    examples: Sequence[Example],
    *,
    mode: str = "rank",
    demos: list[Example] | None = None,
    log: Path | None = None,
    dtype: str | None = None,
    max_tokens: int = 96,
    progress: Progress | None = None,
) -> dict[str, float]:
    """The model's difficulty rating (1-10) of each labelled example.

    Args:
        model: an ``irh --model`` spec; the study uses the un-tuned model.
        examples: the examples (unique ids), with their labels.
        mode: ``rank`` (expected rating from rank classification over "1".."10", fast) or
            ``cot`` (three worked examples, reasoning generated, "Difficulty: N" parsed).
        demos: replaces the built-in worked examples of ``cot`` mode (each with
            ``meta["reasoning"]`` and ``meta["difficulty"]``).
        log: append one JSON line per example (prompt as the model saw it, output or answer
            probabilities, rating).
        max_tokens: the longest ``cot`` answer.
    """
    from harness.schema import TaskSpec

    if mode not in ("rank", "cot"):
        raise NLIStudyError(f"unknown difficulty mode {mode!r}; choose rank or cot")
    _check_examples(examples)
    if not examples:
        return {}
    loaded = loaded_model(model, dtype)
    fields = ["premise", "hypothesis", "relation"]
    out: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    if mode == "rank":
        task = TaskSpec(id="nlis.difficulty", family="nlis", category="nli-difficulty", fields=fields, labels=RATINGS, split="test")
        entry = _difficulty_entry(_RANK_PROMPT, "text")
        docs = _documents(
            examples, lambda ex: {"premise": ex.premise, "hypothesis": ex.hypothesis, "relation": ex.label}, RATINGS, lambda ex: "1"
        )
        rows = _score(loaded, task, entry, docs, CHUNK_SIZE, progress)
        for ex, row in zip(examples, rows, strict=True):
            if row.loglikelihoods is None:
                raise NLIStudyError(f"model {model} returns no loglikelihoods (a chat-only endpoint); use mode cot")
            probs = softmax(row.loglikelihoods)
            out[ex.id] = sum(p * (i + 1) for i, p in enumerate(probs))
            records.append({"id": ex.id, "mode": mode, "prompt": row.prompt, "probs": probs, "rating": out[ex.id]})
    else:
        shots = _demos_from_examples(demos) if demos else list(COT_DEMOS)
        if len(shots) != 3:
            raise NLIStudyError(f"the chain-of-thought prompt is 3-shot; {len(shots)} demonstrations given")
        task = TaskSpec(
            id="nlis.difficulty",
            family="nlis",
            category="nli-difficulty",
            output_type="generate_until",
            fields=[*fields, "demonstrations"],
            metric="exact_str_match",
            until=["\nPremise:", "\n\n\n"],
            max_gen_toks=max_tokens,
            split="test",
        )
        entry = _difficulty_entry(_COT_PROMPT, "text")
        block = _demo_block(shots)
        docs = [
            {
                "id": ex.id,
                "group": ex.label,
                "fields": {"premise": ex.premise, "hypothesis": ex.hypothesis, "relation": ex.label, "demonstrations": block},
                "targets": [""],
            }
            for ex in examples
        ]
        rows = _score(loaded, task, entry, docs, GENERATION_CHUNK, progress)
        for ex, row in zip(examples, rows, strict=True):
            text = row.generation or ""
            out[ex.id] = parse_rating(text)
            records.append(
                {"id": ex.id, "mode": mode, "prompt": row.prompt, "output": text, "rating": None if math.isnan(out[ex.id]) else out[ex.id]}
            )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out
