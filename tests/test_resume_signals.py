"""Resume after real signals: a real `irh run` process is killed (SIGKILL, SIGTERM) at chosen
points, then `irh run --resume` must give exactly the rows of an uninterrupted run.

Kill points are reached deterministically: a small wrapper script (written per test) patches
the fake model or the sample writer to send the signal to its own process at the chosen
request or flush; the kernel delivers it as it would an outside `kill`. The tests that kill
from outside slow the fake model down and wait for flushed rows before sending the signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import HEARTBEAT, MANIFEST, SAMPLES, RunError, SampleWriter, check_liveness, iter_samples, read_manifest

REPO = Path(__file__).resolve().parent.parent

# 2 tasks x 2 phrasings x 6 documents = 24 rows in 12 chunks of 2 documents; each of these
# documents is a two-option question, so 4 fake-model requests per chunk, 48 in all.
ARGS = [
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
    "--no-report",
]
ROWS = 24
REQUESTS = 48

# Runs `irh` with kill points: IRH_TEST_KILL="write:N:SIG" sends SIG after the N-th chunk is
# flushed, "request:N:SIG" when the fake model answers its N-th request (inside a chunk,
# before its rows are written), "torn:N:KILL" writes half of the N-th chunk's first row and dies.
# IRH_TEST_DELAY slows every fake request down (seconds); IRH_TEST_PAUSE="N:GATE" holds the run
# after its N-th flush until the file GATE exists: kills from outside at a known point.
WRAPPER = """
import os, signal, sys, time

from harness.backends.fake import FakeLM
from harness.results import SampleWriter

where, _, rest = os.environ.get("IRH_TEST_KILL", "").partition(":")
count, _, sig = rest.partition(":")
count = int(count or 0)
signum = getattr(signal, "SIG" + (sig or "KILL"))
delay = float(os.environ.get("IRH_TEST_DELAY", "0"))
pause_at, _, gate = os.environ.get("IRH_TEST_PAUSE", "").partition(":")
seen = {"write": 0, "request": 0}

original_write = SampleWriter.write
original_tick = FakeLM._tick


