"""`irh bench`: the calls it makes, the hf backend's work it counts, and `--work-only`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.bench import call_spans, hf_forward_tokens
from harness.cli import main


def test_calls_follow_irh_run_one_per_phrasing_and_chunk_of_documents() -> None:
    keys = [("t", inst, doc, opt) for inst in ("a", "b") for doc in ("d1", "d2", "d3") for opt in (0, 1)]
    assert call_spans(keys, chunk_size=2) == [(0, 4), (4, 6), (6, 10), (10, 12)]
    assert call_spans(keys, chunk_size=32) == [(0, 6), (6, 12)]


def test_hf_work_runs_each_distinct_input_once() -> None:
    encoded = [((1, 2), (3,)), ((1, 2), (4,)), ((1, 2), (3, 5)), ((1, 2), (3, 6))]
    # One-token options share the input (1, 2); the two-token ones both run (1, 2, 3).
    assert hf_forward_tokens(encoded) == 2 + 3
    # lm-eval shares nothing between calls.
    assert hf_forward_tokens(encoded, [(0, 1), (1, 4)]) == 2 + 2 + 3


def _distinct_prefixes(sequences: list[tuple[int, ...]]) -> int:
    return len({seq[:i] for seq in sequences for i in range(1, len(seq) + 1)})


def test_work_counts_against_a_brute_force_minimum(tiny_model: Path, cache: Path) -> None:
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model

    from harness.bench import build_requests, count_work

    lm = get_model("hf").create_from_arg_string(f"pretrained={tiny_model},dtype=float32,device=cpu", {"batch_size": 4})
    tasks = ["bbl.logical_deduction", "bbl.strategyqa"]
    rows = count_work(lm, tasks, phrasings=3, limit=4, seed=1)
    assert [r["task"] for r in rows] == tasks
    for row in rows:
        pairs, keys = build_requests([row["task"]], 3, 4, 1, lm.apply_chat_template)
        encoded = [(tuple(c), tuple(t)) for c, t in (lm._encode_pair(a, b) for a, b in pairs)]
        inputs = [c + t[:-1] for c, t in encoded]
        assert row["requests"] == len(pairs)
        assert row["minimum_tokens_run"] == _distinct_prefixes(inputs)
        spans = call_spans(keys, 32)
        assert row["minimum_tokens_per_call"] == sum(_distinct_prefixes(inputs[lo:hi]) for lo, hi in spans)
        assert row["hf_tokens"] == sum(len(g) for lo, hi in spans for g in set(inputs[lo:hi]))
        assert row["minimum_tokens_run"] <= row["minimum_tokens_per_call"] < row["hf_tokens"]
        assert row["ceiling"] == pytest.approx(row["hf_gflop"] / row["minimum_gflop"])
    assert rows[0]["options_per_document"] > rows[1]["options_per_document"] == 2
    assert all(r["ceiling"] > 1 for r in rows)


def test_work_only_cli_takes_families_and_refuses_generation_tasks(
    tiny_model: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.backends import models
    from harness.data import catalog

    monkeypatch.setattr(models, "default_model_dir", lambda progress=None: tiny_model)
    monkeypatch.setattr(catalog, "fetch_offline", lambda source: None)  # only the fixture's documents
    out = tmp_path / "work.json"
    result = CliRunner().invoke(
        main, ["bench", "--tasks", "bbl", "--work-only", "--phrasings", "2", "--limit", "3", "--dtype", "float32", "--json-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    # The family's multiple-choice tasks with documents to hand; no generation task.
    assert {r["task"] for r in rows} == {
        "bbl.strategyqa",
        "bbl.winowhy",
        "bbl.formal_fallacies_syllogisms_negation",
        "bbl.emoji_movie",
        "bbl.vitaminc_fact_verification",
        "bbl.logical_deduction",
    }
    assert "| all |" in result.output
    refused = CliRunner().invoke(main, ["bench", "--tasks", "bbl.auto_debugging", "--work-only"])
    assert refused.exit_code != 0 and "generation task" in refused.output


def test_processes_bench_times_one_and_n_processes_and_compares_rows(cache: Path, tmp_path: Path) -> None:
    from harness.bench import format_processes, run_processes_bench

    result = run_processes_bench(["bbl.strategyqa"], phrasings=2, limit=4, seed=1234, processes=2, model="irh-fake")
    assert set(result["runs"]) == {"1", "2"}
    assert result["runs"]["1"]["rows"] == result["runs"]["2"]["rows"] == 2 * 4
    assert result["same_rows_in_order"] and result["max_abs_loglik_diff"] == 0.0 and result["predictions_differ"] == 0
    assert all(run["seconds"] > 0 for run in result["runs"].values())
    assert "| 2 | 8 |" in format_processes(result)


def test_processes_bench_cli_refuses_one_process() -> None:
    refused = CliRunner().invoke(main, ["bench", "--processes", "1"])
    assert refused.exit_code != 0 and "--processes" in refused.output
