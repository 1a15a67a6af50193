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
2. contexts are grouped by common token prefixes, recursively (the chat template's head
   shared by all, a phrasing's text shared by its documents, a subtask's context shared by
   its documents, ...); each shared stretch is encoded once and its KV cache reused;
3. each distinct context's remaining suffix (one per document) is encoded once, and all of
   that document's continuations with it, packed into one row with a tree-shaped attention
   mask (each continuation sees the context and its own earlier tokens, at the positions it
   would have alone), in length-sorted batches with bounded padding, on top of its group's
   cache;
4. so a document's context is never copied per option, and each batch is one forward pass;
5. the output projection (vocabulary logits) is computed only at the positions whose
   log-probabilities are needed: the last context token and the continuation tokens.

Token ids are exactly the hf backend's (its own ``_encode_pair``), so the loglikelihoods are
the same quantity computed in fewer operations; they agree to float round-off.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

#: Contexts whose token prefixes agree on at least this many more tokens share one prefix cache,
MIN_SHARED_PREFIX = 8
#: provided that sharing it saves at least this many token positions (each shared prefix is a
#: small forward pass of its own, which costs a fixed overhead).
MIN_SAVED_TOKENS = 64


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
    generation_prefix_tokens_reused: int = 0


@dataclass
class _Doc:
    """One distinct context and the continuations asked of it."""

    context: tuple[int, ...]
    continuations: list[tuple[int, ...]] = field(default_factory=list)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def cluster_by_prefix(contexts: list[tuple[int, ...]], min_shared: int = MIN_SHARED_PREFIX) -> list[tuple[int, list[int]]]:
    """Group context indices whose token prefixes agree; returns (shared length, members).

    Contexts are sorted so that those with a common head sit together; a new cluster starts
    where the common prefix with the cluster's first member drops below ``min_shared``. The
    shared length always leaves at least one token of every context outside the prefix, so
    each document has its own last-token position to predict the first option token from.
    """
    order = sorted(range(len(contexts)), key=lambda i: contexts[i])
    clusters: list[tuple[int, list[int]]] = []
    for i in order:
        if clusters:
            shared, members = clusters[-1]
            head = contexts[members[0]]
            lcp = common_prefix_length(head, contexts[i])
            if lcp >= min_shared:
                members.append(i)
                clusters[-1] = (min(shared, lcp), members)
                continue
        clusters.append((len(contexts[i]), [i]))
    return [(min(shared, min(len(contexts[m]) for m in members) - 1), members) for shared, members in clusters]


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


