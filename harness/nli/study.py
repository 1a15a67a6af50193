"""The NLI distribution-shift study as stages in a study folder (`irh nli run`).

Every stage writes its files into its own folder and, last, a ``.done`` marker (atomically,
with its seconds and the process's peak memory so far). A stage with a marker is skipped when
the study is run again; one without is cleared and redone, so a killed study loses at most
the stage in flight (an evaluation in flight keeps its scored rows: its run folder is resumed).
The settings are recorded in ``study.json`` first; running the folder again with other
settings is refused.

Folder layout (``S`` a seed, ``V`` a variant: ``baseline``, a strategy, ``synthetic-<variant>``)::

    study.json                  settings, base model, harness version
    suite/                      sets.json: the sets, their label mappings, preset groups, task ids
    untuned/eval/               the un-tuned model evaluated once (a reference row)
    seed-S/draw/                initial.jsonl (the budget B), candidates.jsonl (N from the rest),
                                draw.json (pool size and hash, K per class)
    seed-S/baseline/train/      train.jsonl, adapter/ (peft LoRA + nli_train.json)
    seed-S/baseline/eval/       runs/<run folder> (irh run), scores.json
    seed-S/grouping/            grouping.json: each OOD set's baseline accuracy and its group
    seed-S/scores/probs/        probs.json: the baseline model's label probabilities of the candidates
    seed-S/scores/difficulty/   ratings.json (+ ratings.log.jsonl): the un-tuned model's ratings
    seed-S/<strategy>/select/   replacement.jsonl, train.jsonl, select.json
    seed-S/synthetic-<v>/select/  generated.jsonl, generation.log.jsonl (+ summary), train.jsonl
    seed-S/V/train/, seed-S/V/eval/   as for the baseline
    report.md, report.csv, sets.csv, report.png   (harness/nli/report.py)

The model calls (fine-tuning, evaluation, label probabilities, difficulty ratings, synthetic
generation) go through :class:`Hooks`, so tests run the whole machinery with fakes.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from harness.nli.examples import LABELS3, Example, NLIStudyError, read_examples, write_examples
from harness.nli.layout import DONE, STUDY_FILE, Scores, is_done, read_json, seed_dir, set_accuracy
from harness.nli.settings import DIFFICULTY_MODES, STRATEGY_NAMES, SYNTHETIC_NAMES, StudySettings
from harness.tune.train import peak_memory_mib

STUDY_SCHEMA_VERSION = 1
Say = Callable[[str], None]
#: ``progress(description)`` returns an ``update(done, total)`` callable, optionally with close().
ProgressFactory = Callable[[str], Callable[[int, int], None]]


def check_settings(settings: StudySettings) -> None:
    """Refuse settings that cannot run, with one line naming the fix (writes nothing)."""
    s = settings
    if not 0 <= s.k_percent <= 100:
        raise NLIStudyError(f"--k-percent must be between 0 and 100, not {s.k_percent:g}")
    if s.budget < 1:
        raise NLIStudyError(f"--budget must be at least 1, not {s.budget}")
    if not s.seeds or len(set(s.seeds)) != len(s.seeds):
        raise NLIStudyError("--seeds needs at least one seed, each once (e.g. --seeds 1,2)")
    unknown = [n for n in s.strategies if n not in STRATEGY_NAMES]
    if unknown or len(set(s.strategies)) != len(s.strategies):
        raise NLIStudyError(f"unknown or repeated strategy {unknown or list(s.strategies)}; choose from {', '.join(STRATEGY_NAMES)}")
    unknown = [n for n in s.synthetic if n not in SYNTHETIC_NAMES]
    if unknown or len(set(s.synthetic)) != len(s.synthetic):
        raise NLIStudyError(
            f"unknown or repeated synthetic variant {unknown or list(s.synthetic)}; choose from {', '.join(SYNTHETIC_NAMES)}"
        )
    if s.difficulty not in DIFFICULTY_MODES:
        raise NLIStudyError(f"unknown --difficulty {s.difficulty!r}; choose rank or cot")
    for name in ("candidates", "limit", "max_instructions", "epochs", "lora_rank", "batch_size", "synthetic_attempts"):
        if getattr(s, name) < 1:
            raise NLIStudyError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(s, name)}")
    if s.votes < 0:
        raise NLIStudyError(f"--votes must be 0 or more, not {s.votes}")
    if s.learning_rate <= 0:
        raise NLIStudyError(f"--lr must be positive, not {s.learning_rate:g}")
    if s.dtype not in (None, "float32", "bfloat16"):
        raise NLIStudyError(f"--dtype {s.dtype!r}: use float32 or bfloat16")


# --------------------------------------------------------------------------- model calls


def _finetune(base: str, examples: Sequence[Example], out: Path, **kwargs: Any) -> Path:
    from harness.nli.train import finetune_lora

    return finetune_lora(base, examples, out, **kwargs)


def _label_probabilities(model: str, examples: Sequence[Example], **kwargs: Any) -> dict[str, list[float]]:
    from harness.nli.scoring import label_probabilities

    return label_probabilities(model, examples, **kwargs)


def _difficulty_ratings(model: str, examples: Sequence[Example], **kwargs: Any) -> dict[str, float]:
    from harness.nli.scoring import difficulty_ratings

    return difficulty_ratings(model, examples, **kwargs)


def _generate_synthetic(model: str, variant: str, counts: dict[str, int], **kwargs: Any) -> list[Example]:
    from harness.nli.synthetic import generate_synthetic

    return generate_synthetic(model, variant, counts, **kwargs)


def _release() -> None:
    """Free the model the scoring module keeps loaded (fine-tuning loads its own)."""
    module = sys.modules.get("harness.nli.scoring")
    if module is not None:
        module.release_model()


def _load_suite(preset: str) -> Any:
    from harness.nli.suite import load_suite

    return load_suite(preset)


def _resolve_base(model: str) -> str:
    """The transformers folder of the model (the default model's converted copy)."""
    from harness.tune.record import TuneError
    from harness.tune.train import resolve_base_model

    try:
        return str(resolve_base_model(model)["pretrained"])
    except TuneError as exc:
        raise NLIStudyError(str(exc)) from None


def evaluate_model(
    model: str,
    task_ids: Sequence[str],
    folder: Path,
    *,
    limit: int,
    max_instructions: int,
    seed: int,
    dtype: str | None,
    say: Say | None = None,
    progress: ProgressFactory | None = None,
) -> Path:
    """Score the tasks with `irh run` into ``folder/runs``; an unfinished run there is resumed.

    Returns the run folder.
    """
    import harness
    from harness.api import RunStopped
    from harness.results import read_manifest

    runs = folder / "runs"
    existing = sorted(d for d in runs.iterdir() if (d / "run.json").is_file()) if runs.is_dir() else []
    if existing:
        run_dir = existing[-1]
        if read_manifest(run_dir).status != "complete":
            if say:
                say(f"resuming the evaluation in {run_dir}")
            try:
                harness.resume(run_dir, write_report=False, say=None, progress=progress)
            except RunStopped as exc:
                raise NLIStudyError(
                    f"evaluation {exc.status} in {run_dir}; rerun the same `irh nli run` (or add --resume) to continue it"
                ) from exc
        return run_dir
    try:
        [result] = harness.run(
            list(task_ids),
            models=model,
            max_instructions=max_instructions,
            limit=limit,
            seed=seed,
            dtype=dtype,
            reports_dir=runs,
            write_report=False,
            say=None,
            progress=progress,
        )
    except RunStopped as exc:
        # Its rows are kept in the run folder; the study's own resume continues it.
        raise NLIStudyError(
            f"evaluation {exc.status} in {exc.run_dir}; rerun the same `irh nli run` (or add --resume) to continue it"
        ) from exc
    return result.run_dir


def read_run_scores(run_dir: Path, set_of_task: dict[str, str]) -> Scores:
    """A run folder's rows as scores: set name -> phrasing -> document -> score."""
    from harness.results import iter_samples

    out: Scores = {}
    for row in iter_samples(run_dir):
        name = set_of_task.get(row.task)
        if name is not None:
            out.setdefault(name, {}).setdefault(row.instruction_id, {})[row.doc_id] = float(row.score)
    return out


def _evaluate(
    model: str, sets: Sequence[Any], folder: Path, settings: StudySettings, say: Say | None, progress: ProgressFactory | None
) -> Scores:
    run_dir = evaluate_model(
        model,
        [s.task_id for s in sets],
        folder,
        limit=settings.limit,
        max_instructions=settings.max_instructions,
        seed=settings.eval_seed,
        dtype=settings.dtype or _default_dtype(),
        say=say,
        progress=progress,
    )
    return read_run_scores(run_dir, {s.task_id: s.name for s in sets})


def _default_dtype() -> str:
    """bfloat16 where the GPU or CPU runs it natively, else float32 (as `irh tune` chooses)."""
    from harness.tune.train import dtype_name

    return dtype_name("auto")


@dataclass
class Hooks:
    """The study's model calls and data access; tests replace them with fakes.

    ``evaluate(model_spec, sets, folder, settings, say, progress) -> Scores`` may write what it
    likes under ``folder`` (the real one: an `irh run` folder in ``folder/runs``).
    """

    load_suite: Callable[[str], Any] = _load_suite
    resolve_base: Callable[[str], str] = _resolve_base
    finetune: Callable[..., Path] = _finetune
    evaluate: Callable[..., Scores] = _evaluate
    label_probabilities: Callable[..., dict[str, list[float]]] = _label_probabilities
    difficulty_ratings: Callable[..., dict[str, float]] = _difficulty_ratings
    generate_synthetic: Callable[..., list[Example]] = _generate_synthetic
    release: Callable[[], None] = _release
    dtype: Callable[[], str] = _default_dtype


def default_hooks() -> Hooks:
    """The real model calls (tests replace this function, or pass ``hooks=``)."""
    return Hooks()


# --------------------------------------------------------------------------- files and stages


def _write_json(path: Path, obj: Any) -> None:
    from harness.data.cache import atomic_write_json

    atomic_write_json(path, obj)


@dataclass
class StageRunner:
    """Runs stages in a study folder: skips those marked done, clears and redoes the others."""

    root: Path
    say: Say | None = None
    started: float = field(default_factory=time.monotonic)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def note(self, message: str) -> None:
        if self.say:
            self.say(f"[{self.elapsed()}] {message}")

    def run(self, key: str, label: str, work: Callable[[Path], dict[str, Any] | None], keep: Sequence[str] = ()) -> Path:
        """Run ``work(stage_dir)`` unless ``key`` is done; then mark it done.

        Args:
            key: the stage's folder, relative to the study folder.
            label: what progress lines call it (``seed 1 · uncertainty · train``).
            work: writes the stage's files into the folder; may return facts for the marker.
            keep: entries of the folder kept when a stage is redone (a run folder to resume).
        """
        stage_dir = self.root / key
        if is_done(stage_dir):
            self.skipped.append(key)
            self.note(f"{label}: done already, skipped")
            return stage_dir
        if stage_dir.exists():
            for entry in stage_dir.iterdir():
                if entry.name not in keep:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        stage_dir.mkdir(parents=True, exist_ok=True)
        self.note(f"{label} ...")
        began = time.monotonic()
        facts = work(stage_dir) or {}
        from harness.results import utc_now

        seconds = round(time.monotonic() - began, 1)
        done = {"stage": key, "finished": utc_now(), "seconds": seconds, "peak_rss_mib": peak_memory_mib(), **facts}
        _write_json(stage_dir / DONE, done)
        self.ran.append(key)
        self.note(f"{label}: done in {seconds:.0f} s")
        return stage_dir


def _examples_sha(examples: Sequence[Example]) -> str:
    return hashlib.sha256("\n".join(ex.id for ex in examples).encode()).hexdigest()


def _counts(examples: Sequence[Example]) -> dict[str, int]:
    counts = Counter(ex.label for ex in examples)
    return {label: counts.get(label, 0) for label in LABELS3}


# --------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class Prepared:
    """A checked study: settings, suite, base model folder, pool size."""

    settings: StudySettings
    suite: Any
    base: str
    pool_size: int


def load_settings(out: Path) -> StudySettings:
    path = out / STUDY_FILE
    if not path.is_file():
        raise NLIStudyError(f"no {STUDY_FILE} in {out}: nothing to resume; start the study with `irh nli run --out {out}`")
    return StudySettings.from_json(read_json(path)["settings"])


def settings_difference(old: StudySettings, new: StudySettings) -> list[str]:
    a, b = old.to_json(), new.to_json()
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b.get(k)]


