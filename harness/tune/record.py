"""``tune.json``: what a tuned adapter was made from, how, and on which phrasings and documents.

It lives in the adapter folder beside peft's own files, so that anything that loads the
adapter (``irh run --model hf:pretrained=BASE,peft=FOLDER``) can tell which phrasings the
model was tuned on (seen) and which it never was (held-out, unseen), and which documents it
must not be evaluated on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.data.cache import atomic_write_bytes
from harness.errors import HarnessError

TUNE_SCHEMA_VERSION = 1
TUNE_FILE = "tune.json"
METHODS = ("lora", "lora+kl", "prompt", "prompt+kl")

Method = Literal["lora", "lora+kl", "prompt", "prompt+kl"]


class TuneError(HarnessError, ValueError):
    """A tuning request that cannot be carried out; says what to do."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSplit(_Record):
    """One task's phrasing and document split."""

    #: The phrasing every batch shows its document under first (the KL term's reference).
    original: str
    #: Phrasings tuned on (the original first): seen by the tuned model.
    train: list[str]
    #: Phrasings never tuned on: unseen by the tuned model.
    held_out: list[str]
    #: Text hash (harness.registry.text_sha256) of every phrasing above.
    sha256: dict[str, str]
    #: ``explicit`` (--train-instructions globs) or ``seeded``.
    phrasing_split: Literal["explicit", "seeded"]
    train_split: str
    train_doc_ids: list[str]
    eval_split: str
    #: The documents `irh run --limit eval_limit --seed eval_seed` scores: disjoint from train.
    eval_doc_ids: list[str]
    eval_limit: int | None
    eval_seed: int


class LossPoint(_Record):
    step: int
    loss: float
    ce: float
    kl: float


class Hyperparameters(_Record):
    steps: int
    learning_rate: float
    kl_weight: float
    paraphrases_per_batch: int
    docs_per_step: int
    train_fraction: float
    max_phrasings: int | None = None
    train_docs: int
    max_length: int
    lora_r: int
    lora_alpha: int
    lora_targets: list[str]
    num_virtual_tokens: int
    prompt_init_text: str
    dtype: str
    device: str
    checkpoint_every: int
    placement: Literal["user", "system", "none"]


class TuneRecord(_Record):
    schema_version: int = TUNE_SCHEMA_VERSION
    status: Literal["running", "interrupted", "complete"] = "running"
    created: str
    finished: str | None = None
    harness_version: str
    git_commit: str | None = None
    git_dirty: bool | None = None
    packages: dict[str, str | None] = Field(default_factory=dict)
    #: Base model: ``pretrained`` folder, name, and the hash of what it was made from.
    base_model: dict[str, Any]
    method: Method
    hyperparameters: Hyperparameters
    seed: int
    registry_sha256: str
    tasks: dict[str, TaskSplit]
    steps_done: int = 0
    loss_curve: list[LossPoint] = Field(default_factory=list)
    seconds: float = 0.0
    peak_memory_mib: float | None = None

    def seen_ids(self) -> dict[str, set[str]]:
        """Per task, the phrasing ids the tuned model saw (its train phrasings)."""
        return {task: set(split.train) for task, split in self.tasks.items()}

    def phrasing_ids(self) -> list[str]:
        """Every phrasing of the split (train and held-out), each once, in task order."""
        return list(dict.fromkeys(i for split in self.tasks.values() for i in split.train + split.held_out))


def tune_file(path: Path) -> Path:
    """``tune.json`` given the adapter folder or the file itself."""
    return path if path.name == TUNE_FILE else path / TUNE_FILE


def read_tune_record(path: Path) -> TuneRecord:
    """Read an adapter folder's (or a path to a) tune.json.

    Raises:
        TuneError: the file is missing or not a tune.json this version reads.
    """
    file = tune_file(Path(path))
    if not file.is_file():
        raise TuneError(f"no {TUNE_FILE} in {file.parent}; give a folder written by `irh tune`")
    try:
        return TuneRecord.model_validate(json.loads(file.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise TuneError(f"{file} is not a valid {TUNE_FILE} ({str(exc).splitlines()[0]}); re-create it with `irh tune`") from None


def write_tune_record(folder: Path, record: TuneRecord) -> None:
    """Write tune.json atomically (a crash never leaves half a file)."""
    atomic_write_bytes(folder / TUNE_FILE, (record.model_dump_json(indent=2) + "\n").encode("utf-8"))


def describe_seen_source(record: TuneRecord, path: Path) -> dict[str, Any]:
    """What run.json keeps about where a run's seen flags came from."""
    from harness.data.cache import sha256_file

    file = tune_file(Path(path))
    return {
        "source": "tune.json",
        "path": str(file.resolve()),
        "sha256": sha256_file(file),
        "method": record.method,
        "seed": record.seed,
        "rule": "train phrasings of each tuned task are seen; held-out phrasings, other tasks and other phrasings are unseen",
    }
