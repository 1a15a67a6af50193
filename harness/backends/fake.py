"""A deterministic stand-in model, registered with lm-eval as ``irh-fake``.

It lets the whole pipeline (rendering, lm-eval task building, result rows, reports) run in
tests in milliseconds. Scores are a pure function of the request text (and ``seed``), so two
runs agree exactly and accuracy sits near chance. With a ``dtype`` other than float32 each
loglikelihood also moves by a pure function of the request and the dtype (up to 0.8 either
way), as rounding would: some predictions differ from float32's, always the same ones.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

FAKE_CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}<|assistant|>\n"


def _unit(text: str) -> float:
    """A number in [0, 1) derived from the text."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@register_model("irh-fake")
class FakeLM(LM):
    """Deterministic fake language model for tests and dry runs."""

    def __init__(self, seed: str = "0", dtype: str = "float32", answer: str = "", **unused: Any) -> None:
        super().__init__()
        self.seed = str(seed)
        self.dtype = str(dtype)
        # answer=first: every multiple-choice question is answered with its first option (a
        # model with a label bias, for tests of the report's degenerate-phrasing flags).
        if answer not in ("", "first"):
            raise ValueError(f"irh-fake: answer={answer!r} is not known; use answer=first or leave it out")
        self.answer = answer
        # For crash tests: IRH_FAKE_FAIL_AFTER=N makes the model fail after N requests
        # (N:interrupt raises KeyboardInterrupt, as Ctrl-C would). It is read from the
        # environment, not the model args, so that a resumed run does not crash again.
        failure = os.environ.get("IRH_FAKE_FAIL_AFTER", "")
        count, _, kind = failure.partition(":")
        self.fail_after = int(count) if count else None
        self.fail_kind = kind or "error"
        self.answered = 0

    def _tick(self) -> None:
        self.answered += 1
        if self.fail_after is not None and self.answered > self.fail_after:
            if self.fail_kind == "interrupt":
                raise KeyboardInterrupt
            raise RuntimeError("irh-fake: simulated crash")

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            self._tick()
            context, continuation = req.args
            if self.answer == "first":
                # lm-eval numbers a document's options by `idx`: the first option ranks first.
                out.append((-1.0 if req.idx == 0 else -6.0 - _unit(f"{self.seed}|{context}|{continuation}"), False))
                continue
            value = -1.0 - 5.0 * _unit(f"{self.seed}|{context}|{continuation}")
            if self.dtype not in ("float32", "fp32"):
                value += 1.6 * (_unit(f"{self.dtype}|{context}|{continuation}") - 0.5)
            out.append((value, False))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return [-10.0 * _unit(f"{self.seed}|{req.args[0]}") for req in requests]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            self._tick()
            context = req.args[0]
            words = context.split()
            out.append(words[int(_unit(self.seed + context) * len(words))] if words else "")
        return out

    @property
    def tokenizer_name(self) -> str:
        return "irh-fake"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return FAKE_CHAT_TEMPLATE

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from harness.render import render_text

        return render_text(FAKE_CHAT_TEMPLATE, {"messages": chat_history})
