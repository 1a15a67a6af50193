"""Write a report: report.md, report.html, per_instruction.csv, per_task.csv, per_group.csv, summary.json."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from harness.data.cache import atomic_write_bytes
from harness.report.format import csv_bytes, jsonable
from harness.report.noise import NoiseRow, noise_rows, noise_status
from harness.report.sources import ResultSource, load_run
from harness.stats.analysis import Analysis, analyse
from harness.stats.bootstrap import DEFAULT_BOOT
from harness.stats.label_bias import LabelBias

REPORT_FILES = ("report.md", "report.html", "per_instruction.csv", "per_task.csv", "per_group.csv", "summary.json")


def per_task_rows(analysis: Analysis) -> tuple[list[str], list[tuple[Any, ...]]]:
    """per_task.csv: the across-phrasing statistics, the label-bias columns (chance, constant-answer
    baseline, statistics over informative phrasings), then seen/unseen (``su_``) and variance (``var_``) columns."""
    su_fields = [f for f in analysis.seen_unseen[0]._fields if f != "task"] if analysis.seen_unseen else []
    var_fields = [f for f in analysis.variance[0]._fields if f != "task"] if analysis.variance else []
    lb_fields = [f for f in LabelBias._fields if f != "task"]
    lb_fields = [f if f != "note" else "label_bias_note" for f in lb_fields]
    header = [*analysis.tasks[0]._fields] if analysis.tasks else ["task"]
    header += lb_fields + [f"su_{f}" for f in su_fields] + [f"var_{f}" for f in var_fields]
    bias = {b.task: b for b in analysis.label_bias}
    rows = []
    for t, s, v in zip(analysis.tasks, analysis.seen_unseen, analysis.variance, strict=True):
        b = bias.get(t.task)
        lb = tuple(b)[1:] if b is not None else (None,) * len(lb_fields)
        rows.append((*t, *lb, *(getattr(s, f) for f in su_fields), *(getattr(v, f) for f in var_fields)))
    return header, rows


NOISE_COLUMNS = ("noise_cells", "noise_flips", "noise_flip_share", "noise_floor", "noise_verdict")


def with_noise_columns(
    header: list[str], rows: list[tuple[Any, ...]], noise: Sequence[NoiseRow]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """per_task.csv's noise-floor columns (harness/report/noise.py), empty for tasks the run's
    noise check did not cover (or every task, without a check)."""
    by_task = {r.task: (r.noise.cells, r.noise.flips, r.noise.flip_share, r.floor, r.verdict) for r in noise}
    blank = (None,) * len(NOISE_COLUMNS)
    return [*header, *NOISE_COLUMNS], [(*row, *by_task.get(row[0], blank)) for row in rows]


def summary_dict(source: ResultSource, analysis: Analysis) -> dict[str, Any]:
    """summary.json: every statistic, JSON-safe (NaN as null)."""
    m = source.manifest
    return jsonable(
        {
            "run_id": m.run_id if m else None,
            "status": m.status if m else "imported",
            "model": source.model,
            "origin": source.origin,
            "samples": source.samples,
            "bootstrap": {"replicates": analysis.n_boot, "seed": analysis.seed, "level": analysis.level, "method": "percentile"},
            "std_ddof": 1,
            "multiple_testing": {"primary": "holm", "also": "benjamini-hochberg", "family": "tasks of this report, per test"},
            "notes": analysis.notes,
            "tasks": [t._asdict() for t in analysis.tasks],
            "families": [g._asdict() for g in analysis.families],
            "categories": [g._asdict() for g in analysis.categories],
            "seen_unseen": [s._asdict() for s in analysis.seen_unseen],
            "variance": [v._asdict() for v in analysis.variance],
            "label_bias": [b._asdict() for b in analysis.label_bias],
            "phrasings": [p._asdict() for p in analysis.phrasings],
            "noise_floor": {
                "status": noise_status(m),
                "tasks": [
                    {**dataclasses.asdict(r), "noise": r.noise.model_dump(), "floor": r.floor, "verdict": r.verdict}
                    for r in noise_rows(m, analysis)
                ],
            },
        }
    )


def write_source_report(
    source: ResultSource, out: Path, *, n_boot: int = DEFAULT_BOOT, seed: int = 0, html: bool = True, budget_estimator: str = "model"
) -> dict[str, Path]:
    """Compute the statistics of one model's results and write every report file into ``out``.

    Args:
        source: a run folder or imported results.
        out: the folder to write into (created if needed).
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        html: also draw the plots and write report.html.
        budget_estimator: for a budgeted run, ``model`` or ``model-strata`` (README: Budgeted
            evaluation).

    Returns:
        The written files by name.
    """
    from harness.report.budgeted import apply_budget_estimates, budget_section
    from harness.report.markdown import render_markdown

    # A budgeted run says so in its header, and gains the estimate of the full run.
    budgeted = budget_section(source, seed=seed, estimator=budget_estimator)
    if budgeted is not None:
        source = dataclasses.replace(source, details=[*source.details, budgeted.header])
    analysis = analyse(
        source.phrasings, source.tasks, source.info_of, n_boot=n_boot, seed=seed, chance=source.chance, fixed_answers=source.fixed_answers
    )
    if budgeted is not None:
        # The usual tables show the model's estimates of the full run, marked estimated.
        analysis = apply_budget_estimates(analysis, budgeted)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in REPORT_FILES if html or name != "report.html"}
    markdown = render_markdown(source, analysis)
    if budgeted is not None:
        markdown += "\n" + budgeted.markdown
        paths["budget_estimate.csv"] = out / "budget_estimate.csv"
        atomic_write_bytes(paths["budget_estimate.csv"], budgeted.csv.encode("utf-8"))
    atomic_write_bytes(paths["report.md"], markdown.encode("utf-8"))
    phrasing_fields = analysis.phrasings[0]._fields if analysis.phrasings else ("task", "instruction_id")
    atomic_write_bytes(paths["per_instruction.csv"], csv_bytes([tuple(p) for p in analysis.phrasings], phrasing_fields))
    header, rows = per_task_rows(analysis)
    header, rows = with_noise_columns(header, rows, noise_rows(source.manifest, analysis))
    atomic_write_bytes(paths["per_task.csv"], csv_bytes(rows, header))
    groups = [*analysis.families, *analysis.categories]
    atomic_write_bytes(paths["per_group.csv"], csv_bytes([tuple(g) for g in groups], groups[0]._fields if groups else ("kind", "name")))
    atomic_write_bytes(paths["summary.json"], (json.dumps(summary_dict(source, analysis), indent=2) + "\n").encode("utf-8"))
    if html:
        from harness.report.html import render_report_html
        from harness.report.plots import plot_heatmap, plot_phrasing_strips, plot_seen_unseen

        plots = {
            "strips": plot_phrasing_strips(analysis.by_task, source.chance),
            "seen_unseen": plot_seen_unseen(analysis),
            "heatmap": plot_heatmap(analysis.by_task),
        }
        atomic_write_bytes(paths["report.html"], render_report_html(source, analysis, plots, chance=source.chance).encode("utf-8"))
    return paths


def write_report(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    html: bool = True,
    budget_estimator: str = "model",
    force: bool = False,
) -> dict[str, Path]:
    """Compute the statistics of a run folder and write the report files (into the run folder
    unless ``out_dir`` is given); returns their paths. A damaged folder is refused unless
    ``force`` (see :func:`load_run`)."""
    return write_source_report(
        load_run(run_dir, force=force), out_dir or run_dir, n_boot=n_boot, seed=seed, html=html, budget_estimator=budget_estimator
    )


def model_folder_names(models: Sequence[str]) -> list[str]:
    """One folder name per model: its name with anything but letters, digits, ``.``, ``_`` and ``-``
    replaced by ``_`` (``org/model`` -> ``org_model``), numbered where two would collide."""
    import re

    names: list[str] = []
    for model in models:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"
        name, k = base, 2
        while name.lower() in (n.lower() for n in names):
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


class ImportReports(NamedTuple):
    """What :func:`write_import_reports` wrote, and why there is no comparison when there is none."""

    paths: dict[str, Path]
    no_comparison: str = ""


def write_import_reports(
    sources: Sequence[ResultSource], out: Path, *, n_boot: int = DEFAULT_BOOT, seed: int = 0, html: bool = True
) -> ImportReports:
    """Reports of imported results, each with its results as ``imported.csv`` so that ``irh compare``
    can read the folder again.

    One model: its report in ``out``. Several: one report per model in ``out/<model>/`` and their
    comparison (as ``irh compare`` makes it) in ``out`` itself; models without a task in common
    get no comparison, and ``no_comparison`` says why.

    Returns:
        The written files, keyed ``<model folder>/<file>`` (plain file names for one model).
    """
    from harness.report.imports import IMPORTED_RESULTS, write_long_csv

    if len(sources) == 1:
        paths = write_source_report(sources[0], out, n_boot=n_boot, seed=seed, html=html)
        write_long_csv(sources[0], out / IMPORTED_RESULTS)
        return ImportReports({**paths, IMPORTED_RESULTS: out / IMPORTED_RESULTS})
    from harness.report.compare import CompareProblem, write_compare

    written: dict[str, Path] = {}
    for name, source in zip(model_folder_names([s.model for s in sources]), sources, strict=True):
        folder = out / name
        for file, path in write_source_report(source, folder, n_boot=n_boot, seed=seed, html=html).items():
            written[f"{name}/{file}"] = path
        write_long_csv(source, folder / IMPORTED_RESULTS)
        written[f"{name}/{IMPORTED_RESULTS}"] = folder / IMPORTED_RESULTS
    try:
        written.update(write_compare(list(sources), out, n_boot=n_boot, seed=seed, html=html))
    except CompareProblem as exc:
        return ImportReports(written, str(exc))
    return ImportReports(written)
