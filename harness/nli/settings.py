"""What an NLI study does: its settings, as study.json stores them, and the names of its
strategies and synthetic variants (validated without importing the modules that run them)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from harness.nli.examples import NLIStudyError

#: Strategies and synthetic variants, as the shared interfaces name them (no import of the
#: modules needed to validate names).
STRATEGY_NAMES = ("random", "uncertainty", "misclassified", "difficulty", "concat")
SYNTHETIC_NAMES = ("short_simple", "long_simple", "long_complex")
DIFFICULTY_MODES = ("rank", "cot")


@dataclass(frozen=True)
class StudySettings:
    """What the study does. The defaults are sized for a 2-core CPU and the default model
    (the study itself: budget 10,000, K 5%, several seeds, full evaluation sets), and fit the
    ``offline`` preset's RTE pool (185 pairs: budget + candidates = 112) and sets (92 and 56)."""

    preset: str = "offline"
    model: str = "default"
    budget: int = 48
    k_percent: float = 20.0
    seeds: tuple[int, ...] = (1, 2)
    strategies: tuple[str, ...] = STRATEGY_NAMES
    synthetic: tuple[str, ...] = ("short_simple",)
    #: Pool examples per seed (from the rest after the draw) the strategies select from.
    candidates: int = 64
    #: Documents per evaluation set (a seeded, stratified subsample; the same for every variant).
    limit: int = 16
    #: Phrasings per evaluation set (a seeded subsample of the 3-way NLI phrasings).
    max_instructions: int = 2
    epochs: int = 2
    learning_rate: float = 1e-3
    lora_rank: int = 8
    batch_size: int = 8
    difficulty: str = "rank"
    #: The phrasing the label probabilities (uncertainty, misclassified) are read under.
    score_phrasing: str = "nli3.w01"
    #: Phrasings the training examples are shown under (empty: every 3-way NLI phrasing).
    train_phrasings: tuple[str, ...] = ()
    #: Seed of the evaluation subsample (documents and phrasings): fixed across seeds, so
    #: every variant of every seed is scored on the same documents and phrasings.
    eval_seed: int = 1234
    #: The most generations one synthetic variant may spend per seed.
    synthetic_attempts: int = 32
    votes: int = 8
    #: Who votes on generated examples: "model" (the un-tuned model that generated them, as
    #: the study did), "baseline" (this seed's baseline fine-tune) or an `irh --model` spec.
    voter: str = "model"
    #: Model dtype for scoring and the training autocast (None: bfloat16 where supported).
    dtype: str | None = None
    #: Also evaluate the un-tuned model once, as a reference row.
    untuned: bool = True

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NLIStudyError(f"study.json has unknown settings {unknown}; it was written by another version of irh")
        values = dict(data)
        for name in ("seeds", "strategies", "synthetic", "train_phrasings"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def variants(self) -> list[str]:
        """Every trained variant of one seed, in run order."""
        return ["baseline", *self.strategies, *(f"synthetic-{v}" for v in self.synthetic)]
