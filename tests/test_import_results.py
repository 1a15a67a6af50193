"""Importing results made elsewhere: long-format CSV and lm-eval samples files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.report.imports import ImportOptions, ImportProblem, import_results, lm_eval_task_name, read_long_csv

#: Someone's per-phrasing results. Hand-computed for model-a on nli.rte:
#: mean (0.62 + 0.55 + 0.71 + 0.48) / 4 = 0.59; deviations .03 -.04 .12 -.11, squares sum .029,
#: std (ddof=1) sqrt(.029 / 3) = 0.0983 -> 0.10.  On bbl.x: mean (70 + 64) / 2 = 67, std sqrt(18) = 4.24.
PER_PHRASING = """model,task,instruction_id,status,seen,score,n,scale
model-a,nli.rte,p1,unobserved,false,0.62,277,
model-a,nli.rte,p2,observed,true,0.55,277,
model-a,nli.rte,p3,unobserved,false,0.71,277,
model-a,nli.rte,p4,observed,true,0.48,277,
model-a,bbl.x,q1,unobserved,,70,50,100
model-a,bbl.x,q2,unobserved,,64,50,100
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


def test_csv_with_several_models_reports_each_and_compares_them(tmp_path: Path) -> None:
    model_b = PER_PHRASING.split("\n", 1)[1].replace("model-a", "org/model-b").replace("0.62", "0.30")
    src = write(tmp_path / "two.csv", PER_PHRASING + model_b)
    assert [s.model for s in import_results([src])] == ["model-a", "org/model-b"]
    out = tmp_path / "r"
    code, text = run_cli("report", "--import", str(src), "--out", str(out), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    # One report per model, in a subfolder named after it, and the comparison across them in --out.
    assert "# Instruction robustness report: model-a" in (out / "model-a" / "report.md").read_text()
    assert "# Instruction robustness report: org/model-b" in (out / "org_model-b" / "report.md").read_text()
    with open(out / "org_model-b" / "per_instruction.csv") as fh:
        assert {r["instruction_id"]: float(r["score"]) for r in csv.DictReader(fh)}["p1"] == pytest.approx(0.30)
    pairs = {(p["task"], p["model_a"], p["model_b"]): p for p in json.loads((out / "compare.json").read_text())["pairs"]}
    rte = pairs[("nli.rte", "model-a", "org/model-b")]
    # p1: .62 vs .30 (a), p2-p4 tie: a beats b on 1 + 3/2 of 4 phrasings
    assert rte["shared_phrasings"] == 4 and rte["p_a_beats_b"] == pytest.approx(2.5 / 4)

    # `irh compare` reads such folders: the whole import, or its model folders one by one.
    code, text = run_cli("compare", str(out), "--out", str(tmp_path / "c1"), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    assert json.loads((tmp_path / "c1" / "compare.json").read_text())["pairs"] == json.loads((out / "compare.json").read_text())["pairs"]
    code, text = run_cli(
        "compare", str(out / "model-a"), str(out / "org_model-b"), "--out", str(tmp_path / "c2"), "--no-html", "--bootstrap", "20"
    )
    assert code == 0, text
    (pair,) = [p for p in json.loads((tmp_path / "c2" / "compare.json").read_text())["pairs"] if p["task"] == "nli.rte"]
    assert pair["p_a_beats_b"] == pytest.approx(2.5 / 4)

    # --model still picks one, written into --out itself.
    code, text = run_cli(
        "report", "--import", str(src), "--model", "org/model-b", "--out", str(tmp_path / "one"), "--no-html", "--bootstrap", "20"
    )
    assert code == 0, text
    assert "org/model-b" in (tmp_path / "one" / "report.md").read_text() and (tmp_path / "one" / "imported.csv").is_file()


def test_import_folder_round_trips_per_document_results(tmp_path: Path) -> None:
    src = write(
        tmp_path / "docs.csv",
        "model,task,instruction_id,status,seen,doc_id,correct,score,text\n"
        'm,t.a,p1,observed,false,d1,1,0.75,"Say, ""yes""\nor no"\n'
        "m,t.a,p1,observed,false,d2,0,,\n"
        "m,t.a,p2,unobserved,false,d1,,,\n"
        "m,t.a,p2,unobserved,false,d2,1,nan,\n",
    )
    (before,) = read_long_csv(src)
    code, text = run_cli("report", "--import", str(src), "--out", str(tmp_path / "rep"), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    (after,) = read_long_csv(tmp_path / "rep" / "imported.csv")
    for x, y in zip(before.phrasings, after.phrasings, strict=True):
        fields = ("task", "instruction_id", "status", "seen", "doc_ids", "prompt")
        assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields]
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.correct, y.correct)


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


def one_line_refusal(*args: str) -> str:
    """Run the CLI, expect exit 1 with a single line and no traceback; return that line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_non_utf8_csv_is_refused_with_its_line(tmp_path: Path) -> None:
    src = tmp_path / "latin1.csv"
    src.write_bytes(
        "model,task,instruction_id,status,score,n\nm,t.a,p1,unobserved,0.5,10\nm,t.a,caf\u00e9,unobserved,0.6,10\n".encode("latin-1")
    )
    line = one_line_refusal("report", "--import", str(src), "--out", str(tmp_path / "r"), "--no-html")
    assert "latin1.csv:3: not UTF-8" in line and "iconv" in line
    jsonl = tmp_path / "samples_t_2024-01-01T00-00-00.1.jsonl"
    jsonl.write_bytes(b'{"doc_id": 0, "acc": 1}\n{"doc_id": 1, "acc": 0, "x": "\xff"}\n')
    assert f"{jsonl}:2: not UTF-8" in one_line_refusal("report", "--import", str(jsonl), "--out", str(tmp_path / "r"))


def test_field_over_the_csv_limit_is_refused_with_its_line(tmp_path: Path) -> None:
    src = write(
        tmp_path / "long.csv",
        "model,task,instruction_id,status,score,n,text\nm,t.a,p1,unobserved,0.5,10,short\n"
        + f"m,t.a,p2,unobserved,0.6,10,{'x' * 131_073}\n",
    )
    line = one_line_refusal("report", "--import", str(src), "--out", str(tmp_path / "r"), "--no-html")
    assert "long.csv:3: field larger than field limit" in line and "shorten the field" in line


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("m,t.a,p1,unobserved,,,1.5,10", "score 1.5 is outside 0–1"),
        ("m,t.a,p1,unobserved,,,-0.2,10", "score -0.2 is outside 0–1"),
        ("m,t.a,p1,unobserved,,,inf,10", "score inf is not a finite number"),
        ("m,t.a,p1,unobserved,,,0.5,0", "n must be a whole number of documents, at least 1"),
        ("m,t.a,p1,unobserved,d1,1,2,", "score 2 is outside 0–1"),
        ("m,t.a,p1,unobserved,d1,1,-inf,", "score -inf is not a finite number"),
    ],
)
def test_impossible_scores_and_empty_phrasings_are_refused(tmp_path: Path, row: str, needle: str) -> None:
    src = write(tmp_path / "bad.csv", "model,task,instruction_id,status,doc_id,correct,score,n\n" + row + "\n")
    line = one_line_refusal("report", "--import", str(src), "--out", str(tmp_path / "r"), "--no-html")
    assert line.endswith(needle) or f"bad.csv:2: {needle}" in line, line


def test_declared_scale_is_checked_and_stated(tmp_path: Path) -> None:
    header = "model,task,instruction_id,status,score,n,scale\n"
    line = one_line_refusal(
        "report", "--import", str(write(tmp_path / "s.csv", header + "m,t.bleu,p1,unobserved,120,10,100\n")), "--out", str(tmp_path / "r")
    )
    assert "s.csv:2: score 120 is outside 0–100" in line
    line = one_line_refusal(
        "report",
        "--import",
        str(write(tmp_path / "mixed.csv", header + "m,t.bleu,p1,unobserved,20,10,100\nm,t.bleu,p2,unobserved,0.2,10,1\n")),
        "--out",
        str(tmp_path / "r"),
    )
    assert "mixed.csv:3: scale 1 differs from 100" in line
    src = write(tmp_path / "ok.csv", header + "m,t.bleu,p1,unobserved,20,10,100\nm,t.bleu,p2,unobserved,0.5,10,100\n")
    code, text = run_cli("report", "--import", str(src), "--out", str(tmp_path / "ok"), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    (task,) = json.loads((tmp_path / "ok" / "summary.json").read_text())["tasks"]
    # Declared, not guessed: 0.5 and 20 are both BLEU points, so CPS uses 0-100.
    assert task["score_scale"] == 100.0 and task["cps"] == pytest.approx((1 - (20 - 10.25) / 100) * 20 / 100)
    assert "scores of t.bleu are on 0–100 (declared in the scale column)" in (tmp_path / "ok" / "report.md").read_text()


def test_lm_eval_metric_outside_0_1_is_refused(tmp_path: Path) -> None:
    f = lm_eval_file(tmp_path, "t1", [1, 3])
    with pytest.raises(ImportProblem, match=r":2: acc is 3; lm-eval's acc is 0 or 1"):
        import_results([f])


HOSTILE_CSV = (
    "model,task,instruction_id,status,seen,score,n\n"
    '"<script>alert(1)</script>",nli.rte,"p|1",observed,true,0.6,10\n'
    '"<script>alert(1)</script>",nli.rte,"# `p2`\nnew <script>x</script> line",unobserved,false,0.4,10\n'
    '"<script>alert(1)</script>",nli.rte,"*p3* & [link](http://x)",unobserved,false,0.5,10\n'
)


def table_rows(md: str, heading: str) -> list[str]:
    section = md.split(heading, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_report_escapes_imported_text(tmp_path: Path) -> None:
    src = write(tmp_path / "hostile.csv", HOSTILE_CSV)
    code, text = run_cli("report", "--import", str(src), "--out", str(tmp_path / "rep"), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "<script" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "\\# \\`p2\\`<br>new &lt;script&gt;x&lt;/script&gt; line" in md
    assert "\\*p3\\* &amp; \\[link\\](http://x)" in md
    assert not any(line.startswith("#") and "script" in line.lower() for line in md.splitlines()[1:])
    # Every row of every table keeps its column count: a | in the data is escaped, a newline is <br>.
    tables = [block.splitlines() for block in md.split("\n\n") if block.startswith("|")]
    assert len(tables) >= 5
    for table in tables:
        assert all(line.startswith("|") for line in table), table
        assert len({unescaped_pipes(line) for line in table}) == 1, table
    assert len(table_rows(md, "## Per phrasing")) == 2 + 3


def test_undefined_effect_size_is_a_dash_empty_cell_and_null(tmp_path: Path) -> None:
    src = write(
        tmp_path / "one_seen.csv",
        "model,task,instruction_id,status,seen,score,n\n"
        "m,nli.rte,s1,observed,true,0.50,100\n"
        "m,nli.rte,u1,unobserved,false,0.51,100\n"
        "m,nli.rte,u2,unobserved,false,0.52,100\n"
        "m,nli.rte,u3,unobserved,false,0.99,100\n",
    )
    code, text = run_cli("report", "--import", str(src), "--out", str(tmp_path / "rep"), "--no-html", "--bootstrap", "20")
    assert code == 0, text
    md = (tmp_path / "rep" / "report.md").read_text()
    (row,) = [r for r in table_rows(md, "## Seen vs unseen phrasings") if r.startswith("| nli.rte")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert (cells[10], cells[11]) == ("–", "-1.00")  # Hedges g undefined, rank-biserial -1
    with open(tmp_path / "rep" / "per_task.csv") as fh:
        (task,) = list(csv.DictReader(fh))
    assert task["su_hedges_g"] == "" and task["su_cohens_d"] == "" and float(task["su_rank_biserial"]) == -1.0
    (su,) = json.loads((tmp_path / "rep" / "summary.json").read_text())["seen_unseen"]
    assert su["hedges_g"] is None and su["cohens_d"] is None


def test_fmt_never_prints_a_negative_zero() -> None:
    from harness.report.format import fmt

    assert fmt(-0.004, 2) == "0.00" and fmt(-0.0, 3) == "0.000" and fmt(-0.006, 2) == "-0.01" and fmt(math.nan, 2) == "–"
