"""Data-parallel runs (`irh run --processes N`): the same rows and report as one process, and
nothing lost or repeated when a rank is killed and the run is resumed with any number of
processes. The ranks are real processes joined by torch.distributed (gloo) on localhost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import MANIFEST, SAMPLES, iter_samples, read_manifest

pytest.importorskip("torch.distributed")

REPO = Path(__file__).resolve().parent.parent

# 2 tasks x 3 phrasings x 5 documents = 30 rows in 18 chunks of at most 2 documents.
ARGS = ["--model", "irh-fake", "--tasks", "bbl.strategyqa,nli.rte", "--limit", "5", "--max-instructions", "3", "--chunk-size", "2"]
ROWS = 30


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    return result.exit_code, result.output


def _only_run(reports: Path) -> Path:
    (run_dir,) = list(reports.iterdir())
    return run_dir


def _reference(tmp_path: Path) -> Path:
    code, out = _run(*ARGS, "--reports-dir", str(tmp_path / "one"))
    assert code == 0, out
    return _only_run(tmp_path / "one")


def test_two_processes_write_the_rows_and_report_of_one(cache: Path, tmp_path: Path) -> None:
    one = _reference(tmp_path)
    code, out = _run(*ARGS, "--processes", "2", "--reports-dir", str(tmp_path / "two"))
    assert code == 0, out
    two = _only_run(tmp_path / "two")
    assert read_manifest(two).status == "complete"
    # Same rows, same numbers, same order: byte for byte.
    assert (two / SAMPLES).read_bytes() == (one / SAMPLES).read_bytes()
    assert len(list(iter_samples(two))) == ROWS
    for name in ("per_instruction.csv", "per_task.csv"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    # The model is recorded as the ranks loaded it; the shards are gone.
    manifest = read_manifest(two)
    assert manifest.model["chat_template_sha256"] == read_manifest(one).model["chat_template_sha256"]
    assert manifest.chat_template_applied == read_manifest(one).chat_template_applied
    assert not (two / "shards").exists()


KILL_RANK_1 = """
import os, signal, sys

from harness import parallel

rank = int(next(a for a in sys.argv if a.startswith("--rank=")).split("=")[1])
original = parallel.ShardWriter.write
flushes = {"n": 0}


def write(self, rows):
    flushes["n"] += 1
    if rank == 1 and flushes["n"] == 2:
        # Half of the second chunk's first row on disk, then gone: a torn shard line.
        first = rows[0].model_dump_json().encode()
        self._fh.write(first[: len(first) // 2])
        self._fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, rows)


parallel.ShardWriter.write = write
parallel.main(sys.argv[1:])
"""


def _kill_rank_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.parallel

    wrapper = tmp_path / "kill_rank_1.py"
    wrapper.write_text(KILL_RANK_1)

    def command(run_dir: Path, rank: int, world_size: int, port: int) -> list[str]:
        return [sys.executable, str(wrapper), str(run_dir), f"--rank={rank}", f"--world-size={world_size}", f"--port={port}"]

    monkeypatch.setattr(harness.parallel, "worker_command", command)


@pytest.mark.parametrize("resume_processes", ["1", "3"])
def test_a_killed_rank_is_completed_by_resume(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resume_processes: str) -> None:
    reference = list(iter_samples(_reference(tmp_path)))
    expected = {row.key: row for row in reference}
    with monkeypatch.context() as patch:
        _kill_rank_1(tmp_path, patch)
        code, out = _run(*ARGS, "--processes", "2", "--no-report", "--reports-dir", str(tmp_path / "killed"))
    assert code == 1
    assert "rank 1 (pid" in out and "was killed by SIGKILL" in out and "irh run --resume" in out
    run_dir = _only_run(tmp_path / "killed")
    manifest = read_manifest(run_dir)
    assert manifest.status == "failed" and "SIGKILL" in (manifest.error or "")
    kept = list(iter_samples(run_dir))
    # Every flushed chunk was merged (rank 1's first one at least); the torn row was not.
    assert 2 <= len(kept) < ROWS
    assert not (run_dir / "shards").exists()

    code, out = _run("--resume", str(run_dir), "--processes", resume_processes, "--no-report")
    assert code == 0, out
    rows = list(iter_samples(run_dir))
    assert len(rows) == ROWS
    assert {row.key: row for row in rows} == expected
    assert rows == reference  # in the single-process order, whatever the kill left
    assert read_manifest(run_dir).status == "complete"


def test_a_one_process_run_resumes_with_two(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = {row.key: row for row in iter_samples(_reference(tmp_path))}
    monkeypatch.setenv("IRH_FAKE_FAIL_AFTER", "20")
    code, out = _run(*ARGS, "--no-report", "--reports-dir", str(tmp_path / "failed"))
    assert code == 1 and "run failed" in out
    monkeypatch.delenv("IRH_FAKE_FAIL_AFTER")
    run_dir = _only_run(tmp_path / "failed")
    assert 0 < len(list(iter_samples(run_dir))) < ROWS
    code, out = _run("--resume", str(run_dir), "--processes", "2")
    assert code == 0, out
    rows = list(iter_samples(run_dir))
    assert len(rows) == ROWS and {row.key: row for row in rows} == expected
    assert (run_dir / "report.md").exists() and (run_dir / MANIFEST).exists()


def test_torchrun_completes_a_prepared_run(cache: Path, tmp_path: Path) -> None:
    """The multi-machine route: `irh run --prepare-only`, then every rank under a launcher
    (here torchrun, 2 ranks on this machine) runs `python -m harness.parallel RUN_DIR`."""
    one = _reference(tmp_path)
    code, out = _run(*ARGS, "--prepare-only", "--no-report", "--reports-dir", str(tmp_path / "launched"))
    assert code == 0, out
    run_dir = _only_run(tmp_path / "launched")
    assert read_manifest(run_dir).status == "interrupted" and not list(iter_samples(run_dir))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "harness.parallel", str(run_dir)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run complete" in proc.stderr
    assert read_manifest(run_dir).status == "complete"
    assert (run_dir / SAMPLES).read_bytes() == (one / SAMPLES).read_bytes()
    assert not (run_dir / "shards").exists()
