"""The fast scorer: lm-eval's hf backend, with loglikelihoods computed from shared prefixes.

Registered with lm-eval as ``irh-fast`` when this module is imported: lm-eval's own CLI does
not discover models from other packages, so use ``irh-lm-eval --model irh-fast ...`` (lm-eval's
CLI with this module imported first; harness/backends/lm_eval.py). It is a
subclass of lm-eval's ``HFLM``: model loading, tokenisation, chat templates and
``generate_until`` are lm-eval's own; only ``loglikelihood`` is replaced.

A robustness run asks for the same context many times (once per answer option) and for
contexts that share a long head (chat template + phrasing text before the document). The
hf backend recomputes the whole context for every option whose continuation is longer than
one token, and shares nothing between documents. Here a *cell* is one distinct context with
all the continuations asked of it (a document under a phrasing, with its options), and:

1. identical requests are answered once;
2. every context is cut at fixed positions into blocks of ``block_tokens`` (32) tokens; the
   full blocks before the context's last token are its *head*, computed block by block, each
   block once per distinct head (shared by every cell whose context starts with it) and kept
   across calls when several contexts share it (least recently used out first beyond 256 MiB,
   ``prefix_cache_mb=``);
3. the rest of the cell (the context after its head, and every continuation but its last
   token, as a prefix tree under a tree-shaped attention mask) is one row on top of its head,
   padded to a multiple of 16 columns;
4. a forward pass holds only rows of identical shape (blocks at the same position; cells with
   the same head length and padded width), so each row's numbers are those it gets alone;
5. the output projection (vocabulary logits) is computed only at the positions whose
   log-probabilities are needed, each once.

The segmentation depends on the cell alone, never on what else is in the call, what an
earlier call left in the cache, the batch a row lands in or the number of CPU threads: a
cell's loglikelihoods are bit-identical whatever the chunking, resume, cache state or number
of processes (checked in tests/test_backend_fast.py and tests/test_history.py). The price is
that a head shared by many cells is shared only up to its last full block (at most 31 tokens
per cell are run again) and the padding.

Token ids are exactly the hf backend's (its own ``_encode_pair``), so the loglikelihoods are
the same quantity computed in fewer operations; they agree with the hf backend's to float
round-off (a different segmentation of the same computation).
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

#: Generation: prompts whose heads agree on at least this many tokens encode the head once.
MIN_SHARED_PREFIX = 8
#: Contexts are cut into blocks of this many tokens at fixed positions.
BLOCK_TOKENS = 32
#: A cell's row is padded to a multiple of this many columns.
ROW_ROUND = 16
#: Positions projected onto the vocabulary at a time (bounds the log-probabilities' memory).
PROJECT_CHUNK = 512


Layers = list[tuple[torch.Tensor, torch.Tensor]]


class PrefixCache:
    """KV caches of whole blocks, kept across calls: the chat template's head and a phrasing's
    text recur in every call of a run (one per phrasing and chunk of documents).

    The key of a block is every token from position 0 to the block's end; the value is the
    block's own keys and values per layer. Least recently used blocks are dropped beyond
    ``budget_bytes``.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.entries: OrderedDict[tuple[int, ...], Layers] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.reused_tokens = 0

    @staticmethod
    def _size(layers: Layers) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)

    def get(self, key: tuple[int, ...]) -> Layers | None:
        layers = self.entries.get(key)
        if layers is not None:
            self.entries.move_to_end(key)
            self.hits += 1
            self.reused_tokens += layers[0][0].shape[2] if layers else 0
        return layers

    def put(self, key: tuple[int, ...], layers: Layers) -> None:
        if key in self.entries or self.budget_bytes <= 0:
            return
        size = self._size(layers)
        if size > self.budget_bytes:
            return
        self.entries[key] = layers
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= self._size(old)


@dataclass
class WorkCounter:
    """Tokens pushed through the transformer, for the benchmark's FLOP accounting."""

    forward_tokens: int = 0
    projected_positions: int = 0
    requests: int = 0
    unique_requests: int = 0
    padded_positions: int = 0
    forward_passes: int = 0
    generation_prefix_tokens_reused: int = 0