@register_model("irh-fast")
class FastScorer(HFLM):
    """lm-eval's HFLM with prefix-sharing loglikelihoods (see the module docstring)."""

    def __init__(
        self, *args: Any, max_batch_tokens: int = 2048, max_padding: float = 0.1, prefix_cache_mb: float = 256, **kwargs: Any
    ) -> None:
        pretrained, gguf_file = kwargs.get("pretrained"), kwargs.get("gguf_file")
        if isinstance(pretrained, str) and gguf_file and (Path(pretrained) / gguf_file).is_file():
            # Loading a GGUF dequantises every tensor on every load; the converted copy that
            # `irh run` keeps (one per GGUF sha256) loads in a fraction of the time.
            from harness.backends.models import converted_gguf_dir

            kwargs["pretrained"] = str(converted_gguf_dir(Path(pretrained) / gguf_file))
            del kwargs["gguf_file"]
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_padding = float(max_padding)
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
        out = []
        for req in requests:
            context, continuation = req.args
            if context == "":
                cont = self.tok_encode(continuation, add_special_tokens=False)
                ctx, cont = ([self.prefix_token_id], cont) if self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
            else:
                ctx, cont = self._encode_pair(context, continuation)
            out.append((tuple(ctx), tuple(cont)))
        return out

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
        too_long = [i for i, (c, t) in enumerate(encoded) if len(c) + len(t) > self.max_length or not t]
        if too_long:
            # Left truncation changes the context per request; leave those to lm-eval's own path.
            fallback = super().loglikelihood([requests[i] for i in too_long], disable_tqdm=True)
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[float, bool]] = {}
        docs: dict[tuple[int, ...], _Doc] = {}
        skip = set(too_long)
        for i, (ctx, cont) in enumerate(encoded):
            if i in skip or (ctx, cont) in unique:
                continue
            unique[(ctx, cont)] = (0.0, False)
            docs.setdefault(ctx, _Doc(ctx)).continuations.append(cont)
        self.work.requests += len(requests)
        self.work.unique_requests += len(unique)
        doc_list = list(docs.values())
        bar = tqdm(total=len(unique), desc="irh-fast loglikelihood", disable=disable_tqdm or self.rank != 0)
        with torch.inference_mode():
            self._score_group(doc_list, 0, [], unique, bar)
        bar.close()
        results = []
        fallback_iter = iter(fallback) if too_long else iter(())
        for i, key in enumerate(encoded):
            results.append(next(fallback_iter) if i in skip else unique[key])
        return results

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

    def _score_group(
        self,
        docs: list[_Doc],
        base_len: int,
        base_layers: Layers,
        out: dict[Any, tuple[float, bool]],
        bar: Any,
    ) -> None:
        """Score documents sharing ``base_len`` cached tokens, sharing deeper heads recursively.

        Documents whose contexts agree on a further stretch (the chat template's head, then
        a phrasing's text before the document, then e.g. a subtask's shared context) are
        scored on top of that stretch, encoded once; the rest are scored on the base.
        """
        leaves: list[_Doc] = []
        for shared, members in cluster_by_prefix([d.context for d in docs], base_len + MIN_SHARED_PREFIX):
            group = [docs[m] for m in members]
            if len(group) > 1 and (len(group) - 1) * (shared - base_len) >= MIN_SAVED_TOKENS:
                layers = self._encode_prefix(group[0].context[:shared], base_len, base_layers)
                self._score_group(group, shared, layers, out, bar)
            else:
                leaves.extend(group)
        if leaves:
            self._score_leaves(leaves, base_len, base_layers, out, bar)

    def _score_leaves(
        self,
        docs: list[_Doc],
        shared: int,
        prefix_layers: Layers,
        out: dict[Any, tuple[float, bool]],
        bar: Any,
    ) -> None:
        # Length-sorted batches of documents, bounded by the padded tokens of one forward
        # pass (large enough for efficient matrix products) and by padding waste.
        def width(doc: _Doc) -> int:
            return len(doc.context) - shared + sum(len(c) - 1 for c in doc.continuations)

        order = sorted(docs, key=width)
        batch: list[_Doc] = []
        for doc in order:
            waste = (width(doc) - width(batch[0])) / max(1, width(doc)) if batch else 0.0
            if batch and ((len(batch) + 1) * width(doc) > self.max_batch_tokens or waste > self.max_padding):
                self._score_batch_packed(batch, shared, prefix_layers, out)
                bar.update(sum(len(d.continuations) for d in batch))
                batch = []
            batch.append(doc)
        if batch:
            self._score_batch_packed(batch, shared, prefix_layers, out)
            bar.update(sum(len(d.continuations) for d in batch))

    def _score_batch_packed(
        self,
        docs: list[_Doc],
        shared: int,
        prefix_layers: Layers,
        out: dict[Any, tuple[float, bool]],
    ) -> None:
        """One forward pass per batch: each document's suffix and all its continuations packed
        into one row, with a tree-shaped attention mask (each continuation sees the context
        and its own earlier tokens, at the positions it would have if scored alone)."""
        device = self.device
        n = len(docs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows_tokens: list[list[int]] = []
        rows_pos: list[list[int]] = []
        spans: list[list[tuple[tuple[int, ...], int]]] = []  # per doc: (continuation, start of its packed tokens)
        suffix_lens = []
        for doc in docs:
            suffix = list(doc.context[shared:])
            tokens, pos = list(suffix), [shared + j for j in range(len(suffix))]
            doc_spans = []
            for cont in doc.continuations:
                doc_spans.append((cont, len(tokens)))
                tokens.extend(cont[:-1])
                pos.extend(shared + len(suffix) + k for k in range(len(cont) - 1))
            rows_tokens.append(tokens)
            rows_pos.append(pos)
            spans.append(doc_spans)
            suffix_lens.append(len(suffix))
        width = max(len(t) for t in rows_tokens)
        ids = torch.full((n, width), pad, dtype=torch.long, device=device)
        positions = torch.zeros((n, width), dtype=torch.long, device=device)
        allowed = torch.zeros((n, 1, width, shared + width), dtype=torch.bool, device=device)
        allowed[:, :, :, :shared] = True
        causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
        for r in range(n):
            length, s_len = len(rows_tokens[r]), suffix_lens[r]
            ids[r, :length] = torch.tensor(rows_tokens[r], device=device)
            positions[r, :length] = torch.tensor(rows_pos[r], device=device)
            allowed[r, 0, :s_len, shared : shared + s_len] = causal[:s_len, :s_len]
            for cont, start in spans[r]:
                end = start + len(cont) - 1
                allowed[r, 0, start:end, shared : shared + s_len] = True
                allowed[r, 0, start:end, shared + start : shared + end] = causal[: end - start, : end - start]
            allowed[r, 0, length:, shared] = True  # padding rows attend somewhere (no NaN)
        cache = self._cache_from([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in prefix_layers])
        self.work.forward_tokens += sum(len(t) for t in rows_tokens)
        with self._autocast():
            hidden = self._decoder()(
                input_ids=ids, attention_mask=allowed, position_ids=positions, use_cache=True, **{self._cache_kwarg(): cache}
            ).last_hidden_state
        # Positions whose next-token distribution is needed: the last suffix token, and each
        # continuation token but the last.
        wanted: list[tuple[int, int]] = []
        for r in range(n):
            wanted.append((r, suffix_lens[r] - 1))
            for cont, start in spans[r]:
                wanted.extend((r, start + k) for k in range(len(cont) - 1))
        index_r = torch.tensor([w[0] for w in wanted], device=device)
        index_c = torch.tensor([w[1] for w in wanted], device=device)
        logprobs = self._project(hidden[index_r, index_c])
        offset = 0
        for r, doc in enumerate(docs):
            first = logprobs[offset]
            offset += 1
            for cont, _ in spans[r]:
                total = float(first[cont[0]])
                greedy = int(first.argmax()) == cont[0]
                if len(cont) > 1:
                    lp = logprobs[offset : offset + len(cont) - 1]
                    targets = torch.tensor(cont[1:], device=lp.device)
                    total += float(lp.gather(1, targets[:, None]).sum())
                    greedy = greedy and bool((lp.argmax(dim=-1) == targets).all())
                    offset += len(cont) - 1
                out[(doc.context, cont)] = (total, greedy)
