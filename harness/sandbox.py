"""The jinja2 sandbox every phrasing template is rendered in.

Templates are untrusted text. jinja2's ``ImmutableSandboxedEnvironment`` stops them from
running code, reading files or mutating their inputs; :class:`BoundedSandbox` also stops them
from exhausting memory: any operation that would build a string (or list) longer than
:data:`MAX_RENDERED_CHARS`, or an integer wider than :data:`MAX_INT_BITS`, is refused *before*
it is built, and rendering stops as soon as the output passes the cap. Guarded:

- operators: ``*`` (repetition), ``+`` and ``~`` (concatenation), ``**`` and integer ``*``
  (huge numbers), ``%`` (printf widths, including ``%*s`` and ``%(name)9999s``);
- filters: ``center``, ``indent``, ``wordwrap``, ``replace``, ``join``, ``format``,
  ``batch``, ``tojson``; and the same-named ``str`` methods (``center``, ``ljust``, ``rjust``,
  ``zfill``, ``expandtabs``, ``replace``, ``join``, ``format``, ``format_map``);
- the ``lipsum`` global is removed (``range`` is already capped by jinja2).
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.nodes import Concat
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: No rendered prompt, and no string built on the way, is longer than this.
MAX_RENDERED_CHARS = 200_000
#: No integer computed in a template is wider than this.
MAX_INT_BITS = 4096

#: printf conversions: ``%%`` (literal), or flags, width (``*`` or digits), precision.
_PRINTF = re.compile(r"%%|%(?:\([^)]*\))?[-+ #0]*(\*|\d*)(?:\.(\*|\d*))?")


def refuse_if_large(size: int, what: str) -> None:
    if size > MAX_RENDERED_CHARS:
        raise jinja2.exceptions.SecurityError(f"{what} would build a string too large for a template")


def _as_int(value: Any) -> int:
    try:
        return abs(int(value))
    except (TypeError, ValueError):
        return 0


def _values(values: Any) -> list[Any]:
    if isinstance(values, dict):
        return list(values.values())
    if isinstance(values, (tuple, list)):
        return list(values)
    return [values]


def check_printf(spec: Any, values: Any = ()) -> None:
    """``spec % values``: literal widths and precisions, and ``*`` ones taken from the values."""
    if not isinstance(spec, str):
        return
    for match in _PRINTF.finditer(spec):
        if match.group(0) == "%%":
            continue
        for part in match.groups():
            if part == "*":
                for value in _values(values):
                    if isinstance(value, int):
                        refuse_if_large(abs(value), "a format width")
            elif part:
                refuse_if_large(int(part), "a format width")


def check_format(spec: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
    """``spec.format(...)``: every width and precision in the spec, nested ones (``{:>{w}}``)
    checked against the values they would take."""
    if not isinstance(spec, str):
        return
    try:
        parsed = list(string.Formatter().parse(spec))
    except ValueError:
        return  # str.format raises on it anyway
    for _, _, format_spec, _ in parsed:
        if not format_spec:
            continue
        if "{" in format_spec:
            for value in [*args, *(kwargs or {}).values()]:
                refuse_if_large(_as_int(value) if isinstance(value, (int, str)) else 0, "a format width")
            check_format(format_spec, args, kwargs)
            continue
        # [[fill]align][sign][z][#][0][width][grouping][.precision][type]
        match = re.fullmatch(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?", format_spec)
        if match:
            refuse_if_large(max(_as_int(match.group(1) or 0), _as_int(match.group(2) or 0)), "a format width")


def _str_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def check_call(name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a filter or ``str``-method call whose result would pass the cap, before it runs;
    ``subject`` is the string (or filtered value). Returns the arguments, with an iterable to
    join read into a list once."""
    text = subject if isinstance(subject, str) else ""
    if name in ("center", "ljust", "rjust", "zfill"):
        refuse_if_large(_as_int(kwargs.get("width", args[0] if args else 0)), name)
    elif name == "indent":
        width = kwargs.get("width", args[0] if args else 4)
        per_line = len(width) if isinstance(width, str) else _as_int(width)
        refuse_if_large(len(text) + per_line * (text.count("\n") + 1), name)
    elif name == "expandtabs":
        tabsize = _as_int(kwargs.get("tabsize", args[0] if args else 8))
        refuse_if_large(len(text) + tabsize * text.count("\t"), name)
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else "\n")
        refuse_if_large(len(text) * (1 + _str_len(wrap or "")), name)
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = args[2] if len(args) > 2 else kwargs.get("count")
        hits = len(text) + 1 if old == "" else text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        refuse_if_large(len(text) + hits * max(0, len(new) - len(old)), name)
    elif name == "join" and args:
        items = list(args[0])
        refuse_if_large(_str_len(subject) * max(0, len(items) - 1) + sum(_str_len(i) for i in items), name)
        return (items, *args[1:])
    elif name in ("format", "format_map"):
        if name == "format_map" and args and isinstance(args[0], dict):
            check_format(subject, (), args[0])
        else:
            check_format(subject, args, kwargs)
    return args


