"""`irh tune` on a tiny randomly initialised Llama: losses, splits, adapters, seen flags."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.registry import Registry
from harness.tune.record import TuneError, read_tune_record
from harness.tune.split import check_disjoint, split_phrasings

pytest.importorskip("peft")
torch = pytest.importorskip("torch")

TASK = "bbl.strategyqa"  # 10 fixture documents, 13 phrasings


def _config(tiny_model: Path, out: Path, **overrides: object) -> object:
    from harness.tune.train import TuneConfig

    values: dict[str, object] = {
        "model": str(tiny_model),
        "tasks": (TASK,),
        "method": "lora+kl",
        "out": out,
        "steps": 4,
        "eval_limit": 4,
        "train_docs": 6,
        "dtype": "float32",
        "checkpoint_every": 2,
        "max_length": 128,
    }
    values.update(overrides)
    return TuneConfig(**values)  # type: ignore[arg-type]


def _tune(registry: Registry, tiny_model: Path, out: Path, **overrides: object) -> object:
    from harness.tune.train import prepare_tuning, run_tuning

    return run_tuning(registry, prepare_tuning(registry, _config(tiny_model, out, **overrides)))  # type: ignore[arg-type]


def _examples(registry: Registry, tiny_model: Path, phrasing_ids: list[str]) -> tuple[object, list[object]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data.catalog import load_documents
    from harness.tune.losses import encode_example

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    task = registry.task(TASK)
    doc = load_documents(task.data_name, task.split)[0]
    examples = [
        encode_example(tokenizer, registry.instruction(i).instruction, task, doc, 0, placement="user", chat=True, max_length=1024)
        for i in phrasing_ids
    ]
    return model, examples


def test_kl_is_zero_for_the_same_text_and_positive_for_another(tiny_model: Path, cache: Path, registry: Registry) -> None:
    from harness.tune.losses import batch_loss, option_loglikelihoods

    model, examples = _examples(registry, tiny_model, [f"{TASK}.w01", f"{TASK}.w01", f"{TASK}.w03"])
    lls, counts = option_loglikelihoods(model, examples, pad_id=0)
    same = batch_loss(lls[[0, 1]], counts[[0, 1]], [0, 0], [[0, 1]], kl_weight=1.0)
    other = batch_loss(lls[[0, 2]], counts[[0, 2]], [0, 0], [[0, 1]], kl_weight=1.0)
    assert same.kl == pytest.approx(0.0, abs=1e-6)
    assert other.kl > 1e-6
    assert same.loss.item() == pytest.approx(same.ce, rel=1e-6)


def test_option_loglikelihoods_equal_lm_eval_hf(tiny_model: Path, cache: Path, registry: Registry) -> None:
    """The training scorer and lm-eval's hf backend give the same option log-likelihoods."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from transformers import AutoTokenizer

    from harness.data.catalog import load_documents
    from harness.render import render_prompt
    from harness.tune.losses import option_loglikelihoods
    from harness.view import chat_messages

    model, examples = _examples(registry, tiny_model, [f"{TASK}.w02"])
    ours = option_loglikelihoods(model, examples, pad_id=0)[0][0].tolist()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = registry.task(TASK)
    doc = load_documents(task.data_name, task.split)[0]
    prompt = render_prompt(registry.instruction(f"{TASK}.w02").instruction, task, doc, "user")
    context = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
    lm = get_model("hf").create_from_arg_string(f"pretrained={tiny_model},dtype=float32,device=cpu", {"batch_size": 2})
    requests = [Instance("loglikelihood", {}, (context, o), i) for i, o in enumerate(prompt.options)]
    theirs = [ll for ll, _ in lm.loglikelihood(requests)]
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_loss_decreases_on_a_fixed_batch(tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path) -> None:
    # Every step sees the same 4 documents under every train phrasing: the losses are comparable.
    record = _tune(
        registry,
        tiny_model,
        tmp_path / "a",
        method="lora",
        steps=6,
        train_docs=4,
        docs_per_step=4,
        paraphrases_per_batch=20,
        learning_rate=3e-2,
    )
    losses = [p.loss for p in record.loss_curve]  # type: ignore[attr-defined]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_split_is_recorded_and_disjoint(tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path) -> None:
    _tune(registry, tiny_model, tmp_path / "a", steps=2)
    record = read_tune_record(tmp_path / "a")
    split = record.tasks[TASK]
    ids = [e.id for e in registry.instructions_for(TASK)]
    assert split.original == ids[0] == split.train[0]
    assert sorted(split.train + split.held_out) == sorted(ids)
    assert not set(split.train) & set(split.held_out)
    assert split.sha256 == {i: registry.instruction(i).sha256 for i in ids}
    assert len(split.eval_doc_ids) == 4 and len(split.train_doc_ids) == 6
    assert not set(split.eval_doc_ids) & set(split.train_doc_ids)
    assert record.status == "complete" and record.steps_done == 2 and len(record.loss_curve) == 2
    assert record.base_model["pretrained"] == str(tiny_model) and record.base_model["file_sha256"]
    assert (tmp_path / "a" / "adapter_config.json").exists() and not (tmp_path / "a" / "checkpoint").exists()
    with pytest.raises(TuneError, match="both trained on and evaluated"):
        check_disjoint(TASK, split.train_doc_ids, [split.train_doc_ids[0]])


