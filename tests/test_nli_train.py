"""`harness.nli.train`: the chat JSONL export and LoRA fine-tuning on a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.nli.examples import LABELS3, Example, NLIStudyError
from harness.registry import Registry

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

PREMISES = [
    "The cat sat on the warm mat all afternoon.",
    "A storm closed the harbour for two days.",
    "The museum opens at nine on weekdays.",
]


def _examples(n: int = 9) -> list[Example]:
    out = []
    for i in range(n):
        label = LABELS3[i % 3]
        hyp = {"entailment": "Something happened.", "neutral": "It was a Tuesday.", "contradiction": "Nothing ever happened."}[label]
        out.append(Example(f"ex{i}", PREMISES[i % len(PREMISES)], hyp, label, "toy"))
    return out


def test_export_writes_openai_chat_lines(tmp_path: Path, registry: Registry) -> None:
    from harness.nli.train import assign_phrasings, export_chat_jsonl, training_phrasings

    examples = _examples()
    path = tmp_path / "out" / "train.jsonl"
    assert export_chat_jsonl(examples, path, registry=registry, seed=7) == len(examples)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(examples)
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]  # no temporary file left
    phrasings = {e.id: e.instruction for e in training_phrasings(registry)}
    assigned = assign_phrasings(examples, list(phrasings), 7)
    for line, ex, inst_id in zip(lines, examples, assigned, strict=True):
        row = json.loads(line)
        assert list(row) == ["messages"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(set(m) == {"role", "content"} for m in row["messages"])
        user, assistant = (m["content"] for m in row["messages"])
        assert ex.premise in user and ex.hypothesis in user
        style = phrasings[inst_id].answer_choices
        if isinstance(style, dict):
            assert assistant == style[ex.label]
    with_system = tmp_path / "sys.jsonl"
    export_chat_jsonl(examples[:2], with_system, registry=registry, seed=7, system="You label NLI pairs.")
    first = json.loads(with_system.read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == "You label NLI pairs."


def test_export_answers_follow_the_label_for_a_fixed_phrasing(tmp_path: Path, registry: Registry) -> None:
    from harness.nli.train import export_chat_jsonl

    path = tmp_path / "w01.jsonl"
    export_chat_jsonl(_examples(3), path, registry=registry, phrasings=["nli3.w01"])
    answers = [json.loads(line)["messages"][-1]["content"] for line in path.read_text().splitlines()]
    assert answers == ["yes", "maybe", "no"]  # entailment, neutral, contradiction under nli3.w01


def test_export_refuses_nothing_and_unknown_phrasings(tmp_path: Path, registry: Registry) -> None:
    from harness.nli.train import export_chat_jsonl

    with pytest.raises(NLIStudyError, match="no examples"):
        export_chat_jsonl([], tmp_path / "x.jsonl", registry=registry)
    with pytest.raises(NLIStudyError, match="unknown phrasing"):
        export_chat_jsonl(_examples(1), tmp_path / "x.jsonl", registry=registry, phrasings=["nli3.nope"])
    with pytest.raises(NLIStudyError, match="not a 3-way NLI phrasing"):
        export_chat_jsonl(_examples(1), tmp_path / "x.jsonl", registry=registry, phrasings=["nli2.w01"])
    assert not list(tmp_path.iterdir())


def _gold_lls(model: object, tiny_model: Path, examples: list[Example], registry: Registry) -> Any:
    from transformers import AutoTokenizer

    from harness.nli.train import TRAIN_TASK, example_document
    from harness.tune.losses import encode_example, option_loglikelihoods

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    inst = registry.instruction("nli3.w01").instruction
    encoded = [
        encode_example(
            tokenizer, inst, TRAIN_TASK, example_document(ex), LABELS3.index(ex.label), placement="user", chat=True, max_length=512
        )
        for ex in examples
    ]
    with torch.no_grad():
        lls, _ = option_loglikelihoods(model, encoded, pad_id=0)
    return lls[torch.arange(len(examples)), torch.tensor([LABELS3.index(ex.label) for ex in examples])]


def test_finetune_writes_a_loadable_adapter_that_moves_the_answers(tmp_path: Path, tiny_model: Path, registry: Registry) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.backends.models import parse_model_spec
    from harness.nli.train import RECORD_FILE, finetune_lora

    examples = _examples()
    steps: list[int] = []
    out = finetune_lora(
        str(tiny_model),
        examples,
        tmp_path / "adapter",
        seed=3,
        epochs=6,
        lr=1e-2,
        batch_size=3,
        phrasings=["nli3.w01"],
        registry=registry,
        dtype="float32",
        progress=lambda step, total, info: steps.append(step),
    )
    assert {"adapter_config.json", "adapter_model.safetensors", RECORD_FILE} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # nothing left beside it
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["steps"] == 18 and steps == list(range(1, 19))
    assert record["labels"] == {"entailment": 3, "neutral": 3, "contradiction": 3}
    assert record["loss_curve"][-1]["loss"] < record["loss_curve"][0]["loss"]
    spec = parse_model_spec(f"irh-fast:pretrained={tiny_model},peft={out}")
    assert spec.args["peft"] == str(out)

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    before = _gold_lls(base, tiny_model, examples, registry)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), str(out))
    after = _gold_lls(tuned, tiny_model, examples, registry)
    assert float(after.mean()) > float(before.mean()) + 0.1


def test_finetune_is_deterministic_and_refuses_bad_input(tmp_path: Path, tiny_model: Path, registry: Registry) -> None:
    from safetensors.torch import load_file

    from harness.nli.train import finetune_lora

    kwargs = {"seed": 5, "epochs": 1, "batch_size": 4, "registry": registry, "dtype": "float32"}
    a = finetune_lora(str(tiny_model), _examples(6), tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    b = finetune_lora(str(tiny_model), _examples(6), tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = finetune_lora(str(tiny_model), _examples(6), tmp_path / "c", **{**kwargs, "seed": 6})  # type: ignore[arg-type]
    wc = load_file(str(c / "adapter_model.safetensors"))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    with pytest.raises(NLIStudyError, match="already exists"):
        finetune_lora(str(tiny_model), _examples(6), a, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NLIStudyError, match="no training examples"):
        finetune_lora(str(tiny_model), [], tmp_path / "d", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()
