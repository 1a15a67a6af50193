"""Importing results made elsewhere: long-format CSV and lm-eval samples files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.report.imports import ImportOptions, ImportProblem, import_results, lm_eval_task_name, read_long_csv

#: Someone's per-phrasing results. Hand-computed for model-a on nli.rte:
#: mean (0.62 + 0.55 + 0.71 + 0.48) / 4 = 0.59; deviations .03 -.04 .12 -.11, squares sum .029,
#: std (ddof=1) sqrt(.029 / 3) = 0.0983 -> 0.10.  On bbl.x: mean (70 + 64) / 2 = 67, std sqrt(18) = 4.24.
PER_PHRASING = """model,task,instruction_id,status,seen,score,n
model-a,nli.rte,p1,unobserved,false,0.62,277
model-a,nli.rte,p2,observed,true,0.55,277
model-a,nli.rte,p3,unobserved,false,0.71,277
model-a,nli.rte,p4,observed,true,0.48,277
model-a,bbl.x,q1,unobserved,,70,50
model-a,bbl.x,q2,unobserved,,64,50
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_per_phrasing_csv_reproduces_their_mean_and_std_to_two_decimals(tmp_path: Path) -> None:
    src = write(tmp_path / "theirs.csv", PER_PHRASING)
    code, out = run_cli("report", "--import", str(src), "--out", str(tmp_path / "rep"), "--bootstrap", "100", "--no-html")
    assert code == 0, out
    with open(tmp_path / "rep" / "per_task.csv") as fh:
        rows = {r["task"]: r for r in csv.DictReader(fh)}
    assert f"{float(rows['nli.rte']['mean']):.2f}" == "0.59"
    assert f"{float(rows['nli.rte']['std']):.2f}" == "0.10"
    assert f"{float(rows['bbl.x']['mean']):.2f}" == "67.00"
    assert f"{float(rows['bbl.x']['std']):.2f}" == "4.24"
    assert rows["nli.rte"]["ci_method"] == "phrasings only" and rows["nli.rte"]["all_right"] == ""
    # Seen vs unseen still works across phrasings, without the paired test.
    assert rows["nli.rte"]["su_applicable"] == "True" and float(rows["nli.rte"]["su_diff"]) == pytest.approx(0.515 - 0.665)
    assert rows["nli.rte"]["su_wilcoxon_p"] == ""
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "per-phrasing score only; per-document statistics" in md and "not available" in md
    assert "imported from" in md and "model-a" in md
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["status"] == "imported" and summary["samples"] == 4 * 277 + 2 * 50


def test_per_document_csv_with_nan_and_default_seen(tmp_path: Path) -> None:
    src = write(
        tmp_path / "docs.csv",
        "model,task,instruction_id,status,doc_id,correct,text\n"
        "m,t.a,p1,observed,d1,1,Say <yes>\n"
        "m,t.a,p1,observed,d2,0,\n"
        "m,t.a,p1,observed,d3,true,\n"
        "m,t.a,p2,unobserved,d1,1,\n"
        "m,t.a,p2,unobserved,d2,nan,\n"
        "m,t.a,p2,unobserved,d3,no,\n",
    )
    (source,) = read_long_csv(src)
    p = {x.instruction_id: x for x in source.phrasings}
    assert p["p1"].seen and not p["p2"].seen  # no seen column: observed means seen
    assert p["p1"].score == pytest.approx(2 / 3) and p["p1"].n == 3 and p["p1"].prompt == "Say <yes>"
    assert p["p2"].n == 2 and p["p2"].score == 0.5 and math.isnan(p["p2"].scores[1])


def test_bad_csv_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    src = write(
        tmp_path / "bad.csv",
        "model,task,instruction_id,status,doc_id,correct,score,n\n"
        "m,t,p1,seen-ish,d1,1,,\n"
        "m,t,p2,observed,d1,maybe,,\n"
        "m,t,p3,observed,,,0.5,lots\n"
        "m,t,p4,observed,,,0.5,10\n"
        "m,t,p4,observed,,,0.6,10\n",
    )
    with pytest.raises(ImportProblem) as err:
        read_long_csv(src)
    text = str(err.value)
    assert "bad.csv:2: status must be observed or unobserved" in text
    assert "bad.csv:3: correct must be" in text
    assert "bad.csv:4: n must be a whole number" in text
    assert "bad.csv:6: p4 of m on t appears twice" in text
    with pytest.raises(ImportProblem, match="missing column"):
        read_long_csv(write(tmp_path / "short.csv", "model,task\nm,t\n"))


