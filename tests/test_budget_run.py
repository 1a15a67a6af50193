"""`irh run --budget`: a budgeted run scores its chosen cells, records them, extends, reports."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.budget import start_cells
from harness.cli import main
from harness.results import iter_samples, read_manifest


def irh(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def budgeted_run(tmp_path: Path, *extra: str) -> Path:
    result = irh("run", "--model", "irh-fake", "--tasks", "bbl.strategyqa,bbl.winowhy", "--reports-dir", str(tmp_path / "r"), *extra)
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
    assert re.search(r"CIs: posterior quantiles .*effective sample size \d+ of \d+ proposals", report)
    with (run_dir / "budget_estimate.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert {r["estimator"] for r in table} == {"model", "sampled-mean"}
    assert {r["task"] for r in table} == {"bbl.strategyqa", "bbl.winowhy"}
    # The model's estimate is the median of its posterior draws, so inside its own CI.
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in table if r["estimator"] == "model")
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in table)
    # The usual tables hold the model's estimates of the full run, marked estimated.
    model = {(r["task"], r["kind"], r["name"]): r for r in table if r["estimator"] == "model"}
    with (run_dir / "per_instruction.csv").open() as fh:
        for row in csv.DictReader(fh):
            est = model[(row["task"], "phrasing", row["instruction_id"])]
            assert float(row["score"]) == pytest.approx(float(est["value"]))
            assert float(row["ci_low"]) == pytest.approx(float(est["ci_low"]))
    with (run_dir / "per_task.csv").open() as fh:
        for row in csv.DictReader(fh):
            assert row["ci_method"].startswith("estimated from 30.")
            assert float(row["documents"]) == len(manifest.tasks[row["task"]].doc_ids)
            for name in ("mean", "std", "min", "max", "p05", "p95"):
                assert float(row[name]) == pytest.approx(float(model[(row["task"], "across", name)]["value"]))
            assert float(row["std_ci_high"]) == pytest.approx(float(model[(row["task"], "across", "std")]["ci_high"]))
    assert "model estimates of the full run" in report and "tables are estimates of the full run" in report
    assert "scored on fewer than" not in report


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


def test_adaptive_rounds_are_chosen_scored_and_recorded(cache: Path, tmp_path: Path) -> None:
    run_dir = budgeted_run(tmp_path, "--budget", "0.4", "--rounds", "2")
    manifest = read_manifest(run_dir)
    budget = manifest.budget
    assert budget is not None and manifest.status == "complete"
    assert [r.kind for r in budget.rounds] == ["balanced", "adaptive", "adaptive"]
    assert budget.rounds_pending == 0 and all(r.fraction == 0.4 for r in budget.rounds)
    rows = list(iter_samples(run_dir))
    assert {(r.task, r.instruction_id, r.doc_id) for r in rows} == {(t, p, d) for t, cells in budget.cells.items() for p, d in cells}
    for task, record in manifest.tasks.items():
        phrasings = [p for t, p in manifest.plan if t == task]
        grid = len(phrasings) * len(record.doc_ids)
        cells = budget.cells[task]
        # The whole budget is spent, once per cell: the balanced start, then two equal rounds.
        assert len(cells) == len({tuple(c) for c in cells}) == budget.goal_cells[task] == -(-4 * grid // 10)
        start = start_cells(budget.goal_cells[task], len(phrasings), len(record.doc_ids), 2)
        assert start < len(cells)
        assert {p for p, _ in cells[:start]} == set(phrasings) and {d for _, d in cells[:start]} == set(record.doc_ids)
    assert sum(r.cells_added for r in budget.rounds) == budget.scored_cells == len(rows)


def test_pending_rounds_run_on_resume_and_rounds_can_extend_a_budget(cache: Path, tmp_path: Path) -> None:
    # Prepared (nothing scored), then resumed: the balanced start and both rounds are scored.
    run_dir = budgeted_run(tmp_path, "--budget", "0.3", "--rounds", "2", "--prepare-only")
    before = read_manifest(run_dir).budget
    assert before is not None and before.rounds_pending == 2 and [r.kind for r in before.rounds] == ["balanced"]
    assert irh("run", "--resume", str(run_dir)).exit_code == 0
    done = read_manifest(run_dir).budget
    assert done is not None and done.rounds_pending == 0 and [r.kind for r in done.rounds] == ["balanced", "adaptive", "adaptive"]
    scored = {r.key: r.loglikelihoods for r in iter_samples(run_dir)}
    # A bigger budget spent in one adaptive round reuses every cell scored so far.
    result = irh("run", "--resume", str(run_dir), "--budget", "0.6", "--rounds", "1")
    assert result.exit_code == 0, result.output
    extended = read_manifest(run_dir).budget
    assert extended is not None and [r.kind for r in extended.rounds][-2:] == ["balanced", "adaptive"]
    assert extended.rounds[-2].cells_added == 0 and extended.rounds[-1].fraction == 0.6
    after = {r.key: r.loglikelihoods for r in iter_samples(run_dir)}
    assert set(scored) < set(after) and all(after[k] == v for k, v in scored.items())
    assert len(after) == extended.scored_cells == sum(extended.goal_cells.values())


def test_rounds_without_a_budget_are_refused(cache: Path, tmp_path: Path) -> None:
    result = irh("run", "--model", "irh-fake", "--tasks", "bbl.strategyqa", "--rounds", "2", "--reports-dir", str(tmp_path / "r"))
    assert result.exit_code != 0 and "--rounds spends a budget" in result.output


def test_report_of_a_budgeted_run_with_the_per_stratum_estimator(cache: Path, tmp_path: Path) -> None:
    run_dir = budgeted_run(tmp_path, "--budget", "0.6", "--no-report")
    result = irh("report", str(run_dir), "--budget-estimator", "model-strata", "--no-html", "--bootstrap", "50")
    assert result.exit_code == 0, result.output
    with (run_dir / "budget_estimate.csv").open() as fh:
        table = list(csv.DictReader(fh))
    # Multiple-choice documents know their right option, so every task is fitted with strata.
    assert {r["estimator"] for r in table} == {"model-strata", "sampled-mean"}
    with (run_dir / "per_task.csv").open() as fh:
        assert all(row["ci_method"].endswith("(model-strata)") for row in csv.DictReader(fh))
    text = (run_dir / "report.md").read_text()
    assert text.count("effect per stratum of documents (2 strata") == 2
    bad = irh("report", str(run_dir), "--budget-estimator", "strata")
    assert bad.exit_code != 0 and "model-strata" in bad.output
