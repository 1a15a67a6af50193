"""Label bias in the open: phrasings that give one answer on >= 90% of documents are flagged
degenerate in every table, each task shows chance and the constant-answer baseline, and the
across-phrasing statistics are also given over the informative phrasings only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

import harness
from harness.results import iter_samples
from harness.stats.label_bias import answer_spread, constant_answer


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", ["mmlu.anatomy", "nli.rte"])
def test_a_model_that_always_answers_the_first_option(cache: Path, tmp_path: Path, task: str) -> None:
    [result] = harness.run(task, models="irh-fake:answer=first", limit=8, max_instructions=3, reports_dir=tmp_path, say=None)
    assert result.status == "complete" and result.report is not None
    rows = list(iter_samples(result.run_dir))
    assert rows and all(r.prediction == 0 for r in rows)
    # Hand count: per document (once), which option is right.
    right: dict[str, int] = {}
    for r in rows:
        right[r.doc_id] = max(range(len(r.option_scores)), key=lambda k: r.option_scores[k])
    docs = len(right)
    first_share = sum(1 for k in right.values() if k == 0) / docs
    best_share = max(sum(1 for k in right.values() if k == pos) for pos in set(right.values())) / docs

    phrasings = _rows(result.run_dir / "per_instruction.csv")
    assert len(phrasings) == 3
    for p in phrasings:
        assert p["degenerate"] == "True" and p["top_answer"] == "option 1"
        assert float(p["top_answer_share"]) == 1.0 and float(p["answer_entropy"]) == 0.0
        # Always the first option scores the share of documents whose right answer is the first option.
        assert float(p["score"]) == pytest.approx(first_share)
    [per_task] = _rows(result.run_dir / "per_task.csv")
    assert float(per_task["constant_answer"]) == pytest.approx(best_share)
    assert float(per_task["constant_answer"]) >= first_share
    best_positions = sorted(pos for pos in set(right.values()) if sum(1 for k in right.values() if k == pos) / docs == best_share)
    assert per_task["constant_answer_is"] == f"option {best_positions[0] + 1}"
    assert float(per_task["chance"]) > 0
    assert per_task["degenerate_phrasings"] == "3" and per_task["informative_phrasings"] == "0"
    assert per_task["informative_mean"] == "" and per_task["informative_std"] == ""
    assert "no informative phrasing" in per_task["label_bias_note"]

    summary = json.loads((result.run_dir / "summary.json").read_text())
    [bias] = summary["label_bias"]
    assert bias["informative_phrasings"] == 0 and bias["informative_mean"] is None

    md = (result.run_dir / "report.md").read_text()
    assert "## Label bias: all phrasings and informative ones" in md
    assert "no informative phrasing: all 3 give one answer on ≥ 90% of their documents" in md
    assert md.count("**degenerate**") == 3
    best_worst = next(line for line in md.splitlines() if line.startswith(f"| {task} | ") and "two-way" in line)
    assert best_worst.count(" (degenerate) | ") == 2  # the best and the worst phrasing are both marked
    assert "| chance | constant answer |" in md
    assert f"{best_share:.3f}" in md
    html = (result.run_dir / "report.html").read_text()
    assert html.count('<span class="tag degenerate">degenerate</span>') >= 3
    assert 'id="label-bias"' in html and "no informative phrasing" in html
    assert "<th>constant answer</th>" in html


def test_an_ordinary_model_has_no_label_bias_section(cache: Path, tmp_path: Path) -> None:
    [result] = harness.run("mmlu.anatomy", models="irh-fake", limit=8, max_instructions=3, reports_dir=tmp_path, say=None)
    phrasings = _rows(result.run_dir / "per_instruction.csv")
    assert all(p["degenerate"] == "False" for p in phrasings)
    assert all(float(p["answer_entropy"]) > 0 for p in phrasings)
    [per_task] = _rows(result.run_dir / "per_task.csv")
    assert per_task["degenerate_phrasings"] == "0" and per_task["informative_phrasings"] == "3"
    assert float(per_task["informative_mean"]) == pytest.approx(float(per_task["mean"]))
    md = (result.run_dir / "report.md").read_text()
    assert "## Label bias" not in md and "**degenerate**" not in md


def test_answer_spread_and_constant_answer() -> None:
    spread = answer_spread([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert spread.degenerate and spread.top_answer == "option 1" and spread.top_answer_share == 0.9
    assert spread.answer_entropy == pytest.approx(-(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1)))
    assert not answer_spread([0] * 8 + [1, 2]).degenerate
    assert answer_spread([0, 1, 1, 0]).answer_entropy == pytest.approx(1.0)
    empty = answer_spread([None, None])
    assert empty.answered == 0 and math.isnan(empty.top_answer_share) and not empty.degenerate
    fixed = constant_answer([[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
    assert fixed.score == pytest.approx(2 / 3) and fixed.answer == "option 2"
    assert math.isnan(constant_answer([]).score)
