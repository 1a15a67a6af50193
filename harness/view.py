"""Show what the model sees: the rendered prompt, and the same prompt in the chat template.

The chat view reproduces how lm-eval builds a chat prompt (system turn from the task
description, the prompt as the user turn, the generation prompt appended, and no target
delimiter before the scored options), so `irh render` shows the exact scored text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from harness.render import RenderedPrompt, render_prompt
from harness.schema import Instruction, TaskSpec

ChatRenderer = Callable[[list[dict[str, str]]], str]


def chat_messages(prompt: RenderedPrompt) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": prompt.user})
    return messages


def chat_renderer(model_spec: str | None) -> ChatRenderer | None:
    """A function applying the model's chat template, or None when it has none.

    Only the tokenizer is loaded (the default model's converted copy is made first if missing).
    """
    from transformers import AutoTokenizer

    from harness.backends.models import HF_BACKENDS, parse_model_spec

    spec = parse_model_spec(model_spec)
    if spec.backend not in HF_BACKENDS:
        return None
    kwargs: dict[str, Any] = {}
    if "gguf_file" in spec.args:
        kwargs["gguf_file"] = spec.args["gguf_file"]
    tokenizer = AutoTokenizer.from_pretrained(spec.args.get("tokenizer") or spec.args["pretrained"], **kwargs)
    if not getattr(tokenizer, "chat_template", None):
        return None

    def apply(messages: list[dict[str, str]]) -> str:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    return apply


def rendered_views(
    instruction: Instruction,
    task: TaskSpec,
    docs: list[dict[str, Any]],
    placement: str,
    chat: ChatRenderer | None,
) -> Iterator[str]:
    """Blocks of text describing each document's prompt, plain and (if any) chat-templated."""
    for doc in docs:
        plain = render_prompt(instruction, task, doc, "user")
        lines = [
            f"===== {task.id} | {instruction.id} | document {doc['id']} =====",
            "----- prompt (no chat template) -----",
            plain.user,  # without a chat template, lm-eval scores exactly this text
        ]
        if plain.options:
            lines.append(f"----- scored continuations (after {instruction.target_delimiter!r}) -----")
            lines.extend(f"  [{i}] {opt!r}" for i, opt in enumerate(plain.options))
        if chat is not None:
            templated = render_prompt(instruction, task, doc, placement)
            lines += [f"----- with the chat template (phrasing in the {placement} turn) -----", chat(chat_messages(templated))]
            if templated.options:
                lines.append("----- scored continuations (appended directly) -----")
                lines.extend(f"  [{i}] {opt!r}" for i, opt in enumerate(templated.options))
        yield "\n".join(lines) + "\n"
