"""The one place where phrasing templates are rendered.

Templates are untrusted text: they are rendered only in the sandboxed jinja2 environment of
``harness/sandbox.py`` with StrictUndefined, so a template can neither run code, read files
nor exhaust memory, and a misspelt field is an error rather than an empty string.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import jinja2
from jinja2 import meta

from harness.errors import HarnessError
from harness.sandbox import BoundedSandbox, render_bounded, work_budget
from harness.schema import LETTERS, Instruction, TaskSpec

_ENV = BoundedSandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=False,
)

#: Fields every multiple-choice task provides to templates in addition to its declared ones.
IMPLICIT_MC_FIELDS = ("choices",)


class TemplateProblem(HarnessError, ValueError):
    """A template that cannot be parsed or rendered."""


class RenderedPrompt(NamedTuple):
    """What the model sees for one document under one phrasing (before any chat template)."""

    system: str
    user: str
    options: list[str]


#: Said when a template nests deeper than Python's stack (parsing ``((((...`` thousands deep).
_TOO_DEEP = "template not allowed: it nests too deeply (brackets, blocks or recursion); simplify it"


@lru_cache(maxsize=4096)
def _compile(text: str) -> jinja2.Template:
    try:
        # Compiling folds constant expressions by calling filters: bounded like a render.
        with work_budget():
            return _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateProblem(f"template not allowed: {exc}") from exc
    except (RecursionError, SyntaxError, MemoryError):
        # Python's compiler refuses blocks nested more than 20 deep ("too many statically
        # nested blocks"): the same one-line refusal as any other too-deep template.
        raise TemplateProblem(_TOO_DEEP) from None


def template_fields(text: str) -> set[str]:
    """Names a template reads from its context (its placeholders)."""
    return set(_fields(text))


@lru_cache(maxsize=4096)
def _fields(text: str) -> frozenset[str]:
    # Cached: the registry asks for every phrasing x task pair it matches.
    try:
        with work_budget():
            return frozenset(meta.find_undeclared_variables(_ENV.parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateProblem(f"template not allowed: {exc}") from exc
    except RecursionError:
        raise TemplateProblem(_TOO_DEEP) from None


def allowed_fields(task: TaskSpec) -> set[str]:
    """Placeholders a phrasing of ``task`` may use."""
    fields = set(task.fields)
    if task.output_type == "multiple_choice":
        fields.update(IMPLICIT_MC_FIELDS)
    return fields


def option_labels(task: TaskSpec, doc: dict[str, Any]) -> list[str]:
    """The task's options for a document, in scoring order (fixed labels or the doc's choices)."""
    if task.labels:
        return list(task.labels)
    return list(doc["choices"])


def option_scores(task: TaskSpec, doc: dict[str, Any]) -> list[float]:
    """The score of each option in :func:`option_labels` order."""
    if not task.labels:
        return [float(v) for v in doc["scores"]]
    by_choice = dict(zip(doc["choices"], doc["scores"], strict=True))
    return [float(by_choice[label]) for label in option_labels(task, doc)]


def template_context(task: TaskSpec, doc: dict[str, Any]) -> dict[str, Any]:
    """The values a template sees: the task's declared fields, plus `choices` for MC tasks."""
    context = {name: doc["fields"][name] for name in task.fields if name in doc["fields"]}
    if task.output_type == "multiple_choice":
        context["choices"] = option_labels(task, doc)
    return context


def render_text(text: str, context: dict[str, Any]) -> str:
    """Render one template in the sandbox."""
    template = _compile(text)  # raises TemplateProblem itself
    try:
        out = render_bounded(template, context)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"unknown field: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateProblem(f"template not allowed: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from exc
    except RecursionError:
        # The sandbox's nesting limit stops macro recursion first; this is the backstop.
        raise TemplateProblem(_TOO_DEEP) from None
    return out


def answer_options(instruction: Instruction, labels: list[str]) -> list[str]:
    """The continuations scored for each option, following the phrasing's answer style."""
    style = instruction.answer_choices
    if isinstance(style, dict):
        missing = [label for label in labels if label not in style]
        if missing:
            raise TemplateProblem(f"verbaliser has no word for label(s) {missing}")
        return [style[label] for label in labels]
    if style in ("letters", "lowercase"):
        if len(labels) > len(LETTERS):
            raise TemplateProblem(f"{len(labels)} options are more than there are letters")
        letters = LETTERS if style == "letters" else LETTERS.lower()
        return list(letters[: len(labels)])
    if style == "numbers":
        return [str(i + 1) for i in range(len(labels))]
    return list(labels)


def split_system_part(text: str, context: dict[str, Any]) -> tuple[str, str]:
    """Split a rendered prompt into the part before any document field, and the rest.

    Used when the phrasing is placed in the system turn: the instruction text that precedes
    the first document field goes there, the document and everything after it in the user
    turn. A phrasing that opens with the document has no system part.
    """
    full = render_text(text, context)
    # Render again with every document value (list items too) replaced by a marker; the
    # text before the first marker is what the phrasing says before showing the document.
    sentinels: dict[str, Any] = {}
    for i, (name, value) in enumerate(context.items()):
        if isinstance(value, str):
            sentinels[name] = f"\x00{i}\x00"
        elif isinstance(value, list):
            sentinels[name] = [f"\x00{i}.{j}\x00" for j in range(len(value))]
        else:
            sentinels[name] = value
    try:
        marked = render_text(text, sentinels)
    except TemplateProblem:
        return "", full
    cut = marked.find("\x00")
    line_end = marked.rfind("\n", 0, cut) if cut > 0 else -1
    if line_end < 0:
        return "", full
    system = marked[:line_end]
    # A template that branches on a field's value could render a different head with the
    # markers; only split where both renderings agree.
    if not full.startswith(system):
        return "", full
    return system.strip(), full[line_end + 1 :]


def render_prompt(instruction: Instruction, task: TaskSpec, doc: dict[str, Any], placement: str = "user") -> RenderedPrompt:
    """Render a phrasing on one document.

    Args:
        instruction: the phrasing.
        task: the task the document belongs to.
        doc: a normalised document (``fields``, ``choices``, ``scores`` / ``targets``).
        placement: ``user`` or ``none`` (whole prompt as one text), or ``system`` (the
            instruction text before the document goes in the system turn).
    """
    context = template_context(task, doc)
    if placement == "system":
        system, user = split_system_part(instruction.text, context)
    else:
        system, user = "", render_text(instruction.text, context)
    options: list[str] = []
    if task.output_type == "multiple_choice":
        options = answer_options(instruction, option_labels(task, doc))
    return RenderedPrompt(system=system, user=user, options=options)
