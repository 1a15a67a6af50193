"""Encoding prompts as lm-eval scores them, option log-likelihoods, and the tuning loss.

The loss of one batch (one document under its original phrasing and under paraphrases):

    mean over prompts of  CE(gold answer | phrasing, x)
    + kl_weight * mean over paraphrases of  KL(p(. | original, x) || p(. | paraphrase, x))

CE is the token-mean negative log-likelihood of the gold answer's continuation (the usual
instruction-tuning loss); p(. | phrasing, x) is the softmax over the answer options of their
summed log-likelihoods (the rank classification `irh run` scores with). The original side of
the KL term is held fixed (no gradient): the paraphrase is pulled toward the original, not
both toward each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from harness.render import render_prompt
from harness.schema import Instruction, TaskSpec
from harness.view import chat_messages


class Encoded(NamedTuple):
    """One document under one phrasing, as token ids."""

    context: list[int]
    options: list[list[int]]
    gold: int


class BatchLoss(NamedTuple):
    loss: Any
    ce: float
    kl: float


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a context and its continuation, split the way lm-eval's hf backend splits them
    (trailing spaces of the context move to the continuation; the whole is encoded at once)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return list(whole[: len(ctx)]), list(whole[len(ctx) :])


def encode_example(
    tokenizer: Any,
    instruction: Instruction,
    task: TaskSpec,
    doc: dict[str, Any],
    gold: int,
    *,
    placement: str,
    chat: bool,
    max_length: int,
) -> Encoded:
    """Render and tokenise one document under one phrasing exactly as `irh run` presents it."""
    prompt = render_prompt(instruction, task, doc, placement if chat else "user")
    if chat:
        context = str(tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True))
        delimiter = ""  # lm-eval appends options directly after a chat template's generation prompt
    else:
        context, delimiter = prompt.user, instruction.target_delimiter
    options = []
    ctx: list[int] = []
    for option in prompt.options:
        ctx, cont = encode_pair(tokenizer, context, delimiter + option)
        options.append(cont)
    keep = max_length - max(len(o) for o in options)
    return Encoded(ctx[-keep:] if keep > 0 else ctx[-1:], options, gold)


class _Row(NamedTuple):
    tokens: list[int]
    #: (position whose logits predict the token, token id, example index, option index)
    targets: list[tuple[int, int, int, int]]


def _shared_prefix(options: Sequence[list[int]]) -> int:
    n = 0
    while all(len(o) > n for o in options) and len({o[n] for o in options}) == 1:
        n += 1
    return n


def _rows(examples: Sequence[Encoded]) -> list[_Row]:
    rows: list[_Row] = []
    for e, ex in enumerate(examples):
        shared = _shared_prefix(ex.options)
        if all(len(o) == shared + 1 for o in ex.options):
            # The options differ in their last token only (``\nYes`` / ``\nNo``): one pass over
            # the context and the shared tokens scores them all.
            tokens = list(ex.context) + ex.options[0][:shared]
            start = len(ex.context) - 1
            targets = [(start + i, t, e, k) for k, o in enumerate(ex.options) for i, t in enumerate(o)]
            rows.append(_Row(tokens, targets))
            continue
        for k, option in enumerate(ex.options):
            tokens = list(ex.context) + option[:-1]
            start = len(ex.context) - 1
            rows.append(_Row(tokens, [(start + i, t, e, k) for i, t in enumerate(option)]))
    return rows


def option_loglikelihoods(model: Any, examples: Sequence[Encoded], pad_id: int, virtual_tokens: int = 0) -> tuple[Any, Any]:
    """Summed log-likelihood of every option of every example, and each option's token count.

    Returns two [examples, max options] tensors; missing options are -inf (count 1). Only the
    positions that predict an option token are projected onto the vocabulary.
    ``virtual_tokens``: soft-prompt tokens the (peft) model prepends to every row.
    """
    import torch

    rows = _rows(examples)
    width = max(len(r.tokens) for r in rows)
    device = next(p for p in model.parameters()).device
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row.tokens)] = torch.tensor(row.tokens)
        mask[i, : len(row.tokens)] = 1
    positions = sorted({p for r in rows for p, *_ in r.targets})
    keep = torch.tensor([p + virtual_tokens for p in positions], dtype=torch.long, device=device)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep)
    logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # [rows, kept positions, vocab]
    column = {p: j for j, p in enumerate(positions)}
    n_options = max(len(ex.options) for ex in examples)
    lls = torch.full((len(examples), n_options), float("-inf"), device=device)
    counts = torch.ones((len(examples), n_options), device=device)
    sums: dict[tuple[int, int], list[Any]] = {}
    for i, row in enumerate(rows):
        for pos, token, e, k in row.targets:
            sums.setdefault((e, k), []).append(logprobs[i, column[pos], token])
    index_e, index_k, values = [], [], []
    for (e, k), parts in sums.items():
        index_e.append(e)
        index_k.append(k)
        values.append(torch.stack(parts).sum())
        counts[e, k] = len(parts)
    lls = lls.index_put((torch.tensor(index_e, device=device), torch.tensor(index_k, device=device)), torch.stack(values))
    return lls, counts


def kl_original_to_paraphrase(original_lls: Any, paraphrase_lls: Any) -> Any:
    """KL(p_original || p_paraphrase) over the answer options, per paraphrase row.

    ``original_lls``: [options] (held fixed); ``paraphrase_lls``: [paraphrases, options].
    """
    import torch

    log_p = torch.log_softmax(original_lls.detach(), dim=-1)
    log_q = torch.log_softmax(paraphrase_lls, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def batch_loss(lls: Any, counts: Any, golds: Sequence[int], groups: Sequence[Sequence[int]], kl_weight: float) -> BatchLoss:
    """The batch's loss: gold-answer CE over every prompt, plus the weighted KL term.

    ``groups``: per document, the indices of its examples, the original phrasing first.
    """
    import torch

    gold = torch.tensor(list(golds), device=lls.device)
    rows = torch.arange(lls.shape[0], device=lls.device)
    ce = -(lls[rows, gold] / counts[rows, gold]).mean()
    kls = []
    for g in groups:
        if len(g) > 1:
            # Only the document's own options: a -inf column would make the gradient NaN.
            n = int(torch.isfinite(lls[g[0]]).sum())
            kls.append(kl_original_to_paraphrase(lls[g[0], :n], lls[list(g[1:]), :n]))
    kl = torch.cat(kls).mean() if kls else torch.zeros((), device=lls.device)
    loss = ce + kl_weight * kl if kl_weight else ce
    return BatchLoss(loss, float(ce.detach()), float(kl.detach()))