_JINJA_STATE = (jinja2.runtime.Context, jinja2.nodes.EvalContext, jinja2.Environment)
_GUARDED_FILTERS = ("center", "indent", "wordwrap", "replace", "join", "format", "batch", "tojson")


def _guarded_filter(env: jinja2.Environment, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead = 0  # leading context / eval-context / environment arguments pass through
        while lead < len(args) and isinstance(args[lead], _JINJA_STATE):
            lead += 1
        head, value, rest = args[:lead], args[lead] if len(args) > lead else "", args[lead + 1 :]
        if name == "join":  # value|join(d="", attribute=None): the separator is repeated
            items = list(value)
            shown = items
            attribute = kwargs.get("attribute", rest[1] if len(rest) > 1 else None)
            if attribute is not None:
                shown = [make_attrgetter(env, attribute)(i) for i in items]
            check_call("join", kwargs.get("d", rest[0] if rest else ""), (shown,), {})
            return func(*head, items, *rest, **kwargs)
        if name == "format":  # value|format(*args, **kwargs) is printf-style: value % args
            check_printf(value, kwargs or rest)
        elif name == "batch":  # value|batch(linecount, fill_with=None) pads to linecount
            refuse_if_large(_as_int(kwargs.get("linecount", rest[0] if rest else 0)), name)
        elif name == "tojson":  # indentation is repeated on every line
            refuse_if_large(_as_int(kwargs.get("indent", rest[0] if rest else 0)) * 1000, name)
        else:
            check_call(name, value, rest, kwargs)
        return func(*args, **kwargs)

    if hasattr(func, "jinja_pass_arg"):  # jinja2's pass_context / pass_eval_context marker
        guarded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


class _BoundedCodeGenerator(CodeGenerator):
    """``a ~ b`` compiles to a size-checked join (jinja2 otherwise joins without a hook)."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox that also refuses to build anything too large (see the
    module docstring)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.globals.pop("lipsum", None)
        for name in _GUARDED_FILTERS:
            self.filters[name] = _guarded_filter(self, name, self.filters[name])

    @staticmethod
    def bounded_concat(parts: tuple[Any, ...]) -> str:
        strings = [p if isinstance(p, str) else str(p) for p in parts]
        refuse_if_large(sum(len(s) for s in strings), "concatenation")
        return "".join(strings)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS:
            raise jinja2.exceptions.SecurityError("number too large in a template")
        if operator == "*":
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise jinja2.exceptions.SecurityError("number too large in a template")
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    refuse_if_large(len(seq) * count, "repetition")
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            refuse_if_large(len(left) + len(right), "concatenation")
        if operator == "%":
            check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(value, (types.MethodType, types.BuiltinMethodType)):
            return wrapped
        spec, name = value.__self__, value.__name__

        def checked(*args: Any, **kwargs: Any) -> str:
            check_call(name, spec, args, kwargs)
            return wrapped(*args, **kwargs)

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = check_call(getattr(__obj, "__name__", ""), owner, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render, stopping as soon as the output passes the cap (a loop of allowed pieces)."""
    parts: list[str] = []
    total = 0
    stream: Iterator[str] = template.generate(**context)
    for part in stream:
        total += len(part)
        if total > MAX_RENDERED_CHARS:
            raise jinja2.exceptions.SecurityError(f"renders to more than the {MAX_RENDERED_CHARS} characters allowed")
        parts.append(part)
    return "".join(parts)