def test_seeded_split_is_the_same_for_tasks_sharing_a_pool(registry: Registry) -> None:
    a = split_phrasings(registry.instructions_for("mmlu.anatomy"), "mmlu.anatomy", seed=7)
    b = split_phrasings(registry.instructions_for("mmlu.astronomy"), "mmlu.astronomy", seed=7)
    c = split_phrasings(registry.instructions_for("mmlu.anatomy"), "mmlu.anatomy", seed=8)
    assert a.train == b.train and a.train != c.train
    explicit = split_phrasings(registry.instructions_for(TASK), TASK, seed=0, train_patterns=[f"{TASK}.w0[1-3]"])
    assert explicit.train == [f"{TASK}.w01", f"{TASK}.w02", f"{TASK}.w03"] and explicit.how == "explicit"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "dpo"}, "unknown method"),
        ({"eval_limit": 9}, "leaves 1 document"),
        ({"tasks": ("bbl.auto_debugging",)}, "generation task"),
        ({"train_patterns": (f"{TASK}.*",)}, "matches every phrasing"),
        ({"model": "/nonexistent/model"}, "does not exist"),
    ],
)
def test_refusals_write_nothing(
    tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    from harness.tune.train import prepare_tuning

    with pytest.raises(TuneError, match=message):
        prepare_tuning(registry, _config(tiny_model, tmp_path / "out", **overrides))  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_model_hf_cannot_load_is_refused(cache: Path, registry: Registry, tmp_path: Path) -> None:
    from harness.tune.train import prepare_tuning

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(TuneError, match="cannot load"):
        prepare_tuning(registry, _config(tmp_path / "broken", tmp_path / "out"))  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_same_seed_same_curve_and_resume_continues_exactly(tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path) -> None:
    from harness.tune.train import prepare_tuning, resume_tuning, run_tuning

    whole = _tune(registry, tiny_model, tmp_path / "whole", steps=4)

    def stop_at_three(done: int, total: int, losses: dict[str, float]) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tuning(registry, prepare_tuning(registry, _config(tiny_model, tmp_path / "cut", steps=4)), progress=stop_at_three)  # type: ignore[arg-type]
    cut = read_tune_record(tmp_path / "cut")
    assert cut.status == "interrupted" and cut.steps_done == 2  # the checkpoint at step 2
    resumed = resume_tuning(registry, tmp_path / "cut")
    assert resumed.status == "complete"
    assert [p.loss for p in resumed.loss_curve] == pytest.approx([p.loss for p in whole.loss_curve], rel=1e-5)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["lora", "prompt+kl"])
def test_adapter_loads_in_lm_eval_and_changes_loglikelihoods(
    tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path, method: str
) -> None:
    import lm_eval.models  # noqa: F401
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    out = tmp_path / method.replace("+", "-")
    _tune(registry, tiny_model, out, method=method, steps=3, learning_rate=5e-2)
    requests = [Instance("loglikelihood", {}, ("Is the sky blue? Answer", " yes"), 0)]
    base = get_model("hf").create_from_arg_string(f"pretrained={tiny_model},dtype=float32,device=cpu", {"batch_size": 1})
    tuned = get_model("hf").create_from_arg_string(f"pretrained={tiny_model},peft={out},dtype=float32,device=cpu", {"batch_size": 1})
    before, after = base.loglikelihood(requests)[0][0], tuned.loglikelihood(requests)[0][0]
    assert abs(before - after) > 1e-4
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == ("LORA" if method == "lora" else "PROMPT_TUNING")


