"""The README's count tables: regenerated here and compared, so a stale table fails the tests.

Fix a failure with `irh import readme` (it rewrites only the section between the
`<!-- counts:start -->` and `<!-- counts:end -->` markers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import counts
from harness.cli import main
from harness.counts import END, README_IMPORTERS, START, importer_row, read_section, replace_section, written_table
from harness.data.cache import DataMissing
from harness.data.sources import PROMPTBENCH, PROMPTSOURCE, verify_source
from harness.importers import SourceSpec, run_importers
from harness.registry import Registry

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
STALE = "the README count tables are stale: run `irh import readme`"


def readme_section() -> str:
    section = read_section(README)
    assert section is not None, f"README.md has no {START} ... {END} section: run `irh import readme`"
    return section


def test_written_phrasing_table_is_current(registry: Registry) -> None:
    assert written_table(registry) in readme_section(), STALE


def _offline_path(name: str) -> Path | None:
    """Where the importer reads from without network; skips the test when it cannot."""
    if name == "flan":
        return None  # the installed lm-eval
    pin = {"promptsource": PROMPTSOURCE, "promptbench": PROMPTBENCH}[name]
    try:
        return verify_source(pin)
    except DataMissing:
        pytest.skip(f"{pin.filename} is not in the cache; its README row is checked where it is")


@pytest.mark.parametrize("name", README_IMPORTERS)
def test_importer_row_is_current(registry: Registry, name: str) -> None:
    line = next((line for line in readme_section().splitlines() if line.startswith(f"| {name} |")), None)
    assert line is not None, f"no {name} row in the README counts: run `irh import readme`"
    (result,) = run_importers([SourceSpec(name, _offline_path(name))], dict(registry.tasks), together=False)
    row = importer_row(result)
    if name == "flan" and row.split(" | ")[1] != line.split(" | ")[1]:
        pytest.skip(f"README counts are for {line.split(' | ')[1]}, installed is {result.origin}")
    assert row == line, STALE


def test_replace_section_appends_once_then_replaces() -> None:
    section = f"{START}\nnew\n{END}"
    appended = replace_section("# Title\n\nText.\n", section)
    assert appended == f"# Title\n\nText.\n\n{section}\n"
    replaced = replace_section(appended.replace("new", "old"), section)
    assert replaced == appended
    assert replace_section(f"a\n{START}\nold\n{END}\nb\n", section) == f"a\n{section}\nb\n"


def test_cli_readme_writes_and_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counts, "README_IMPORTERS", ("flan",))  # offline: no cache needed
    readme = tmp_path / "README.md"
    readme.write_text(f"# Project\n\n{START}\n{END}\n\n## After\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["import", "readme", "--readme", str(readme), "--check"])
    assert result.exit_code == 1 and "stale" in result.output
    result = runner.invoke(main, ["import", "readme", "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Project\n\n<!-- counts:start -->") and text.endswith("<!-- counts:end -->\n\n## After\n")
    assert "| flan | lm-eval " in text and "one shared pool" in text
    result = runner.invoke(main, ["import", "readme", "--readme", str(readme), "--check"])
    assert result.exit_code == 0, result.output