def test_csv_with_several_models_needs_a_choice(tmp_path: Path) -> None:
    src = write(tmp_path / "two.csv", PER_PHRASING + PER_PHRASING.split("\n", 1)[1].replace("model-a", "model-b").replace("0.62", "0.30"))
    assert [s.model for s in import_results([src])] == ["model-a", "model-b"]
    code, out = run_cli("report", "--import", str(src), "--out", str(tmp_path / "r"), "--no-html", "--bootstrap", "20")
    assert code == 1 and "model-a, model-b" in out and "--model" in out
    code, out = run_cli(
        "report", "--import", str(src), "--model", "model-b", "--out", str(tmp_path / "r"), "--no-html", "--bootstrap", "20"
    )
    assert code == 0, out
    assert "model-b" in (tmp_path / "r" / "report.md").read_text()


def lm_eval_file(folder: Path, name: str, accs: list[float], prompt: str = "Premise: ...\nQuestion: ...") -> Path:
    """A samples file as lm-eval 0.4 writes it (arguments as gen_args_i / arg_j)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"samples_{name}_2024-05-01T12-00-00.123456.jsonl"
    lines = []
    for i, acc in enumerate(accs):
        lines.append(
            json.dumps(
                {
                    "doc_id": i,
                    "doc": {"premise": "p", "hypothesis": "h", "label": 0},
                    "target": "0",
                    "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": " True"}, "gen_args_1": {"arg_0": prompt, "arg_1": " False"}},
                    "resps": [[["-1.0", "False"]], [["-2.0", "False"]]],
                    "filtered_resps": [["-1.0", "False"], ["-2.0", "False"]],
                    "filter": "none",
                    "metrics": ["acc"],
                    "doc_hash": "x",
                    "prompt_hash": "y",
                    "target_hash": "z",
                    "acc": acc,
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lm_eval_task_name_from_file_name() -> None:
    assert lm_eval_task_name(Path("samples_rte_p_01_2024-05-01T12-00-00.123456.jsonl")) == "rte_p_01"
    assert lm_eval_task_name(Path("samples_arc_easy.jsonl")) == "arc_easy"


def test_lm_eval_samples_import_and_report(tmp_path: Path) -> None:
    folder = tmp_path / "lm_eval_out" / "my__model"
    f1 = lm_eval_file(folder, "rte_p01", [1, 1, 0, 1])
    f2 = lm_eval_file(folder, "rte_p02", [0, 1, 0, 0], prompt="<b>odd</b> prompt")
    (folder / "results_2024-05-01T12-00-00.123456.json").write_text(json.dumps({"model_name": "org/my-model"}))
    (source,) = import_results([f1, f2], ImportOptions(task="nli.rte", seen_ids=frozenset({"rte_p02"})))
    assert source.model == "org/my-model" and source.tasks == ["nli.rte"]
    p = {x.instruction_id: x for x in source.phrasings}
    assert p["rte_p01"].score == 0.75 and p["rte_p01"].doc_ids == ("0", "1", "2", "3") and not p["rte_p01"].seen
    assert p["rte_p02"].seen and p["rte_p02"].status == "observed" and p["rte_p02"].prompt == "<b>odd</b> prompt"

    code, out = run_cli(
        "report",
        "--import",
        str(f1),
        "--import",
        str(f2),
        "--task",
        "nli.rte",
        "--seen-instructions",
        "rte_p02",
        "--out",
        str(tmp_path / "rep"),
        "--bootstrap",
        "50",
    )
    assert code == 0, out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    (task,) = summary["tasks"]
    assert task["mean"] == pytest.approx(0.5) and task["all_right"] == pytest.approx(0.25) and task["ci_method"].startswith("two-way")
    assert summary["seen_unseen"][0]["applicable"] and summary["seen_unseen"][0]["paired_documents"] == 4
    assert "&lt;b&gt;odd&lt;/b&gt;" in (tmp_path / "rep" / "report.html").read_text()


def test_lm_eval_import_errors(tmp_path: Path) -> None:
    bad = write(tmp_path / "samples_x_2024-01-01T00-00-00.1.jsonl", json.dumps({"doc_id": 0, "f1": 0.5}) + "\n")
    with pytest.raises(ImportProblem, match=r"no acc or exact_match field.*f1"):
        import_results([bad])
    f1 = lm_eval_file(tmp_path / "a", "t1", [1])
    f2 = lm_eval_file(tmp_path / "b", "t2", [1])
    with pytest.raises(ImportProblem, match="several lm-eval files"):
        import_results([f1, f2], ImportOptions(instruction_id="same"))
    with pytest.raises(ImportProblem, match="already has results"):
        import_results([f1, f1])
    with pytest.raises(ImportProblem, match="header only"):
        import_results([write(tmp_path / "empty.csv", "model,task,instruction_id,status,score,n\n")])
    with pytest.raises(ImportProblem, match="unknown kind"):
        import_results([write(tmp_path / "x.txt", "hello")])
