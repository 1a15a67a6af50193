"""`irh tune`: tune a causal LM with peft (LoRA or soft prompt), with or without the KL term.

``prepare_tuning`` checks everything (method, model, tasks, data, splits) and writes nothing;
``run_tuning`` then creates the adapter folder with tune.json (status ``running``), trains
with a checkpoint every N steps, and saves the adapter where lm-eval's hf backend loads it
(``peft=FOLDER``). ``resume_tuning`` continues from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import fnmatch
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from harness.registry import Registry
from harness.render import option_scores
from harness.schema import TaskSpec
from harness.tune.record import (
    METHODS,
    Hyperparameters,
    LossPoint,
    TaskSplit,
    TuneError,
    TuneRecord,
    read_tune_record,
    write_tune_record,
)
from harness.tune.split import build_task_split

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
#: Learning rates per method family (ours; the paper does not give them for this model size).
DEFAULT_LR = {"lora": 1e-3, "prompt": 3e-2}
DEFAULT_PROMPT_INIT = "Read the task below carefully and give the correct answer."

Progress = Callable[[int, int, dict[str, float]], None]


def load_trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's optimiser, RNG and progress state, read with ``weights_only=True``: a
    checkpoint is data, and a crafted pickle in it must not run code."""
    import pickle

    import torch

    try:
        state: dict[str, Any] = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TuneError(f"{path} holds more than tensors and plain values; refusing to load it ({str(exc).splitlines()[0]})") from None
    return state


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's stop, `kill`) ends tuning as Ctrl-C does: status ``interrupted``
    and the resume hint, not a silent death with status ``running``."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint in ``out``: ``checkpoint/``, else the previous one that a kill
    during the swap left as ``.checkpoint.old``."""
    for folder in (out / CHECKPOINT_DIR, out / f".{CHECKPOINT_DIR}.old"):
        if (folder / STATE_FILE).exists() and (folder / "adapter_model.safetensors").exists():
            return folder
    return None


@dataclass(frozen=True)
class TuneConfig:
    """Everything `irh tune` is asked to do (defaults: cheap enough for a 2-core CPU)."""

    model: str | None
    tasks: tuple[str, ...]
    method: str
    out: Path
    steps: int = 60
    learning_rate: float | None = None
    kl_weight: float = 1.0
    paraphrases_per_batch: int = 3
    docs_per_step: int = 1
    train_fraction: float = 0.5
    train_patterns: tuple[str, ...] = ()
    #: At most this many phrasings per task take part (the original and a seeded sample).
    max_phrasings: int | None = None
    train_docs: int = 64
    eval_limit: int | None = 30
    max_length: int = 384
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    num_virtual_tokens: int = 20
    prompt_init_text: str = DEFAULT_PROMPT_INIT
    dtype: str = "auto"
    checkpoint_every: int = 20
    placement: str = "user"
    seed: int = 1234

    @property
    def family(self) -> str:
        return self.method.split("+")[0]

    @property
    def uses_kl(self) -> bool:
        return self.method.endswith("+kl")


class TaskData(NamedTuple):
    task: TaskSpec
    split: TaskSplit
    docs: list[dict[str, Any]]


@dataclass(frozen=True)
class Prepared:
    """A checked tuning request: the base model folder, and every task's split and documents."""

    config: TuneConfig
    base: dict[str, Any]
    tasks: list[TaskData]
    registry_sha256: str
    hyper: Hyperparameters
    notes: list[str] = field(default_factory=list)


def resolve_base_model(text: str | None) -> dict[str, Any]:
    """The base model's folder and identity, refusing what lm-eval's hf backend cannot load."""
    from harness.backends.models import DEFAULT_NAME, HF_BACKENDS, ModelError, check_pretrained, default_model_dir, parse_model_spec

    if not text or text == "default":
        folder = default_model_dir()
        source = (folder / "SOURCE").read_text().strip() if (folder / "SOURCE").exists() else ""
        name, _, digest = source.partition(" sha256 ")
        return {"pretrained": str(folder), "name": DEFAULT_NAME, "file": name or None, "file_sha256": digest or None}
    if ":" not in text and "=" not in text:
        text = f"hf:pretrained={text}"
    try:
        spec = parse_model_spec(text, batch_size=1)
        if spec.backend not in HF_BACKENDS:
            raise TuneError(f"`irh tune` tunes models lm-eval's hf backend loads; {spec.backend!r} is not one (use hf:pretrained=...)")
        if "gguf_file" in spec.args:
            raise TuneError("tune a safetensors folder, not a GGUF file; `irh run` converts the default model once (see README)")
        check_pretrained(spec.args)
    except ModelError as exc:
        raise TuneError(str(exc)) from None
    folder = Path(spec.args["pretrained"])
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise TuneError(f"lm-eval's hf backend cannot load {folder}: {str(exc).splitlines()[0]}") from None
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "is_encoder_decoder", False) or (architectures and not any(a.endswith("ForCausalLM") for a in architectures)):
        raise TuneError(f"{folder} is not a causal LM ({config.architectures}); `irh tune` tunes causal LMs")
    weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    from harness.data.cache import sha256_file

    return {
        "pretrained": str(folder),
        "name": folder.name if folder.is_dir() else str(folder),
        "file": str(weights[0]) if len(weights) == 1 else None,
        "file_sha256": sha256_file(weights[0]) if len(weights) == 1 else None,
    }


