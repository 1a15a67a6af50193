"""The fast scorer: lm-eval's hf backend, with loglikelihoods computed from shared prefixes.

Registered with lm-eval as ``irh-fast`` when this module is imported: lm-eval's own CLI does
not discover models from other packages, so use ``irh-lm-eval --model irh-fast ...`` (lm-eval's
CLI with this module imported first; harness/backends/lm_eval.py). It is a
subclass of lm-eval's ``HFLM``: model loading, tokenisation, chat templates and
``generate_until`` are lm-eval's own; only ``loglikelihood`` is replaced.

A robustness run asks for the same context many times (once per answer option) and for
contexts that share a long head (chat template + phrasing text before the document). The
hf backend recomputes the whole context for every option whose continuation is longer than
one token, and shares nothing between documents. Here, per call:

1. identical requests are answered once;
2. the inputs (context + continuation minus its last token) form a prefix trie, kept
   compressed (one node per stretch without a branch); every position of the trie is run
   through the model exactly once, which is the fewest any exact causal scorer can run;
3. a subtree of up to ``max_row_tokens`` tokens (a document's context and all its options,
   or a few documents with their shared head) is laid out in one row, with a tree-shaped
   attention mask: each position sees its ancestors only, at the positions it would have
   alone; a bigger subtree's head is run as a stretch of its own, and its KV cache is the
   past of its children's rows;
4. rows with different pasts share forward passes (each past left-aligned, padded and
   masked), so passes are large whatever the grouping: heads first (breadth first, so that
   most rows are ready together), widest rows first, with padding bounded (2% of a pass);
5. shared heads' caches are kept across calls (the chat template's head and a phrasing's
   text recur in every call of a run; least recently used out first beyond 256 MiB);
6. the output projection (vocabulary logits) is computed only at the positions whose
   log-probabilities are needed, each once: the last context token and the continuation
   tokens but the last.

Token ids are exactly the hf backend's (its own ``_encode_pair``), so the loglikelihoods are
the same quantity computed in fewer operations; they agree to float round-off.
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
#: A subtree of the prefix trie up to this many tokens is scored whole in one row.
MAX_ROW_TOKENS = 256
#: Rows are at least this wide where their items are smaller (several share a row).
MIN_ROW_TOKENS = 64
#: Positions projected onto the vocabulary at a time (bounds the log-probabilities' memory).
PROJECT_CHUNK = 512


Layers = list[tuple[torch.Tensor, torch.Tensor]]


class PrefixCache:
    """KV caches of shared prefixes, kept across calls: the chat template's head and a
    phrasing's text recur in every call of a run (one per phrasing and chunk of documents).

    Least recently used entries are dropped beyond ``budget_bytes``. A lookup returns the
    longest cached prefix of the tokens asked for; the cache of a token sequence's first
    ``n`` tokens is the first ``n`` positions of its cache (causal attention), so any entry
    sharing a head with the request serves that head.
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

    def longest(self, tokens: tuple[int, ...], better_than: int = 0) -> tuple[int, Layers]:
        """The cache of the longest head of ``tokens`` held, if longer than ``better_than``."""
        best, best_key = better_than, None
        for key in self.entries:
            n = common_prefix_length(key, tokens)
            if n > best:
                best, best_key = n, key
        if best_key is None:
            return 0, []
        self.entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in self.entries[best_key]]

    def put(self, tokens: tuple[int, ...], layers: Layers) -> None:
        if tokens in self.entries or self.budget_bytes <= 0:
            return
        size = self._size(layers)
        if size > self.budget_bytes:
            return
        self.entries[tokens] = layers
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

    __slots__ = ("children", "contexts", "depth", "needs", "parent", "size", "tokens")

    def __init__(self, tokens: tuple[int, ...], depth: int, parent: _Node | None) -> None:
        self.tokens = tokens
        self.depth = depth
        self.parent = parent
        self.children: dict[int, _Node] = {}
        #: (offset in ``tokens``, next token, pair): a log-probability some pair needs
        self.needs: list[tuple[int, int, int]] = []
        self.size = 0  # tokens in the subtree, this node's included
        self.contexts = 0  # distinct contexts that end in the subtree

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
        tail.size, tail.contexts = self.size - k, self.contexts
        return tail


