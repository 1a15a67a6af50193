"""LoRA fine-tuning of a causal LM on NLI examples as chat turns, and the chat JSONL export.

Each example becomes one chat exchange: the user turn is a registry NLI phrasing rendered on
the example exactly as `irh run` renders it for evaluation (``harness.render.render_prompt``,
the model's chat template applied as lm-eval applies it), the assistant turn is that
phrasing's answer word for the example's label (``yes`` / ``maybe`` / ``no``, ``A`` / ``B`` /
``C``, ...). Which phrasing an example is shown under is drawn from the seed and the
example's id, so the same example reads the same in every variant of one seed and only the
data differ between variants. The loss is the mean token cross-entropy of the answer tokens
only. The adapter folder is peft's own (``adapter_config.json``, ``adapter_model.safetensors``)
plus ``nli_train.json`` (what it was trained on, how, the loss curve), so
``irh run --model irh-fast:pretrained=BASE,peft=FOLDER`` scores it.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from harness.nli.examples import LABELS3, Example, NLIStudyError, write_jsonl
from harness.schema import Instruction, TaskSpec

if TYPE_CHECKING:
    from harness.registry import RegisteredInstruction, Registry

#: The task the training examples are rendered as: every 3-way NLI phrasing applies to it.
TRAIN_TASK = TaskSpec(
    id="nlis.train",
    family="nli",
    category="nli-3way",
    description="NLI training examples of the distribution-shift study",
    fields=["premise", "hypothesis"],
    labels=list(LABELS3),
)
RECORD_FILE = "nli_train.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: Batches per window within which examples are grouped by length.
BUCKET_BATCHES = 8

#: ``progress(step, steps, {"loss": ...})`` after every optimiser step.
Progress = Callable[[int, int, dict[str, float]], None]


class ChatTurns(NamedTuple):
    """One example as chat messages (user prompt, assistant answer word) and its phrasing."""

    messages: list[dict[str, str]]
    answer: str
    phrasing: str


def example_document(example: Example) -> dict[str, Any]:
    """The example as a normalised harness document (the form ``render_prompt`` reads)."""
    return {
        "id": example.id,
        "group": "",
        "fields": {"premise": example.premise, "hypothesis": example.hypothesis},
        "choices": list(LABELS3),
        "scores": [1.0 if label == example.label else 0.0 for label in LABELS3],
    }


def training_phrasings(registry: Registry, ids: Sequence[str] | None = None) -> list[RegisteredInstruction]:
    """The phrasings training examples are shown under: the given ids, or every 3-way NLI
    phrasing of the registry (category ``nli-3way``), in registry order.

    Raises:
        NLIStudyError: an unknown id, or a phrasing that does not apply to 3-way NLI.
    """
    if not ids:
        chosen = [e for e in registry.instructions.values() if registry.applies(e, TRAIN_TASK)]
        if not chosen:
            raise NLIStudyError("the registry has no 3-way NLI phrasing (category nli-3way); check instructions/nli-3way.yaml")
        return chosen
    out = []
    for inst_id in ids:
        entry = registry.instructions.get(inst_id)
        if entry is None:
            raise NLIStudyError(f"unknown phrasing {inst_id!r}; see `irh list instructions --task nli.cb`")
        if not registry.applies(entry, TRAIN_TASK):
            raise NLIStudyError(f"phrasing {inst_id} is not a 3-way NLI phrasing; choose one of category nli-3way")
        out.append(entry)
    return out


def assign_phrasings(examples: Sequence[Example], phrasing_ids: Sequence[str], seed: int) -> list[str]:
    """Each example's phrasing: drawn from the seed and the example's id alone (not its place)."""
    if not phrasing_ids:
        raise NLIStudyError("no phrasing to render the training examples with")
    return [random.Random(f"nli-phrasing:{seed}:{ex.id}").choice(list(phrasing_ids)) for ex in examples]


def chat_example(example: Example, instruction: Instruction, *, system: str | None = None) -> ChatTurns:
    """One example as chat turns under one phrasing.

    Args:
        example: the labelled example.
        instruction: a 3-way NLI phrasing of the registry.
        system: an optional system message put first (none by default: the harness places
            the whole phrasing in the user turn, and the model's chat template adds its own
            default system prompt, as it does in evaluation).
    """
    from harness.render import render_prompt

    prompt = render_prompt(instruction, TRAIN_TASK, example_document(example), "user")
    answer = prompt.options[LABELS3.index(example.label)]
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt.user}, {"role": "assistant", "content": answer}]
    return ChatTurns(messages, answer, instruction.id)


def chat_rows(
    examples: Sequence[Example],
    *,
    registry: Registry | None = None,
    phrasings: Sequence[str] | None = None,
    seed: int = 0,
    system: str | None = None,
) -> list[ChatTurns]:
    """Every example as chat turns, under the phrasing :func:`assign_phrasings` gives it."""
    if registry is None:
        from harness.registry import load_registry

        registry = load_registry()
    chosen = {e.id: e.instruction for e in training_phrasings(registry, phrasings)}
    assigned = assign_phrasings(examples, list(chosen), seed)
    return [chat_example(ex, chosen[p], system=system) for ex, p in zip(examples, assigned, strict=True)]


def export_chat_jsonl(
    examples: Sequence[Example],
    path: Path,
    *,
    registry: Registry | None = None,
    phrasings: Sequence[str] | None = None,
    seed: int = 0,
    system: str | None = None,
) -> int:
    """Write the training set as chat fine-tuning JSONL (OpenAI's format), atomically.

    One line per example: ``{"messages": [{"role": "system", ...}?, {"role": "user", ...},
    {"role": "assistant", ...}]}``, the same turns :func:`finetune_lora` trains on (same
    phrasings, same seed). Returns the number of lines.
    """
    if not examples:
        raise NLIStudyError(f"no examples to export to {path}")
    rows = chat_rows(examples, registry=registry, phrasings=phrasings, seed=seed, system=system)
    write_jsonl(path, ({"messages": r.messages} for r in rows))
    return len(rows)


class _Encoded(NamedTuple):
    tokens: list[int]
    answer: list[int]


def _encode(tokenizer: Any, examples: Sequence[Example], instructions: Sequence[Instruction], max_length: int) -> list[_Encoded]:
    """Token ids of every example: context as lm-eval builds it, and the gold answer's tokens."""
    from harness.tune.losses import encode_example

    chat = bool(getattr(tokenizer, "chat_template", None))
    out = []
    for ex, inst in zip(examples, instructions, strict=True):
        gold = LABELS3.index(ex.label)
        enc = encode_example(tokenizer, inst, TRAIN_TASK, example_document(ex), gold, placement="user", chat=chat, max_length=max_length)
        out.append(_Encoded(list(enc.context), list(enc.options[gold])))
    return out


def answer_loss(model: Any, batch: Sequence[_Encoded], pad_id: int) -> Any:
    """Mean over examples of the token-mean cross-entropy of each example's answer tokens.

    Rows are left-padded (with position ids counted from each row's first real token), so
    every answer ends at the last column and only the last columns are projected onto the
    vocabulary.
    """
    import torch

    inputs = [e.tokens + e.answer[:-1] for e in batch]
    width = max(len(t) for t in inputs)
    keep = max(len(e.answer) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), keep), -100, dtype=torch.long)
    for r, (row, enc) in enumerate(zip(inputs, batch, strict=True)):
        ids[r, width - len(row) :] = torch.tensor(row)
        mask[r, width - len(row) :] = 1
        targets[r, keep - len(enc.answer) :] = torch.tensor(enc.answer)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    device = next(p for p in model.parameters()).device
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), logits_to_keep=keep)
    logits = out.logits[:, -keep:, :].float()
    targets = targets.to(device)
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none", ignore_index=-100
    )
    per_token = per_token.view(len(batch), keep)
    counts = (targets != -100).sum(dim=1).clamp(min=1)
    return (per_token.sum(dim=1) / counts).mean()


