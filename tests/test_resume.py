"""A run that dies part way keeps its rows, and --resume completes it without duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import SAMPLES, iter_samples, read_manifest

ARGS = [
    "run",
    "--model",
    "irh-fake",
    "--tasks",
    "bbl.strategyqa,bbl.winowhy",
    "--limit",
    "6",
    "--max-instructions",
    "2",
    "--chunk-size",
    "2",
]


def _run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*ARGS, "--reports-dir", str(tmp_path / "reports"), *extra])
    return result.exit_code, result.output


def _complete_rows(tmp_path: Path) -> set[tuple[str, str, str]]:
    code, out = _run(tmp_path / "reference")
    assert code == 0, out
    (ref,) = list((tmp_path / "reference" / "reports").iterdir())
    return {r.key for r in iter_samples(ref)}


@pytest.mark.parametrize("kind,status", [("error", "failed"), ("interrupt", "interrupted")])
def test_resume_after_crash_completes_without_loss_or_repeats(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, status: str
) -> None:
    expected = _complete_rows(tmp_path)
    assert len(expected) == 2 * 2 * 6
    # Each strategyqa/winowhy document costs 2 requests; die in the middle of the 4th chunk.
    monkeypatch.setenv("IRH_FAKE_FAIL_AFTER", f"13:{kind}")
    code, out = _run(tmp_path)
    assert code == 1
    assert "irh run --resume" in out
    (run_dir,) = list((tmp_path / "reports").iterdir())
    assert read_manifest(run_dir).status == status
    partial = [r.key for r in iter_samples(run_dir)]
    assert len(partial) == 6  # three whole chunks of two documents
    assert set(partial) <= expected

    monkeypatch.delenv("IRH_FAKE_FAIL_AFTER")
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = [r.key for r in iter_samples(run_dir)]
    assert len(rows) == len(set(rows)) == len(expected)
    assert set(rows) == expected
    assert read_manifest(run_dir).status == "complete"
    assert (run_dir / "report.md").exists()


def test_torn_last_line_is_cut_and_redone(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRH_FAKE_FAIL_AFTER", "8")
    code, _ = _run(tmp_path)
    assert code == 1
    (run_dir,) = list((tmp_path / "reports").iterdir())
    before = [r.key for r in iter_samples(run_dir)]
    # A kill in the middle of a write leaves half a line behind.
    with open(run_dir / SAMPLES, "a", encoding="utf-8") as fh:
        fh.write('{"task": "bbl.strategyqa", "instruction_id": "x", "doc')
    assert [r.key for r in iter_samples(run_dir)] == before
    monkeypatch.delenv("IRH_FAKE_FAIL_AFTER")
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = [r.key for r in iter_samples(run_dir)]
    assert len(rows) == len(set(rows)) == 24
    assert all(line.endswith("}") for line in (run_dir / SAMPLES).read_text().splitlines())


def test_resume_refuses_a_phrasing_whose_text_changed(cache: Path, tmp_path: Path) -> None:
    code, _ = _run(tmp_path)
    assert code == 0
    (run_dir,) = list((tmp_path / "reports").iterdir())
    manifest_path = run_dir / "run.json"
    text = manifest_path.read_text()
    inst_id = read_manifest(run_dir).plan[0][1]
    sha = read_manifest(run_dir).instructions[inst_id].sha256
    manifest_path.write_text(text.replace(sha, "0" * 64))
    rows_before = (run_dir / SAMPLES).read_bytes()
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 1
    assert f"phrasing {inst_id} changed" in result.output
    assert (run_dir / SAMPLES).read_bytes() == rows_before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not a run folder" in result.output


def test_torn_multibyte_character_is_cut_too(tmp_path: Path) -> None:
    from harness.results import SampleRow

    row = SampleRow(
        task="t",
        instruction_id="i",
        instruction_sha256="0",
        status="unobserved",
        seen=False,
        doc_id="d",
        prompt="Какой ответ? 🐻",
        score=1.0,
        correct=True,
    )
    data = (row.model_dump_json() + "\n").encode("utf-8")
    torn = data + data[: data.index("🐻".encode()) + 2]  # cut inside the 4-byte emoji
    (tmp_path / SAMPLES).write_bytes(torn)
    assert [r.prompt for r in iter_samples(tmp_path)] == ["Какой ответ? 🐻"]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    from harness.results import RunError, SampleWriter

    with SampleWriter(tmp_path):
        with pytest.raises(RunError, match="being written by another irh process"):
            SampleWriter(tmp_path)
    with SampleWriter(tmp_path):  # free again once the first is closed
        pass


def test_resume_refuses_a_task_whose_spec_changed(cache: Path, tmp_path: Path) -> None:
    code, _ = _run(tmp_path)
    assert code == 0
    (run_dir,) = list((tmp_path / "reports").iterdir())
    manifest_path = run_dir / "run.json"
    sha = read_manifest(run_dir).tasks["bbl.winowhy"].spec_sha256
    assert sha
    manifest_path.write_text(manifest_path.read_text().replace(sha, "1" * 64))
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 1
    assert "task bbl.winowhy changed" in result.output