def dtype_name(requested: str) -> str:
    import torch

    from harness.backends.models import cpu_has_bf16

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


def prepare_tuning(registry: Registry, config: TuneConfig) -> Prepared:
    """Check a tuning request and compute its splits; writes nothing.

    Raises:
        TuneError: unknown method, unloadable model, a task too small to split, an output
            folder that already holds an adapter.
    """
    from harness.plan import PlanError, select_tasks

    if config.method not in METHODS:
        raise TuneError(f"unknown method {config.method!r}; choose one of {', '.join(METHODS)}")
    if config.out.exists() and any(config.out.iterdir()):
        raise TuneError(f"{config.out} is not empty; give a new --out folder, or `irh tune --resume {config.out}`")
    if config.steps < 1 or config.paraphrases_per_batch < 1 or config.docs_per_step < 1:
        raise TuneError("--steps, --paraphrases and --docs-per-step must be at least 1")
    if config.uses_kl and config.kl_weight <= 0:
        raise TuneError(f"{config.method} needs --kl-weight > 0; use {config.family} for no KL term")
    if config.placement not in ("user", "system", "none"):
        raise TuneError(f"unknown placement {config.placement!r}; use user, system or none")
    try:
        tasks = select_tasks(registry, list(config.tasks))
    except (PlanError, KeyError) as exc:
        raise TuneError(str(exc.args[0])) from None
    if config.train_patterns:
        known = [e.id for e in registry.instructions.values()]
        for pattern in config.train_patterns:
            if not any(fnmatch.fnmatchcase(i, pattern) for i in known):
                raise TuneError(f"--train-instructions {pattern!r} matches no phrasing; see `irh list instructions`")
    from harness.data.cache import DataMissing
    from harness.data.catalog import fetch_missing

    try:
        fetch_missing(tasks)
    except DataMissing as exc:
        raise TuneError(str(exc)) from None
    base = resolve_base_model(config.model)
    data = []
    for task in tasks:
        split, docs = build_task_split(
            registry,
            task,
            seed=config.seed,
            train_fraction=config.train_fraction,
            train_patterns=config.train_patterns or None,
            eval_limit=config.eval_limit,
            train_docs=config.train_docs,
            max_phrasings=config.max_phrasings,
        )
        if config.uses_kl and len(split.train) < 2:
            raise TuneError(f"{task.id}: {config.method} needs a paraphrase beside the original among the train phrasings")
        data.append(TaskData(task, split, docs))
    hyper = Hyperparameters(
        steps=config.steps,
        learning_rate=config.learning_rate or DEFAULT_LR[config.family],
        kl_weight=config.kl_weight if config.uses_kl else 0.0,
        paraphrases_per_batch=config.paraphrases_per_batch,
        docs_per_step=config.docs_per_step,
        train_fraction=config.train_fraction,
        max_phrasings=config.max_phrasings,
        train_docs=config.train_docs,
        max_length=config.max_length,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_targets=list(config.lora_targets),
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_init_text=config.prompt_init_text,
        dtype=dtype_name(config.dtype),
        device="cuda" if _cuda() else "cpu",
        checkpoint_every=config.checkpoint_every,
        placement=config.placement,  # type: ignore[arg-type]
    )
    return Prepared(config, base, data, registry.digest(), hyper)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class StepPlan(NamedTuple):
    """One step's batch: per document, (task index, document index, phrasings, original first)."""

    groups: list[tuple[int, int, list[str]]]


