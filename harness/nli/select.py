"""The fixed training budget and the selection strategies (pure functions, no model).

A budget of B examples is drawn from the pool (:func:`draw_budget`); up to K% of each class
of that draw (:func:`per_class_k`) is then replaced by examples a strategy picks from the rest
of the pool, or by synthetic ones (:func:`replace`), so the budget never grows.

Strategies take ``(rest, k, *, seed, ...)`` and return at most ``k[label]`` examples of each
label, marked ``origin="select:<name>"``:

- ``random``: the control, a seeded sample per class;
- ``uncertainty``: highest entropy of the baseline-fine-tuned model's label probabilities;
- ``misclassified``: examples whose most probable label is not their label;
- ``difficulty``: highest difficulty rating (harness/nli/scoring.py) first;
- ``concat``: three hypotheses of one premise joined into one (any contradiction ->
  contradiction, else any neutral -> neutral, else entailment).

Every tie and every sample is broken by a ``random.Random`` seeded from ``seed`` and the
strategy's name, so the same inputs always give the same selection.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.nli.examples import LABELS3, Example, NLIStudyError, by_label

STRATEGIES = ("random", "uncertainty", "misclassified", "difficulty", "concat")


def _rng(seed: int, what: str) -> random.Random:
    return random.Random(f"{what}:{seed}")


def draw_budget(pool: Sequence[Example], budget: int, seed: int) -> tuple[list[Example], list[Example]]:
    """The initial training set: ``budget`` examples drawn at random from ``pool``.

    Returns:
        (the draw, the rest of the pool), each in pool order; the draw is marked ``origin="pool"``.
    """
    if budget < 1:
        raise NLIStudyError(f"budget must be at least 1, not {budget}")
    if budget > len(pool):
        raise NLIStudyError(f"budget {budget} is larger than the pool ({len(pool)} examples); lower --budget")
    ids = [ex.id for ex in pool]
    if len(set(ids)) != len(ids):
        raise NLIStudyError("the pool holds an example id twice; ids must be unique")
    chosen = set(_rng(seed, "draw").sample(range(len(pool)), budget))
    initial = [pool[i] if pool[i].origin == "pool" else pool[i].replace(origin="pool") for i in sorted(chosen)]
    rest = [pool[i] for i in range(len(pool)) if i not in chosen]
    return initial, rest


def per_class_k(initial: Sequence[Example], k_percent: float) -> dict[str, int]:
    """How many examples of each class may be replaced: K% of that class in the draw (rounded down)."""
    if not isinstance(k_percent, (int, float)) or math.isnan(k_percent) or not 0 <= k_percent <= 100:
        raise NLIStudyError(f"K must be a percentage between 0 and 100, not {k_percent}")
    # The small epsilon keeps e.g. 5% of 20 at 1, where 20 * 5 / 100 may round to 0.999...
    return {label: math.floor(len(members) * k_percent / 100 + 1e-9) for label, members in by_label(initial).items()}


def _check_k(k: Mapping[str, int]) -> None:
    bad = {label: n for label, n in k.items() if label not in LABELS3 or n < 0}
    if bad:
        raise NLIStudyError(f"k must map 3-way labels to counts >= 0; got {bad}")


def replace(initial: Sequence[Example], replacement: Sequence[Example], k: Mapping[str, int], seed: int) -> list[Example]:
    """Swap part of the draw for the replacement, class by class, keeping the budget.

    For each label, the replacement's first ``k[label]`` examples of that label are taken
    (strategies list their best first; more than that are left out, as are any beyond the
    number of that label in the draw), and as many examples of that label, chosen at random,
    leave the draw. ``len(result) == len(initial)`` always.
    """
    _check_k(k)
    initial_ids = {ex.id for ex in initial}
    clash = [ex.id for ex in replacement if ex.id in initial_ids]
    if clash:
        raise NLIStudyError(
            f"the replacement repeats {len(clash)} example(s) of the draw (e.g. {clash[0]}); select from the rest of the pool"
        )
    rng = _rng(seed, "replace")
    have = by_label(initial)
    taken: list[Example] = []
    dropped: set[str] = set()
    for label, members in by_label(replacement).items():
        n = min(len(members), k.get(label, 0), len(have[label]))
        if n == 0:
            continue
        taken.extend(members[:n])
        dropped.update(ex.id for ex in rng.sample(have[label], n))
    result = [ex for ex in initial if ex.id not in dropped] + taken
    assert len(result) == len(initial)
    return result


def _mark(examples: Sequence[Example], name: str, meta: Callable[[Example], dict[str, Any]] | None = None) -> list[Example]:
    out = []
    for ex in examples:
        extra = meta(ex) if meta else {}
        out.append(ex.replace(origin=f"select:{name}", meta={**ex.meta, **extra}))
    return out


def _ranked(members: list[Example], key: Callable[[Example], float], rng: random.Random) -> list[Example]:
    """Highest key first; ties in a seeded random order (shuffle, then a stable sort)."""
    order = list(members)
    rng.shuffle(order)
    return sorted(order, key=lambda ex: -key(ex))


def select_random(rest: Sequence[Example], k: Mapping[str, int], *, seed: int) -> list[Example]:
    """The control: a seeded random sample of ``k[label]`` examples of each label."""
    _check_k(k)
    rng = _rng(seed, "random")
    out: list[Example] = []
    for label, members in by_label(rest).items():
        out.extend(rng.sample(members, min(k.get(label, 0), len(members))))
    return _mark(out, "random")


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy (nats) of a probability vector."""
    return -sum(p * math.log(p) for p in probs if p > 0)


