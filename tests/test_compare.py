"""Model comparison: hand-computed rank statistics, P(A beats B), flips, and `irh compare`."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from harness.cli import main
from harness.stats import ModelResults, PhrasingResults, compare_models, kendalls_w, pairwise_tau
from harness.stats.compare import p_beats
from tests.test_report import write_run_folder


def agg(task: str, pid: str, score: float, sha: str = "") -> PhrasingResults:
    return PhrasingResults(task=task, instruction_id=pid, reported_score=score, reported_n=100, sha256=sha)


def test_kendalls_w_hand_computed() -> None:
    # Rank sums 4, 6, 8 around 6: S = 8; W = 12 S / (m^2 (n^3 - n)) = 96 / 216.
    assert kendalls_w(np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3]], dtype=float)) == pytest.approx(96 / 216)
    assert kendalls_w(np.array([[0.1, 0.5, 0.9]] * 4)) == pytest.approx(1.0)
    assert kendalls_w(np.array([[1.0, 2.0], [2.0, 1.0]])) == pytest.approx(0.0)
    # ties: two raters, ranks (1.5, 1.5, 3) and (1, 2, 3): R = 2.5, 3.5, 6; S = 6.5; T = 2^3 - 2 = 6
    assert kendalls_w(np.array([[1, 1, 3], [1, 2, 3]], dtype=float)) == pytest.approx(12 * 6.5 / (4 * 24 - 2 * 6))
    assert math.isnan(kendalls_w(np.array([[1.0, 2.0]])))  # one rater
    assert math.isnan(kendalls_w(np.ones((3, 2))))  # every rater ties everything


def test_pairwise_tau_equals_scipy_tau_b() -> None:
    scores = np.random.default_rng(4).integers(0, 3, (7, 4)).astype(float)
    expected = [sps.kendalltau(scores[i], scores[j]).statistic for i, j in itertools.combinations(range(7), 2)]
    assert pairwise_tau(scores) == pytest.approx([t for t in expected if not math.isnan(t)])


def test_compare_two_models_hand_computed() -> None:
    a = ModelResults("A", [agg("t", "p1", 0.6), agg("t", "p2", 0.7), agg("t", "p3", 0.8), agg("t", "only_a", 0.1)])
    b = ModelResults("B", [agg("t", "p1", 0.5), agg("t", "p2", 0.75), agg("t", "p3", 0.7)])
    c = compare_models([a, b], n_boot=300, seed=2)
    per = {m.model: m for m in c.per_model}
    assert per["A"].phrasings == 3 and per["A"].shared and per["A"].mean == pytest.approx(0.7)  # only_a is not shared
    assert per["B"].mean == pytest.approx(0.65) and (per["A"].rank, per["B"].rank) == (1, 2)
    assert per["A"].std == pytest.approx(0.1)
    (pair,) = c.pairs
    assert pair.p_a_beats_b == pytest.approx(2 / 3) and (pair.a_wins, pair.b_wins, pair.ties) == (2, 1, 0)
    assert pair.flipped and pair.flips == 1 and pair.flipped_phrasings == "p2"
    assert pair.ci_method == "phrasings only" and 0.0 <= pair.ci_low <= 2 / 3 <= pair.ci_high <= 1.0
    (stab,) = c.stability
    # rankings (A, B): p1 A>B, p2 B>A, p3 A>B: rank sums 5 and 4, S = .5, W = 12 * .5 / (9 * 6)
    assert stab.kendall_w == pytest.approx(6 / 54)
    assert stab.mean_tau == pytest.approx(-1 / 3) and stab.min_tau == -1.0 and stab.tau_pairs == 3
    assert c.overall.kendall_w == pytest.approx(6 / 54)


def test_compare_left_out_changed_texts_and_missing_tasks() -> None:
    a = ModelResults("A", [agg("t", "p1", 0.6, "h1"), agg("t", "p2", 0.7, "h2"), agg("u", "q", 0.5)])
    b = ModelResults("B", [agg("t", "p1", 0.5, "h1"), agg("t", "p2", 0.9, "CHANGED")])
    c = compare_models([a, b], n_boot=50)
    (pair,) = c.pairs
    assert pair.shared_phrasings == 1 and pair.p_a_beats_b == 1.0 and not pair.flipped
    assert any("text differs" in n and "p2" in n for n in c.notes)
    assert any(n.startswith("u: no results for B") for n in c.notes)
    with pytest.raises(ValueError, match="unique"):
        compare_models([a, a])


def test_p_beats_counts_ties_half() -> None:
    assert p_beats(np.array([1.0, 0.5, 0.2]), np.array([0.5, 0.5, 0.4])) == pytest.approx(0.5)


def test_two_way_interval_when_models_share_documents() -> None:
    rng = np.random.default_rng(0)

    def model(label: str, shift: float) -> ModelResults:
        ps = []
        for k in range(5):
            values = (rng.random(40) < 0.5 + shift + 0.02 * k).astype(float)
            ps.append(PhrasingResults("t", f"p{k}", doc_ids=tuple(f"d{i}" for i in range(40)), scores=values, correct=values.copy()))
        return ModelResults(label, ps)

    c = compare_models([model("strong", 0.3), model("weak", -0.3)], n_boot=300)
    (pair,) = c.pairs
    assert pair.ci_method.startswith("two-way") and pair.p_a_beats_b == 1.0 and pair.ci_low > 0.8


def test_cli_compare_runs_and_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Table = dict[tuple[str, str], list[float]]
    table_a: Table = {("bbl.t", f"bbl.t.w{i}"): [float(x) for x in v] for i, v in enumerate([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])}
    table_b: Table = {("bbl.t", f"bbl.t.w{i}"): [float(x) for x in v] for i, v in enumerate([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])}
    run_a = write_run_folder(tmp_path / "runs" / "20260101T000000Z_toy_aaaaaa", table_a, model="toy", args={"seed": "1"})
    run_b = write_run_folder(tmp_path / "runs" / "20260101T000001Z_toy_bbbbbb", table_b, model="toy", args={"seed": "7"})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["compare", str(run_a), str(run_b), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    (out,) = (tmp_path / "reports").glob("compare_*")
    for name in ("compare.md", "compare.csv", "compare_pairs.csv", "compare.json", "compare.html"):
        assert (out / name).stat().st_size > 0
    with open(out / "compare.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    # Same model name, told apart by the backend argument that differs.
    assert set(rows) == {"toy [seed=1]", "toy [seed=7]"}
    assert float(rows["toy [seed=1]"]["mean"]) == pytest.approx(0.5) and float(rows["toy [seed=7]"]["mean"]) == pytest.approx(7 / 12)
    data = json.loads((out / "compare.json").read_text())
    (pair,) = data["pairs"]
    # w0: .5 vs .25 (A), w1: .75 vs 1 (B), w2: .25 vs .5 (B): A beats B on 1 of 3; B leads by mean, w0 flips.
    assert pair["p_a_beats_b"] == pytest.approx(1 / 3) and pair["flipped_phrasings"] == "bbl.t.w0"
    assert pair["ci_method"].startswith("two-way")
    md = (out / "compare.md").read_text()
    assert "**rank flip**" in md and "Kendall's W" in md
    assert (out / "compare.html").read_text().count("data:image/png;base64,") >= 1

    csv_file = tmp_path / "theirs.csv"
    csv_file.write_text("model,task,instruction_id,status,score,n\nx,bbl.t,bbl.t.w0,unobserved,0.9,4\nx,bbl.t,bbl.t.w1,unobserved,0.1,4\n")
    result = CliRunner().invoke(
        main, ["compare", str(run_a), str(csv_file), "--out", str(tmp_path / "c2"), "--bootstrap", "50", "--no-html"]
    )
    assert result.exit_code == 0, result.output
    pairs = json.loads((tmp_path / "c2" / "compare.json").read_text())["pairs"]
    assert pairs[0]["shared_phrasings"] == 2 and pairs[0]["ci_method"] == "phrasings only"
    result = CliRunner().invoke(main, ["compare", str(run_a)])
    assert result.exit_code == 1 and "at least two models" in result.output


def test_cli_compare_with_no_task_in_common_says_so_in_one_line(tmp_path: Path) -> None:
    table: dict[tuple[str, str], list[float]] = {("bbl.t", "bbl.t.w0"): [1, 0], ("bbl.t", "bbl.t.w1"): [1, 1]}
    run_a = write_run_folder(tmp_path / "20260101T000000Z_a_aaaaaa", table, model="a")
    csv_file = tmp_path / "theirs.csv"
    csv_file.write_text("model,task,instruction_id,status,score,n\nx,nli.rte,p1,unobserved,0.9,4\nx,nli.rte,p2,unobserved,0.1,4\n")
    result = CliRunner().invoke(main, ["compare", str(run_a), str(csv_file), "--out", str(tmp_path / "c"), "--no-html"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "no task in common" in line and "a: bbl.t" in line and "x: nli.rte" in line
    assert not (tmp_path / "c").exists()


def test_compare_markdown_escapes_model_names_and_ids(tmp_path: Path) -> None:
    csv_file = tmp_path / "hostile.csv"
    csv_file.write_text(
        "model,task,instruction_id,status,score,n\n"
        '"<script>a</script>",t.x,p1,unobserved,0.9,4\n"<script>a</script>",t.x,"p|2",unobserved,0.3,4\n'
        '"b|c",t.x,p1,unobserved,0.2,4\n"b|c",t.x,"p|2",unobserved,0.8,4\n'
    )
    result = CliRunner().invoke(main, ["compare", str(csv_file), "--out", str(tmp_path / "c"), "--no-html", "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "<script" not in md and "&lt;script&gt;a&lt;/script&gt;" in md and "b\\|c" in md and "**rank flip** (p\\|2)" in md
    for block in md.split("\n\n"):
        if block.startswith("|"):
            assert len({len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}) == 1, block
