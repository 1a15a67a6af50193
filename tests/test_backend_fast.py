"""The fast scorer against lm-eval's hf backend on the same tiny model: same numbers, less work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.backends.fast import attach_needs, build_trie, count_distinct_tokens


def _models(tiny_model: Path) -> tuple[Any, Any]:
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model

    import harness.backends.fast  # noqa: F401

    args = f"pretrained={tiny_model},dtype=float32,device=cpu"
    hf = get_model("hf").create_from_arg_string(args, {"batch_size": 4})
    fast = get_model("irh-fast").create_from_arg_string(args, {"batch_size": 4})
    # Small batches so that the test crosses batch boundaries and padding.
    fast.max_batch_tokens = 120
    return hf, fast


def _requests(pairs: list[tuple[str, str]]) -> list[Any]:
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=0) for p in pairs]


def _workload() -> list[tuple[str, str]]:
    head = "<|im_start|>system\nYou answer questions.<|im_end|>\n<|im_start|>user\n"
    pairs = []
    for phrasing in ("Read the question and pick an answer.", "Question time! Choose one of the options below, please."):
        for doc in range(5):
            context = f"{head}{phrasing}\nIs the sky blue on day {doc}?" + " really" * doc + "<|im_end|>\n<|im_start|>assistant\n"
            for option in ("yes", "no", "A blue sky and a sea", "premise hypothesis entailment"):
                pairs.append((context, option))
    pairs.append(pairs[0])  # an exact duplicate request
    pairs.append(("", "Is the sky blue?"))  # an empty context (scored after the prefix token)
    return pairs


def test_loglikelihoods_match_hf_within_1e4_in_fp32(tiny_model: Path) -> None:
    hf, fast = _models(tiny_model)
    pairs = _workload()
    expected = hf.loglikelihood(_requests(pairs), disable_tqdm=True)
    got = fast.loglikelihood(_requests(pairs), disable_tqdm=True)
    assert len(got) == len(expected)
    for (a, greedy_a), (b, greedy_b) in zip(expected, got, strict=True):
        assert abs(a - b) < 1e-4
        assert greedy_a == greedy_b
    # Duplicates are answered once, and far fewer tokens are run than hf runs.
    assert fast.work.requests == len(pairs)
    assert fast.work.unique_requests == len(pairs) - 1
    hf_tokens = sum(len(c) + len(t) - 1 for c, t in (hf._encode_pair(a, b) for a, b in pairs if a))
    assert fast.work.forward_tokens < hf_tokens / 2


@pytest.mark.parametrize(
    ("block_tokens", "max_batch_tokens"), [(32, 2048), (4, 120), (1, 48)], ids=["default", "small-blocks", "one-token-blocks"]
)
def test_cells_give_hf_numbers_whatever_the_block_size(tiny_model: Path, block_tokens: int, max_batch_tokens: int) -> None:
    """Heads cut into blocks of any size (down to one token: a head of many passes), rows of
    many widths: the numbers are hf's, and the work is the trie minimum plus at most a block's
    worth per cell (the part of a shared head after its last full block) and the padding."""
    hf, fast = _models(tiny_model)
    fast.block_tokens, fast.max_batch_tokens = block_tokens, max_batch_tokens
    pairs = _workload()
    # Options sharing their first tokens, and a context that is the head of another.
    pairs += [("Is the sky blue?", " A blue sky"), ("Is the sky blue?", " A blue sea"), ("Is the sky blue? Is it", " yes")]
    expected = hf.loglikelihood(_requests(pairs), disable_tqdm=True)
    got = fast.loglikelihood(_requests(pairs), disable_tqdm=True)
    for (a, greedy_a), (b, greedy_b) in zip(expected, got, strict=True):
        assert abs(a - b) < 1e-4 and greedy_a == greedy_b
    encoded = fast._encode_requests(_requests(pairs))
    inputs = {c + t[:-1] for c, t in encoded}
    cells = {c for c, _ in encoded}
    minimum = count_distinct_tokens(sorted(inputs))
    assert minimum <= fast.work.forward_tokens <= minimum + block_tokens * len(cells)
    assert fast.work.padded_positions < 16 * len(cells)
    if block_tokens == 1:
        longest = max(len(c) for c in cells)
        assert fast.work.forward_passes >= longest - 1  # one pass per head position, then the rows


def test_generation_is_hf_generation(tiny_model: Path) -> None:
    from lm_eval.api.instance import Instance

    hf, fast = _models(tiny_model)
    head = "<|im_start|>system\nYou answer questions.<|im_end|>\n<|im_start|>user\nAnswer the question in one line.\n"

    def batch(words: list[str]) -> list[Any]:
        return [
            Instance(
                request_type="generate_until",
                doc={},
                arguments=(
                    f"{head}Is the sky {w}?" + " Think." * i + "<|im_end|>\n<|im_start|>assistant\n",
                    {"until": ["\n", "sky"], "max_gen_toks": 8, "do_sample": False},
                ),
                idx=0,
            )
            for i, w in enumerate(words)
        ]

    # Prompts of different lengths in one batch (padding between the shared head and the rest),
    # then a second call whose head comes from the prefix cache.
    first, second = batch(["blue", "green", "red", "grey", "dark"]), batch(["pink", "white"])
    assert fast.generate_until(first, disable_tqdm=True) == hf.generate_until(first, disable_tqdm=True)
    reused = fast.work.generation_prefix_tokens_reused
    assert reused > 0
    hits = fast.prefix_cache.hits
    assert fast.generate_until(second, disable_tqdm=True) == hf.generate_until(second, disable_tqdm=True)
    assert fast.prefix_cache.hits > hits and fast.work.generation_prefix_tokens_reused > reused
    # Prompts with no common head take lm-eval's own path unchanged.
    plain = [
        Instance(request_type="generate_until", doc={}, arguments=(f"{i} Is it?", {"until": ["\n"], "max_gen_toks": 4}), idx=0)
        for i in range(3)
    ]
    assert fast.generate_until(plain, disable_tqdm=True) == hf.generate_until(plain, disable_tqdm=True)


def test_prefix_cache_serves_later_calls_with_the_same_numbers(tiny_model: Path) -> None:
    hf, fast = _models(tiny_model)
    pairs = _workload()
    half = len(pairs) // 2
    fast.loglikelihood(_requests(pairs[:half]), disable_tqdm=True)
    before, hits = fast.work.forward_tokens, fast.prefix_cache.hits
    got = fast.loglikelihood(_requests(pairs[half:]), disable_tqdm=True)
    assert fast.prefix_cache.hits > hits and fast.prefix_cache.reused_tokens > 0
    expected = hf.loglikelihood(_requests(pairs[half:]), disable_tqdm=True)
    assert max(abs(a[0] - b[0]) for a, b in zip(expected, got, strict=True)) < 1e-4
    # The second call ran fewer tokens than a fresh scorer runs for it.
    _, fresh = _models(tiny_model)
    fresh.loglikelihood(_requests(pairs[half:]), disable_tqdm=True)
    assert fast.work.forward_tokens - before < fresh.work.forward_tokens


def test_prefix_cache_keeps_within_its_budget() -> None:
    import torch

    from harness.backends.fast import PrefixCache

    def layers(n: int) -> list[tuple[Any, Any]]:
        return [(torch.zeros(1, 2, n, 4), torch.zeros(1, 2, n, 4))]

    cache = PrefixCache(budget_bytes=2 * 2 * 2 * 10 * 4 * 4)  # room for 20 tokens of one layer
    cache.put((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), layers(10))
    cache.put((1, 2, 3, 7, 7), layers(5))
    got = cache.get((1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
    assert got is not None and got[0][0].shape == (1, 2, 10, 4) and cache.reused_tokens == 10
    assert cache.get((1, 2, 3, 4, 5)) is None  # a block is found by its whole key only
    cache.put((5, 5, 5, 5, 5, 5, 5, 5), layers(8))  # evicts the least recently used entry
    assert (1, 2, 3, 7, 7) not in cache.entries and cache.bytes <= cache.budget_bytes
    assert cache.get((9, 9)) is None


def test_trie_runs_each_position_once_and_needs_land_where_pairs_ask() -> None:
    pairs = [
        ((1, 2, 3, 4), (5, 6, 7)),
        ((1, 2, 3, 4), (5, 8)),
        ((1, 2, 3, 4), (9,)),
        ((1, 2, 9), (4,)),
        ((1, 2, 3), (4, 5)),  # its context is a head of the others' contexts
        ((7,), (7, 7)),
    ]
    inputs = [ctx + cont[:-1] for ctx, cont in pairs]
    root = build_trie(inputs)
    attach_needs(root, pairs)
    assert root.size == count_distinct_tokens(inputs) == 9

    def walk(node, found):
        for offset, token, pair in node.needs:
            found.setdefault(pair, []).append((node.path()[: node.depth + offset + 1], token))
        for child in node.children.values():
            walk(child, found)
        return found

    found = walk(root, {})
    for pair, (ctx, cont) in enumerate(pairs):
        # One need per continuation token, at the input position that predicts it.
        assert sorted(found[pair]) == sorted((ctx + cont[:j], cont[j]) for j in range(len(cont)))
    # Every branch point splits the stretch: (1 2) is shared, then 3 | 9, then 4 | ...
    head = root.children[1]
    assert head.tokens == (1, 2) and set(head.children) == {3, 9}


def test_minimum_token_count_is_the_prefix_trie_size() -> None:
    assert count_distinct_tokens([(1, 2, 3), (1, 2, 4), (1, 2, 3), (5,)]) == 5
    assert count_distinct_tokens([]) == 0


@pytest.mark.parametrize("spec", ["default"])
def test_default_model_uses_the_fast_scorer(spec: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness.backends import models

    monkeypatch.setattr(models, "default_model_dir", lambda progress=None: tmp_path)
    parsed = models.parse_model_spec(spec)
    assert parsed.backend == "irh-fast"
    assert parsed.args["pretrained"] == str(tmp_path)
    assert parsed.label == "SmolLM2-135M-Instruct"


def test_parity_when_the_model_has_more_outputs_than_the_tokenizer(tiny_model: Path, tmp_path: Path) -> None:
    """Padded output layers (common in chat models) must not be cut to the tokenizer's size."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    import harness.backends.fast  # noqa: F401

    model = LlamaForCausalLM.from_pretrained(tiny_model)
    model.resize_token_embeddings(model.config.vocab_size + 24)
    padded = tmp_path / "padded"
    model.save_pretrained(padded)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(padded)
    args = f"pretrained={padded},dtype=float32,device=cpu"
    hf = get_model("hf").create_from_arg_string(args, {"batch_size": 4})
    fast = get_model("irh-fast").create_from_arg_string(args, {"batch_size": 4})
    pairs = _workload()[:12]
    for (a, ga), (b, gb) in zip(
        hf.loglikelihood(_requests(pairs), disable_tqdm=True), fast.loglikelihood(_requests(pairs), disable_tqdm=True), strict=True
    ):
        assert abs(a - b) < 1e-4 and ga == gb


