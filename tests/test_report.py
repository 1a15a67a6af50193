"""Reports from run folders: the files, their values, escaping, and report.html in a real browser."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.report.tables import write_report
from harness.results import InstructionRecord, RunManifest, SampleRow, SampleWriter, TaskRecord, utc_now, write_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: A prompt that would run script and break tables if it were not escaped.
HOSTILE = '<script>console.error("xss")</script> | <b>bold</b> & "quotes"'


def write_run_folder(
    run_dir: Path,
    table: dict[tuple[str, str], list[float]],
    *,
    model: str = "toy-model",
    args: dict[str, str] | None = None,
    seen: frozenset[str] = frozenset(),
    prompts: dict[str, str] | None = None,
    extra_tasks: tuple[str, ...] = (),
    options: dict[str, list[float]] | None = None,
) -> Path:
    """A run folder in the real format: ``table`` maps (task, phrasing) to per-document correctness;
    ``options`` gives a task's option scores (the same for each of its documents)."""
    run_dir.mkdir(parents=True)
    tasks = sorted({t for t, _ in table} | set(extra_tasks))
    docs = {t: max((len(v) for (tt, _), v in table.items() if tt == t), default=0) for t in tasks}
    manifest = RunManifest(
        run_id=run_dir.name,
        status="complete",
        created=utc_now(),
        model={"backend": "test", "name": model, "args": args or {}},
        placement="user",
        chat_template_applied=False,
        seed=1,
        limit=None,
        chunk_size=8,
        registry_sha256="0" * 64,
        tasks={
            t: TaskRecord(source="test", split="test", documents_total=docs[t], doc_ids=[f"{t}/{i}" for i in range(docs[t])]) for t in tasks
        },
        instructions={
            p: InstructionRecord(target=t, sha256=p.ljust(64, "0")[:64], status="observed" if p in seen else "unobserved", seen=p in seen)
            for t, p in table
        },
        plan=sorted(table),
    )
    write_manifest(run_dir, manifest)
    with SampleWriter(run_dir) as writer:
        for (task, pid), values in sorted(table.items()):
            writer.write(
                [
                    SampleRow(
                        task=task,
                        instruction_id=pid,
                        instruction_sha256=pid.ljust(64, "0")[:64],
                        status="observed" if pid in seen else "unobserved",
                        seen=pid in seen,
                        doc_id=f"{task}/{i}",
                        prompt=(prompts or {}).get(pid, f"Instruction {pid}\nDocument {i}"),
                        option_scores=(options or {}).get(task, []),
                        score=float(v),
                        correct=bool(v >= 1.0),
                    )
                    for i, v in enumerate(values)
                ]
            )
    return run_dir