def schedule(tasks: Sequence[TaskData], steps: int, docs_per_step: int, paraphrases: int, seed: int) -> list[StepPlan]:
    """Every step's batch, drawn up front from the seed (so a resumed run takes the same ones).

    Documents are visited in a seeded order, all tasks pooled, reshuffled at each pass; each
    comes with its original phrasing and up to ``paraphrases`` train paraphrases drawn anew.
    """
    rng = random.Random(f"tune-schedule:{seed}")
    pool = [(t, d) for t, data in enumerate(tasks) for d in range(len(data.docs))]
    order: list[tuple[int, int]] = []
    plans = []
    for _ in range(steps):
        groups = []
        for _ in range(docs_per_step):
            if not order:
                order = list(pool)
                rng.shuffle(order)
            t, d = order.pop()
            split = tasks[t].split
            others = [i for i in split.train if i != split.original]
            chosen = rng.sample(others, min(paraphrases, len(others)))
            groups.append((t, d, [split.original, *chosen]))
        plans.append(StepPlan(groups))
    return plans


def peak_memory_mib() -> float:
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mib = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    if torch.cuda.is_available():
        mib = max(mib, torch.cuda.max_memory_allocated() / (1024 * 1024))
    return round(mib, 1)


def _load_model(prepared: Prepared) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = prepared.base["pretrained"]
    torch.manual_seed(prepared.config.seed)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TuneError(f"cannot load {base} with transformers: {str(exc).splitlines()[0]}") from None
    return model.to(prepared.hyper.device), tokenizer  # type: ignore[arg-type]


def _wrap(model: Any, prepared: Prepared) -> Any:
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, get_peft_model

    hyper = prepared.hyper
    if prepared.config.family == "lora":
        config: Any = LoraConfig(
            task_type="CAUSAL_LM", r=hyper.lora_r, lora_alpha=hyper.lora_alpha, lora_dropout=0.0, target_modules=list(hyper.lora_targets)
        )
    else:
        config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=hyper.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=hyper.prompt_init_text,
            tokenizer_name_or_path=prepared.base["pretrained"],
        )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise TuneError(f"peft cannot wrap this model for {prepared.config.method}: {str(exc).splitlines()[0]}") from None


def _record(prepared: Prepared) -> TuneRecord:
    from harness import __version__
    from harness.results import git_state, package_versions, utc_now

    commit, dirty = git_state(Path(__file__).resolve().parent)
    return TuneRecord(
        created=utc_now(),
        harness_version=__version__,
        git_commit=commit,
        git_dirty=dirty,
        packages=package_versions(("torch", "transformers", "peft", "lm_eval")),
        base_model=prepared.base,
        method=prepared.config.method,  # type: ignore[arg-type]
        hyperparameters=prepared.hyper,
        seed=prepared.config.seed,
        registry_sha256=prepared.registry_sha256,
        tasks={d.task.id: d.split for d in prepared.tasks},
    )


def run_tuning(registry: Registry, prepared: Prepared, progress: Progress | None = None) -> TuneRecord:
    """Create the adapter folder and train from step 0."""
    out = prepared.config.out
    out.mkdir(parents=True, exist_ok=True)
    record = _record(prepared)
    write_tune_record(out, record)
    return _train(registry, prepared, record, progress)


def resume_tuning(registry: Registry, folder: Path, progress: Progress | None = None) -> TuneRecord:
    """Continue an interrupted `irh tune` from its last checkpoint (or from the start)."""
    record = read_tune_record(folder)
    if record.status == "complete":
        return record
    if record.registry_sha256 != registry.digest():
        for task_id, split in record.tasks.items():
            for inst_id, digest in split.sha256.items():
                if registry.instruction(inst_id).sha256 != digest:
                    raise TuneError(f"phrasing {inst_id} of {task_id} changed since this tuning started; restore it, or tune anew")
    hyper = record.hyperparameters
    config = TuneConfig(
        model=record.base_model["pretrained"],
        tasks=tuple(record.tasks),
        method=record.method,
        out=folder,
        steps=hyper.steps,
        learning_rate=hyper.learning_rate,
        kl_weight=hyper.kl_weight or 1.0,
        paraphrases_per_batch=hyper.paraphrases_per_batch,
        docs_per_step=hyper.docs_per_step,
        max_length=hyper.max_length,
        placement=hyper.placement,
        seed=record.seed,
    )
    from harness.data.catalog import load_documents

    data = []
    for task_id, split in record.tasks.items():
        task = registry.task(task_id)
        by_id = {d["id"]: d for s in split.train_split.split("+") for d in load_documents(task.data_name, s)}
        missing = [i for i in split.train_doc_ids if i not in by_id]
        if missing:
            raise TuneError(
                f"{len(missing)} training documents of {task_id} are gone from the data cache; run `irh data fetch {task.data_name}`"
            )
        data.append(TaskData(task, split, [by_id[i] for i in split.train_doc_ids]))
    prepared = Prepared(config, record.base_model, data, record.registry_sha256, hyper)
    return _train(registry, prepared, record, progress)


