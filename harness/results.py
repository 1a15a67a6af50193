"""Run folders: the manifest (run.json) and the append-only per-sample log (samples.jsonl).

Sample rows are appended and flushed (fsync) after every chunk of documents, so a crash loses
at most the rows of the chunk in flight. A half-written last line (a kill mid-write) is
detected on read and cut off on resume, so no row is ever lost twice or repeated.

One process at a time writes a folder: it holds a lock on the folder (``RunLock``) from
before it reads the rows already there until its last status is written, and keeps a
heartbeat (pid, host, last flush) beside them, so that a ``running`` status left by a
kill -9 can be told from a live run (``check_liveness``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness import __version__
from harness.data.cache import atomic_write_bytes
from harness.errors import HarnessError

RESULTS_SCHEMA_VERSION = 1
MANIFEST = "run.json"
SAMPLES = "samples.jsonl"
#: Who is writing the folder and when it last flushed; present only while a writer holds it
#: (or after that writer was killed).
HEARTBEAT = "heartbeat.json"
#: Locked by the writing process; present only while one holds it (or after a kill -9).
LOCK = ".lock"


class RunError(HarnessError, RuntimeError):
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
    #: The task's family and category when the run was made (reports group by these, not by
    #: today's tasks/*.yaml); None in run folders written before they were recorded.
    family: str | None = None
    category: str | None = None
    #: The sha256 of the split's normalised documents as scored (harness/data/pins.py), and
    #: whether it matched a pinned hash; None in run folders written before they were recorded.
    content_sha256: str | None = None
    content_pinned: bool | None = None
    #: How ``doc_ids`` were chosen ("all documents", "stratified by group", "stratified by group
    #: and answer position"), and the chosen documents' right answers per option position (A
    #: first) where the task's positions are arbitrary (harness/data/catalog.py:answer_positions);
    #: None in run folders written before they were recorded.
    selection: str | None = None
    answer_positions: dict[str, int] | None = None


class InstructionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    sha256: str
    status: Literal["observed", "unobserved", "control"]
    collections: list[str] = Field(default_factory=list)
    #: In a collection the model saw (a row's own `seen` also honours held_out_tasks).
    seen: bool


class BudgetRound(BaseModel):
    """One allocation of cells: the run's start, a `--resume` with a bigger budget, or an
    adaptive round (cells where the estimate is least certain, chosen after the last round is scored)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["balanced", "adaptive"] = "balanced"
    fraction: float | None = None
    cells: int | None = None
    cells_added: int
    created: str


class BudgetRecord(BaseModel):
    """A budgeted run scores only these (phrasing, document) cells of each task's grid."""

    model_config = ConfigDict(extra="forbid")
    seed: int
    design: str = "balanced cyclic design, harness/budget.py"
    rounds: list[BudgetRound] = Field(default_factory=list)
    #: Per task, the chosen cells as [instruction_id, doc_id], in the order they were chosen.
    cells: dict[str, list[list[str]]] = Field(default_factory=dict)
    #: Adaptive rounds still to run (`--rounds`), and the cells per task they fill up to.
    rounds_pending: int = 0
    goal_cells: dict[str, int] = Field(default_factory=dict)

    def allowed(self, task: str) -> set[tuple[str, str]]:
        return {(p, d) for p, d in self.cells.get(task, [])}

    @property
    def scored_cells(self) -> int:
        return sum(len(v) for v in self.cells.values())


