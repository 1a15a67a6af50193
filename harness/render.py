"""The one place where phrasing templates are rendered.

Templates are untrusted text: they are rendered only in a sandboxed jinja2 environment with
StrictUndefined, so a template can neither run code nor read files, and a misspelt field is
an error rather than an empty string.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from harness.schema import LETTERS, Instruction, TaskSpec

#: No rendered prompt is longer than this; a template that tries is refused.
MAX_RENDERED_CHARS = 200_000


def _refuse_if_large(size: int, what: str) -> None:
    if size > MAX_RENDERED_CHARS:
        raise jinja2.exceptions.SecurityError(f"{what} would build a string too large for a template")


#: Widths and precisions in printf-style (``%500s``, ``%.9f``) and str.format (``{:>500}``) specs.
_PRINTF_WIDTHS = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d+))?")
_FORMAT_WIDTHS = re.compile(r"\{[^{}]*:[^{}0-9]*(\d*)(?:\.(\d+))?[^{}]*\}")
#: Calls whose first argument is the width of the string they build.
_WIDTH_CALLS = ("center", "ljust", "rjust", "zfill", "expandtabs", "indent")


def _check_format(spec: Any, pattern: re.Pattern[str], values: Any = ()) -> None:
    """Refuse literal widths over the cap, and (for ``%*s`` or ``{:>{}}``, whose width comes
    from the values) any integer value over the cap."""
    if isinstance(spec, str):
        for width, precision in pattern.findall(spec):
            _refuse_if_large(max(int(width or 0), int(precision or 0)), "a format width")
        if "*" in spec or re.search(r"\{[^{}]*:[^{}]*\{", spec):
            items = values.values() if isinstance(values, dict) else values if isinstance(values, (tuple, list)) else (values,)
            for value in items:
                if isinstance(value, int):
                    _refuse_if_large(abs(value), "a format width")


def _check_call(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a filter or str-method call whose result would exceed MAX_RENDERED_CHARS before
    it is built (``subject`` is the string or filtered value); returns the arguments, with a
    join's iterable read into a list once."""
    if name in _WIDTH_CALLS:
        width = kwargs.get("width", args[0] if args else 0)
        if isinstance(width, int):
            _refuse_if_large(width, name)
    elif name == "replace" and len(args) >= 2:
        text, old, new = str(subject), str(args[0]), str(args[1])
        count = args[2] if len(args) > 2 else kwargs.get("count")
        hits = (len(text) + 1 if old == "" else text.count(old)) if count is None or count < 0 else int(count)
        _refuse_if_large(len(text) + hits * max(0, len(new) - len(old)), name)
    elif name == "join" and args:
        items = list(args[0])
        _refuse_if_large(len(str(subject)) * max(0, len(items) - 1) + sum(len(str(i)) for i in items), name)
        return (items, *args[1:])
    return args


_JINJA_STATE = (jinja2.runtime.Context, jinja2.nodes.EvalContext, jinja2.Environment)


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead = 0  # leading context / eval-context / environment arguments pass through
        while lead < len(args) and isinstance(args[lead], _JINJA_STATE):
            lead += 1
        head, value, rest = args[:lead], args[lead] if len(args) > lead else "", args[lead + 1 :]
        if name == "join":  # value|join(separator): the separator is the repeated string
            (items,) = _check_call("join", rest[0] if rest else "", (value,), {})
            return func(*head, items, *rest, **kwargs)
        if name == "format":  # value|format(args) is printf-style: value % args
            _check_format(value, _PRINTF_WIDTHS, rest or kwargs)
        else:
            _check_call(name, value, rest, kwargs)
        return func(*args, **kwargs)

    if hasattr(func, "jinja_pass_arg"):  # jinja2's pass_context / pass_eval_context marker
        guarded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also refusing what would build huge strings or numbers (``'x' * 10**9``,
    ``'x'|center(10**9)``, ``'%999999999s' % x``, a replace or join that multiplies a string):
    a template may not exhaust memory any more than run code."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in (*_WIDTH_CALLS, "replace", "format", "join"):
            if name in self.filters:
                self.filters[name] = _guarded_filter(name, self.filters[name])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_RENDERED_CHARS:
                    raise jinja2.exceptions.SecurityError("repetition too large in a template")
        if operator == "%":
            _check_format(left, _PRINTF_WIDTHS, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(value, (types.MethodType, types.BuiltinMethodType)):
            return wrapped
        spec = value.__self__
        _check_format(spec, _FORMAT_WIDTHS)

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(spec, _FORMAT_WIDTHS, kwargs or (args[0] if value.__name__ == "format_map" and args else args))
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = _check_call(getattr(__obj, "__name__", ""), owner, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


_ENV = _BoundedSandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=False,
)

#: Fields every multiple-choice task provides to templates in addition to its declared ones.
IMPLICIT_MC_FIELDS = ("choices",)


class TemplateProblem(ValueError):
    """A template that cannot be parsed or rendered."""


class RenderedPrompt(NamedTuple):
    """What the model sees for one document under one phrasing (before any chat template)."""

    system: str
    user: str
    options: list[str]


@lru_cache(maxsize=4096)
def _compile(text: str) -> jinja2.Template:
    try:
        return _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc


def template_fields(text: str) -> set[str]:
    """Names a template reads from its context (its placeholders)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(text)))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc


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
    try:
        out = _compile(text).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(f"unknown field: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateProblem(f"template not allowed: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_RENDERED_CHARS:
        raise TemplateProblem(f"renders to {len(out)} characters, more than the {MAX_RENDERED_CHARS} allowed")
    return out


def answer_options(instruction: Instruction, labels: list[str]) -> list[str]:
    """The continuations scored for each option, following the phrasing's answer style."""
    style = instruction.answer_choices
    if isinstance(style, dict):
        missing = [label for label in labels if label not in style]
        if missing:
            raise TemplateProblem(f"verbaliser has no word for label(s) {missing}")
        return [style[label] for label in labels]
    if style == "letters":
        if len(labels) > len(LETTERS):
            raise TemplateProblem(f"{len(labels)} options are more than there are letters")
        return list(LETTERS[: len(labels)])
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