@dataclass
class _Row:
    """One row of a forward pass: items laid out side by side on top of ``past``'s cached path.
    An item is a node with its whole subtree (``True``) or the node's own stretch alone."""

    past: _Node
    level: int
    items: list[tuple[_Node, bool]]

    @property
    def width(self) -> int:
        return sum(node.size if whole else len(node.tokens) for node, whole in self.items)


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
    continuation token's but the last) and fill in subtree sizes and context counts."""
    ends: dict[int, set[int]] = {}
    for pair, (ctx, cont) in enumerate(pairs):
        seq = ctx + cont[:-1]
        node = root.children[seq[0]]
        for j, token in enumerate(cont):
            position = len(ctx) - 1 + j
            while position >= node.depth_end:
                node = node.children[seq[node.depth_end]]
            node.needs.append((position - node.depth, token, pair))
            if j == 0:
                ends.setdefault(id(node), set()).add(position)
    order: list[_Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children.values())
    for node in reversed(order):
        node.size = len(node.tokens) + sum(child.size for child in node.children.values())
        node.contexts = len(ends.get(id(node), ())) + sum(child.contexts for child in node.children.values())


def pack_items(items: list[tuple[_Node, bool]], min_width: int) -> list[list[tuple[_Node, bool]]]:
    """Items into as few rows as first-fit decreasing finds, each no wider than the widest
    item (or ``min_width``): a row costs attention in proportion to its width, so small items
    share rows but never widen them."""

    def size(item: tuple[_Node, bool]) -> int:
        return item[0].size if item[1] else len(item[0].tokens)

    items = sorted(items, key=size, reverse=True)
    if not items:
        return []
    capacity = max(size(items[0]), min_width)
    bins: list[list[tuple[_Node, bool]]] = []
    room: list[int] = []
    open_bins: list[int] = []  # bins with room left, the most recent last
    for item in items:
        need = size(item)
        for b in reversed(open_bins[-8:]):
            if room[b] >= need:
                bins[b].append(item)
                room[b] -= need
                break
        else:
            bins.append([item])
            room.append(capacity - need)
            open_bins.append(len(bins) - 1)
        open_bins = [b for b in open_bins[-8:] if room[b] > 0]
    return bins


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
    from harness.backends.models import converted_gguf_dir

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
        max_padding: float = 0.02,
        max_row_tokens: int = MAX_ROW_TOKENS,
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
        self.max_padding = float(max_padding)
        self.max_row_tokens = int(max_row_tokens)
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
                self._score_trie(list(unique), scores, greedy, bar)
            bar.close()
        return [next(fallback) if i in skip else (scores[unique[key]], greedy[unique[key]]) for i, key in enumerate(encoded)]

    def _encode_prefix(self, prefix: tuple[int, ...], start: int = 0, layers: Layers | None = None) -> Layers:
        """The KV cache of ``prefix``, given that of its first ``start`` tokens (``layers``):
        from the prefix cache where an earlier call encoded part or all of it, the rest run."""
        layers = layers or []
        hit, hit_layers = self.prefix_cache.longest(prefix, better_than=start)
        if hit_layers:
            start, layers = hit, hit_layers
        if start < len(prefix):
            ids = torch.tensor([prefix[start:]], device=self.device)
            cache = self._cache_from(layers)
            mask = torch.ones((1, len(prefix)), dtype=torch.long, device=self.device)
            self._run(ids, cache, mask, torch.arange(start, len(prefix), device=self.device)[None])
            layers = self._layers_of(cache)
            self.prefix_cache.put(prefix, layers)
        return layers

    # ------------------------------------------------------------------ scoring on the prefix trie

    def _score_trie(self, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]], scores: list[float], greedy: list[bool], bar: Any) -> None:
        """Score every (context, continuation) pair, running each position of the prefix trie
        of their inputs through the model once (see :func:`build_trie`, :meth:`_plan_rows`)."""
        root = build_trie([ctx + cont[:-1] for ctx, cont in pairs])
        attach_needs(root, pairs)
        remaining = [len(cont) for _, cont in pairs]
        kv: dict[int, Layers] = {}
        refs: dict[int, int] = {}
        ready = self._plan_rows(root, 0, kv, refs)
        while ready:
            batch = self._pick_batch(ready, sum(PrefixCache._size(layers) for layers in kv.values()))
            chosen = {id(row) for row in batch}
            ready = [row for row in ready if id(row) not in chosen]
            ready.extend(self._run_rows(batch, kv, refs, scores, greedy, remaining, bar))
            for row in batch:
                self._release(row.past, kv, refs)

    @staticmethod
    def _release(node: _Node, kv: dict[int, Layers], refs: dict[int, int]) -> None:
        """One row that needed ``node``'s cache is done; drop the cache after the last."""
        key = id(node)
        if key in refs:
            refs[key] -= 1
            if refs[key] <= 0:
                del refs[key]
                kv.pop(key, None)

    def _plan_rows(self, parent: _Node, level: int, kv: dict[int, Layers], refs: dict[int, int]) -> list[_Row]:
        """The rows that compute ``parent``'s children on top of ``parent``'s cached path.

        A child whose whole subtree fits in ``max_row_tokens`` goes into a row whole (the rest
        of its documents' contexts and all their continuations, under a tree-shaped mask); a
        bigger one contributes only its own stretch (a head several inputs share), whose cache
        then serves its children's rows. A shared head that an earlier call cached is not run
        again. Items are packed into rows no wider than the widest of them.
        """
        items: list[tuple[_Node, bool]] = []
        rows: list[_Row] = []
        for child in list(parent.children.values()):
            # Only a head several contexts share is ever cached (see _run_rows).
            hit = self._cached_head(child) if child.contexts > 1 else None
            if hit is None:
                items.append((child, child.size <= self.max_row_tokens))
                continue
            head, layers = hit
            kv[id(head)] = layers
            refs[id(head)] = 0
            rows.extend(self._plan_rows(head, level + 1, kv, refs))
            if not refs[id(head)]:
                del refs[id(head)], kv[id(head)]
        packed = [_Row(parent, level, bin_items) for bin_items in pack_items(items, MIN_ROW_TOKENS)]
        if parent.parent is not None:
            refs[id(parent)] = refs.get(id(parent), 0) + len(packed)
        return rows + packed

    def _cached_head(self, node: _Node) -> tuple[_Node, Layers] | None:
        """Where the prefix cache holds more of ``node``'s path than its parent's: the node (cut
        where the cached part ends) and the cache of its path. The cached part stops before
        any position whose log-probabilities are needed (a cache has no hidden states)."""
        path = node.path()
        limit = node.depth + min((offset for offset, _, _ in node.needs), default=len(node.tokens))
        hit, layers = self.prefix_cache.longest(path[:limit], better_than=node.depth)
        if not hit:
            return None
        if hit < node.depth_end:
            node.split(hit - node.depth)
        return node, layers

    def _pick_batch(self, ready: list[_Row], kv_bytes: int) -> list[_Row]:
        """The next forward pass. Breadth first: the widest row of the shallowest level (heads
        first, so that as many rows as possible are ready to share passes), joined by rows of
        any level no wider, widest first, within the batch's token budget and padding bound.
        Depth first while the heads' caches held exceed ``max_kv_mb``: rows that use and free
        them go first."""
        sign = -1 if kv_bytes > self.max_kv_bytes else 1
        ready.sort(key=lambda row: (sign * row.level, -row.width))
        width = ready[0].width
        capacity = max(1, self.max_batch_tokens // width)
        batch, used = [ready[0]], ready[0].width
        for row in sorted(ready[1:], key=lambda row: -row.width):
            if len(batch) >= capacity:
                break
            if row.width > width:
                continue
            if (len(batch) + 1) * width - (used + row.width) <= self.max_padding * (len(batch) + 1) * width:
                batch.append(row)
                used += row.width
        return batch

    def _run_rows(
        self,
        rows: list[_Row],
        kv: dict[int, Layers],
        refs: dict[int, int],
        scores: list[float],
        greedy: list[bool],
        remaining: list[int],
        bar: Any,
    ) -> list[_Row]:
        """One forward pass over ``rows``: each on top of its own past (the cache of its parent's
        path, left-aligned and padded to the longest), its items laid out depth first with a
        mask that lets each position see its past and its ancestors only, at the positions it
        would have alone. Scores the needed positions, keeps the caches of the heads computed
        and returns the rows of their children."""
        import numpy as np

        n = len(rows)
        width = max(row.width for row in rows)
        past = max(row.past.depth_end for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = np.full((n, width), pad, dtype=np.int64)
        positions = np.zeros((n, width), dtype=np.int64)
        allowed = np.zeros((n, width, past + width), dtype=bool)
        tril = np.tri(width, dtype=bool)
        wanted: list[tuple[int, int, int, int]] = []  # (row, column, target token, pair)
        heads: list[tuple[_Node, int, int, int]] = []  # (node, row, first column, end column)
        for r, row in enumerate(rows):
            allowed[r, : row.width, : row.past.depth_end] = True
            allowed[r, row.width :, past + row.width :] = np.eye(width - row.width, dtype=bool)  # padding sees itself
            column = 0
            for item, whole in row.items:
                stack: list[tuple[_Node, tuple[tuple[int, int], ...]]] = [(item, ())]
                while stack:
                    node, ancestors = stack.pop()
                    length = len(node.tokens)
                    end = column + length
                    ids[r, column:end] = node.tokens
                    positions[r, column:end] = np.arange(node.depth, node.depth_end)
                    block = allowed[r, column:end]
                    block[:, past + column : past + end] = tril[:length, :length]
                    for a_start, a_end in ancestors:
                        block[:, past + a_start : past + a_end] = True
                    wanted.extend((r, column + offset, target, pair) for offset, target, pair in node.needs)
                    if whole:
                        spans = (*ancestors, (column, end))
                        stack.extend((child, spans) for child in reversed(list(node.children.values())))
                    else:
                        heads.append((node, r, column, end))
                    column = end
        cache = self._past_cache(rows, kv, past)
        device = self.device
        self.work.forward_tokens += sum(row.width for row in rows)
        self.work.padded_positions += n * width - sum(row.width for row in rows)
        self.work.forward_passes += 1
        with self._autocast():
            hidden = self._decoder()(
                input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(allowed).to(device)[:, None],
                position_ids=torch.from_numpy(positions).to(device),
                use_cache=True,
                **{self._cache_kwarg(): cache},
            ).last_hidden_state
        self._score_positions(hidden, wanted, scores, greedy, remaining, bar)
        new_rows: list[_Row] = []
        if heads:
            layers = self._layers_of(cache)
            for node, r, start, end in heads:
                length = rows[r].past.depth_end
                kept = [
                    (
                        torch.cat((k[r : r + 1, :, :length], k[r : r + 1, :, past + start : past + end]), dim=2),
                        torch.cat((v[r : r + 1, :, :length], v[r : r + 1, :, past + start : past + end]), dim=2),
                    )
                    for k, v in layers
                ]
                kv[id(node)] = kept
                if node.contexts > 1:
                    self.prefix_cache.put(node.path(), kept)
                refs[id(node)] = 0
                new_rows.extend(self._plan_rows(node, rows[r].level + 1, kv, refs))
                if not refs[id(node)]:
                    del refs[id(node)], kv[id(node)]
        return new_rows

    def _past_cache(self, rows: list[_Row], kv: dict[int, Layers], past: int) -> Any:
        """A KV cache holding each row's past, left-aligned; columns beyond a shorter past are
        zeros that the mask hides."""
        n = len(rows)
        if past == 0:
            return self._cache_from([])
        first = rows[0].past
        if all(row.past is first for row in rows):
            return self._cache_from([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv[id(first)]])
        layers = []
        sample = kv[id(next(row.past for row in rows if row.past.depth_end))]
        for index, (k0, v0) in enumerate(sample):
            keys = k0.new_zeros((n, k0.shape[1], past, k0.shape[3]))
            values = v0.new_zeros((n, v0.shape[1], past, v0.shape[3]))
            for r, row in enumerate(rows):
                if row.past.depth_end:
                    k, v = kv[id(row.past)][index]
                    keys[r, :, : row.past.depth_end] = k[0]
                    values[r, :, : row.past.depth_end] = v[0]
            layers.append((keys, values))
        return self._cache_from(layers)

    def _score_positions(
        self,
        hidden: torch.Tensor,
        wanted: list[tuple[int, int, int, int]],
        scores: list[float],
        greedy: list[bool],
        remaining: list[int],
        bar: Any,
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
                _, _, _, pair = wanted[i]
                scores[pair] += value
                greedy[pair] = greedy[pair] and hit
                remaining[pair] -= 1
                if remaining[pair] == 0:
                    bar.update(1)