def finetune_lora(
    base: str,
    examples: Sequence[Example],
    out: Path,
    *,
    seed: int,
    epochs: int = 2,
    lr: float = 1e-3,
    rank: int = 8,
    alpha: int = 16,
    batch_size: int = 8,
    max_length: int = 384,
    phrasings: Sequence[str] | None = None,
    registry: Registry | None = None,
    dtype: str = "auto",
    progress: Progress | None = None,
) -> Path:
    """Fine-tune LoRA adapters of ``base`` on the examples; returns the adapter folder ``out``.

    Deterministic for a seed on one machine: the LoRA initialisation, the phrasing of each
    example and the order of every epoch come from it. ``out`` appears complete or not at
    all (the adapter is written beside it and moved into place).

    Args:
        base: ``default``, a transformers folder, or an ``hf:``/``irh-fast:`` spec of one.
        examples: the training set.
        out: the adapter folder to create (must not exist yet).
        seed: seed of every random choice.
        epochs: passes over the examples.
        lr: AdamW learning rate.
        rank: LoRA rank (``alpha`` its scaling numerator) on the attention projections.
        batch_size: examples per optimiser step.
        max_length: longest context kept (tokens, cut on the left).
        phrasings: phrasing ids to render examples with (default: every 3-way NLI phrasing).
        registry: the registry those phrasings come from (default: this checkout's).
        dtype: ``auto`` (bfloat16 autocast where the CPU or GPU supports it), ``bfloat16`` or
            ``float32``; the weights stay float32.
        progress: called after every step.

    Raises:
        NLIStudyError: no examples, bad hyperparameters, or ``out`` already exists.
    """
    if not examples:
        raise NLIStudyError("no training examples; the budget is empty")
    if epochs < 1 or batch_size < 1 or rank < 1 or lr <= 0:
        raise NLIStudyError("--epochs, the batch size and the LoRA rank must be at least 1, and the learning rate positive")
    if out.exists():
        raise NLIStudyError(f"{out} already exists; give a new adapter folder")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.tune.train import peak_memory_mib, resolve_base_model

    if registry is None:
        from harness.registry import load_registry

        registry = load_registry()
    base_info = resolve_base_model(base)
    chosen = {e.id: e for e in training_phrasings(registry, phrasings)}
    assigned = assign_phrasings(examples, list(chosen), seed)
    from harness.tune.train import dtype_name as resolve_dtype

    dtype_name = resolve_dtype(dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    began = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(base_info["pretrained"])
    base_model: Any = AutoModelForCausalLM.from_pretrained(base_info["pretrained"], dtype=torch.float32)
    base_model = base_model.to(device)
    encoded = _encode(tokenizer, examples, [chosen[p].instruction for p in assigned], max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(task_type="CAUSAL_LM", r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    model: Any = get_peft_model(base_model, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    rng = random.Random(f"nli-train:{seed}")
    batches: list[list[int]] = []
    window = batch_size * BUCKET_BATCHES
    for _ in range(epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        # Within each window of a few batches, examples of similar length share a batch (less
        # padding, ~20% less compute here); the batches are then visited in a shuffled order.
        epoch_batches = []
        for start in range(0, len(order), window):
            part = sorted(order[start : start + window], key=lambda i: len(encoded[i].tokens) + len(encoded[i].answer))
            epoch_batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
        rng.shuffle(epoch_batches)
        batches += epoch_batches
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype_name == "bfloat16")
    curve: list[dict[str, float]] = []
    for step, batch in enumerate(batches, start=1):
        with autocast:
            loss = answer_loss(model, [encoded[i] for i in batch], pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append({"step": step, "loss": round(float(loss.detach()), 6)})
        if progress is not None:
            progress(step, len(batches), {"loss": curve[-1]["loss"]})

    from harness import __version__
    from harness.data.cache import atomic_write_json
    from harness.results import package_versions, utc_now

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(str(tmp))
        atomic_write_json(
            tmp / RECORD_FILE,
            {
                "schema_version": 1,
                "created": utc_now(),
                "harness_version": __version__,
                "packages": package_versions(("torch", "transformers", "peft")),
                "base_model": base_info,
                "examples": len(examples),
                "labels": dict(Counter(ex.label for ex in examples)),
                "origins": dict(Counter(ex.origin for ex in examples)),
                "phrasings": dict(Counter(assigned)),
                "hyperparameters": {
                    "seed": seed,
                    "epochs": epochs,
                    "learning_rate": lr,
                    "lora_r": rank,
                    "lora_alpha": alpha,
                    "lora_targets": list(LORA_TARGETS),
                    "batch_size": batch_size,
                    "max_length": max_length,
                    "dtype": dtype_name,
                    "device": device,
                },
                "steps": len(batches),
                "loss_curve": curve,
                "seconds": round(time.monotonic() - began, 1),
                "peak_memory_mib": peak_memory_mib(),
            },
        )
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
