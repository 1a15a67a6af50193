"""The whole pipeline on the fake backend: plan, run, rows, report, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import iter_samples, read_manifest


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_fake_run_writes_rows_manifest_and_report(cache: Path, tmp_path: Path) -> None:
    code, out = run_cli(
        "run",
        "--model",
        "irh-fake",
        "--tasks",
        "bbl.strategyqa,nli.rte",
        "--limit",
        "4",
        "--max-instructions",
        "3",
        "--reports-dir",
        str(tmp_path / "reports"),
    )
    assert code == 0, out
    (run_dir,) = list((tmp_path / "reports").iterdir())
    manifest = read_manifest(run_dir)
    assert manifest.status == "complete"
    assert set(manifest.tasks) == {"bbl.strategyqa", "nli.rte"}
    assert all(len(t.doc_ids) == 4 for t in manifest.tasks.values())
    rows = list(iter_samples(run_dir))
    assert len(rows) == 2 * 3 * 4
    assert len({r.key for r in rows}) == len(rows)
    # Every phrasing is scored on the same documents.
    by_phrasing: dict[str, set[str]] = {}
    for r in rows:
        by_phrasing.setdefault(r.instruction_id, set()).add(r.doc_id)
    assert len({frozenset(v) for k, v in by_phrasing.items() if k.startswith("bbl.strategyqa")}) == 1
    for r in rows:
        lls = r.loglikelihoods
        assert lls is not None and len(lls) == len(r.options) == 2
        assert r.prediction == max(range(2), key=lambda i: (lls[i], -i))
        assert r.correct == (r.option_scores[r.prediction] == max(r.option_scores))
        assert r.instruction_sha256 == manifest.instructions[r.instruction_id].sha256
    for name in ("report.md", "per_instruction.csv", "per_task.csv", "summary.json"):
        assert (run_dir / name).exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {t["task"] for t in summary["tasks"]} == {"bbl.strategyqa", "nli.rte"}


def test_unknown_task_is_one_clear_line(cache: Path, tmp_path: Path) -> None:
    code, out = run_cli("run", "--model", "irh-fake", "--tasks", "bbl.strategyq", "--reports-dir", str(tmp_path / "reports"))
    assert code == 1
    assert "unknown task 'bbl.strategyq'" in out and "bbl.strategyqa" in out
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("spec", ["nonexistent-backend", "hf:pretrained"])
def test_bad_model_spec_is_refused_before_anything_is_written(cache: Path, tmp_path: Path, spec: str) -> None:
    code, out = run_cli("run", "--model", spec, "--tasks", "bbl.strategyqa", "--limit", "2", "--reports-dir", str(tmp_path / "reports"))
    assert code == 1
    assert "Error:" in out
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("option", ["--limit", "--chunk-size", "--max-instructions", "--batch-size"])
def test_non_positive_sizes_are_refused(cache: Path, tmp_path: Path, option: str) -> None:
    result = CliRunner().invoke(main, ["run", "--model", "irh-fake", option, "0", "--reports-dir", str(tmp_path / "reports")])
    assert result.exit_code == 2
    assert "0 is not in the range x>=1" in result.output
    assert not (tmp_path / "reports").exists()


def test_run_records_which_registry_it_read(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import REPO

    monkeypatch.setenv("IRH_REGISTRY", str(REPO))
    reports = str(tmp_path / "r")
    code, out = run_cli(
        "run", "--model", "irh-fake", "--tasks", "bbl.strategyqa", "--limit", "2", "--max-instructions", "1", "--reports-dir", reports
    )
    assert code == 0, out
    (run_dir,) = list((tmp_path / "r").iterdir())
    manifest = read_manifest(run_dir)
    assert manifest.registry_path == str(REPO)
    assert manifest.registry_origin and "IRH_REGISTRY" in manifest.registry_origin