class TaskNoise(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cells: int
    flips: int
    flip_share: float
    flip_ci: tuple[float, float]
    accuracy_run: float
    accuracy_reference: float
    max_abs_loglikelihood_diff: float

    @property
    def floor(self) -> float:
        """Differences in a phrasing's score smaller than this can be precision alone: the
        upper end of the flip share's CI (a flip moves a document's score by at most 1)."""
        return self.flip_ci[1]


class NoiseCheck(BaseModel):
    """run.json's record of the check (``status`` says why there is none)."""

    model_config = ConfigDict(extra="forbid")
    status: str  # "done", "not needed: ...", "not possible: ..."
    fraction: float
    seed: int
    run_dtype: str | None = None
    reference_dtype: str = "float32"
    tasks: dict[str, TaskNoise] = Field(default_factory=dict)


class PlacementEffect(BaseModel):
    """What ``--placement`` did to one task's phrasings: how many had a system part (on any of
    the run's documents) and how many rendered exactly as under ``--placement user`` (on all)."""

    model_config = ConfigDict(extra="forbid")
    phrasings: int
    with_system_part: int
    unchanged_from_user: int


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
    #: Where the seen flags came from: ``kind`` family-map (with family and reference), declared
    #: (the user's --seen), tune.json (path, sha256) or none; None in run folders written before it was recorded.
    seen_source: dict[str, Any] | None = None
    #: Per task, what the placement did (:func:`harness.runner.placement_effects`); None in
    #: run folders written before it was recorded.
    placement_effect: dict[str, PlacementEffect] | None = None
    registry_sha256: str
    #: Where tasks/ and instructions/ were read from, and why that folder (IRH_REGISTRY, the
    #: working directory's checkout, or the installed package's).
    registry_path: str | None = None
    registry_origin: str | None = None
    #: Set for a budgeted run (`irh run --budget`): which cells are scored; None scores them all.
    budget: BudgetRecord | None = None
    tasks: dict[str, TaskRecord]
    instructions: dict[str, InstructionRecord]
    #: The (task id, phrasing id) pairs scored, in order.
    plan: list[tuple[str, str]]
    error: str | None = None
    #: The share of cells scored again in float32 once the rows are complete (harness/noise.py),
    #: and the result; None in run folders written before the check existed.
    noise_check_fraction: float = 0.0
    noise_check: NoiseCheck | None = None


class SampleRow(BaseModel):
    """One phrasing x document result."""

    model_config = ConfigDict(extra="forbid")
    task: str
    instruction_id: str
    instruction_sha256: str
    status: Literal["observed", "unobserved", "control"]
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
    #: How the answer was obtained: ``loglikelihood`` (rank classification over the options)
    #: or ``generated`` (generated text, parsed for multiple-choice tasks on a chat-only
    #: endpoint, compared with the targets for generation tasks). Rows written before the
    #: field existed read as what they were: loglikelihood when they carry loglikelihoods.
    scoring: Literal["loglikelihood", "generated"] | None = None

    @model_validator(mode="after")
    def _fill_scoring(self) -> SampleRow:
        if self.scoring is None:
            self.scoring = "loglikelihood" if self.loglikelihoods is not None else "generated"
        return self

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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunError(f"{path} is damaged ({exc}); it cannot be read, so the run cannot be reported or resumed") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} is damaged (a JSON {type(data).__name__}, not a run record); the run cannot be reported or resumed")
    version = data.get("schema_version")
    if version != RESULTS_SCHEMA_VERSION:
        raise RunError(f"{path} has results schema {version}; this harness reads {RESULTS_SCHEMA_VERSION}")
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RunError(
            f"{path} is damaged ({exc.error_count()} problem(s), first at {where}: {first['msg']}); the run cannot be reported or resumed"
        ) from None


def iter_samples(run_dir: Path) -> Iterator[SampleRow]:
    """Rows of samples.jsonl; a torn last line (crash mid-write) is skipped.

    The file is split as bytes: a kill can cut a multi-byte character in half, which only
    the unterminated last line may contain.
    """
    yield from iter_sample_file(run_dir / SAMPLES)


def iter_sample_file(path: Path) -> Iterator[SampleRow]:
    """Rows of one samples file (samples.jsonl, or a rank's shard); a torn last line is skipped."""
    for _, row in iter_numbered_samples(path):
        yield row


