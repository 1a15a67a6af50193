"""`irh bench`: the calls it makes, the hf backend's work it counts, and `--work-only`."""

from __future__ import annotations

import json
import re
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


# ---------------------------------------------------------------------------- workload files

INLINE_WORKLOAD = """
from harness.backends.lm_eval import _Rows

ROWS = [
    {"prompt": f"Is the sky blue on day {i}? Answer:", "options": ["yes", "no", "A blue sky"], "gold": i % 3}
    for i in range(4)
]
TASKS = [
    {
        "task": f"tiny_inline_{p}",
        "custom_dataset": _Rows([dict(row, prompt=head + row["prompt"]) for row in ROWS]),
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "options",
        "doc_to_target": "gold",
        "target_delimiter": " ",
        "metric_list": [{"metric": "acc"}],
        "metadata": {"version": 1},
    }
    for p, head in enumerate(["Read the question and pick an answer. ", "Question time! Choose one, please. "])
]
SETTINGS = {"apply_chat_template": False}
"""

TASK_YAML = """include: base.yaml
task: tiny_yaml
dataset_kwargs:
  data_files:
    test: docs.jsonl
"""

BASE_YAML = """dataset_path: json
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}} Answer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{gold}}"
target_delimiter: " "
metric_list:
  - metric: acc
metadata:
  version: 1
"""


def _yaml_workload(folder: Path) -> Path:
    (folder / "base.yaml").write_text(BASE_YAML)
    (folder / "task.yaml").write_text(TASK_YAML)
    docs = [{"question": f"Is {i} blue?", "choices": ["yes", "no", "premise hypothesis"], "gold": i % 2} for i in range(3)]
    (folder / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder / "task.yaml"


def test_workload_files_yaml_configs_python_dicts_and_registry(tmp_path: Path) -> None:
    from harness.bench import BenchError, load_workload

    py = tmp_path / "inline.py"
    py.write_text(INLINE_WORKLOAD)
    yaml_path = _yaml_workload(tmp_path)
    workload = load_workload([py, yaml_path])
    assert [t["task"] for t in workload["tasks"]] == ["tiny_inline_0", "tiny_inline_1", "tiny_yaml"]
    assert workload["settings"] == {"apply_chat_template": False}
    yaml_task = workload["tasks"][2]
    # lm-eval's loader resolved the include; the data file is found beside the YAML file.
    assert yaml_task["output_type"] == "multiple_choice" and yaml_task["dataset_path"] == "json"
    assert yaml_task["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "docs.jsonl")

    registry = tmp_path / "reg.py"
    registry.write_text("REGISTRY = {'tasks': ['bbl.strategyqa'], 'phrasings': 2, 'limit': 3}\n")
    assert load_workload([registry]) == {"registry": {"tasks": ["bbl.strategyqa"], "phrasings": 2, "limit": 3}}
    # The benchmark's own REGISTRY workloads load (the others read documents from the cache).
    bench_dir = Path(__file__).resolve().parent.parent / "benchmarks"
    assert load_workload([bench_dir / "a_bbl_many_options.py"])["registry"]["tasks"][0] == "bbl.language_identification"

    bad = {
        "nothing.py": ("X = 1\n", "define TASKS"),
        "settings.py": ("TASKS = [{'task': 't'}]\nSETTINGS = {'batch_size': 4}\n", "SETTINGS key 'batch_size'"),
        "broken.py": ("raise RuntimeError('no documents')\n", "loading it failed (RuntimeError: no documents)"),
        "notask.yaml": ("dataset_path: json\n", "needs a 'task'"),
        "task.txt": ("task: x\n", "a workload file is an lm-eval task config (.yaml) or a Python file (.py)"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BenchError, match=re.escape(message)):
            load_workload([tmp_path / name])
    with pytest.raises(BenchError, match="stands alone"):
        load_workload([registry, py])
    with pytest.raises(BenchError, match="no workload file"):
        load_workload([tmp_path / "missing.yaml"])


def test_trie_minimum_and_hf_tokens_on_hand_made_requests() -> None:
    from harness.backends.fast import count_distinct_tokens

    # Two documents under one head, three options each, two of them sharing a first token.
    head = (1, 2, 3)
    encoded = [((*head, d), opt) for d in (10, 11) for opt in ((5, 6, 7), (5, 8), (9,))]
    inputs = [c + t[:-1] for c, t in encoded]
    # hf: each distinct input once per call: (1 2 3 d 5 6), (1 2 3 d 5), (1 2 3 d) per document.
    assert hf_forward_tokens(encoded) == 2 * (6 + 5 + 4)
    # The trie: the head once, then per document d, 5, 6.
    assert count_distinct_tokens(inputs) == 3 + 2 * 3
    # Split over two calls, hf runs the same; the minimum is over the whole run.
    assert hf_forward_tokens(encoded, [(0, 3), (3, 6)]) == hf_forward_tokens(encoded)


def test_bench_on_an_inline_task_reports_every_field(tiny_model: Path, tmp_path: Path) -> None:
    from harness.bench import format_summary, format_table, run_bench

    py = tmp_path / "inline.py"
    py.write_text(INLINE_WORKLOAD)
    config = {
        "paths": [str(py), str(_yaml_workload(tmp_path))],
        "limit": None,
        "batch_size": 4,
        "model_args": f"pretrained={tiny_model},dtype=float32,device=cpu",
    }
    summary = run_bench(config)
    hf, fast = summary["backends"]["hf"], summary["backends"]["irh-fast"]
    requests = 2 * 4 * 3 + 3 * 3
    for r in (hf, fast):
        assert r["requests"] == requests and r["calls"] == 1
        for key in ("load_s", "build_s", "ll_s", "ll_cpu_s", "whole_s", "fixed_s", "process_s", "peak_rss_mib"):
            assert r[key] > 0, key
        assert r["whole_s"] >= r["ll_s"] + r["load_s"] and r["fixed_s"] == pytest.approx(r["whole_s"] - r["ll_s"])
    assert hf["hf_tokens"] == fast["hf_tokens"] == summary["hf_tokens"] == hf["forward_tokens"]
    # irh-fast runs exactly the prefix trie (no call boundary here), hf far more.
    # irh-fast runs the minimum plus at most one block (32 tokens) per cell (a document's context).
    assert summary["fast_tokens"] == fast["forward_tokens"] < summary["hf_tokens"]
    assert summary["minimum_tokens"] <= summary["fast_tokens"] <= summary["minimum_tokens"] + 32 * summary["documents"]
    assert fast["padded_positions"] >= 0 and fast["forward_passes"] >= 1
    assert summary["ceiling"] == pytest.approx(summary["hf_tokens"] / summary["minimum_tokens"])
    assert summary["efficiency"] == pytest.approx(summary["speedup"] / summary["ceiling"])
    assert summary["speedup"] == pytest.approx(hf["ll_s"] / fast["ll_s"])
    assert summary["max_abs_loglikelihood_diff"] < 1e-4 and summary["prediction_disagreements"] == 0
    assert summary["documents"] == 2 * 4 + 3
    text = format_summary(summary)
    assert "token ceiling" in text and "efficiency" in text and "| irh-fast |" in text
    table = format_table([("inline", summary)])
    assert table.count("\n") == 2 and "| inline |" in table

    dry = run_bench(config | {"dry": True}, backends=("irh-fast",))
    assert dry["hf_tokens"] == summary["hf_tokens"] and dry["minimum_tokens"] == summary["minimum_tokens"]
    assert "speedup" not in dry and "token ceiling" in format_summary(dry)