def prepare_study(settings: StudySettings, out: Path, hooks: Hooks | None = None) -> Prepared:
    """Check everything a study needs before anything is written.

    Raises:
        NLIStudyError: bad settings, a set without a label mapping, a budget larger than the
            pool, a model that cannot be fine-tuned, or a folder started with other settings
            or on other sets than its preset now holds.
    """
    hooks = hooks or default_hooks()
    check_settings(settings)
    path = out / STUDY_FILE
    if path.is_file():
        recorded = load_settings(out)
        diff = settings_difference(recorded, settings)
        if diff:
            raise NLIStudyError(
                f"{out} holds a study with other settings ({'; '.join(diff)}); resume it with `irh nli run --out {out} --resume`, "
                "or give a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise NLIStudyError(f"{out} is not empty and holds no {STUDY_FILE}; give a new --out folder")
    suite = hooks.load_suite(settings.preset)
    sets_file = out / "suite" / "sets.json"
    if is_done(out / "suite") and sets_file.is_file():
        recorded_sets = [s["task_id"] for s in read_json(sets_file)["sets"]]
        if recorded_sets != [s.task_id for s in suite.sets]:
            raise NLIStudyError(
                f"{out} was run on other sets ({', '.join(recorded_sets)}) than preset {settings.preset} holds now "
                f"({', '.join(s.task_id for s in suite.sets)}); the `offline` preset was VitaminC and BIG-bench until it became "
                '`offline-bigbench`: set "preset" in its study.json to the preset it was run with, or give a new --out'
            )
    pool = suite.pool(seed=settings.seeds[0])
    if settings.budget > len(pool):
        raise NLIStudyError(
            f"budget {settings.budget} is larger than the pool ({len(pool)} examples of {suite.test_set.name}); lower --budget"
        )
    base = hooks.resolve_base(settings.model)
    if settings.train_phrasings or settings.score_phrasing:
        from harness.nli.train import training_phrasings
        from harness.registry import load_registry

        registry = load_registry()
        training_phrasings(registry, list(settings.train_phrasings))
        training_phrasings(registry, [settings.score_phrasing])
    return Prepared(settings, suite, base, len(pool))


def run_study(
    settings: StudySettings,
    out: Path,
    *,
    hooks: Hooks | None = None,
    say: Say | None = None,
    progress: ProgressFactory | None = None,
) -> Path:
    """Run (or resume) the whole study in ``out``; returns the path of report.md.

    Rerunning with the same settings skips every stage marked done.
    """
    hooks = hooks or default_hooks()
    prepared = prepare_study(settings, out, hooks)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STUDY_FILE).is_file():
        from harness import __version__
        from harness.results import utc_now

        _write_json(
            out / STUDY_FILE,
            {
                "schema_version": STUDY_SCHEMA_VERSION,
                "created": utc_now(),
                "harness_version": __version__,
                "settings": settings.to_json(),
                "base_model": prepared.base,
                "pool_size": prepared.pool_size,
            },
        )
    study = _Study(prepared, out, hooks, StageRunner(out, say), say, progress)
    study.run()
    from harness.nli.report import write_report

    path = write_report(out)
    study.stages.note(f"report: {path}")
    return path