def encode_pair(lm: Any, context: str, continuation: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The token ids lm-eval's hf backend (``lm``) scores for one loglikelihood request; an
    empty context is scored after the model's prefix token."""
    if context == "":
        cont = lm.tok_encode(continuation, add_special_tokens=False)
        ctx, cont = ([lm.prefix_token_id], cont) if lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
    else:
        ctx, cont = lm._encode_pair(context, continuation)
    return tuple(ctx), tuple(cont)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def count_distinct_tokens(sequences: list[tuple[int, ...]]) -> int:
    """Nodes of the prefix trie of ``sequences``: the fewest token positions any causal
    scorer must run through the model to score them all (the benchmark's lower bound)."""
    trie: dict[Any, Any] = {}
    nodes = 0
    for seq in sequences:
        node = trie
        for tok in seq:
            if tok not in node:
                node[tok] = {}
                nodes += 1
            node = node[tok]
    return nodes


class _Node:
    """A stretch of tokens in the prefix trie of a call's inputs, compressed (a radix tree:
    one node per stretch without a branch). ``depth`` is the position of its first token."""

    __slots__ = ("children", "depth", "needs", "parent", "size", "tokens")

    def __init__(self, tokens: tuple[int, ...], depth: int, parent: _Node | None) -> None:
        self.tokens = tokens
        self.depth = depth
        self.parent = parent
        self.children: dict[int, _Node] = {}
        #: (offset in ``tokens``, next token, pair): a log-probability some pair needs
        self.needs: list[tuple[int, int, int]] = []
        self.size = 0  # tokens in the subtree, this node's included

    @property
    def depth_end(self) -> int:
        return self.depth + len(self.tokens)

    def path(self) -> tuple[int, ...]:
        parts = []
        node: _Node | None = self
        while node is not None:
            parts.append(node.tokens)
            node = node.parent
        return tuple(tok for part in reversed(parts) for tok in part)

    def split(self, k: int) -> _Node:
        """Keep the first ``k`` tokens here; a new only child takes the rest, the children and
        the needs (whose offsets must all be ``>= k``)."""
        tail = _Node(self.tokens[k:], self.depth + k, self)
        tail.children, self.children = self.children, {tail.tokens[0]: tail}
        for child in tail.children.values():
            child.parent = tail
        tail.needs = [(offset - k, token, pair) for offset, token, pair in self.needs]
        self.needs = []
        self.tokens = self.tokens[:k]
        tail.size = self.size - k
        return tail


def build_trie(sequences: list[tuple[int, ...]]) -> _Node:
    """The compressed prefix trie (radix tree) of ``sequences``; sizes are filled in by
    :func:`attach_needs`."""
    root = _Node((), 0, None)
    for seq in sequences:
        node, i = root, 0
        while i < len(seq):
            child = node.children.get(seq[i])
            if child is None:
                node.children[seq[i]] = _Node(tuple(seq[i:]), i, node)
                break
            tokens = child.tokens
            n = min(len(tokens), len(seq) - i)
            k = 1
            while k < n and tokens[k] == seq[i + k]:
                k += 1
            if k < len(tokens):
                child.split(k)
            node, i = child, i + k
    return root


def attach_needs(root: _Node, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    """Record where each pair needs a log-probability (its context's last position, then each
    continuation token's but the last) and fill in subtree sizes."""
    for pair, (ctx, cont) in enumerate(pairs):
        seq = ctx + cont[:-1]
        node = root.children[seq[0]]
        for j, token in enumerate(cont):
            position = len(ctx) - 1 + j
            while position >= node.depth_end:
                node = node.children[seq[node.depth_end]]
            node.needs.append((position - node.depth, token, pair))
    order: list[_Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children.values())
    for node in reversed(order):
        node.size = len(node.tokens) + sum(child.size for child in node.children.values())


@dataclass
class _Tally:
    """Per pair: the loglikelihood so far, whether every token was the greedy one, the tokens
    still to score; the progress bar counts pairs done."""

    scores: list[float]
    greedy: list[bool]
    remaining: list[int]
    bar: Any

    def add(self, pair: int, value: float, hit: bool) -> None:
        self.scores[pair] += value
        self.greedy[pair] = self.greedy[pair] and hit
        self.remaining[pair] -= 1
        if self.remaining[pair] == 0:
            self.bar.update(1)


def _converted_gguf(kwargs: dict[str, Any]) -> Path | None:
    """The converted copy of the GGUF file that ``pretrained=`` and ``gguf_file=`` name: a
    local folder (``~`` expanded) or a hub repository whose file is in the local hub cache.
    None where there is no GGUF file to hand (lm-eval then reports it as usual)."""
    pretrained, gguf_file = kwargs.get("pretrained"), kwargs.get("gguf_file")
    if not isinstance(pretrained, str) or not isinstance(gguf_file, str) or not gguf_file:
        return None
    path = Path(pretrained).expanduser() / gguf_file
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(pretrained, gguf_file, revision=kwargs.get("revision"))
        except Exception:  # not a repository id
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    return _CONVERTED.get(path) or _CONVERTED.setdefault(path, _convert(path))


def _convert(path: Path) -> Path:
    from harness.backends.gguf import converted_gguf_dir

    return converted_gguf_dir(path)


#: GGUF file -> its converted copy, once per process (the lookup hashes the file).
_CONVERTED: dict[Path, Path] = {}


@register_model("irh-fast")
class FastScorer(HFLM):
    """lm-eval's HFLM with prefix-sharing loglikelihoods (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        max_batch_tokens: int = 2048,
        block_tokens: int = BLOCK_TOKENS,
        max_kv_mb: float = 1024,
        prefix_cache_mb: float = 256,
        **kwargs: Any,
    ) -> None:
        converted = _converted_gguf(kwargs)
        if converted is not None:
            # Loading a GGUF dequantises every tensor on every load; the converted copy that
            # `irh run` keeps (one per GGUF sha256) loads in a fraction of the time.
            if kwargs.get("tokenizer") in (kwargs["pretrained"], str(Path(str(kwargs["pretrained"])).expanduser())):
                del kwargs["tokenizer"]  # the copy holds the GGUF's tokenizer
            kwargs["pretrained"] = str(converted)
            del kwargs["gguf_file"]
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = int(max_batch_tokens)
        self.block_tokens = int(block_tokens)
        if self.block_tokens < 1:
            raise ValueError(f"block_tokens={block_tokens} must be at least 1")
        self.max_kv_bytes = int(float(max_kv_mb) * 2**20)
        self.prefix_cache = PrefixCache(int(float(prefix_cache_mb) * 2**20))
        self.work = WorkCounter()

    # ------------------------------------------------------------------ model pieces

    def _decoder(self) -> Any:
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def _cache_kwarg(self) -> str:
        """The name under which this transformers version takes a KV cache: ``cache`` since
        transformers 5.x renamed it (the old ``past_key_values`` still works there, with a
        FutureWarning on every call), ``past_key_values`` before."""
        name = getattr(self, "_cache_kwarg_name", None)
        if name is None:
            params = inspect.signature(self._decoder().forward).parameters
            name = self._cache_kwarg_name = "cache" if "cache" in params else "past_key_values"
        return name

    def _autocast(self) -> Any:
        """The hf backend's ``mixed_precision_dtype`` autocast, around every forward pass."""
        dtype = self.mixed_precision_dtype
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=dtype is not None)

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary log-probabilities (float32) for the given hidden states only."""
        self.work.projected_positions += hidden.shape[0]
        # All of the model's outputs, as the hf backend's log-softmax sees them (added tokens
        # such as chat markers included).
        with self._autocast():
            logits = self.model.get_output_embeddings()(hidden)
        return F.log_softmax(logits.float(), dim=-1)

    def _run(self, input_ids: torch.Tensor, cache: Any, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        self.work.forward_tokens += int(attention_mask[:, -input_ids.shape[1] :].sum())
        with self._autocast():
            out = self._decoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **{self._cache_kwarg(): cache},
            )
        return out.last_hidden_state

    def _cache_from(self, layers: Layers) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for idx, (k, v) in enumerate(layers):
            cache.update(k, v, idx)
        return cache

    @staticmethod
    def _layers_of(cache: Any) -> Layers:
        return [(layer.keys, layer.values) for layer in cache.layers]

    # ------------------------------------------------------------------ scoring

    def _encode_requests(self, requests: list[Any]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        return [encode_pair(self, *req.args) for req in requests]

    def _shares_safely(self) -> bool:
        """Whether this model's logits are plain ``lm_head(decoder(x))`` over a full-length cache.

        Logit soft-capping or scaling (Gemma 2, Cohere, Granite) happens outside the decoder,
        and sliding-window caches drop old keys; such models keep lm-eval's own path.
        """
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        plain = not any(
            getattr(text_config, name, None) not in (None, 1.0, False)
            for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "sliding_window")
        )
        return self.backend == "causal" and plain

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> torch.Tensor:
        """lm-eval's batched generation (stop sequences, greedy or sampled), with the head the
        batch's prompts share encoded once (or taken from the prefix cache) and passed in as
        the KV cache.

        lm-eval left-pads the batch: ``[pad..][head][rest]``. Each row is laid out as
        ``[head][pad..][rest]`` instead, with the same length and the padding masked, so the
        position ids (from the attention mask) and the returned sequences are those of
        lm-eval's own call, and ``generate`` runs only the uncached columns.
        """
        mask = generation_kwargs.get("attention_mask")
        several = any(int(generation_kwargs.get(k) or 1) > 1 for k in ("num_beams", "num_return_sequences"))
        given_cache = any(generation_kwargs.get(k) is not None for k in ("past_key_values", "cache"))
        if mask is None or several or not self._shares_safely() or given_cache:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        width = context.shape[1]
        rows = [context[r, width - int(mask[r].sum()) :].tolist() for r in range(context.shape[0])]
        shared = min(min(common_prefix_length(rows[0], row) for row in rows), min(len(row) for row in rows) - 1)
        if shared < MIN_SHARED_PREFIX:
            return super()._model_generate(context, max_length, stop, **generation_kwargs)
        head = tuple(rows[0][:shared])
        before = self.work.forward_tokens
        with torch.no_grad():
            layers = self._encode_prefix(head)
        ids = torch.full_like(context, self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        new_mask = torch.zeros_like(mask)
        ids[:, :shared] = torch.tensor(head, dtype=context.dtype, device=context.device)
        new_mask[:, :shared] = 1
        for r, row in enumerate(rows):
            rest = row[shared:]
            ids[r, width - len(rest) :] = torch.tensor(rest, dtype=context.dtype, device=context.device)
            new_mask[r, width - len(rest) :] = 1
        n = context.shape[0]
        cache = self._cache_from([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in layers])
        generation_kwargs["attention_mask"] = new_mask
        self.work.generation_prefix_tokens_reused += shared * n - (self.work.forward_tokens - before)
        generation_kwargs[self._cache_kwarg()] = cache
        return super()._model_generate(ids, max_length, stop, **generation_kwargs)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if not self._shares_safely():
            return list(super().loglikelihood(requests, disable_tqdm=disable_tqdm))
        encoded = self._encode_requests(requests)
        # Left truncation changes the context per request, and an empty continuation has
        # nothing to score: both go to lm-eval's own path.
        skip = {i for i, (c, t) in enumerate(encoded) if len(c) + len(t) > self.max_length or not t}
        fallback = iter(super().loglikelihood([requests[i] for i in sorted(skip)], disable_tqdm=True) if skip else ())
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        for i, pair in enumerate(encoded):
            if i not in skip:
                unique.setdefault(pair, len(unique))
        self.work.requests += len(requests)
        self.work.unique_requests += len(unique)
        scores = [0.0] * len(unique)
        greedy = [True] * len(unique)
        if unique:
            bar = tqdm(total=len(unique), desc="irh-fast loglikelihood", disable=disable_tqdm or self.rank != 0)
            with torch.inference_mode():
                self._score_cells(list(unique), _Tally(scores, greedy, [len(cont) for _, cont in unique], bar))
            bar.close()
        return [next(fallback) if i in skip else (scores[unique[key]], greedy[unique[key]]) for i, key in enumerate(encoded)]

    def _encode_prefix(self, prefix: tuple[int, ...]) -> Layers:
        """The KV cache of ``prefix`` (generation's shared head): its full blocks as for
        loglikelihoods (from the prefix cache where an earlier call computed them), the rest
        run on top."""
        head = len(prefix) // self.block_tokens * self.block_tokens
        store: dict[tuple[int, ...], Layers] = {}
        self._compute_blocks(
            [prefix[:head]], store, shared={prefix[: (j + 1) * self.block_tokens]: 2 for j in range(head // self.block_tokens)}
        )
        layers = self._past_of([prefix[:head]], store)
        if head < len(prefix):
            cache = self._cache_from(layers)
            mask = torch.ones((1, len(prefix)), dtype=torch.long, device=self.device)
            self._run(
                torch.tensor([prefix[head:]], device=self.device), cache, mask, torch.arange(head, len(prefix), device=self.device)[None]
            )
            self.work.forward_passes += 1
            layers = self._layers_of(cache)
        return layers

    # ------------------------------------------------------------------ scoring cell by cell

    def _kv_bytes_per_token(self) -> int:
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        dtype = self.mixed_precision_dtype or self.model.dtype
        return 2 * text.num_hidden_layers * heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def _score_cells(self, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]], tally: _Tally) -> None:
        """Score every (context, continuation) pair, cell by cell (see the module docstring):
        heads block by block, then one row per cell. Cells are taken in waves whose heads' KV
        caches fit in ``max_kv_mb``; the order changes no number."""
        cells: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            cells.setdefault(ctx, []).append(i)
        contexts = sorted(cells)  # cells sharing a head side by side
        shared: dict[tuple[int, ...], int] = {}
        for ctx in contexts:
            for j in range(self._head_blocks(ctx)):
                key = ctx[: (j + 1) * self.block_tokens]
                shared[key] = shared.get(key, 0) + 1
        budget = max(1, self.max_kv_bytes // self._kv_bytes_per_token())
        waves: list[list[tuple[int, ...]]] = [[]]
        used = 0
        for ctx in contexts:
            if waves[-1] and used + len(ctx) > budget:
                waves.append([])
                used = 0
            waves[-1].append(ctx)
            used += len(ctx)
        for wave in waves:
            store: dict[tuple[int, ...], Layers] = {}
            self._compute_blocks([c[: self._head_blocks(c) * self.block_tokens] for c in wave], store, shared)
            self._score_rows([(c, cells[c]) for c in wave], pairs, store, tally)

    def _head_blocks(self, context: tuple[int, ...]) -> int:
        """Full blocks before the context's last token (whose hidden state a score needs)."""
        return (len(context) - 1) // self.block_tokens

    def _past_of(self, heads: list[tuple[int, ...]], store: dict[tuple[int, ...], Layers]) -> Layers:
        """The KV caches of heads of equal length (whole blocks, all in ``store``), stacked."""
        size = self.block_tokens
        count = len(heads[0]) // size
        if count == 0:
            return []
        rows = [[store[head[: (j + 1) * size]] for j in range(count)] for head in heads]
        return [
            (
                torch.cat([torch.cat([blocks[j][index][0] for j in range(count)], dim=2) for blocks in rows]),
                torch.cat([torch.cat([blocks[j][index][1] for j in range(count)], dim=2) for blocks in rows]),
            )
            for index in range(len(rows[0][0]))
        ]

    def _forward(self, ids: torch.Tensor, past: Layers, positions: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """One forward pass of rows of identical shape on top of their pasts (equal lengths)."""
        cache = self._cache_from(past)
        self.work.forward_passes += 1
        with self._autocast():
            hidden = self._decoder()(
                input_ids=ids.to(self.device),
                attention_mask=allowed.to(self.device)[:, None],
                position_ids=positions.to(self.device),
                use_cache=True,
                **{self._cache_kwarg(): cache},
            ).last_hidden_state
        return hidden, cache

    def _compute_blocks(
        self, heads: list[tuple[int, ...]], store: dict[tuple[int, ...], Layers], shared: dict[tuple[int, ...], int]
    ) -> None:
        """Put every block of every head into ``store``: from the prefix cache, or computed,
        block position by block position, rows of the same position sharing passes. A block
        that several contexts share is kept in the prefix cache."""
        size = self.block_tokens
        for j in range(max((len(head) // size for head in heads), default=0)):
            todo: list[tuple[int, ...]] = []
            for head in heads:
                key = head[: (j + 1) * size]
                if len(head) < (j + 1) * size or key in store:
                    continue
                cached = self.prefix_cache.get(key)
                if cached is not None:
                    store[key] = cached
                else:
                    store[key] = []  # placeholder: computed below
                    todo.append(key)
            per_pass = max(1, self.max_batch_tokens // size)
            tril = torch.tril(torch.ones((size, size), dtype=torch.bool))
            for lo in range(0, len(todo), per_pass):
                keys = todo[lo : lo + per_pass]
                n = len(keys)
                allowed = torch.ones((n, size, j * size + size), dtype=torch.bool)
                allowed[:, :, j * size :] = tril
                positions = torch.arange(j * size, (j + 1) * size).expand(n, -1)
                ids = torch.tensor([key[j * size :] for key in keys])
                self.work.forward_tokens += n * size
                _, cache = self._forward(ids, self._past_of([key[: j * size] for key in keys], store), positions, allowed)
                for r, key in enumerate(keys):
                    block = [(k[r : r + 1, :, j * size :].clone(), v[r : r + 1, :, j * size :].clone()) for k, v in self._layers_of(cache)]
                    store[key] = block
                    if shared.get(key, 0) > 1:
                        self.prefix_cache.put(key, block)

    def _score_rows(
        self,
        cells: list[tuple[tuple[int, ...], list[int]]],
        pairs: list[tuple[tuple[int, ...], tuple[int, ...]]],
        store: dict[tuple[int, ...], Layers],
        tally: _Tally,
    ) -> None:
        """One row per cell on top of its head: the rest of the context, then the prefix tree
        of its continuations (each but its last token), laid out depth first in token order
        under a tree-shaped mask and padded to a multiple of ``ROW_ROUND``. Rows of equal head
        length and padded width share passes."""
        groups: dict[tuple[int, int], list[tuple[tuple[int, ...], _Node, list[int]]]] = {}
        for ctx, members in cells:
            head = self._head_blocks(ctx) * self.block_tokens
            tails = [(ctx[head:], pairs[i][1]) for i in members]
            root = build_trie([c + t[:-1] for c, t in tails])
            attach_needs(root, tails)
            width = -(-root.size // ROW_ROUND) * ROW_ROUND
            groups.setdefault((head, width), []).append((ctx, root, members))
        for (head, width), rows in sorted(groups.items()):
            per_pass = max(1, self.max_batch_tokens // width)
            for lo in range(0, len(rows), per_pass):
                self._score_pass(rows[lo : lo + per_pass], head, width, store, tally)

    def _score_pass(
        self,
        rows: list[tuple[tuple[int, ...], _Node, list[int]]],
        head: int,
        width: int,
        store: dict[tuple[int, ...], Layers],
        tally: _Tally,
    ) -> None:
        import numpy as np

        n = len(rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((n, width), pad, dtype=np.int64)
        positions = np.broadcast_to(np.arange(head, head + width), (n, width)).copy()
        allowed = np.zeros((n, width, head + width), dtype=bool)
        allowed[:, :, :head] = True
        allowed[:, :, head:] = np.eye(width, dtype=bool)  # padding sees itself
        tril = np.tri(width, dtype=bool)
        wanted: list[tuple[int, int, int, int]] = []  # (row, column, target token, pair)
        used = 0
        for r, (_, root, members) in enumerate(rows):
            column = 0
            stack: list[tuple[_Node, tuple[tuple[int, int], ...]]] = [
                (child, ()) for _, child in sorted(root.children.items(), reverse=True)
            ]
            while stack:
                node, ancestors = stack.pop()
                end = column + len(node.tokens)
                ids[r, column:end] = node.tokens
                positions[r, column:end] = np.arange(head + node.depth, head + node.depth_end)
                block = allowed[r, column:end]
                block[:, head + column : head + end] = tril[: end - column, : end - column]
                for a_start, a_end in ancestors:
                    block[:, head + a_start : head + a_end] = True
                wanted.extend((r, column + offset, target, members[pair]) for offset, target, pair in node.needs)
                spans = (*ancestors, (column, end))
                stack.extend((child, spans) for _, child in sorted(node.children.items(), reverse=True))
                column = end
            used += column
        self.work.forward_tokens += used
        self.work.padded_positions += n * width - used
        past = self._past_of([ctx[:head] for ctx, _, _ in rows], store)
        hidden, _ = self._forward(torch.from_numpy(ids), past, torch.from_numpy(positions), torch.from_numpy(allowed))
        self._score_positions(hidden, wanted, tally)

    def _score_positions(
        self,
        hidden: torch.Tensor,
        wanted: list[tuple[int, int, int, int]],
        tally: _Tally,
    ) -> None:
        """Project the needed positions (each once) onto the vocabulary and add each pair's
        token log-probabilities and greedy checks."""
        if not wanted:
            return
        where: dict[tuple[int, int], int] = {}
        index = [where.setdefault((r, c), len(where)) for r, c, _, _ in wanted]
        rows_t = torch.tensor([r for r, _ in where], device=hidden.device)
        cols_t = torch.tensor([c for _, c in where], device=hidden.device)
        targets = torch.tensor([t for _, _, t, _ in wanted], device=hidden.device)
        index_t = torch.tensor(index, device=hidden.device)
        chunk = PROJECT_CHUNK
        for lo in range(0, len(where), chunk):
            logprobs = self._project(hidden[rows_t[lo : lo + chunk], cols_t[lo : lo + chunk]])
            mine = (index_t >= lo) & (index_t < lo + chunk)
            picked = index_t[mine] - lo
            values_chunk = logprobs[picked, targets[mine]]
            hits_chunk = logprobs.argmax(dim=-1)[picked] == targets[mine]
            for i, value, hit in zip(mine.nonzero().flatten().tolist(), values_chunk.tolist(), hits_chunk.tolist(), strict=True):
                tally.add(wanted[i][3], value, hit)