def write(self, rows):
    seen["write"] += 1
    if where == "torn" and seen["write"] == count:
        first = rows[0].model_dump_json().encode()
        self._fh.write(first[: len(first) // 2])
        self._fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    original_write(self, rows)
    if where == "write" and seen["write"] == count:
        os.kill(os.getpid(), signum)
    if pause_at and seen["write"] == int(pause_at):
        # Hold the run here, alive and locked, until the test kills it (or makes the gate file).
        while not os.path.exists(gate):
            time.sleep(0.01)


def tick(self):
    seen["request"] += 1
    if delay:
        time.sleep(delay)
    if where == "request" and seen["request"] == count:
        os.kill(os.getpid(), signum)
    original_tick(self)


SampleWriter.write = write
FakeLM._tick = tick

from harness.cli import main

main(prog_name="irh")
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)  # carries IRH_CACHE_DIR from the cache fixture
    env.pop("IRH_FAKE_FAIL_AFTER", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _start(tmp_path: Path, reports: Path, **env: str) -> subprocess.Popen[str]:
    wrapper = tmp_path / "irh_with_kill_points.py"
    wrapper.write_text(WRAPPER)
    return subprocess.Popen(
        [sys.executable, str(wrapper), "run", *ARGS, "--reports-dir", str(reports)],
        cwd=REPO,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    # A guard against a hung child, not a measure of speed.
    out, _ = proc.communicate(timeout=300)
    return out


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return sorted((r.model_dump() for r in iter_samples(run_dir)), key=lambda r: (r["task"], r["instruction_id"], r["doc_id"]))


def _reference(tmp_path: Path) -> list[dict[str, Any]]:
    """The rows of an uninterrupted run, made in ``tmp_path / "reference"``."""
    reports = tmp_path / "reference"
    result = CliRunner().invoke(main, ["run", *ARGS, "--reports-dir", str(reports)])
    assert result.exit_code == 0, result.output
    (ref,) = list(reports.iterdir())
    rows = _rows(ref)
    assert len(rows) == ROWS
    return rows


def _only_run(reports: Path) -> Path:
    (run_dir,) = list(reports.iterdir())
    return run_dir


def _resume_and_compare(run_dir: Path, expected: list[dict[str, Any]]) -> str:
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--no-report"])
    assert result.exit_code == 0, result.output
    keys = [(r.task, r.instruction_id, r.doc_id) for r in iter_samples(run_dir)]
    assert len(keys) == len(set(keys)) == ROWS  # none repeated, none lost
    assert _rows(run_dir) == expected  # row by row, the same as an uninterrupted run
    assert read_manifest(run_dir).status == "complete"
    # A finished folder holds no lock file and no heartbeat.
    assert not (run_dir / HEARTBEAT).exists()
    assert not (run_dir / ".lock").exists()
    return result.output


@pytest.mark.parametrize(
    "kill_at,rows_left",
    [
        ("write:1:KILL", 2),  # right after the first chunk is flushed
        (f"request:{REQUESTS - 2}:KILL", ROWS - 2),  # inside the last chunk
        ("torn:4:KILL", 6),  # half-way through writing the 4th chunk: a torn last line
    ],
)
def test_sigkill_then_resume_gives_the_uninterrupted_rows(cache: Path, tmp_path: Path, kill_at: str, rows_left: int) -> None:
    expected = _reference(tmp_path)
    proc = _start(tmp_path, tmp_path / "reports", IRH_TEST_KILL=kill_at)
    out = _finish(proc)
    assert proc.returncode == -signal.SIGKILL, out
    run_dir = _only_run(tmp_path / "reports")
    partial = _rows(run_dir)
    assert len(partial) == rows_left
    assert all(row in expected for row in partial)
    # kill -9 gets no say: the manifest still claims `running`, and the heartbeat tells why not.
    assert read_manifest(run_dir).status == "running"
    liveness = check_liveness(run_dir)
    assert liveness.state == "abandoned"
    assert liveness.heartbeat is not None and liveness.heartbeat.pid == proc.pid
    assert f"pid {proc.pid}" in liveness.message and "no longer alive" in liveness.message
    assert f"irh run --resume {run_dir}" in liveness.message

    out = _resume_and_compare(run_dir, expected)
    assert f"note: run was left `running` by pid {proc.pid}" in out


@pytest.mark.parametrize(
    "kill_at,rows_left",
    [
        (f"request:{REQUESTS - 2}:TERM", ROWS - 2),  # inside the last chunk (mid-way: see the next test)
    ],
)
def test_sigterm_marks_interrupted_then_resume_gives_the_uninterrupted_rows(
    cache: Path, tmp_path: Path, kill_at: str, rows_left: int
) -> None:
    expected = _reference(tmp_path)
    proc = _start(tmp_path, tmp_path / "reports", IRH_TEST_KILL=kill_at)
    out = _finish(proc)
    assert proc.returncode == 1, out
    assert "interrupted; rows so far are kept" in out
    run_dir = _only_run(tmp_path / "reports")
    assert len(_rows(run_dir)) == rows_left
    assert read_manifest(run_dir).status == "interrupted"
    assert not (run_dir / HEARTBEAT).exists()
    assert check_liveness(run_dir).state == "stopped"
    _resume_and_compare(run_dir, expected)


def _wait_for_rows(proc: subprocess.Popen[str], run_dir_parent: Path, rows: int) -> Path:
    """Wait until the child has flushed at least ``rows`` rows (a hang guard, not a timing test)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the slowed-down run ended before it could be killed"
        runs = list(run_dir_parent.iterdir()) if run_dir_parent.exists() else []
        if runs and (runs[0] / SAMPLES).exists() and (runs[0] / SAMPLES).read_bytes().count(b"\n") >= rows:
            return runs[0]
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the run flushed no rows within two minutes")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_live_run_is_told_from_a_killed_one(cache: Path, tmp_path: Path, signum: int) -> None:
    expected = _reference(tmp_path)
    # The child holds after its second flush (4 rows) until it is killed: no race with it.
    proc = _start(tmp_path, tmp_path / "reports", IRH_TEST_PAUSE=f"2:{tmp_path / 'never'}")
    try:
        run_dir = _wait_for_rows(proc, tmp_path / "reports", 4)
        liveness = check_liveness(run_dir)
        assert liveness.state == "writing"
        assert liveness.heartbeat is not None and liveness.heartbeat.pid == proc.pid
        assert f"still being written by pid {proc.pid}" in liveness.message

        report = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path / "partial"), "--no-html", "--bootstrap", "10"])
        assert report.exit_code == 0, report.output
        assert f"warning: run is still being written by pid {proc.pid}" in report.output

        # A resume while it runs is refused in one line and leaves run.json alone.
        manifest_before = (run_dir / MANIFEST).read_bytes()
        refused = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--no-report"])
        assert refused.exit_code == 1
        assert f"being written by another irh process (pid {proc.pid} on host" in refused.output
        assert len(refused.output.strip().splitlines()) == 1, refused.output
        assert (run_dir / MANIFEST).read_bytes() == manifest_before
    finally:
        os.kill(proc.pid, signum)
        out = _finish(proc)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, out
        assert read_manifest(run_dir).status == "running"
        liveness = check_liveness(run_dir)
        assert liveness.state == "abandoned"
        assert f"by pid {proc.pid} on host" in liveness.message and "no longer alive" in liveness.message
        report = CliRunner().invoke(main, ["report", str(run_dir), "--out", str(tmp_path / "partial"), "--no-html", "--bootstrap", "10"])
        assert report.exit_code == 0, report.output
        assert "no longer alive" in report.output and f"irh run --resume {run_dir}" in report.output
    else:
        assert proc.returncode == 1, out
        assert read_manifest(run_dir).status == "interrupted"
        assert check_liveness(run_dir).state == "stopped"
    assert len(_rows(run_dir)) == 4
    _resume_and_compare(run_dir, expected)


def _failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run that died after 3 of its 12 chunks (status failed, 6 rows kept)."""
    monkeypatch.setenv("IRH_FAKE_FAIL_AFTER", "13")
    result = CliRunner().invoke(main, ["run", *ARGS, "--reports-dir", str(tmp_path / "reports")])
    assert result.exit_code == 1, result.output
    monkeypatch.delenv("IRH_FAKE_FAIL_AFTER")
    run_dir = _only_run(tmp_path / "reports")
    assert len(_rows(run_dir)) == 6
    return run_dir


def test_overlapping_resumes_write_each_row_once(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `--resume` that starts while the first is loading its model is refused at once.

    The second resume runs (as a real process) from inside the first one's model loading: the
    moment when the first has decided nothing yet on disk but, before the fix, had already read
    which rows were missing without holding the folder.
    """
    expected = _reference(tmp_path)
    run_dir = _failed_run(tmp_path, monkeypatch)
    import harness.runner

    real_load_model = harness.runner.load_model
    second: dict[str, Any] = {}

    def load_model_while_another_resumes(spec: Any) -> Any:
        before = (run_dir / MANIFEST).read_bytes()
        proc = subprocess.run(
            [sys.executable, "-m", "harness.cli", "run", "--resume", str(run_dir), "--no-report"],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        second.update(code=proc.returncode, err=proc.stderr, manifest_unchanged=(run_dir / MANIFEST).read_bytes() == before)
        return real_load_model(spec)

    monkeypatch.setattr(harness.runner, "load_model", load_model_while_another_resumes)
    _resume_and_compare(run_dir, expected)
    assert second["code"] == 1, second["err"]
    assert f"being written by another irh process (pid {os.getpid()} on host" in second["err"]
    assert len(second["err"].strip().splitlines()) == 1, second["err"]
    assert second["manifest_unchanged"]


def test_resume_refuses_a_model_that_now_resolves_differently(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _failed_run(tmp_path, monkeypatch)
    manifest_path = run_dir / MANIFEST
    data = json.loads(manifest_path.read_text())
    data["model"]["chat_template_sha256"] = "0" * 64  # as if the model's files had changed
    manifest_path.write_text(json.dumps(data))
    manifest_before = manifest_path.read_bytes()
    rows_before = (run_dir / SAMPLES).read_bytes()
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--no-report"])
    assert result.exit_code == 1
    assert "chat_template_sha256 changed" in result.output
    # Refused before anything was scored: rows, status and its recorded error are as they were.
    assert (run_dir / SAMPLES).read_bytes() == rows_before
    assert manifest_path.read_bytes() == manifest_before
    assert not (run_dir / HEARTBEAT).exists()


def test_resume_refuses_another_model_named_on_the_command_line(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _reference(tmp_path)
    run_dir = _failed_run(tmp_path, monkeypatch)
    rows_before = (run_dir / SAMPLES).read_bytes()
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--model", "irh-fake:seed=7", "--no-report"])
    assert result.exit_code == 1
    assert "was run with model irh-fake (irh-fake), not irh-fake:seed=7" in result.output
    assert (run_dir / SAMPLES).read_bytes() == rows_before
    # Naming the run's own model is allowed (and changes nothing).
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--model", "irh-fake", "--no-report"])
    assert result.exit_code == 0, result.output
    assert _rows(run_dir) == expected


def test_a_refused_writer_names_the_holder(tmp_path: Path) -> None:
    with SampleWriter(tmp_path):
        assert json.loads((tmp_path / HEARTBEAT).read_text())["pid"] == os.getpid()
        with pytest.raises(RunError, match=f"being written by another irh process \\(pid {os.getpid()} on host .*no rows flushed yet"):
            SampleWriter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [SAMPLES]  # no lock file, no heartbeat left


def test_a_finished_run_leaves_no_lock_or_heartbeat_and_needs_no_warning(cache: Path, tmp_path: Path) -> None:
    from harness.results import describe_liveness

    _reference(tmp_path)
    run_dir = _only_run(tmp_path / "reference")
    assert not (run_dir / ".lock").exists()
    assert not (run_dir / HEARTBEAT).exists()
    assert describe_liveness(run_dir) is None
    # Folders written by earlier versions keep a `.lock`; a resume tidies it away.
    (run_dir / ".lock").touch()
    result = CliRunner().invoke(main, ["run", "--resume", str(run_dir), "--no-report"])
    assert result.exit_code == 0, result.output
    assert not (run_dir / ".lock").exists()


def test_a_lock_file_unlinked_by_its_last_holder_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder unlinks `.lock` on release; one who opened that file just before must not
    keep writing under it, or a third process would lock a fresh file and write alongside."""
    import fcntl

    from harness.results import LOCK, RunLock

    first = RunLock(tmp_path)
    real_flock = fcntl.flock

    def flock_after_first_lets_go(fd: int, op: int) -> None:
        # The second has opened the first's `.lock`; the first releases before it locks.
        monkeypatch.setattr(fcntl, "flock", real_flock)
        first.release()
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_first_lets_go)
    with RunLock(tmp_path):
        assert (tmp_path / LOCK).exists()
        with pytest.raises(RunError, match="being written by another irh process"):
            RunLock(tmp_path)
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize("host,state,words", [("elsewhere", "unknown", "another machine"), (None, "abandoned", "no heartbeat")])
def test_running_without_a_live_local_writer(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str | None, state: str, words: str
) -> None:
    """A `running` folder whose writer ran on another machine is not called dead (the lock may
    not reach across machines); one with no heartbeat (an older harness) is called abandoned."""
    from harness.results import Heartbeat, describe_liveness

    run_dir = _failed_run(tmp_path, monkeypatch)
    data = json.loads((run_dir / MANIFEST).read_text())
    data["status"] = "running"
    (run_dir / MANIFEST).write_text(json.dumps(data))
    if host is not None:
        beat = Heartbeat(pid=4321, host=host, started="2026-01-01T00:00:00Z", last_flush="2026-01-01T00:01:00Z", rows_written=6)
        (run_dir / HEARTBEAT).write_text(beat.model_dump_json())
    liveness = check_liveness(run_dir)
    assert liveness.state == state
    assert (liveness.rows, liveness.rows_planned) == (6, ROWS)
    message = describe_liveness(run_dir)
    assert message is not None and words in message and "6 of 24 rows are intact" in message
    assert f"irh run --resume {run_dir}" in message
    if host is not None:
        assert "pid 4321 on host elsewhere" in message