def iter_numbered_samples(path: Path) -> Iterator[tuple[int, SampleRow]]:
    """(line number, row) of a samples file; a torn last line is skipped."""
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    # Everything after the last newline is the row in flight when the run died (or b"").
    for i, line in enumerate(lines[:-1]):
        try:
            yield i + 1, SampleRow.model_validate_json(line.decode("utf-8"))
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


class Heartbeat(BaseModel):
    """Who is writing a run folder, and when it last flushed rows (``heartbeat.json``).

    ``run.json`` says ``running`` both while a run is being written and after a kill -9 or a
    power loss; this record, with the folder's lock, tells the two apart.
    """

    model_config = ConfigDict(extra="forbid")
    pid: int
    host: str
    #: When this process took the folder (UTC).
    started: str
    #: When it last flushed a chunk of rows (UTC); None before the first chunk.
    last_flush: str | None = None
    #: Rows this process has appended so far.
    rows_written: int = 0


def read_heartbeat(run_dir: Path) -> Heartbeat | None:
    """The folder's heartbeat, or None when there is none (no writer, or one that ended cleanly)."""
    try:
        return Heartbeat.model_validate_json((run_dir / HEARTBEAT).read_bytes())
    except (OSError, ValueError):
        # Written atomically, so an unreadable one is not ours; treat it as absent.
        return None