def toy_table() -> dict[tuple[str, str], list[float]]:
    """Two tasks: bbl.toy with 2 seen + 3 unseen phrasings on 10 documents, nli.toy with 3 unseen."""
    return {
        ("bbl.toy", "bbl.toy.s1"): [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],  # .8
        ("bbl.toy", "bbl.toy.s2"): [1, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # .9
        ("bbl.toy", "bbl.toy.u1"): [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # .5
        ("bbl.toy", "bbl.toy.u2"): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # .6
        ("bbl.toy", "bbl.toy.u3"): [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],  # .7
        ("nli.toy", "nli.p1"): [1, 0, 1, 0, 1, 0],  # .5
        ("nli.toy", "nli.p2"): [1, 1, 1, 0, 0, 0],  # .5
        ("nli.toy", "nli.p3"): [1, 1, 1, 1, 0, 1],  # 5/6
    }


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Module scope: the report (plots included) is written once and read by several tests.
    return write_run_folder(
        tmp_path_factory.mktemp("runs") / "20260101T000000Z_toy-model_abc123",
        toy_table(),
        seen=frozenset({"bbl.toy.s1", "bbl.toy.s2"}),
        prompts={"bbl.toy.s2": HOSTILE, "bbl.toy.u1": "Plain worst prompt"},
        extra_tasks=("mmlu.empty",),
    )


@pytest.fixture(scope="module")
def toy_report(toy_run: Path) -> dict[str, Path]:
    return write_report(toy_run, n_boot=200, seed=0)


def test_report_writes_every_file_with_hand_computed_values(toy_run: Path, toy_report: dict[str, Path]) -> None:
    assert set(toy_report) == {"report.md", "report.html", "per_instruction.csv", "per_task.csv", "per_group.csv", "summary.json"}
    assert all(p.parent == toy_run and p.stat().st_size > 0 for p in toy_report.values())
    summary = json.loads(toy_report["summary.json"].read_text())
    tasks = {t["task"]: t for t in summary["tasks"]}
    bbl = tasks["bbl.toy"]
    assert bbl["mean"] == pytest.approx(0.7) and bbl["std"] == pytest.approx(np.std([0.8, 0.9, 0.5, 0.6, 0.7], ddof=1))
    assert (bbl["best"], bbl["worst"]) == ("bbl.toy.s2", "bbl.toy.u1")
    assert bbl["cps"] == pytest.approx((1 - (0.9 - 0.7)) * 0.9)
    # documents 0-4 are right under every phrasing, document 9 under none
    assert bbl["all_right"] == pytest.approx(0.5) and bbl["none_right"] == pytest.approx(0.1)
    assert bbl["seen_mean"] == pytest.approx(0.85) and bbl["unseen_mean"] == pytest.approx(0.6)
    assert tasks["mmlu.empty"]["phrasings"] == 0 and tasks["mmlu.empty"]["mean"] is None
    seen = {s["task"]: s for s in summary["seen_unseen"]}
    assert seen["bbl.toy"]["applicable"] and seen["bbl.toy"]["diff"] == pytest.approx(0.25)
    assert not seen["nli.toy"]["applicable"] and "not applicable" in seen["nli.toy"]["note"]
    assert summary["std_ddof"] == 1 and summary["multiple_testing"]["primary"] == "holm"
    with open(toy_report["per_task.csv"]) as fh:
        rows = {r["task"]: r for r in csv.DictReader(fh)}
    assert float(rows["nli.toy"]["mean"]) == pytest.approx((0.5 + 0.5 + 5 / 6) / 3)
    assert rows["nli.toy"]["su_applicable"] == "False" and rows["mmlu.empty"]["mean"] == ""
    assert float(rows["bbl.toy"]["var_share_phrasing"]) > 0
    with open(toy_report["per_instruction.csv"]) as fh:
        phr = {r["instruction_id"]: r for r in csv.DictReader(fh)}
    assert float(phr["bbl.toy.s1"]["score"]) == pytest.approx(0.8)
    assert float(phr["bbl.toy.s1"]["ci_low"]) < 0.8 < float(phr["bbl.toy.s1"]["ci_high"])


def test_report_markdown_names_methods_and_limits(toy_report: dict[str, Path]) -> None:
    md = toy_report["report.md"].read_text()
    for needle in (
        "## Across phrasings, per task",
        "## Per family",
        "## Seen vs unseen phrasings",
        "## Variance decomposition",
        "confounded with residual",
        "Holm",
        "Benjamini–Hochberg",
        "ddof=1",
        "not applicable: no seen phrasings",
        "percentile bootstrap",
        "mmlu.empty: no documents scored",
        "Mizrahi",
    ):
        assert needle in md, needle
    assert re.search(r"\| bbl.toy \| 5 \| \d \| 10 \| 0.700 \|", md)


def test_report_html_is_self_contained_and_escaped(toy_report: dict[str, Path]) -> None:
    html = toy_report["report.html"].read_text()
    assert len(re.findall(r'<img class="plot" src="data:image/png;base64,', html)) >= 3  # strips, seen/unseen, heatmap
    assert not re.search(r'(src|href)="(https?:)?//', html), "nothing may load from the network"
    assert "<script" not in html
    assert "&lt;script&gt;console.error(&#34;xss&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quotes&#34;" in html
    assert "Plain worst prompt" in html  # the worst phrasing's text, beside the best one


def test_cli_report_writes_into_out(toy_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(main, ["report", str(toy_run), "--out", str(out), "--bootstrap", "50", "--no-html"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").exists() and not (out / "report.html").exists()
    result = CliRunner().invoke(main, ["report"])
    assert result.exit_code == 1 and "RUN_DIR or --import" in result.output


def _chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    # Any network access fails (and would log a console error): the report must not need it.
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (bash scripts/install-browser.sh installs it)")
def test_report_html_renders_in_headless_chromium_without_console_errors(toy_report: dict[str, Path], tmp_path: Path) -> None:
    url = toy_report["report.html"].resolve().as_uri()
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert dom.stdout.count('<img class="plot"') >= 3
    assert "Seen vs unseen phrasings" in dom.stdout and 'id="per-task"' in dom.stdout

    shot = tmp_path / "report.png"
    result = _chromium("--window-size=1280,2400", f"--screenshot={shot}", url)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if ":CONSOLE" in line] == []
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"
    # The plots drew: the unseen colour (#0072B2) and viridis heatmap cells are on screen.
    unseen = np.all(np.abs(pixels - np.array([0x00, 0x72, 0xB2]) / 255) < 0.08, axis=-1)
    assert unseen.sum() > 50
