"""Where a study folder keeps what: its settings file, the markers of finished stages, each
seed's folder, and the scores files both the study and its report read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STUDY_FILE = "study.json"
#: A stage's folder holds this file once the stage has finished.
DONE = ".done"
#: Scores of one evaluation: set name -> phrasing id -> document id -> score.
Scores = dict[str, dict[str, dict[str, float]]]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def is_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE).is_file()


def seed_dir(seed: int) -> str:
    """The folder of one seed's variants, under the study folder."""
    return f"seed-{seed}"


def set_accuracy(scores: dict[str, dict[str, float]]) -> float:
    """A set's accuracy: the mean score over every (phrasing, document) pair."""
    values = [v for docs in scores.values() for v in docs.values()]
    return sum(values) / len(values) if values else float("nan")
