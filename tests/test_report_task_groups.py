"""Family and category come from what the run recorded, not from today's tasks/*.yaml."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.report import sources
from harness.report.tables import write_report
from harness.results import read_manifest, write_manifest
from harness.stats.data import TaskInfo
from tests.test_report import write_run_folder

TABLE: dict[tuple[str, str], list[float]] = {("bbl.t", "bbl.t.w0"): [1, 0, 1], ("bbl.t", "bbl.t.w1"): [1, 1, 0]}


def groups(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(out / "per_group.csv") as fh:
        return {(r["kind"], r["name"]): r for r in csv.DictReader(fh)}


@pytest.fixture
def edited_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's tasks/*.yaml put bbl.t in another family and category than when it was run."""
    monkeypatch.setattr(sources, "_registry_tasks", lambda: {"bbl.t": TaskInfo("family-now", "category-now")})


@pytest.mark.usefixtures("edited_registry")
def test_report_groups_by_the_family_and_category_run_json_recorded(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "20260101T000000Z_toy_aaaaaa", TABLE)
    manifest = read_manifest(run)
    manifest.tasks["bbl.t"] = manifest.tasks["bbl.t"].model_copy(update={"family": "family-then", "category": "category-then"})
    write_manifest(run, manifest)
    write_report(run, n_boot=20, html=False)
    assert set(groups(run)) == {("family", "family-then"), ("category", "category-then")}
    (task,) = json.loads((run / "summary.json").read_text())["tasks"]
    assert (task["family"], task["category"]) == ("family-then", "category-then")
    assert "from today's tasks" not in (run / "report.md").read_text()


@pytest.mark.usefixtures("edited_registry")
def test_old_run_folder_without_them_falls_back_to_the_registry_and_says_so(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "20260101T000000Z_toy_bbbbbb", TABLE)
    write_report(run, n_boot=20, html=False)
    assert set(groups(run)) == {("family", "family-now"), ("category", "category-now")}
    assert "family and category of 1 task(s) from today's tasks/\\*.yaml" in (run / "report.md").read_text()


def test_run_records_family_and_category(cache: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--model", "irh-fake", "--tasks", "nli.rte", "--limit", "2", "--max-instructions", "1", "--no-report",
         "--reports-dir", str(tmp_path / "reports")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "reports").iterdir()
    record = read_manifest(run_dir).tasks["nli.rte"]
    assert record.family == "nli" and record.category


def test_run_report_marks_chance_from_the_rows(cache: Path, tmp_path: Path) -> None:
    """A report made from a run folder carries each task's chance score (two options: 0.5)."""
    from click.testing import CliRunner

    from harness.cli import main
    from harness.report.sources import load_run

    result = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            "irh-fake",
            "--tasks",
            "bbl.strategyqa",
            "--limit",
            "4",
            "--max-instructions",
            "2",
            "--reports-dir",
            f"{tmp_path}/r",
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "r").iterdir())
    assert load_run(run_dir).chance == {"bbl.strategyqa": 0.5}
    html = (run_dir / "report.html").read_text()
    assert ">chance<" in html.replace(" ", "")
