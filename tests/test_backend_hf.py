"""lm-eval's real hf backend on a tiny randomly initialised Llama built here (no hub, no files).

Proves that `irh render` shows exactly the context lm-eval scores, with and without the
chat template and with the phrasing in the system turn, and that a real run works.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.backends.lm_eval import evaluate_chunk
from harness.backends.models import load_model, parse_model_spec
from harness.cli import main
from harness.data.catalog import load_documents
from harness.registry import Registry
from harness.render import option_scores, render_prompt
from harness.results import iter_samples, read_manifest
from harness.view import chat_messages, chat_renderer


@pytest.mark.parametrize("placement,chat", [("user", True), ("system", True), ("none", False)])
def test_render_equals_the_context_lm_eval_scores(tiny_model: Path, cache: Path, registry: Registry, placement: str, chat: bool) -> None:
    spec = parse_model_spec(f"hf:pretrained={tiny_model},dtype=float32", batch_size=4)
    model = load_model(spec)
    task = registry.task("bbl.strategyqa")
    docs = load_documents("bbl.strategyqa", "test")[:3]
    # A phrasing that opens with instructions, so that the system turn is not empty.
    entry = next(e for e in registry.instructions_for(task.id) if render_prompt(e.instruction, task, docs[0], "system").system)
    prompts = [render_prompt(entry.instruction, task, d, placement) for d in docs]
    scored = evaluate_chunk(
        model.lm,
        name="t",
        task=task,
        instruction=entry.instruction,
        docs=docs,
        prompts=prompts,
        option_scores=[option_scores(task, d) for d in docs],
        placement=placement,
        chat=chat,
        seed=1,
    )
    renderer = chat_renderer(f"hf:pretrained={tiny_model}")
    assert renderer is not None
    for prompt, result in zip(prompts, scored, strict=True):
        expected = renderer(chat_messages(prompt)) if chat else prompt.user
        assert result.context == expected
        assert result.loglikelihoods is not None and all(ll < 0 for ll in result.loglikelihoods)
        # With a chat template lm-eval drops the space before the options.
        assert result.options == [("" if chat else " ") + o for o in prompt.options]
    if placement == "system":
        assert "<|im_start|>system\n" in scored[0].context

    # And the CLI prints that same text.
    out = CliRunner().invoke(
        main,
        [
            "render",
            "--task",
            "bbl.strategyqa",
            "--instruction",
            entry.id,
            "-n",
            "3",
            "--placement",
            placement if chat else "user",
            "--model",
            f"hf:pretrained={tiny_model}",
        ],
    )
    assert out.exit_code == 0, out.output
    for result in scored:
        assert result.context in out.output


def test_real_run_on_a_tiny_model_with_generation(tiny_model: Path, cache: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--model",
            f"hf:pretrained={tiny_model},dtype=float32",
            "--tasks",
            "bbl.strategyqa,bbl.auto_debugging",
            "--limit",
            "3",
            "--max-instructions",
            "2",
            "--reports-dir",
            str(tmp_path / "reports"),
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "reports").iterdir())
    manifest = read_manifest(run_dir)
    assert manifest.chat_template_applied
    assert manifest.model["chat_template_sha256"]
    rows = list(iter_samples(run_dir))
    assert len(rows) == 2 * 2 * 3
    gen = [r for r in rows if r.task == "bbl.auto_debugging"]
    assert all(r.generation is not None and r.loglikelihoods is None and r.targets for r in gen)
    assert all(r.score == float(r.generation.strip() in [t.strip() for t in r.targets or []]) for r in gen)


@pytest.mark.parametrize(
    "text,line",
    [
        ("hf:pretraned={m}", "unknown model argument pretraned= for hf (did you mean pretrained=?)"),
        ("irh-fast:pretraned={m}", "unknown model argument pretraned= for irh-fast (did you mean pretrained=?)"),
        ("hf:pretrained={m},dtyp=float32", "unknown model argument dtyp= for hf (did you mean dtype=?)"),
        ("irh-fast:pretrained={m},frobnicate=1", "unknown model argument frobnicate= for irh-fast: neither the backend nor"),
    ],
)
def test_a_misspelt_model_argument_is_one_line(tiny_model: Path, cache: Path, tmp_path: Path, text: str, line: str) -> None:
    args = ["run", "--model", text.format(m=tiny_model), "--tasks", "nli.rte", "--limit", "2", "--reports-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    # The plan's seen line and "loading model ...", then the error in one line.
    errors = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and line in errors[0] and result.output.rstrip().endswith(errors[0]), result.output
    assert len(result.output.strip().splitlines()) == 3, result.output
    assert "Traceback" not in result.output and not list((tmp_path / "r").glob("*"))
