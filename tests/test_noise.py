"""The numerical noise floor: a run in another dtype scores a share of its cells again in
float32 and reports exactly the predictions that flip (harness/noise.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.cli import main
from harness.noise import NOISE_ROWS, choose_cells, wilson
from harness.results import iter_sample_file, iter_samples, read_manifest

PLAN = ["--tasks", "nli.rte,bbl.strategyqa", "--limit", "8", "--max-instructions", "3", "--no-report"]


def irh(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _run(tmp_path: Path, name: str, model: str, *extra: str) -> Path:
    result = irh("run", "--model", model, *PLAN, "--reports-dir", str(tmp_path / name), *extra)
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / name).iterdir())
    return run_dir


def test_the_check_finds_exactly_the_cells_whose_prediction_differs_in_float32(cache: Path, tmp_path: Path) -> None:
    # Ground truth: the whole plan in each dtype. The fake model's bf16 answers differ from its
    # float32 ones on fixed cells (harness/backends/fake.py).
    low = {r.key: r for r in iter_samples(_run(tmp_path, "bf16", "irh-fake:dtype=bfloat16", "--noise-check", "0"))}
    high = {r.key: r for r in iter_samples(_run(tmp_path, "fp32", "irh-fake:dtype=float32"))}
    flipped = {key for key in low if low[key].prediction != high[key].prediction}
    assert flipped and len(flipped) < len(low)

    run_dir = _run(tmp_path, "checked", "irh-fake:dtype=bfloat16", "--noise-check", "1")
    check = read_manifest(run_dir).noise_check
    assert check is not None and check.status == "done" and check.run_dtype == "bfloat16"
    reference = {r.key: r for r in iter_sample_file(run_dir / NOISE_ROWS)}
    assert reference == high  # every cell (share 1), scored as the float32 run scores it
    for task, noise in check.tasks.items():
        expected = {key for key in flipped if key[0] == task}
        assert noise.cells == sum(key[0] == task for key in low)
        assert noise.flips == len(expected)
        assert noise.flip_ci == pytest.approx(wilson(len(expected), noise.cells))
        assert noise.accuracy_reference == pytest.approx(sum(high[k].score for k in high if k[0] == task) / noise.cells)

    result = irh("report", str(run_dir))
    assert result.exit_code == 0, result.output
    report = (run_dir / "report.md").read_text()
    assert "## Numerical noise floor" in report and "scored again in float32 against the run's bfloat16" in report
    assert 'id="noise-floor"' in (run_dir / "report.html").read_text()
    with (run_dir / "per_task.csv").open() as fh:
        rows = {r["task"]: r for r in csv.DictReader(fh)}
    for task, noise in check.tasks.items():
        assert int(rows[task]["noise_flips"]) == noise.flips
        assert float(rows[task]["noise_floor"]) == pytest.approx(noise.flip_ci[1])
        line = next(line for line in report.splitlines() if line.startswith(f"| {task.replace('.', '.')} | {noise.cells} | "))
        verdict = "within numerical noise" if not float(rows[task]["range"]) > noise.flip_ci[1] else "larger than numerical noise"
        assert f"| {noise.flips} |" in line and verdict in line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {t["task"] for t in summary["noise_floor"]["tasks"]} == set(check.tasks)


def test_a_share_is_drawn_per_task_and_its_flips_are_the_known_ones(cache: Path, tmp_path: Path) -> None:
    low = {r.key: r for r in iter_samples(_run(tmp_path, "bf16", "irh-fake:dtype=bfloat16", "--noise-check", "0"))}
    high = {r.key: r for r in iter_samples(_run(tmp_path, "fp32", "irh-fake:dtype=float32"))}
    run_dir = _run(tmp_path, "checked", "irh-fake:dtype=bfloat16", "--noise-check", "0.02")
    checked = {r.key for r in iter_sample_file(run_dir / NOISE_ROWS)}
    # 24 cells per task, fewer than the 50 a check takes at least: all of them.
    assert checked == set(low)
    check = read_manifest(run_dir).noise_check
    assert check is not None
    assert sum(n.flips for n in check.tasks.values()) == sum(low[k].prediction != high[k].prediction for k in checked)


def test_no_check_where_none_is_needed_or_asked(cache: Path, tmp_path: Path) -> None:
    fp32 = read_manifest(_run(tmp_path, "fp32", "irh-fake:dtype=float32")).noise_check
    assert fp32 is not None and fp32.status == "not needed: the run is in float32" and not fp32.tasks
    off = _run(tmp_path, "off", "irh-fake:dtype=bfloat16", "--noise-check", "0")
    assert read_manifest(off).noise_check is None and not (off / NOISE_ROWS).exists()
    result = irh("report", str(off), "--no-html")
    assert "no noise check: the run was made with --noise-check 0" in (off / "report.md").read_text(), result.output
    bad = irh("run", "--model", "irh-fake", *PLAN, "--noise-check", "1.5", "--reports-dir", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "--noise-check" in bad.output and not (tmp_path / "bad").exists()


def test_cells_are_drawn_per_task_seeded_with_at_least_fifty() -> None:
    from harness.results import SampleRow

    def row(task: str, i: int) -> SampleRow:
        return SampleRow(
            task=task,
            instruction_id="p",
            instruction_sha256="0",
            status="unobserved",
            seen=False,
            doc_id=str(i),
            prompt="",
            score=0.0,
            correct=False,
        )

    rows = [row("a", i) for i in range(1000)] + [row("b", i) for i in range(30)]
    chosen = choose_cells(rows, 0.1, seed=1)
    assert sum(r.task == "a" for r in chosen) == 100 and sum(r.task == "b" for r in chosen) == 30
    assert [r.key for r in chosen] == [r.key for r in choose_cells(rows, 0.1, seed=1)]
    assert [r.key for r in choose_cells(rows, 0.01, seed=1) if r.task == "a"] != [
        r.key for r in choose_cells(rows, 0.01, seed=2) if r.task == "a"
    ]
    assert sum(r.task == "a" for r in choose_cells(rows, 0.01, seed=1)) == 50
    assert choose_cells(rows, 0.0, seed=1) == []
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)


def test_a_mixed_precision_run_is_checked_against_plain_float32() -> None:
    from harness.backends.models import ModelSpec
    from harness.noise import reference_spec

    spec = ModelSpec("irh-fast", {"pretrained": "m", "dtype": "float32", "mixed_precision_dtype": "bfloat16"}, "m")
    reference, label = reference_spec(spec)
    assert reference is not None and reference.args == {"pretrained": "m", "dtype": "float32"}
    assert label == "float32 with bfloat16 autocast"
    assert reference_spec(ModelSpec("irh-fast", {"pretrained": "m", "dtype": "float32"}, "m")) == (
        None,
        "not needed: the run is in float32",
    )
    assert reference_spec(ModelSpec("local-completions", {"model": "m"}, "m"))[0] is None
