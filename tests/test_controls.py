"""Control phrasings: generated for any task, rendered on real-format documents, kept out of
every statistic, shown beside the valid phrasings' range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.controls import CONTROL_FILE, control_instructions, instruction_words, is_control_id, negate, with_controls
from harness.data.catalog import load_documents
from harness.plan import build_plan
from harness.registry import Registry
from harness.render import render_prompt, template_fields
from harness.report.markdown import control_lines
from harness.stats.analysis import analyse
from harness.stats.data import PhrasingResults

FIXTURE_TASKS = ["bbl.strategyqa", "bbl.winowhy", "bbl.formal_fallacies_syllogisms_negation", "bbl.emoji_movie", "bbl.logical_deduction"]


def test_every_task_gets_four_controls(registry: Registry) -> None:
    for task in registry.tasks.values():
        controls = control_instructions(registry, task)
        if not registry.instructions_for(task.id):
            # Subtask tasks (bbl-subtask.*) get phrasings only from the InstructionEval import.
            assert controls == [], task.id
            continue
        assert [c.id for c in controls] == [f"{task.id}.ctl-{k}" for k in ("none", "negated", "random", "other-task")]
        assert all(c.instruction.provenance.status == "control" and c.file == CONTROL_FILE for c in controls)
        assert all(is_control_id(c.id) for c in controls)
        original = registry.instructions_for(task.id)[0].instruction
        none, negated, random_words, other = (c.instruction for c in controls)
        assert "Do not" in negated.text and negated.answer_choices == original.answer_choices
        assert len(random_words.text.split("\n", 1)[0].split()) == max(1, len(instruction_words(original.text)))
        assert random_words.text.endswith(none.text) and other.text.endswith(none.text)
        assert len({none.text, negated.text, random_words.text, other.text, original.text}) == 5


def test_controls_are_seeded(registry: Registry) -> None:
    task = registry.task("bbl.strategyqa")
    assert [c.instruction.text for c in control_instructions(registry, task, 1)] == [
        c.instruction.text for c in control_instructions(registry, task, 1)
    ]
    assert control_instructions(registry, task, 1)[2].instruction.text != control_instructions(registry, task, 2)[2].instruction.text


def test_negation_turns_the_first_imperative_and_falls_back_to_a_prefix() -> None:
    assert negate("Question: {{ input }}\nAnswer yes or no.\nAnswer:") == "Question: {{ input }}\nDo not answer yes or no.\nAnswer:"
    assert negate("{{ question }}\nAnswer:") == "Do not do the following task.\n{{ question }}\nAnswer:"


@pytest.mark.parametrize("task_id", [*FIXTURE_TASKS, "mmlu.abstract_algebra"])
def test_controls_render_on_documents(registry: Registry, cache: Path, task_id: str) -> None:
    task = registry.task(task_id)
    doc = load_documents(task.data_name, task.split)[0]
    for control in control_instructions(registry, task):
        prompt = render_prompt(control.instruction, task, doc)
        assert prompt.user.strip() and len(prompt.options) == len(
            render_prompt(registry.instructions_for(task_id)[0].instruction, task, doc).options
        )
    # The document alone shows the options exactly where the original phrasing does.
    alone = render_prompt(control_instructions(registry, task)[0].instruction, task, doc)
    shown = "choices" in template_fields(registry.instructions_for(task_id)[0].instruction.text)
    assert all(choice in alone.user for choice in doc["choices"]) == shown


def test_controls_are_never_seen(registry: Registry) -> None:
    task = registry.task("bbl.strategyqa")
    extended = with_controls(registry, [task])
    ids = [e.id for e in extended.instructions_for(task.id)]
    items = build_plan(extended, [task], seen_ids={task.id: set(ids)})
    assert {i.entry.id for i in items if not i.seen} == {i for i in ids if is_control_id(i)}


def _phrasing(task: str, inst: str, correct: list[float], status: str = "unobserved", seen: bool = False) -> PhrasingResults:
    values = np.array(correct)
    return PhrasingResults(task, inst, status, seen, tuple(f"d{i}" for i in range(len(correct))), values, values)


def test_controls_never_enter_the_statistics() -> None:
    valid = [
        _phrasing("t", "t.w1", [1, 1, 0, 0], seen=True),
        _phrasing("t", "t.w2", [1, 0, 1, 0], seen=True),
        _phrasing("t", "t.w3", [1, 0, 0, 0]),
        _phrasing("t", "t.w4", [0, 1, 1, 1]),
    ]
    controls = [_phrasing("t", "t.ctl-none", [1, 1, 1, 1], "control"), _phrasing("t", "t.ctl-random", [0, 0, 0, 0], "control")]
    alone = analyse(valid, n_boot=50)
    both = analyse(valid + controls, n_boot=50)
    assert both.tasks == alone.tasks
    assert both.seen_unseen == alone.seen_unseen
    assert both.variance == alone.variance
    assert [p.instruction_id for p in both.phrasings] == [p.instruction_id for p in alone.phrasings]
    assert [p.instruction_id for p in both.controls] == ["t.ctl-none", "t.ctl-random"]
    table = "\n".join(control_lines(both))
    rows = [line for line in table.splitlines() if line.startswith("| t | t.ctl")]
    assert "| above |" in rows[0] and "| below |" in rows[1]  # the "where" column (a "degenerate" one follows)


def test_run_with_controls_scores_them_and_reports_them_apart(cache: Path, tmp_path: Path) -> None:
    from harness.cli import main

    reports = tmp_path / "reports"
    args = ["run", "--model", "irh-fake", "--tasks", "bbl.strategyqa", "--limit", "4", "--controls", "--reports-dir", str(reports)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run_dir = next(reports.iterdir())
    report = (run_dir / "report.md").read_text()
    assert "## Control phrasings" in report and "bbl.strategyqa.ctl-negated" in report
    resumed = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--no-report"])
    assert resumed.exit_code == 0, resumed.output


def test_max_instructions_draws_controls_on_top(registry: Registry) -> None:
    task = registry.task("nli.rte")
    extended = with_controls(registry, [task])
    for seed in range(5):
        ids = [i.entry.id for i in build_plan(extended, [task], max_instructions=3, seed=seed)]
        assert sorted(i for i in ids if is_control_id(i)) == sorted(f"nli.rte.ctl-{k}" for k in ("none", "negated", "random", "other-task"))
        drawn = [i for i in ids if not is_control_id(i)]
        assert len(drawn) == 3
        # The same three as without controls.
        assert drawn == [i.entry.id for i in build_plan(registry, [task], max_instructions=3, seed=seed)]


def test_run_with_controls_and_max_instructions_scores_every_control(cache: Path, tmp_path: Path) -> None:
    from harness.cli import main
    from harness.results import read_manifest

    reports = tmp_path / "reports"
    args = ["run", "--model", "irh-fake", "--tasks", "nli.rte", "--limit", "8", "--max-instructions", "3", "--controls"]
    result = CliRunner().invoke(main, [*args, "--no-report", "--noise-check", "0", "--reports-dir", str(reports)])
    assert result.exit_code == 0, result.output
    plan = [p for _, p in read_manifest(next(reports.iterdir())).plan]
    assert len(plan) == 7 and sum(is_control_id(p) for p in plan) == 4