@dataclass
class _Study:
    prepared: Prepared
    out: Path
    hooks: Hooks
    stages: StageRunner
    say: Say | None
    progress: ProgressFactory | None

    @property
    def settings(self) -> StudySettings:
        return self.prepared.settings

    @property
    def suite(self) -> Any:
        return self.prepared.suite

    def dtype(self) -> str:
        return self.settings.dtype or self.hooks.dtype()

    def voter_spec(self, seed: int) -> str | None:
        """The model that votes on seed ``seed``'s generated examples (None: the generator)."""
        voter = self.settings.voter
        if voter == "model":
            return None
        if voter == "baseline":
            return self.adapter_spec(self.adapter_path(seed, "baseline"))
        return voter

    def adapter_path(self, seed: int, variant: str) -> Path:
        """Where the train stage of ``variant`` on seed ``seed`` writes its LoRA adapter."""
        return self.out / seed_dir(seed) / variant / "train" / "adapter"

    def adapter_spec(self, adapter: Path) -> str:
        return f"irh-fast:pretrained={self.prepared.base},peft={adapter}"

    def bar(self, desc: str) -> Any:
        return self.progress(desc) if self.progress is not None else None

    def pool_labels(self) -> tuple[str, ...]:
        """The labels the pool's examples have: all three, or for a 2-way in-distribution set
        (RTE) entailment and contradiction, which its not-entailment pairs are trained as."""
        return LABELS3 if self.suite.test_set.n_way == 3 else ("entailment", "contradiction")

    def run(self) -> None:
        self.stages.run("suite", "suite", self.write_suite)
        if self.settings.untuned:
            untuned = f"irh-fast:pretrained={self.prepared.base}"
            self.stages.run("untuned/eval", "un-tuned model · evaluate", self.evaluate_stage(untuned), keep=("runs",))
        for seed in self.settings.seeds:
            self.run_seed(seed)
            from harness.nli.report import write_report

            write_report(self.out)  # a partial report after every seed

    # ---------------------------------------------------------------- stages

    def write_suite(self, folder: Path) -> dict[str, Any]:
        sets = [
            {"name": s.name, "task_id": s.task_id, "n_way": s.n_way, "label_map": s.label_map, "group": s.group, "role": s.role}
            for s in self.suite.sets
        ]
        _write_json(folder / "sets.json", {"preset": self.suite.preset, "sets": sets})
        return {"sets": len(sets)}

    def run_seed(self, seed: int) -> None:
        s = self.settings
        sd = seed_dir(seed)
        self.stages.run(f"{sd}/draw", f"seed {seed} · draw B={s.budget}", lambda f: self.draw(f, seed))
        needs_probs = any(n in s.strategies for n in ("uncertainty", "misclassified"))
        for variant in s.variants:
            label = f"seed {seed} · {variant}"
            if variant != "baseline":
                self.stages.run(f"{sd}/{variant}/select", f"{label} · select", partial(self.select, seed=seed, variant=variant))
            self.stages.run(f"{sd}/{variant}/train", f"{label} · fine-tune", partial(self.train, seed=seed, variant=variant))
            adapter = self.adapter_path(seed, variant)
            self.stages.run(f"{sd}/{variant}/eval", f"{label} · evaluate", self.evaluate_stage(self.adapter_spec(adapter)), keep=("runs",))
            if variant == "baseline":
                self.stages.run(f"{sd}/grouping", f"seed {seed} · grouping", lambda f: self.grouping(f, seed))
                if needs_probs:
                    self.stages.run(
                        f"{sd}/scores/probs",
                        f"seed {seed} · baseline label probabilities",
                        partial(self.probabilities, seed=seed, adapter=adapter),
                    )
                if "difficulty" in s.strategies:
                    self.stages.run(
                        f"{sd}/scores/difficulty", f"seed {seed} · difficulty ratings ({s.difficulty})", lambda f: self.difficulty(f, seed)
                    )

    def draw(self, folder: Path, seed: int) -> dict[str, Any]:
        from harness.nli.select import draw_budget, per_class_k

        pool = self.suite.pool(seed=seed)
        initial, rest = draw_budget(pool, self.settings.budget, seed)
        k = per_class_k(initial, self.settings.k_percent)
        n = min(self.settings.candidates, len(rest))
        candidates = random.Random(f"candidates:{seed}").sample(rest, n)
        zero = [label for label in self.pool_labels() if k[label] == 0]
        if zero:
            self.stages.note(
                f"seed {seed}: K={self.settings.k_percent:g}% of the draw is 0 for {', '.join(zero)}: nothing of that class is replaced"
            )
        write_examples(folder / "initial.jsonl", initial)
        write_examples(folder / "candidates.jsonl", candidates)
        _write_json(
            folder / "draw.json",
            {
                "pool_size": len(pool),
                "pool_sha256": _examples_sha(pool),
                "initial": _counts(initial),
                "candidates": _counts(candidates),
                "k": k,
            },
        )
        return {"initial": len(initial), "candidates": len(candidates)}

    def _draw(self, seed: int) -> tuple[list[Example], list[Example], dict[str, int]]:
        folder = self.out / seed_dir(seed) / "draw"
        return read_examples(folder / "initial.jsonl"), read_examples(folder / "candidates.jsonl"), read_json(folder / "draw.json")["k"]

    def _rest_of_pool(self, seed: int, initial: Sequence[Example]) -> list[Example]:
        pool = self.suite.pool(seed=seed)
        if _examples_sha(pool) != read_json(self.out / seed_dir(seed) / "draw" / "draw.json")["pool_sha256"]:
            raise NLIStudyError(
                f"the {self.suite.test_set.name} pool changed since seed {seed} was drawn; start the study anew in a new --out"
            )
        taken = {ex.id for ex in initial}
        return [ex for ex in pool if ex.id not in taken]

    def select(self, folder: Path, seed: int, variant: str) -> dict[str, Any]:
        from harness.nli.select import replace as replace_part
        from harness.nli.select import run_strategy

        initial, candidates, k = self._draw(seed)
        sd = self.out / seed_dir(seed)
        if variant.startswith("synthetic-"):
            name = variant.removeprefix("synthetic-")
            self.hooks.release()
            bar = self.bar(f"seed {seed} · {variant} · generate")
            replacement = self.hooks.generate_synthetic(
                self.settings.model,
                name,
                dict(k),
                demos=list(initial),
                seed=seed,
                log_path=folder / "generation.log.jsonl",
                max_attempts=self.settings.synthetic_attempts,
                votes=self.settings.votes,
                voter=self.voter_spec(seed),
                labels=self.pool_labels(),
                progress=(lambda done, total, kept: bar(done, total)) if bar else None,
            )
            _close(bar)
            if not replacement and any(k.values()):
                self.stages.note(f"seed {seed} · {variant}: no generated example passed the filters; the training set is the baseline's")
            write_examples(folder / "generated.jsonl", replacement)
        else:
            probs = read_json(sd / "scores" / "probs" / "probs.json") if variant in ("uncertainty", "misclassified") else None
            ratings = None
            if variant == "difficulty":
                stored = read_json(sd / "scores" / "difficulty" / "ratings.json")
                ratings = {key: float("nan") if value is None else float(value) for key, value in stored.items()}
            rest = self._rest_of_pool(seed, initial) if variant == "concat" else candidates
            replacement = run_strategy(variant, rest, k, seed=seed, probs=probs, ratings=ratings)
            write_examples(folder / "replacement.jsonl", replacement)
        train = replace_part(initial, replacement, k, seed)
        if len(train) != len(initial):
            raise NLIStudyError(f"seed {seed} · {variant}: replacing changed the budget ({len(initial)} -> {len(train)})")
        write_examples(folder / "train.jsonl", train)
        replaced = _counts([ex for ex in train if ex.origin != "pool"])
        short = {label: k[label] - replaced[label] for label in LABELS3 if replaced[label] < k[label]}
        if short:
            self.stages.note(f"seed {seed} · {variant}: replaced {sum(replaced.values())} of {sum(k.values())} allowed (short: {short})")
        _write_json(folder / "select.json", {"k": k, "offered": _counts(replacement), "replaced": replaced, "train": _counts(train)})
        return {"replaced": sum(replaced.values())}

    def train(self, folder: Path, seed: int, variant: str) -> dict[str, Any]:
        if variant == "baseline":
            examples = read_examples(self.out / seed_dir(seed) / "draw" / "initial.jsonl")
        else:
            examples = read_examples(self.out / seed_dir(seed) / variant / "select" / "train.jsonl")
        write_examples(folder / "train.jsonl", examples)
        self.hooks.release()
        s = self.settings
        bar = self.bar(f"seed {seed} · {variant} · fine-tune")
        self.hooks.finetune(
            self.prepared.base,
            examples,
            folder / "adapter",
            seed=seed,
            epochs=s.epochs,
            lr=s.learning_rate,
            rank=s.lora_rank,
            batch_size=s.batch_size,
            phrasings=list(s.train_phrasings) or None,
            dtype=self.dtype(),
            progress=(lambda step, total, info: bar(step, total)) if bar else None,
        )
        _close(bar)
        return {"examples": len(examples)}

    def evaluate_stage(self, model_spec: str) -> Callable[[Path], dict[str, Any]]:
        def work(folder: Path) -> dict[str, Any]:
            self.hooks.release()
            scores = self.hooks.evaluate(model_spec, list(self.suite.sets), folder, self.settings, self.stages.note, self.progress)
            missing = [s.name for s in self.suite.sets if not scores.get(s.name)]
            if missing:
                raise NLIStudyError(f"the evaluation in {folder} scored nothing for {', '.join(missing)}; check `irh data list`")
            _write_json(folder / "scores.json", {"model": model_spec, "scores": scores})
            return {"accuracy": {name: round(set_accuracy(v), 4) for name, v in scores.items()}}

        return work

    def grouping(self, folder: Path, seed: int) -> dict[str, Any]:
        from harness.nli.suite import CHALLENGING_BELOW, group_sets

        scores = read_json(self.out / seed_dir(seed) / "baseline" / "eval" / "scores.json")["scores"]
        acc = {s.name: set_accuracy(scores[s.name]) for s in self.suite.ood_sets}
        groups = group_sets(acc, CHALLENGING_BELOW)
        preset = {s.name: s.group for s in self.suite.ood_sets}
        _write_json(
            folder / "grouping.json", {"threshold": CHALLENGING_BELOW, "baseline_accuracy": acc, "computed": groups, "preset": preset}
        )
        return {"challenging": sorted(n for n, g in groups.items() if g == "challenging")}

    def probabilities(self, folder: Path, seed: int, adapter: Path) -> dict[str, Any]:
        _, candidates, _ = self._draw(seed)
        bar = self.bar(f"seed {seed} · label probabilities")
        probs = self.hooks.label_probabilities(
            self.adapter_spec(adapter), candidates, phrasing=self.settings.score_phrasing, dtype=self.dtype(), progress=bar
        )
        _close(bar)
        _write_json(folder / "probs.json", probs)
        return {"scored": len(probs)}

    def difficulty(self, folder: Path, seed: int) -> dict[str, Any]:
        _, candidates, _ = self._draw(seed)
        bar = self.bar(f"seed {seed} · difficulty ratings")
        ratings = self.hooks.difficulty_ratings(
            self.settings.model,
            candidates,
            mode=self.settings.difficulty,
            log=folder / "ratings.log.jsonl",
            dtype=self.dtype(),
            progress=bar,
        )
        _close(bar)
        # NaN (a chain of thought that named no number) has no JSON form: kept as null.
        _write_json(folder / "ratings.json", {k: (None if v != v else v) for k, v in ratings.items()})
        return {"rated": len(ratings), "unparsed": sum(1 for v in ratings.values() if v != v)}


