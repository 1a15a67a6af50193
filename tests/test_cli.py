"""Every verb answers a user's mistake in one line, without a traceback; a bug keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent


def _refuses(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(main, args)
    # A user error ends in click's own exit (status 1), never in an exception escaping the verb.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.output
    for text in expected:
        assert text in last, result.output
    return last


def test_list_instructions_unknown_task(cache: Path) -> None:
    _refuses(["list", "instructions", "--task", "nli.foo"], "unknown task 'nli.foo'", "Did you mean nli.cb")


def test_validate_unknown_observed_source(cache: Path) -> None:
    _refuses(["validate", "--docs", "0", "--observed", "nosuch"], "unknown observed source 'nosuch'")


def test_show_unknown_phrasing(cache: Path) -> None:
    _refuses(["show", "bbl.strategyqa.w999"], "unknown phrasing 'bbl.strategyqa.w999'")


def test_render_unknown_task(cache: Path) -> None:
    _refuses(["render", "--task", "nli.foo", "--instruction", "nli.cb.w01", "--no-chat"], "unknown task 'nli.foo'")


def test_render_missing_model_folder(cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    args = ["render", "--task", "bbl.strategyqa", "--instruction", "bbl.strategyqa.w03", "-n", "1", "--model", f"hf:pretrained={missing}"]
    _refuses(args, f"model folder {missing} does not exist")


def test_data_fetch_unknown_name(cache: Path) -> None:
    _refuses(["data", "fetch", "bbll"], "unknown data name 'bbll'", "Did you mean bbl")


@pytest.mark.parametrize(
    ("selector", "hint"),
    [
        ("bbll", "Did you mean bbl?"),
        ("bbll.*", "Did you mean bbl.*?"),
        ("nli.foo", "Did you mean nli.cb"),
        ("mmlu.anatomyy", "mmlu.anatomy"),
    ],
)
def test_run_unknown_tasks_say_what_was_meant(cache: Path, tmp_path: Path, selector: str, hint: str) -> None:
    _refuses(["run", "--model", "irh-fake", "--tasks", selector, "--reports-dir", str(tmp_path / "r")], hint)
    assert not (tmp_path / "r").exists()


def test_run_missing_model_folder_says_so(cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "model"
    args = ["run", "--model", f"hf:pretrained={missing},device=cpu", "--tasks", "bbl.strategyqa", "--reports-dir", str(tmp_path / "r")]
    last = _refuses(args, f"model folder {missing} does not exist")
    assert "Repo id must be" not in last


def test_run_hub_model_not_available_offline(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty local hub cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    args = [
        "run",
        "--model",
        "hf:pretrained=someone/not-downloaded,device=cpu",
        "--tasks",
        "bbl.strategyqa",
        "--reports-dir",
        str(tmp_path),
    ]
    _refuses(args, "someone/not-downloaded is neither a local folder nor in the local Hugging Face cache", "HF_HUB_OFFLINE")


def test_report_not_a_run_folder(tmp_path: Path) -> None:
    _refuses(["report", str(tmp_path)], "is not a run folder")


def test_compare_not_run_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _refuses(["compare", str(tmp_path / "a"), str(tmp_path / "b")])


def test_import_list_unknown_source() -> None:
    _refuses(["import", "list", "nosuch"], "unknown observed source 'nosuch'")


def test_bench_unknown_task(cache: Path) -> None:
    _refuses(["bench", "--tasks", "nli.foo", "--work-only"], "unknown task 'nli.foo'")


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.registry

    def broken(*_: object, **__: object) -> None:
        raise KeyError("not a lookup the user asked for")

    monkeypatch.setattr(harness.registry, "load_registry", broken)
    result = CliRunner().invoke(main, ["list", "tasks"])
    assert isinstance(result.exception, KeyError)


def test_commands_without_a_model_import_no_heavy_library(cache: Path) -> None:
    """`irh list`, `irh validate` and `irh render --no-chat` never load torch, transformers or lm-eval."""
    code = (
        "import sys, harness.cli\n"
        "for args in (['list', 'tasks'], ['list', 'instructions', '--task', 'bbl.strategyqa'], ['validate', '--docs', '1'],\n"
        "             ['render', '--task', 'bbl.strategyqa', '--instruction', 'bbl.strategyqa.w03', '-n', '1', '--no-chat'],\n"
        "             ['show', 'bbl.strategyqa.w03'], ['data', 'list']):\n"
        "    try:\n"
        "        harness.cli.main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'lm_eval', 'datasets', 'scipy', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
