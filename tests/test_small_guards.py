"""Bad input that used to pass silently or end in a traceback: one line each, nothing lost."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_registry import GOOD, make_root, problems_of


def test_tasks_that_name_nothing_are_an_error_not_the_default() -> None:
    import harness
    from harness.api import InvalidRequest
    from harness.cli import main

    result = CliRunner().invoke(main, ["run", "--tasks", ",", "--model", "irh-fake"])
    assert result.exit_code != 0 and "names no task" in result.output
    with pytest.raises(InvalidRequest, match="names no task"):
        harness.run(" , ", models="irh-fake")


def test_an_unwritable_reports_folder_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    import harness
    from harness.api import InvalidRequest

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(
        InvalidRequest, match=r"cannot write run folders under .*a-file/reports \(Not a directory\); choose another --reports-dir"
    ):
        harness.run("commonsense.copa", models="no-such-backend:pretrained=x", reports_dir=blocker / "reports")


def test_a_key_given_twice_in_a_registry_file_is_a_problem_line(tmp_path: Path) -> None:
    twice = GOOD.replace(
        '    text: "{{ question }} Answer yes or no."\n',
        '    text: "{{ question }} Answer yes or no."\n    text: "{{ question }} Yes or no?"\n',
    )
    [problem] = problems_of(make_root(tmp_path, {"a.yaml": twice}))
    assert "key 'text' given twice (lines 5 and 6)" in problem and "toy.yesno.w01" in problem


def test_a_results_file_with_a_huge_line_is_refused_at_once(tmp_path: Path) -> None:
    from harness.report.imports import MAX_LINE_BYTES, ImportProblem, read_long_csv

    path = tmp_path / "results.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("model,task,instruction_id,status,doc_id,correct\n")
        fh.write("m,t,i,unobserved,d1,1\n")
        fh.write("m,t,i,unobserved," + "x" * (MAX_LINE_BYTES + 10) + ",1\n")
    with pytest.raises(ImportProblem, match=r"results\.csv:3: a line longer than"):
        read_long_csv(path)


def test_sigterm_during_tuning_is_an_interrupt_and_the_handler_is_restored() -> None:
    from harness.tune.train import _sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let the signal be delivered here
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("content", ["", "[]", '{"schema_version": 1, "run_id": "x", "sta', '{"schema_version": 1, "run_id": 5}'])
def test_a_damaged_run_json_is_one_line_for_report_and_resume(tmp_path: Path, content: str) -> None:
    from harness.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(content)
    for args in (["report", str(run)], ["run", "--resume", str(run)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code != 0 and not isinstance(result.exception, (KeyError, ValueError, AttributeError)), result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "run.json is damaged" in lines[0], result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_rank_stops_when_its_launcher_is_killed(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    marker = tmp_path / "rank-stopped"
    rank = (
        "import signal, sys, time\n"
        "from harness.parallel import die_with_launcher\n"
        "def stop(signum, frame):\n"
        "    raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "try:\n"
        "    die_with_launcher()\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        f"    open({str(marker)!r}, 'w').write('interrupted')\n"
        "    sys.exit(130)\n"
    )
    launcher = (
        "import os, subprocess, sys, time\n"
        f"env = {{**os.environ, 'IRH_LAUNCHER_PID': str(os.getpid())}}\n"
        f"child = subprocess.Popen([sys.executable, '-c', {rank!r}], env=env)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    time.sleep(2)  # the rank has made its request (or, if slower, finds the launcher gone)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15
    # The marker is opened before it is written: wait for its text, not for the file.
    while time.monotonic() < deadline and not (marker.exists() and marker.read_text()):
        time.sleep(0.1)
    assert marker.read_text() == "interrupted"
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(child_pid, 0)
            time.sleep(0.1)


def test_every_user_error_is_one_harness_error_and_one_line() -> None:
    """The CLI's one-line rule is one base class: each error type a user can fix derives from
    HarnessError (keeping its built-in base), and an unknown task id is one too."""
    from harness.api import InvalidRequest, RunStopped
    from harness.backends.models import ModelError
    from harness.budget import BudgetError
    from harness.cli import user_error_message
    from harness.data.cache import DataMissing
    from harness.errors import HarnessError, UnknownName
    from harness.importers import ObservedSourceError
    from harness.nli.examples import NLIStudyError
    from harness.plan import PlanError
    from harness.registry import RegistryError, load_registry
    from harness.render import TemplateProblem
    from harness.report.compare import CompareProblem
    from harness.report.imports import ImportProblem
    from harness.results import RunError
    from harness.tune.record import TuneError

    kinds = [InvalidRequest, RunStopped, ModelError, BudgetError, DataMissing, ObservedSourceError, NLIStudyError, PlanError]
    kinds += [RegistryError, TemplateProblem, CompareProblem, ImportProblem, RunError, TuneError]
    assert all(issubclass(kind, HarnessError) for kind in kinds)
    assert issubclass(PlanError, ValueError) and issubclass(RunError, RuntimeError)  # old catchers still catch
    with pytest.raises(UnknownName) as caught:
        load_registry().task("no.such.task")
    assert isinstance(caught.value, KeyError)
    assert user_error_message(caught.value) == str(caught.value) and str(caught.value).startswith("unknown task 'no.such.task'")
    assert user_error_message(KeyError("unknown thing")) is None  # a bare KeyError is a bug: traceback
    assert user_error_message(ValueError("x")) is None