def _close(bar: Any) -> None:
    close = getattr(bar, "close", None)
    if close is not None:
        close()


def with_overrides(settings: StudySettings, **changes: Any) -> StudySettings:
    """The settings with some fields changed (the CLI's explicitly given options)."""
    return replace(settings, **changes)


def export_study(out: Path, dest: Path, *, system: str | None = None) -> list[tuple[Path, int]]:
    """Every finished training set of a study as chat fine-tuning JSONL, ``dest/seed-S/V.jsonl``.

    The same turns the fine-tunes trained on: each example under the phrasing the study's
    settings and seed give it. Returns (file, examples) pairs.
    """
    from harness.nli.train import export_chat_jsonl

    settings = load_settings(out)
    written = []
    for seed in settings.seeds:
        for variant in settings.variants:
            folder = out / seed_dir(seed) / variant / "train"
            if not is_done(folder):
                continue
            path = dest / seed_dir(seed) / f"{variant}.jsonl"
            n = export_chat_jsonl(
                read_examples(folder / "train.jsonl"), path, phrasings=list(settings.train_phrasings) or None, seed=seed, system=system
            )
            written.append((path, n))
    if not written:
        raise NLIStudyError(f"{out} has no finished fine-tune yet; run `irh nli run --out {out} --resume` first")
    return written
