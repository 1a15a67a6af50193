"""`irh run --budget`: a budgeted run scores its chosen cells, records them, extends, reports."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner, Result

from harness.cli import main
from harness.results import iter_samples, read_manifest


def irh(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def budgeted_run(tmp_path: Path, *extra: str) -> Path:
    result = irh(
        "run", "--model", "irh-fake", "--tasks", "bbl.strategyqa,bbl.winowhy", "--reports-dir", str(tmp_path / "r"), *extra
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "r").iterdir())
    return run_dir


def test_budgeted_run_scores_exactly_its_recorded_cells(cache: Path, tmp_path: Path) -> None:
    run_dir = budgeted_run(tmp_path, "--budget", "0.3")
    manifest = read_manifest(run_dir)
    assert manifest.budget is not None and manifest.status == "complete"
    rows = list(iter_samples(run_dir))
    scored = {(r.task, r.instruction_id, r.doc_id) for r in rows}
    recorded = {(t, p, d) for t, cells in manifest.budget.cells.items() for p, d in cells}
    assert scored == recorded and len(rows) == len(scored)
    for task, record in manifest.tasks.items():
        phrasings = [p for t, p in manifest.plan if t == task]
        grid = len(phrasings) * len(record.doc_ids)
        cells = manifest.budget.cells[task]
        # About 30% of the grid, and every phrasing and every document has a cell.
        assert len(cells) == -(-3 * grid // 10)
        assert {p for p, _ in cells} == set(phrasings)
        assert {d for _, d in cells} == set(record.doc_ids)
    assert manifest.budget.rounds[0].fraction == 0.3
    report = (run_dir / "report.md").read_text()
    assert "budgeted run:" in report and "## Budgeted estimate" in report
    with (run_dir / "budget_estimate.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert {r["estimator"] for r in table} == {"model", "sampled-mean"}
    assert {r["task"] for r in table} == {"bbl.strategyqa", "bbl.winowhy"}
    # The model's CIs are corrected for the estimator's bias, so they need not hold the point.
    assert all(float(r["ci_low"]) <= float(r["ci_high"]) for r in table)
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in table)


def test_resume_with_a_bigger_budget_reuses_every_scored_cell(cache: Path, tmp_path: Path) -> None:
    run_dir = budgeted_run(tmp_path, "--budget", "0.3")
    before = {r.key: r.loglikelihoods for r in iter_samples(run_dir)}
    result = irh("run", "--resume", str(run_dir), "--budget", "0.6")
    assert result.exit_code == 0, result.output
    after = {r.key: r.loglikelihoods for r in iter_samples(run_dir)}
    assert len(after) == len(list(iter_samples(run_dir)))  # no row twice
    assert set(before) < set(after)
    assert all(after[k] == v for k, v in before.items())
    manifest = read_manifest(run_dir)
    assert manifest.budget is not None and [r.fraction for r in manifest.budget.rounds] == [0.3, 0.6]
    assert len(after) == manifest.budget.scored_cells


def test_a_budget_below_one_cell_per_phrasing_is_refused_before_anything_is_written(cache: Path, tmp_path: Path) -> None:
    result = irh("run", "--model", "irh-fake", "--tasks", "bbl.strategyqa", "--budget", "0.01", "--reports-dir", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert "below one cell per phrasing and per document" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_a_full_run_cannot_be_given_a_budget_on_resume(cache: Path, tmp_path: Path) -> None:
    run_dir = budgeted_run(tmp_path, "--limit", "2", "--max-instructions", "2")
    before = (run_dir / "run.json").read_bytes()
    result = irh("run", "--resume", str(run_dir), "--budget", "0.5")
    assert result.exit_code == 1 and "not budgeted" in result.output
    assert (run_dir / "run.json").read_bytes() == before


def test_budget_and_budget_cells_together_are_refused(cache: Path, tmp_path: Path) -> None:
    result = irh("run", "--model", "irh-fake", "--budget", "0.5", "--budget-cells", "40", "--reports-dir", str(tmp_path / "r"))
    assert result.exit_code != 0 and "not both" in result.output