def _same_file(fd: int, path: Path) -> bool:
    """True while ``path`` still names the file open as ``fd`` (not unlinked or replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _lock_held_elsewhere(run_dir: Path) -> bool:
    """True while some process holds the folder's writer lock.

    Probes with a shared lock so that two probes never disturb each other; a writer taking
    the folder at that instant retries (see ``RunLock``) rather than being refused. Never
    creates the lock file: a folder without one has no writer.
    """
    import fcntl

    path = run_dir / LOCK
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            if _same_file(fd, path):
                return False
            # The writer we found ended and unlinked it meanwhile; look at the current one.
        finally:
            os.close(fd)  # also drops the probe's lock
    return False


def _age(stamp: str) -> str:
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _writer_text(beat: Heartbeat) -> str:
    return f"pid {beat.pid} on host {beat.host}"


def _flush_text(beat: Heartbeat) -> str:
    if beat.last_flush is None:
        return f"no rows flushed yet; started {_age(beat.started)}"
    return f"last flush {_age(beat.last_flush)}"


def busy_error(run_dir: Path) -> RunError:
    """The refusal given to a process that wants a folder another process is writing."""
    beat = read_heartbeat(run_dir)
    who = f" ({_writer_text(beat)}, {_flush_text(beat)})" if beat else ""
    return RunError(
        f"{run_dir} is being written by another irh process{who}; wait for it to end "
        f"(or stop it), then `irh run --resume {run_dir}` if it did not complete"
    )


class RunLock:
    """Exclusive hold of a run folder by one writing process, with its heartbeat.

    The lock is a flock on ``.lock`` in the folder. The kernel drops it when the process
    dies, however it dies, so a free lock with a ``running`` manifest means the writer is
    gone. The holder unlinks the file before letting go, so finished folders keep no lock
    file; since another process may have opened the old file just before, a process counts
    as holding the folder only if, once locked, the path still names the file it locked
    (else it starts over on the new one). A plain file, opened for writing, rather than a
    lock on the folder itself: on NFS, Linux turns flock into POSIX locks, and an exclusive
    one needs a file open for writing, which a folder can never be.
    """

    #: A probe by `irh report` (``check_liveness``) holds the lock for microseconds; retry
    #: briefly so that a resume starting at that instant is not refused.
    _ATTEMPTS = 10
    _RETRY_S = 0.05

    def __init__(self, run_dir: Path) -> None:
        import socket

        self.run_dir = run_dir
        self._fd: int | None = self._acquire()
        try:
            self._beat = Heartbeat(pid=os.getpid(), host=socket.gethostname(), started=utc_now())
            self._write_beat()
        except BaseException:
            self.release()
            raise

    def _acquire(self) -> int:
        import fcntl

        path = self.run_dir / LOCK
        attempt = 0
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise RunError(f"cannot lock run folder {self.run_dir}: {exc.strerror}; give the folder `irh run` printed") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                attempt += 1
                if attempt >= self._ATTEMPTS:
                    raise busy_error(self.run_dir) from None
                time.sleep(self._RETRY_S)
                continue
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, path):
                return fd
            os.close(fd)  # locked a file its holder unlinked on the way out: take the new one

    def _write_beat(self) -> None:
        atomic_write_bytes(self.run_dir / HEARTBEAT, (self._beat.model_dump_json(indent=2) + "\n").encode("utf-8"))

    def beat(self, rows: int) -> None:
        """Record that ``rows`` more rows were just flushed to disk."""
        self._beat = self._beat.model_copy(update={"last_flush": utc_now(), "rows_written": self._beat.rows_written + rows})
        self._write_beat()

    def release(self) -> None:
        """Remove the heartbeat and let the folder go; the manifest's status is final by now."""
        if self._fd is None:
            return
        try:
            (self.run_dir / HEARTBEAT).unlink(missing_ok=True)
            # Unlinked while still locked: a process waiting on this file re-checks the path
            # after locking it and moves on to a fresh one (see _acquire).
            (self.run_dir / LOCK).unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SampleWriter:
    """Appends rows to samples.jsonl, flushing each batch to disk before returning.

    Writes under a ``RunLock`` (its own, or the caller's when given), so that two processes
    (a run and a `--resume` of it, or two resumes) can never append to the same file. A
    caller that decides what to write from the rows on disk must take the lock before
    reading them, and pass it in.
    """

    def __init__(self, run_dir: Path, lock: RunLock | None = None):
        self._own_lock = lock is None
        self._lock = lock if lock is not None else RunLock(run_dir)
        try:
            repair_samples(run_dir)
            self._fh = open(run_dir / SAMPLES, "ab")
        except BaseException:
            if self._own_lock:
                self._lock.release()
            raise

    def write(self, rows: list[SampleRow]) -> None:
        # One write call: a SIGTERM (raised as KeyboardInterrupt between bytecodes) cannot
        # land between two rows of the batch.
        self._fh.write("".join(row.model_dump_json() + "\n" for row in rows).encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._lock.beat(len(rows))

    def close(self) -> None:
        self._fh.close()
        if self._own_lock:
            self._lock.release()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def planned_rows(manifest: RunManifest) -> int:
    """Rows the plan asks for: its budget's cells, or every (phrasing, document) pair."""
    if manifest.budget is not None:
        return manifest.budget.scored_cells
    return sum(len(manifest.tasks[task_id].doc_ids) for task_id, _ in manifest.plan if task_id in manifest.tasks)


def plan_order(manifest: RunManifest) -> Callable[[str, str, str], tuple[int, int]]:
    """The sort key of a row in plan order: phrasing by phrasing as the plan lists them, each
    phrasing's documents in the task's order (how one uninterrupted process writes a full run)."""
    order = {tuple(pair): n for n, pair in enumerate(manifest.plan)}
    position = {task: {doc: n for n, doc in enumerate(record.doc_ids)} for task, record in manifest.tasks.items()}

    def key(task: str, instruction_id: str, doc_id: str) -> tuple[int, int]:
        return order.get((task, instruction_id), len(order)), position.get(task, {}).get(doc_id, 0)

    return key


def put_in_plan_order(run_dir: Path) -> bool:
    """Rewrite samples.jsonl in plan order where it is not (rows merged from ranks' shards
    after a kill, a resume that filled gaps, budget rounds), byte for byte the same lines, so
    that every complete run reads in one order whatever its history. Returns whether any row
    moved. The caller holds the folder's lock, with no writer open."""
    path = run_dir / SAMPLES
    if not path.exists():
        return False
    key = plan_order(read_manifest(run_dir))
    lines = path.read_bytes().splitlines(keepends=True)
    keys = []
    for line in lines:
        row = json.loads(line)
        keys.append(key(row["task"], row["instruction_id"], row["doc_id"]))
    order = sorted(range(len(lines)), key=keys.__getitem__)
    if order == list(range(len(lines))):
        return False
    atomic_write_bytes(path, b"".join(lines[i] for i in order))
    return True


@dataclass(frozen=True)
class Liveness:
    """Whether a run folder is being written, and what a user should do about it."""

    #: ``writing``: a live process holds the folder; ``abandoned``: status ``running`` but its
    #: writer is gone (kill -9, power loss); ``unknown``: its writer was on another host and
    #: the lock cannot be trusted across machines; ``stopped``: interrupted or failed;
    #: ``complete``: nothing to do.
    state: Literal["writing", "abandoned", "unknown", "stopped", "complete"]
    run_dir: Path
    heartbeat: Heartbeat | None
    rows: int
    rows_planned: int
    #: One line, without advice: what the folder's state is.
    summary: str

    @property
    def message(self) -> str:
        """One line for the user: the summary and, where it helps, the command to run."""
        if self.state in ("abandoned", "stopped", "unknown"):
            return f"{self.summary}; resume with `irh run --resume {self.run_dir}`"
        return self.summary


def _count_rows(path: Path) -> int:
    """Whole lines of samples.jsonl, read in blocks: a big run's rows need not fit in memory."""
    if not path.exists():
        return 0
    count = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            count += block.count(b"\n")
    return count


def check_liveness(run_dir: Path) -> Liveness:
    """Tell a live run from one whose writer died, using the folder lock and the heartbeat."""
    import socket

    manifest = read_manifest(run_dir)
    rows = _count_rows(run_dir / SAMPLES)
    planned = planned_rows(manifest)
    beat = read_heartbeat(run_dir)
    counts = f"{rows} of {planned} rows"
    if _lock_held_elsewhere(run_dir):
        who = f"{_writer_text(beat)} ({_flush_text(beat)})" if beat else "another irh process"
        return Liveness("writing", run_dir, beat, rows, planned, f"run is still being written by {who}; {counts} so far")
    if manifest.status == "complete":
        return Liveness("complete", run_dir, beat, rows, planned, f"run is complete ({counts})")
    if manifest.status != "running":
        # An exception's text may span lines; the warning is one.
        error = f" ({' '.join(manifest.error.split())})" if manifest.error else ""
        return Liveness("stopped", run_dir, beat, rows, planned, f"run is `{manifest.status}`{error}; its {counts} are intact")
    if beat is None:
        gone = "run was left `running` by a process that is gone (no heartbeat)"
        return Liveness("abandoned", run_dir, None, rows, planned, f"{gone}; its {counts} are intact")
    flushed = f"last flush at {beat.last_flush}" if beat.last_flush else f"no rows flushed since {beat.started}"
    if beat.host != socket.gethostname():
        # flock is not reliable across machines (NFS without lock support): don't claim it died.
        return Liveness(
            "unknown",
            run_dir,
            beat,
            rows,
            planned,
            f"run says `running`, written by {_writer_text(beat)} (another machine; {_flush_text(beat)}): "
            f"check there that it has stopped; its {counts} are intact",
        )
    return Liveness(
        "abandoned",
        run_dir,
        beat,
        rows,
        planned,
        f"run was left `running` by {_writer_text(beat)}, which is no longer alive ({flushed}); its {counts} are intact",
    )


def describe_liveness(run_dir: Path) -> str | None:
    """One line saying whether a run that is not complete is live or abandoned; None when complete."""
    liveness = check_liveness(run_dir)
    if liveness.state == "complete":
        return None
    return liveness.message