def _check_probs(probs: Mapping[str, Sequence[float]]) -> None:
    if not probs:
        raise NLIStudyError("no label probabilities given; score the rest of the pool with the baseline model first")
    bad = next((i for i, p in probs.items() if len(p) != len(LABELS3)), None)
    if bad is not None:
        raise NLIStudyError(f"probabilities of {bad} have {len(probs[bad])} values; give one per label ({', '.join(LABELS3)})")


def select_uncertainty(rest: Sequence[Example], k: Mapping[str, int], *, probs: Mapping[str, Sequence[float]], seed: int) -> list[Example]:
    """Per label, the ``k[label]`` examples whose label probabilities have the highest entropy.

    Only examples with probabilities are considered (the rest may be scored on a subsample).
    """
    _check_k(k)
    _check_probs(probs)
    rng = _rng(seed, "uncertainty")
    out: list[Example] = []
    for label, members in by_label(ex for ex in rest if ex.id in probs).items():
        out.extend(_ranked(members, lambda ex: entropy(probs[ex.id]), rng)[: k.get(label, 0)])
    return _mark(out, "uncertainty", lambda ex: {"entropy": entropy(probs[ex.id]), "probs": list(probs[ex.id])})


def _predicted(p: Sequence[float]) -> str:
    return LABELS3[max(range(len(LABELS3)), key=lambda i: (p[i], -i))]


def _wrong(ex: Example, p: Sequence[float]) -> bool:
    """Whether the most probable label is wrong; for a 2-way example (``meta["label2"]``, e.g.
    an RTE pool item) neutral and contradiction are both right on a not-entailment item."""
    predicted = _predicted(p)
    if "label2" in ex.meta:
        return (predicted == "entailment") != (ex.label == "entailment")
    return predicted != ex.label


def select_misclassified(
    rest: Sequence[Example], k: Mapping[str, int], *, probs: Mapping[str, Sequence[float]], seed: int
) -> list[Example]:
    """Per label, up to ``k[label]`` examples (a seeded sample) that the baseline gets wrong:
    their most probable label is not their label (for a 2-way example, as the 2-way scoring
    sees it: neutral and contradiction both count as not-entailment)."""
    _check_k(k)
    _check_probs(probs)
    rng = _rng(seed, "misclassified")
    out: list[Example] = []
    for label, members in by_label(ex for ex in rest if ex.id in probs).items():
        wrong = [ex for ex in members if _wrong(ex, probs[ex.id])]
        out.extend(rng.sample(wrong, min(k.get(label, 0), len(wrong))))
    return _mark(out, "misclassified", lambda ex: {"predicted": _predicted(probs[ex.id]), "probs": list(probs[ex.id])})


def select_difficulty(rest: Sequence[Example], k: Mapping[str, int], *, ratings: Mapping[str, float], seed: int) -> list[Example]:
    """Per label, the ``k[label]`` examples rated hardest; only rated examples are considered,
    and an unparsed rating (NaN) counts as the easiest."""
    _check_k(k)
    if not ratings:
        raise NLIStudyError("no difficulty ratings given; rate the rest of the pool with the un-tuned model first")
    rng = _rng(seed, "difficulty")

    def rating(ex: Example) -> float:
        value = float(ratings[ex.id])
        return -math.inf if math.isnan(value) else value

    out: list[Example] = []
    for label, members in by_label(ex for ex in rest if ex.id in ratings).items():
        out.extend(_ranked(members, rating, rng)[: k.get(label, 0)])
    return _mark(out, "difficulty", lambda ex: {"difficulty": float(ratings[ex.id])})


