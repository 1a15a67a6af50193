"""The public Python API (harness.run, resume, report, compare, load_results) on the fake backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.results import SAMPLES, SampleRow, iter_samples, read_manifest

REPO = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, name: str, model: str = "irh-fake", **kwargs: object) -> harness.RunResult:
    [result] = harness.run(
        "bbl.strategyqa,nli.rte",
        models=model,
        limit=4,
        max_instructions=3,
        reports_dir=tmp_path / name,
        write_report=False,
        say=None,
        **kwargs,  # type: ignore[arg-type]
    )
    return result


def test_run_then_load_results_gives_one_row_per_sample(cache: Path, tmp_path: Path) -> None:
    result = _run(tmp_path, "a")
    assert result.status == "complete" and result.report is None
    frame = harness.load_results(result.run_dir)
    assert len(frame) == 2 * 3 * 4
    manifest = read_manifest(result.run_dir)
    assert set(frame["run_id"]) == {manifest.run_id}
    assert set(frame["model"]) == {"irh-fake"}
    assert set(frame["scoring"]) == {"loglikelihood"}
    assert dict(zip(frame["task"], frame["family"], strict=True)) == {t: r.family for t, r in manifest.tasks.items()}
    assert list(frame.columns[: len(SampleRow.model_fields)]) == list(SampleRow.model_fields)
    per_phrasing = frame.groupby("instruction_id")["correct"].mean()
    assert len(per_phrasing) == 6


def test_report_and_compare_write_their_files(cache: Path, tmp_path: Path) -> None:
    a = _run(tmp_path, "a")
    b = _run(tmp_path, "b", model="irh-fake:seed=7")
    paths = harness.report(a.run_dir, n_boot=50, html=False, say=None)
    assert {"report.md", "per_instruction.csv", "per_task.csv", "summary.json"} <= set(paths)
    assert all(p.exists() and p.parent == a.run_dir for p in paths.values())
    # harness.report stays callable once the report package's modules are imported.
    import importlib

    importlib.import_module("harness.report.tables")

    out = harness.report(b.run_dir, out=tmp_path / "elsewhere", n_boot=50, html=False, say=None)
    assert out["report.md"].parent == tmp_path / "elsewhere"
    compared = harness.compare([a.run_dir, b.run_dir], out=tmp_path / "cmp", n_boot=50, html=False)
    assert compared["compare.md"].exists() and json.loads(compared["compare.json"].read_text())


def test_a_failed_run_raises_run_stopped_and_resume_completes_it(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRH_FAKE_FAIL_AFTER", "10")
    with pytest.raises(harness.RunStopped) as stopped:
        _run(tmp_path, "a")
    monkeypatch.delenv("IRH_FAKE_FAIL_AFTER")
    assert stopped.value.status == "failed" and "irh run --resume" in str(stopped.value)
    run_dir = stopped.value.run_dir
    assert read_manifest(run_dir).status == "failed"
    result = harness.resume(run_dir, write_report=False, say=None)
    assert result.status == "complete"
    assert len(list(iter_samples(run_dir))) == 2 * 3 * 4


def test_both_budgets_are_refused(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(harness.InvalidRequest, match="not both"):
        _run(tmp_path, "a", budget_fraction=0.5, budget_cells=10)
    assert not (tmp_path / "a").exists()


def test_rows_written_before_the_scoring_field_read_as_what_they_were(cache: Path, tmp_path: Path) -> None:
    result = _run(tmp_path, "a")
    path = result.run_dir / SAMPLES
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for row in lines:
        del row["scoring"]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert {row.scoring for row in iter_samples(result.run_dir)} == {"loglikelihood"}
    generated = SampleRow.model_validate({**lines[0], "loglikelihoods": None, "generation": "yes"})
    assert generated.scoring == "generated"


def test_import_harness_stays_light() -> None:
    code = (
        "import sys, harness\n"
        "assert callable(harness.report) and callable(harness.run)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'lm_eval', 'pandas', 'datasets') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_api_does_not_print_lm_evals_per_task_notes(cache: Path, tmp_path: Path) -> None:
    # A plain Python process, as a user's script: no logging set up, so lm-eval's warnings
    # reach stderr through Python's last-resort handler.
    code = (
        "import harness, logging\n"
        f"[r] = harness.run('nli.rte,mmlu.anatomy', models='irh-fake', limit=4, max_instructions=2, reports_dir={str(tmp_path)!r}, "
        "write_report=False, say=None)\n"
        "assert r.status == 'complete', r\n"
        "logging.getLogger('lm_eval.api.task').warning('[Task: other] a warning that is news')\n"
        "logging.getLogger('lm_eval.api.task').error('[Task: irh_0_0] metric acc is defined, but aggregation is not. (as an error)')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("is defined, but") == 1  # the error logged below, not the run's 16 notes
    assert "Custom kwargs" not in done.stderr
    # Other warnings, and errors, still come through.
    assert "[Task: other] a warning that is news" in done.stderr and "(as an error)" in done.stderr


def test_an_observed_source_without_phrasings_for_the_tasks_is_named(cache: Path, tmp_path: Path) -> None:
    said: list[str] = []
    harness.run(
        "mmlu.abstract_algebra,mmlu.high_school_biology",
        models="irh-fake",
        observed="flan",
        limit=2,
        max_instructions=1,
        reports_dir=tmp_path,
        write_report=False,
        noise_check=0.0,
        say=said.append,
    )
    (line,) = [s for s in said if s.startswith("seen vs unseen:")]
    assert "FLAN has no phrasings for mmlu.* (2 tasks in this run)" in line, line
    assert "no observed phrasings are loaded" not in line


def test_describe_seen_says_why_no_observed_phrasing_is_in_the_plan(registry: object) -> None:
    from harness.plan import build_plan, describe_seen
    from harness.registry import Registry

    assert isinstance(registry, Registry)
    items = build_plan(registry, [registry.task("nli.rte")], max_instructions=2)
    assert "no observed phrasings are loaded (add some with --observed)" in describe_seen(items, "m", None)
    line = describe_seen(items, "m", None, observed_sources=["flan", "file=/x/p.jsonl"], registry=registry)
    assert "FLAN and the file /x/p.jsonl have no phrasings for nli.rte" in line
