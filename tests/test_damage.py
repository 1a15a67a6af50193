"""A run folder whose rows contradict its run.json is refused by `irh report` and `--resume`
(one line per problem), or reported with --force and marked damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import harness
from harness.cli import main
from harness.results import SAMPLES


def _complete_run(tmp_path: Path) -> Path:
    [result] = harness.run("nli.rte", models="irh-fake", limit=4, max_instructions=2, reports_dir=tmp_path, write_report=False, say=None)
    assert result.status == "complete"
    return result.run_dir


def _lines(run: Path) -> list[str]:
    return (run / SAMPLES).read_text().splitlines(keepends=True)


def _refusal(args: list[str]) -> list[str]:
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0, result.output
    return [line.strip() for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize("damage", ["duplicate", "conflicting duplicate", "foreign phrasing", "foreign document", "score out of range"])
def test_each_kind_of_damage_is_one_line_naming_file_and_line(cache: Path, tmp_path: Path, damage: str) -> None:
    run = _complete_run(tmp_path)
    lines = _lines(run)
    row = json.loads(lines[0])
    if damage == "duplicate":
        extra = dict(row)
    elif damage == "conflicting duplicate":
        extra = {**row, "correct": not row["correct"], "score": 1.0 - row["score"]}
    elif damage == "foreign phrasing":
        extra = {**row, "instruction_id": "nli2.not-planned"}
    elif damage == "foreign document":
        extra = {**row, "doc_id": "validation/999999"}
    else:
        extra = {**row, "score": 7.0}
        lines = lines[1:]  # replace the row rather than repeat it
    (run / SAMPLES).write_text("".join([*lines, json.dumps(extra) + "\n"]))
    line_no = len(lines) + 1
    out = _refusal(["report", str(run)])
    assert out[0].startswith(f"Error: {run} is damaged: 1 problem(s)") and "--force" in out[0]
    assert len(out) == 2 and out[1].startswith(f"{run / SAMPLES}:{line_no}: ")
    expected = {
        "duplicate": "with the same result",
        "conflicting duplicate": "with another result",
        "foreign phrasing": "is not in the run's plan",
        "foreign document": "is not one of nli.rte's chosen documents",
        "score out of range": "score 7 is outside 0..1",
    }[damage]
    assert expected in out[1]
    if damage != "score out of range":
        resumed = _refusal(["run", "--resume", str(run)])
        head = next(line for line in resumed if "is damaged" in line)
        assert "remove those lines" in head and f"{run / SAMPLES}:{line_no}: " in resumed[resumed.index(head) + 1]
        assert json.loads((run / "run.json").read_text())["status"] == "complete"  # nothing changed


def test_a_complete_run_cut_short_is_damaged_and_force_marks_every_output(cache: Path, tmp_path: Path) -> None:
    run = _complete_run(tmp_path)
    lines = _lines(run)
    planned = json.loads((run / "run.json").read_text())["plan"]
    last = planned[-1]
    kept = [line for line in lines if (json.loads(line)["task"], json.loads(line)["instruction_id"]) != tuple(last)]
    (run / SAMPLES).write_text("".join(kept))
    out = _refusal(["report", str(run)])
    assert f"the run is complete, but {last[0]} / {last[1]} has no row" in out[1]
    result = CliRunner().invoke(main, ["report", str(run), "--force", "--no-html"])
    assert result.exit_code == 0, result.output
    assert "DAMAGED RUN, reported with --force" in (run / "report.md").read_text()


def test_a_complete_run_missing_some_documents_of_a_phrasing_is_damaged(cache: Path, tmp_path: Path) -> None:
    run = _complete_run(tmp_path)
    lines = _lines(run)
    gone = json.loads(lines[1])
    (run / SAMPLES).write_text("".join(lines[:1] + lines[2:]))
    out = _refusal(["report", str(run)])
    assert out[0].startswith(f"Error: {run} is damaged: 1 problem(s)")
    pair = f"nli.rte / {gone['instruction_id']}"
    assert out[1] == f"{run / SAMPLES}: the run is complete, but {pair} has no row for 1 of its documents ({gone['doc_id']})"


def test_a_complete_budgeted_run_missing_a_chosen_cell_is_damaged(cache: Path, tmp_path: Path) -> None:
    [result] = harness.run(
        "nli.rte", models="irh-fake", limit=6, max_instructions=3, budget_fraction=0.5, reports_dir=tmp_path, write_report=False, say=None
    )
    run = result.run_dir
    lines = _lines(run)
    gone = json.loads(lines[-1])
    (run / SAMPLES).write_text("".join(lines[:-1]))
    out = _refusal(["report", str(run)])
    cell = f"nli.rte / {gone['instruction_id']} / {gone['doc_id']}"
    assert out[1] == f"{run / SAMPLES}: the run is complete, but the budget's cell {cell} has no row" and len(out) == 2