def concat_label(labels: Sequence[str]) -> str:
    """The label of hypotheses joined into one: any contradiction makes the whole contradicted;
    else any neutral leaves it undecided; only all-entailed hypotheses are entailed together."""
    if not labels or any(label not in LABELS3 for label in labels):
        raise NLIStudyError(f"cannot join hypotheses labelled {list(labels)}")
    if "contradiction" in labels:
        return "contradiction"
    if "neutral" in labels:
        return "neutral"
    return "entailment"


def join_hypotheses(hypotheses: Sequence[str]) -> str:
    """Hypotheses as one text: each a sentence (a full stop added where it has no end mark)."""
    parts = []
    for text in hypotheses:
        text = " ".join(text.split())
        parts.append(text if text.endswith((".", "!", "?")) else f"{text}.")
    return " ".join(parts)


#: For each target label: which labels the triple's first member may have, and which the others.
_TRIPLE_RULES = {
    "entailment": (("entailment",), ("entailment",)),
    "neutral": (("neutral",), ("entailment", "neutral")),
    "contradiction": (("contradiction",), LABELS3),
}
CONCAT_SIZE = 3


def concatenate(parts: Sequence[Example], rng: random.Random | None = None) -> Example:
    """One example from hypotheses that share a premise (order shuffled when ``rng`` is given)."""
    premises = {ex.premise for ex in parts}
    if len(premises) != 1:
        raise NLIStudyError(f"hypotheses joined into one must share their premise; {[ex.id for ex in parts]} have {len(premises)}")
    order = list(parts)
    if rng is not None:
        rng.shuffle(order)
    return Example(
        id="concat:" + "+".join(ex.id for ex in order),
        premise=order[0].premise,
        hypothesis=join_hypotheses([ex.hypothesis for ex in order]),
        label=concat_label([ex.label for ex in order]),
        source=order[0].source,
        origin="select:concat",
        meta={"parts": [ex.id for ex in order], "part_labels": [ex.label for ex in order]},
    )


def select_concat(rest: Sequence[Example], k: Mapping[str, int], *, seed: int) -> list[Example]:
    """Per label, up to ``k[label]`` examples made of 3 hypotheses that share a premise.

    The premises are visited in a seeded order; each source example is used once at most.
    Entailment triples need three entailed hypotheses, so they are built first, then neutral
    (one neutral, no contradiction), then contradiction (one contradiction, any others).
    """
    _check_k(k)
    rng = _rng(seed, "concat")
    by_premise: dict[str, list[Example]] = {}
    for ex in rest:
        by_premise.setdefault(ex.premise, []).append(ex)
    groups = [members for members in by_premise.values() if len(members) >= CONCAT_SIZE]
    rng.shuffle(groups)
    used: set[str] = set()
    out: list[Example] = []
    for label in LABELS3:
        want = k.get(label, 0)
        first_labels, other_labels = _TRIPLE_RULES[label]
        made = 0
        for members in groups:
            while made < want:
                free = [ex for ex in members if ex.id not in used]
                firsts = [ex for ex in free if ex.label in first_labels]
                if not firsts:
                    break
                first = rng.choice(firsts)
                others = [ex for ex in free if ex is not first and ex.label in other_labels]
                if len(others) < CONCAT_SIZE - 1:
                    break
                triple = [first, *rng.sample(others, CONCAT_SIZE - 1)]
                used.update(ex.id for ex in triple)
                out.append(concatenate(triple, rng))
                made += 1
            if made >= want:
                break
    return out


def run_strategy(
    name: str,
    rest: Sequence[Example],
    k: Mapping[str, int],
    *,
    seed: int,
    probs: Mapping[str, Sequence[float]] | None = None,
    ratings: Mapping[str, float] | None = None,
) -> list[Example]:
    """Run a strategy by name, passing it what it needs (probabilities, ratings)."""
    if name == "random":
        return select_random(rest, k, seed=seed)
    if name == "uncertainty":
        return select_uncertainty(rest, k, probs=probs or {}, seed=seed)
    if name == "misclassified":
        return select_misclassified(rest, k, probs=probs or {}, seed=seed)
    if name == "difficulty":
        return select_difficulty(rest, k, ratings=ratings or {}, seed=seed)
    if name == "concat":
        return select_concat(rest, k, seed=seed)
    raise NLIStudyError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