def test_too_long_requests_take_lm_evals_path_in_order(tiny_model: Path) -> None:
    hf, fast = _models(tiny_model)
    pairs = _workload()[:8]
    fast._max_length = hf._max_length = 30  # shorter than every context: all are truncated by lm-eval's rule
    short = [("Is it blue?", " yes"), ("Is it blue?", " no")]
    mixed = [pairs[0], short[0], pairs[5], short[1]]
    expected = hf.loglikelihood(_requests(mixed), disable_tqdm=True)
    got = fast.loglikelihood(_requests(mixed), disable_tqdm=True)
    assert [round(a, 4) for a, _ in got] == [round(b, 4) for b, _ in expected]


def test_no_deprecated_cache_argument_warnings(tiny_model: Path) -> None:
    """irh-fast passes its KV cache under the name this transformers takes (`cache` in 5.x), so no
    `past_key_values is deprecated` FutureWarning is printed in the middle of a run."""
    import warnings

    from lm_eval.api.instance import Instance

    _, fast = _models(tiny_model)
    head = "<|im_start|>system\nYou answer questions.<|im_end|>\n<|im_start|>user\nAnswer the question in one line.\n"
    gen = [
        Instance(request_type="generate_until", doc={}, arguments=(f"{head}Is the sky {w}?", {"until": ["\n"], "max_gen_toks": 4}), idx=0)
        for w in ("blue", "green")
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast.loglikelihood(_requests(_workload()), disable_tqdm=True)
        fast.generate_until(gen, disable_tqdm=True)
    assert fast.work.generation_prefix_tokens_reused > 0  # the cached-head generation path ran
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_gguf_args_load_the_converted_copy_once_per_process(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pretrained=DIR,gguf_file=F` (DIR may start with ~, and tokenizer=DIR may repeat it) loads
    the converted copy that `irh run` keeps; the file is looked up (hashed) once per process."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model

    from harness.backends import fast as fast_module
    from harness.backends import gguf as gguf_module

    home = tmp_path / "home"
    (home / "gguf").mkdir(parents=True)
    (home / "gguf" / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(fast_module, "_CONVERTED", {})
    converted: list[Path] = []
    monkeypatch.setattr(gguf_module, "converted_gguf_dir", lambda path, progress=None, name=None: converted.append(path) or tiny_model)
    args = "pretrained=~/gguf,gguf_file=model.gguf,tokenizer=~/gguf,dtype=float32,device=cpu"
    first = get_model("irh-fast").create_from_arg_string(args, {"batch_size": 4})
    second = get_model("irh-fast").create_from_arg_string(args, {"batch_size": 4})
    assert converted == [home / "gguf" / "model.gguf"]
    assert first.model.config.hidden_size == second.model.config.hidden_size == 32  # the tiny model's
    # No GGUF file to hand: lm-eval's own loading (and its error) as usual.
    assert fast_module._converted_gguf({"pretrained": str(tmp_path), "gguf_file": "absent.gguf"}) is None


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cells_numbers_do_not_depend_on_what_else_is_scored(tiny_model: Path, dtype: str) -> None:
    """The same requests in one call, or split into calls in another order after a warm cache,
    or with tiny passes, tiny KV waves and one CPU thread: bit-identical loglikelihoods."""
    import lm_eval.models  # noqa: F401
    import torch
    from lm_eval.api.registry import get_model

    def scorer(**settings: Any) -> Any:
        fast = get_model("irh-fast").create_from_arg_string(f"pretrained={tiny_model},dtype={dtype},device=cpu", {"batch_size": 4})
        for name, value in settings.items():
            setattr(fast, name, value)
        return fast

    pairs = _workload()
    expected = scorer().loglikelihood(_requests(pairs), disable_tqdm=True)
    warm = scorer()
    got: dict[int, tuple[float, bool]] = {}
    order = list(range(len(pairs)))[::-1]
    for part in (order[:7], order[7:30], order[30:]):
        for i, result in zip(part, warm.loglikelihood(_requests([pairs[i] for i in part]), disable_tqdm=True), strict=True):
            got[i] = result
    assert warm.prefix_cache.hits > 0
    assert [got[i] for i in range(len(pairs))] == expected
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        small = scorer(max_batch_tokens=16, max_kv_bytes=1)
        assert small.loglikelihood(_requests(pairs), disable_tqdm=True) == expected
    finally:
        torch.set_num_threads(threads)
