"""report.html and compare.html as a reader sees them: chance beside the scores, tables that fit
a 1400 px window, a page that fits a phone, ids that wrap, and the heatmap section that matches the data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.report.chance import chance_from_rows
from harness.report.html import breakable, render_report_html
from harness.report.plots import plot_heatmap, plot_phrasing_strips, plot_seen_unseen
from harness.report.sources import load_run
from harness.results import iter_samples
from harness.stats.analysis import analyse
from tests.test_report import HOSTILE, write_run_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LONG = "bbl.formal_fallacies_syllogisms_negation"


def long_table() -> dict[tuple[str, str], list[float]]:
    """Tasks with long BIG-bench ids, seen and unseen phrasings (the widest tables), no phrasing shared."""
    table: dict[tuple[str, str], list[float]] = {}
    for t, task in enumerate((LONG, "bbl.parsinlu_reading_comprehension", "bbl.play_dialog_same_or_different")):
        for k in range(5):
            table[(task, f"{task}.w{k:02d}")] = [float((i + k + t) % 3 == 0) for i in range(12)]
    return table


def write_html(run_dir: Path, out: Path) -> str:
    """report.html of a run folder, with the chance scores its rows give."""
    source = load_run(run_dir)
    chance = chance_from_rows(iter_samples(run_dir))
    analysis = analyse(source.phrasings, source.tasks, n_boot=50, seed=0)
    plots = {
        "strips": plot_phrasing_strips(analysis.by_task, chance),
        "seen_unseen": plot_seen_unseen(analysis),
        "heatmap": plot_heatmap(analysis.by_task),
    }
    html = render_report_html(source, analysis, plots, chance=chance)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(html)
    return html


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = long_table()
    seen = frozenset(pid for (_, pid) in table if pid.endswith((".w00", ".w01")))
    return write_run_folder(
        tmp_path_factory.mktemp("runs") / "20260101T000000Z_toy-model_long01",
        table,
        seen=seen,
        options={LONG: [1.0, 0.0], "bbl.parsinlu_reading_comprehension": [1.0, 0.0, 0.0, 0.0]},
    )


@pytest.fixture(scope="module")
def long_html(long_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    write_html(long_run, out)
    return out / "report.html"


def header_cells(html: str, table_id: str) -> list[str]:
    table = html[html.index(f'<table id="{table_id}">') :]
    first_row = table[: table.index("</tr>")]
    return [re.sub(r"<[^>]+>", " ", c).split()[0] for c in re.findall(r"<th>(.*?)</th>", first_row)]


def test_breakable_escapes_first_then_marks_where_ids_may_wrap() -> None:
    assert str(breakable("bbl.strategy_qa")) == "bbl.<wbr>strategy_<wbr>qa"
    assert str(breakable('<b x="1">a.b</b>')) == "&lt;b x=&#34;1&#34;&gt;a.<wbr>b&lt;/<wbr>b&gt;"


def test_report_shows_chance_beside_the_mean(long_html: Path) -> None:
    html = long_html.read_text()
    assert header_cells(html, "per-task")[:7] == ["task", "phrasings", "degenerate", "docs", "mean", "chance", "constant"]
    per_task = html[html.index('<table id="per-task">') :]
    per_task = per_task[: per_task.index("</table>")]
    rows = {re.sub(r"<wbr>", "", m[0]): m[1] for m in re.findall(r'<tr><td class="id">(.*?)</td>(.*?)</tr>', per_task)}
    assert '<td class="num">0.500</td>' in rows[LONG]
    assert '<td class="num">0.250</td>' in rows["bbl.parsinlu_reading_comprehension"]
    assert '<td class="num">–</td>' in rows["bbl.play_dialog_same_or_different"]  # no options recorded
    assert "expected score of an option picked at random" in html


def test_report_without_option_scores_has_no_chance_column(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "20260101T000000Z_toy-model_plain1", {("nli.toy", "nli.p1"): [1, 0], ("nli.toy", "nli.p2"): [1, 1]})
    html = write_html(run, tmp_path / "out")
    assert "chance" not in header_cells(html, "per-task")
    # MaxP and AvgP repeat the max and mean columns: said in the caption, not drawn twice.
    assert "MaxP" not in header_cells(html, "per-task") and "MaxP (best phrasing) and AvgP (mean)" in html


def test_report_ids_wrap_and_stay_escaped(tmp_path: Path) -> None:
    run = write_run_folder(
        tmp_path / "20260101T000000Z_toy-model_hostile",
        {("nli.a_b", "<i>p.1</i>"): [1, 0], ("nli.a_b", "nli.p2"): [1, 1]},
        prompts={"nli.p2": HOSTILE},
    )
    html = write_html(run, tmp_path / "out")
    assert '<td class="id">nli.<wbr>a_<wbr>b</td>' in html
    assert "&lt;i&gt;p.<wbr>1&lt;/<wbr>i&gt;" in html and "<i>p.1</i>" not in html
    assert "<script" not in html


def test_heatmap_section_says_which_picture_it_shows(long_html: Path, tmp_path: Path) -> None:
    html = long_html.read_text()
    assert "Phrasing × document, per task" in html and "No phrasing is run on two tasks" in html
    shared = {("t.a", "shared.p1"): [1.0, 0.0], ("t.b", "shared.p1"): [1.0, 1.0], ("t.a", "t.a.own"): [0.0, 0.0]}
    html = write_html(write_run_folder(tmp_path / "20260101T000000Z_toy-model_shared", shared), tmp_path / "out")
    assert '<h2 id="heatmap">Phrasing × task</h2>' in html and "each of the 1 phrasing(s) run on two or more tasks" in html


def _measure(html: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """Lay the page out in headless Chromium in a viewport ``width`` px wide and read back what overflows.

    The report has no script; a copy gets one that writes its measurements into the page around
    it, which ``--dump-dom`` prints after layout. The copy is shown in an iframe of that width
    because a headless window is never narrower than 500 px.
    """
    assert CHROMIUM
    probe = """<script>
