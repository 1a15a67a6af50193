"""Run folders: the manifest (run.json) and the append-only per-sample log (samples.jsonl).

Sample rows are appended and flushed (fsync) after every chunk of documents, so a crash loses
at most the rows of the chunk in flight. A half-written last line (a kill mid-write) is
detected on read and cut off on resume, so no row is ever lost twice or repeated.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import __version__
from harness.data.cache import atomic_write_bytes

RESULTS_SCHEMA_VERSION = 1
MANIFEST = "run.json"
SAMPLES = "samples.jsonl"


class RunError(RuntimeError):
    """A run folder that cannot be used as asked; says what to do."""


class TaskRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    split: str
    documents_total: int
    doc_ids: list[str]
    #: Hash of the task spec (fields, labels, metric, generation settings): a changed spec
    #: scores differently, so `--resume` refuses to merge across it.
    spec_sha256: str | None = None


class InstructionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    sha256: str
    status: Literal["observed", "unobserved"]
    collections: list[str] = Field(default_factory=list)
    #: In a collection the model saw (a row's own `seen` also honours held_out_tasks).
    seen: bool


class RunManifest(BaseModel):
    """Everything needed to know what a run measured and to redo it."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = RESULTS_SCHEMA_VERSION
    run_id: str
    status: Literal["running", "interrupted", "failed", "complete"] = "running"
    created: str
    finished: str | None = None
    harness_version: str = __version__
    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str = Field(default_factory=lambda: sys.version.split()[0])
    platform: str = Field(default_factory=platform.platform)
    packages: dict[str, str | None] = Field(default_factory=dict)
    model: dict[str, Any]
    placement: Literal["user", "system", "none"]
    #: The placement actually used: "none" when the model turned out to have no chat template.
    placement_applied: Literal["user", "system", "none"] | None = None
    chat_template_applied: bool
    #: Importers of observed phrasings the registry was loaded with (``--observed``).
    observed_sources: list[str] = Field(default_factory=list)
    seed: int
    limit: int | None
    chunk_size: int
    seen_collections: list[str] = Field(default_factory=list)
    #: Task globs the model's family held out of tuning: their phrasings count as unseen.
    held_out_tasks: list[str] = Field(default_factory=list)
    registry_sha256: str
    tasks: dict[str, TaskRecord]
    instructions: dict[str, InstructionRecord]
    #: The (task id, phrasing id) pairs scored, in order.
    plan: list[tuple[str, str]]
    error: str | None = None


class SampleRow(BaseModel):
    """One phrasing x document result."""

    model_config = ConfigDict(extra="forbid")
    task: str
    instruction_id: str
    instruction_sha256: str
    status: Literal["observed", "unobserved"]
    seen: bool
    doc_id: str
    group: str = ""
    prompt: str
    options: list[str] = Field(default_factory=list)
    option_scores: list[float] = Field(default_factory=list)
    loglikelihoods: list[float] | None = None
    prediction: int | None = None
    generation: str | None = None
    targets: list[str] | None = None
    score: float
    correct: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.task, self.instruction_id, self.doc_id)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_state(path: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding ``path``, or (None, None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=path,
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
        )
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def package_versions(
    names: tuple[str, ...] = ("lm_eval", "torch", "transformers", "datasets", "gguf", "jinja2", "pydantic"),
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_manifest(run_dir: Path, manifest: RunManifest) -> None:
    atomic_write_bytes(run_dir / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode("utf-8"))


def read_manifest(run_dir: Path) -> RunManifest:
    path = run_dir / MANIFEST
    if not path.exists():
        raise RunError(f"{run_dir} is not a run folder (no {MANIFEST}); give the folder `irh run` printed")
    data = json.loads(path.read_text(encoding="utf-8"))
    version = data.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise RunError(f"{path} has results schema {version}; this harness reads {RESULTS_SCHEMA_VERSION}")
    return RunManifest.model_validate(data)


def iter_samples(run_dir: Path) -> Iterator[SampleRow]:
    """Rows of samples.jsonl; a torn last line (crash mid-write) is skipped.

    The file is split as bytes: a kill can cut a multi-byte character in half, which only
    the unterminated last line may contain.
    """
    path = run_dir / SAMPLES
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    # Everything after the last newline is the row in flight when the run died (or b"").
    for i, line in enumerate(lines[:-1]):
        try:
            yield SampleRow.model_validate_json(line.decode("utf-8"))
        except ValueError as exc:
            raise RunError(f"{path} line {i + 1} is corrupt: {exc}") from exc


def repair_samples(run_dir: Path) -> None:
    """Cut a torn final line off samples.jsonl so appends start on a fresh line."""
    path = run_dir / SAMPLES
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(keep)


class SampleWriter:
    """Appends rows to samples.jsonl, flushing each batch to disk before returning.

    Holds an exclusive lock on the run folder while open, so that two processes (a run and
    a `--resume` of it, or two resumes) can never append to the same file.
    """

    def __init__(self, run_dir: Path):
        import fcntl

        self._lock = open(run_dir / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunError(f"{run_dir} is being written by another irh process; wait for it to end") from None
        repair_samples(run_dir)
        self._fh = open(run_dir / SAMPLES, "a", encoding="utf-8")

    def write(self, rows: list[SampleRow]) -> None:
        for row in rows:
            self._fh.write(row.model_dump_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
        self._lock.close()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