def test_tuned_run_marks_exactly_the_train_phrasings_seen(tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path) -> None:
    from harness.cli import main
    from harness.results import iter_samples, read_manifest

    out = tmp_path / "adapter"
    _tune(registry, tiny_model, out, method="lora", steps=1)
    split = read_tune_record(out).tasks[TASK]
    spec = f"hf:pretrained={tiny_model},peft={out},dtype=float32"
    reports = tmp_path / "reports"
    args = ["run", "--model", spec, "--tasks", TASK, "--seed", "1234", "--reports-dir", str(reports), "--no-report"]
    refused = CliRunner().invoke(main, [*args, "--limit", "8"])
    assert refused.exit_code == 1 and "were trained on" in refused.output and not reports.exists()
    result = CliRunner().invoke(main, [*args, "--limit", "4"])
    assert result.exit_code == 0, result.output
    run_dir = next(reports.iterdir())
    rows = list(iter_samples(run_dir))
    assert {r.instruction_id for r in rows if r.seen} == set(split.train)
    assert {r.instruction_id for r in rows if not r.seen} == set(split.held_out)
    assert {r.doc_id for r in rows} == set(split.eval_doc_ids)
    seen_from = read_manifest(run_dir).model["seen_from"]
    assert seen_from["source"] == "tune.json" and seen_from["path"] == str((out / "tune.json").resolve())


def test_max_phrasings_keeps_the_original_and_the_same_sample_across_a_pool(registry: Registry) -> None:
    a = split_phrasings(registry.instructions_for("mmlu.anatomy"), "mmlu.anatomy", seed=3, max_phrasings=6)
    b = split_phrasings(registry.instructions_for("mmlu.astronomy"), "mmlu.astronomy", seed=3, max_phrasings=6)
    assert a == b
    assert a.original == "mmlu.w01" and len(a.train) + len(a.held_out) == 6 and len(a.train) == 3


def test_comparison_rows_give_the_gap_and_ignore_controls() -> None:
    import numpy as np

    from harness.stats.data import PhrasingResults
    from harness.tune.summary import OVERALL, render_table, task_rows

    def phrasing(task: str, name: str, correct: list[int], seen: bool, status: str = "unobserved") -> PhrasingResults:
        values = np.array(correct, dtype=float)
        return PhrasingResults(task, name, status, seen, tuple(f"d{i}" for i in range(len(correct))), values, values)

    ps = [
        phrasing("t", "t.w1", [1, 1, 1, 1, 0, 1], True),
        phrasing("t", "t.w2", [1, 1, 1, 0, 1, 1], True),
        phrasing("t", "t.w3", [0, 1, 0, 0, 0, 1], False),
        phrasing("t", "t.w4", [0, 0, 1, 0, 0, 0], False),
        phrasing("t", "t.ctl-none", [0, 0, 0, 0, 0, 0], False, "control"),
    ]
    rows = task_rows("lora", ps, n_boot=200)
    task, overall = rows
    assert (task.task, overall.task) == ("t", OVERALL)
    assert (task.n_seen, task.n_unseen) == (2, 2)
    assert task.seen_mean == pytest.approx(10 / 12) and task.unseen_mean == pytest.approx(3 / 12)
    assert task.gap == pytest.approx(7 / 12) and task.gap_ci[0] > 0
    assert overall.gap == pytest.approx(task.gap) and 0 < overall.p_gap <= 1
    assert "| lora | t | 2 / 2 | 0.833" in render_table(rows)


def test_soft_prompt_scoring_in_training_equals_lm_eval_with_the_adapter(
    tiny_model: Path, cache: Path, registry: Registry, tmp_path: Path
) -> None:
    """The virtual tokens are accounted for: training scores what lm-eval's hf + peft= scores."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from peft import PeftModel
    from transformers import AutoTokenizer

    from harness.data.catalog import load_documents
    from harness.render import render_prompt
    from harness.tune.losses import option_loglikelihoods
    from harness.view import chat_messages

    out = tmp_path / "prompt"
    _tune(registry, tiny_model, out, method="prompt", steps=2, learning_rate=5e-2, num_virtual_tokens=5)
    base, examples = _examples(registry, tiny_model, [f"{TASK}.w02", f"{TASK}.w03"])
    model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        ours = option_loglikelihoods(model, examples, pad_id=0, virtual_tokens=5)[0].tolist()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = registry.task(TASK)
    doc = load_documents(task.data_name, task.split)[0]
    lm = get_model("hf").create_from_arg_string(f"pretrained={tiny_model},peft={out},dtype=float32,device=cpu", {"batch_size": 4})
    for row, inst_id in zip(ours, [f"{TASK}.w02", f"{TASK}.w03"], strict=True):
        prompt = render_prompt(registry.instruction(inst_id).instruction, task, doc, "user")
        context = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
        requests = [Instance("loglikelihood", {}, (context, o), i) for i, o in enumerate(prompt.options)]
        assert row == pytest.approx([ll for ll, _ in lm.loglikelihood(requests)], abs=1e-4)