const tables = [...document.querySelectorAll('.scroll')].map(d => ({
  id: (d.querySelector('table') || {}).id || '', box: d.clientWidth, table: d.scrollWidth }));
parent.document.body.setAttribute('data-probe', JSON.stringify(
  {viewport: window.innerWidth, page: document.documentElement.scrollWidth, tables}));
</script>"""
    (tmp_path / "probe.html").write_text(html.read_text().replace("</body>", probe + "</body>"))
    frame = tmp_path / f"frame_{width}.html"
    iframe = f'<iframe src="probe.html" style="width:{width}px;height:1500px;border:0"></iframe>'
    frame.write_text(f'<!DOCTYPE html><html><body style="margin:0">{iframe}</body></html>')
    result = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--allow-file-access-from-files", f"--window-size={max(width, 500) + 40},1600", "--dump-dom", frame.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert found, result.stdout[-2000:]
    measured: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["viewport"] == width
    return measured


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (bash scripts/install-browser.sh installs it)")
def test_main_tables_fit_a_1400px_window_and_the_page_fits_a_phone(long_html: Path, tmp_path: Path) -> None:
    wide = _measure(long_html, 1400, tmp_path)
    assert wide["page"] <= 1400
    by_id = {t["id"]: t for t in wide["tables"]}
    for table in ("per-task", "per-task-best", "seen-unseen-table", "variance-table"):
        assert by_id[table]["table"] <= by_id[table]["box"], f"{table} needs a horizontal scroll at 1400 px: {by_id[table]}"
    phone = _measure(long_html, 390, tmp_path)
    # Only the wide tables (and plots) scroll, inside their own boxes; the page itself does not.
    assert phone["page"] <= 390, phone


def test_compare_html_wraps_long_ids_and_boxes_its_plots(tmp_path: Path) -> None:
    from harness.report.compare import write_compare

    table = {(LONG, f"{LONG}.w{k}"): [float((i + k) % 2) for i in range(6)] for k in range(4)}
    flipped = {key: [1.0 - v for v in values] for key, values in table.items()}
    runs = [
        write_run_folder(tmp_path / "20260101T000000Z_m_a00001", table, model="model-a"),
        write_run_folder(tmp_path / "20260101T000000Z_m_b00001", flipped, model="model-b"),
    ]
    paths = write_compare([load_run(r) for r in runs], tmp_path / "cmp", n_boot=20)
    html = paths["compare.html"].read_text()
    assert '<td class="id">bbl.<wbr>formal_<wbr>fallacies_<wbr>syllogisms_<wbr>negation</td>' in html
    assert '<div class="plotbox"><img class="plot" src="data:image/png;base64,' in html
    assert "<script" not in html and not re.search(r'(src|href)="(https?:)?//', html)
