"""A complete run's samples.jsonl is in plan order whatever its history (merged shards, gaps a
resume filled, budget rounds), and a budgeted run's rows are counted against its budget."""

from __future__ import annotations

import random
from pathlib import Path

from click.testing import CliRunner, Result

from harness.cli import main
from harness.registry import Registry
from harness.results import MANIFEST, SAMPLES, check_liveness, iter_samples, read_manifest, write_manifest

PLAN = ["--model", "irh-fake", "--tasks", "bbl.strategyqa,nli.rte", "--limit", "5", "--max-instructions", "3", "--chunk-size", "2"]


def irh(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _run(tmp_path: Path, name: str, *extra: str) -> Path:
    result = irh("run", *PLAN, "--no-report", "--reports-dir", str(tmp_path / name), *extra)
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / name).iterdir())
    return run_dir


def _interrupt(run_dir: Path) -> None:
    write_manifest(run_dir, read_manifest(run_dir).model_copy(update={"status": "interrupted"}))


def test_rows_out_of_order_are_put_back_in_plan_order_on_completion(cache: Path, tmp_path: Path) -> None:
    reference = _run(tmp_path, "one")
    expected = (reference / SAMPLES).read_bytes()
    run_dir = _run(tmp_path, "shuffled")
    lines = (run_dir / SAMPLES).read_bytes().splitlines(keepends=True)
    assert b"".join(lines) == expected
    # As a kill between two ranks' flushes leaves it: later chunks written, earlier ones missing,
    # and what is there out of order.
    kept = [line for n, line in enumerate(lines) if n % 7 not in (2, 3)]
    random.Random(0).shuffle(kept)
    (run_dir / SAMPLES).write_bytes(b"".join(kept))
    _interrupt(run_dir)
    result = irh("run", "--resume", str(run_dir), "--no-report")
    assert result.exit_code == 0, result.output
    assert (run_dir / SAMPLES).read_bytes() == expected


def test_a_complete_run_left_out_of_order_is_reordered_by_resume(cache: Path, tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "r")
    expected = (run_dir / SAMPLES).read_bytes()
    lines = expected.splitlines(keepends=True)
    (run_dir / SAMPLES).write_bytes(b"".join(reversed(lines)))
    _interrupt(run_dir)
    result = irh("run", "--resume", str(run_dir), "--no-report")
    assert result.exit_code == 0, result.output
    assert (run_dir / SAMPLES).read_bytes() == expected
    assert read_manifest(run_dir).status == "complete"


def test_a_budgeted_run_is_counted_against_its_budget(cache: Path, tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "b", "--budget", "0.4")
    manifest = read_manifest(run_dir)
    assert manifest.budget is not None
    cells = manifest.budget.scored_cells
    full = sum(len(manifest.tasks[t].doc_ids) for t, _ in manifest.plan)
    assert cells < full
    liveness = check_liveness(run_dir)
    assert liveness.rows == liveness.rows_planned == cells
    assert f"({cells} of {cells} rows)" in liveness.message
    # Killed half-way: what is left is counted against the budget, not the full grid.
    rows = (run_dir / SAMPLES).read_bytes().splitlines(keepends=True)
    (run_dir / SAMPLES).write_bytes(b"".join(rows[: cells // 2]))
    _interrupt(run_dir)
    message = check_liveness(run_dir).message
    assert f"its {cells // 2} of {cells} rows are intact" in message and f"of {full} rows" not in message
    assert (run_dir / MANIFEST).exists() and len(list(iter_samples(run_dir))) == cells // 2


def test_max_instructions_draws_one_set_for_tasks_sharing_a_pool(registry: Registry) -> None:
    from harness.plan import build_plan

    subjects = [registry.task(t) for t in ("mmlu.abstract_algebra", "mmlu.anatomy", "mmlu.high_school_biology")]
    assert len({tuple(e.id for e in registry.instructions_for(t.id)) for t in subjects}) == 1  # one shared pool
    for seed in (1, 2, 1234):
        items = build_plan(registry, subjects, max_instructions=4, seed=seed)
        drawn = {t.id: [i.entry.id for i in items if i.task.id == t.id] for t in subjects}
        assert len(drawn["mmlu.anatomy"]) == 4
        assert drawn["mmlu.abstract_algebra"] == drawn["mmlu.anatomy"] == drawn["mmlu.high_school_biology"]
    # Another pool draws its own set.
    assert [i.entry.id for i in build_plan(registry, [registry.task("nli.rte")], max_instructions=4)] != drawn["mmlu.anatomy"]