def _train(registry: Registry, prepared: Prepared, record: TuneRecord, progress: Progress | None) -> TuneRecord:
    import torch

    from harness.results import utc_now
    from harness.tune.losses import batch_loss, encode_example, option_loglikelihoods

    out = prepared.config.out
    hyper = prepared.hyper
    model, tokenizer = _load_model(prepared)
    model = _wrap(model, prepared)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hyper.learning_rate, weight_decay=0.0)
    start = 0
    checkpoint = _latest_checkpoint(out)
    if checkpoint is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        state = load_trainer_state(checkpoint / STATE_FILE)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
        record = record.model_copy(update={"loss_curve": [LossPoint(**p) for p in state["loss_curve"]], "steps_done": start})
    plans = schedule(prepared.tasks, hyper.steps, hyper.docs_per_step, hyper.paraphrases_per_batch, record.seed)
    chat = hyper.placement != "none" and bool(getattr(tokenizer, "chat_template", None))
    virtual = hyper.num_virtual_tokens if prepared.config.family == "prompt" else 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device_type = "cuda" if hyper.device == "cuda" else "cpu"
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=hyper.dtype == "bfloat16")
    curve = list(record.loss_curve)
    began = time.monotonic() - record.seconds
    record = record.model_copy(update={"status": "running"})
    with _sigterm_as_interrupt():
        try:
            for step in range(start, hyper.steps):
                examples: list[Any] = []
                golds: list[int] = []
                groups: list[list[int]] = []
                for t, d, phrasings in plans[step].groups:
                    data = prepared.tasks[t]
                    doc = data.docs[d]
                    scores = option_scores(data.task, doc)
                    gold = max(range(len(scores)), key=lambda i: scores[i])
                    group = []
                    for inst_id in phrasings:
                        group.append(len(examples))
                        examples.append(
                            encode_example(
                                tokenizer,
                                registry.instruction(inst_id).instruction,
                                data.task,
                                doc,
                                gold,
                                placement=hyper.placement,
                                chat=chat,
                                max_length=hyper.max_length,
                            )
                        )
                        golds.append(gold)
                    groups.append(group)
                with autocast:
                    lls, counts = option_loglikelihoods(model, examples, pad_id, virtual)
                result = batch_loss(lls.float(), counts, golds, groups, hyper.kl_weight)
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                optimizer.step()
                curve.append(LossPoint(step=step + 1, loss=float(result.loss.detach()), ce=result.ce, kl=result.kl))
                if progress:
                    progress(step + 1, hyper.steps, {"loss": curve[-1].loss, "ce": result.ce, "kl": result.kl})
                done = step + 1
                if done % hyper.checkpoint_every == 0 and done < hyper.steps:
                    record = _checkpoint(model, optimizer, out, record, curve, done, began)
        except KeyboardInterrupt:
            write_tune_record(out, record.model_copy(update={"status": "interrupted"}))
            raise
    model.save_pretrained(str(out))
    for folder in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old", f".{CHECKPOINT_DIR}.tmp"):
        shutil.rmtree(out / folder, ignore_errors=True)
    record = record.model_copy(
        update={
            "status": "complete",
            "finished": utc_now(),
            "steps_done": hyper.steps,
            "loss_curve": curve,
            "seconds": round(time.monotonic() - began, 1),
            "peak_memory_mib": peak_memory_mib(),
        }
    )
    write_tune_record(out, record)
    return record


def _checkpoint(model: Any, optimizer: Any, out: Path, record: TuneRecord, curve: list[LossPoint], step: int, began: float) -> TuneRecord:
    """Save adapter, optimizer and RNG state, then the record that points at them."""
    import torch

    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step, "loss_curve": [p.model_dump() for p in curve]}
    torch.save(state, tmp / STATE_FILE)
    # The old checkpoint stays (as .old) until the new one has its name: a kill at any point
    # leaves one complete checkpoint that _latest_checkpoint finds.
    old = out / f".{CHECKPOINT_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / CHECKPOINT_DIR).exists():
        (out / CHECKPOINT_DIR).replace(old)
    tmp.replace(out / CHECKPOINT_DIR)
    shutil.rmtree(old, ignore_errors=True)
    record = record.model_copy(
        update={
            "steps_done": step,
            "loss_curve": list(curve),
            "seconds": round(time.monotonic() - began, 1),
            "peak_memory_mib": peak_memory_mib(),
        }
    )
    write_tune_record(out, record)
    return record
