"""The jinja2 sandbox every phrasing template is rendered in.

Templates are untrusted text. jinja2's ``ImmutableSandboxedEnvironment`` stops them from
running code, reading files or mutating their inputs; :class:`BoundedSandbox` also stops them
from exhausting memory or time.

Memory: any operation that would build a string (or list) longer than
:data:`MAX_RENDERED_CHARS`, or an integer wider than :data:`MAX_INT_BITS`, is refused *before*
it is built, and rendering stops as soon as the output passes the cap. Guarded:

- operators: ``*`` (repetition), ``+`` and ``~`` (concatenation), ``**`` and integer ``*``
  (huge numbers), ``%`` (printf widths, including ``%*s`` and ``%(name)9999s``);
- filters: ``center``, ``indent``, ``wordwrap``, ``replace``, ``join``, ``format``,
  ``batch``, ``tojson``, ``string``, ``escape``, ``sum``; and the same-named ``str`` methods
  (``center``, ``ljust``, ``rjust``, ``zfill``, ``expandtabs``, ``replace``, ``join``,
  ``format``, ``format_map``);
- captured output: ``{% set %}...{% endset %}`` blocks, macro and ``{% call %}`` bodies and
  filter blocks are joined by a size-checked ``concat``, so nesting them cannot multiply a
  string past the cap; printing a value (``{{ x }}``) checks a lower bound of its text first;
- the ``lipsum`` global and the ``urlize``, ``xmlattr`` and ``pprint`` filters (no use in a
  prompt, and hard to bound) are removed (``range`` is already capped by jinja2), and so is
  ``random`` (a prompt renders the same every time); ``str.encode`` and every attribute of
  bytes are refused (bytes would bring methods without these guards); printf keys with
  parentheses inside, and format widths given as arguments, are read before anything is built.

Time: one render may take at most :data:`MAX_STEPS` steps. Every pass over a loop or macro
body costs its size in template nodes, every call and filter one step plus one per
:data:`UNITS_PER_STEP` characters or items it is given or builds, every item drawn from a
filter's iterator one step; ``in`` (operator and test) and the comparing filters (``sort``,
``unique``, ``min``, ``max``, ...) one per 16 items *inside* what they compare, nested items
counted; macro calls and recursive loops nest at most
:data:`MAX_NESTING` deep. The count is deterministic: the same template and values always
stop at the same place, on any machine.
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, operators
from jinja2.filters import make_attrgetter
from jinja2.nodes import Concat
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: No rendered prompt, and no string built on the way, is longer than this.
MAX_RENDERED_CHARS = 200_000
#: No integer computed in a template is wider than this.
MAX_INT_BITS = 4096
#: The work one render may do (see the module docstring). A real phrasing takes a few
#: hundred steps; this many take well under a second, so a template that loops or recurses
#: without end is stopped long before anyone would wait for it.
MAX_STEPS = 400_000
#: Characters or items handled per step: C-level work on data is far cheaper per item than
#: one pass of the template interpreter over a node.
UNITS_PER_STEP = 16
#: Macro calls (and recursive loops) nested deeper than this are refused: far below Python's
#: recursion limit, so endless recursion is a clean refusal rather than a RecursionError.
MAX_NESTING = 40


class TooMuchWork(jinja2.exceptions.SecurityError):
    """A render went past :data:`MAX_STEPS` or :data:`MAX_NESTING`."""


class _Budget:
    """The work one render has done so far."""

    __slots__ = ("depth", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.depth = 0


_ACTIVE: ContextVar[_Budget | None] = ContextVar("irh_template_budget", default=None)


@contextmanager
def work_budget() -> Generator[None, None, None]:
    """Give the renders, compiles and parses inside the block one fresh :data:`MAX_STEPS` budget."""
    token = _ACTIVE.set(_Budget())
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _budget() -> _Budget:
    # Outside work_budget (a caller compiling on its own, where jinja2 folds constant
    # expressions by calling filters) each charge gets a budget of its own: one call is
    # still bounded, and iterators keep the budget they were created under.
    return _ACTIVE.get() or _Budget()


def _charge_to(budget: _Budget, steps: int) -> None:
    budget.steps += steps
    if budget.steps > MAX_STEPS:
        raise TooMuchWork(
            f"the template does more than the {MAX_STEPS:,} steps of work one render may take "
            "(loop passes and macro calls, weighted by their size, and data handled by filters); "
            "a phrasing should not loop or recurse over large ranges"
        )


def charge(steps: int) -> None:
    """Count ``steps`` of work against the current render's budget."""
    _charge_to(_budget(), steps)


def deep_size(value: Any, limit: int) -> int:
    """How many items (and characters) comparing or sorting ``value`` may touch: containers
    counted with everything inside them, repeats included (``[L] * 1000`` counts ``L`` a
    thousand times, as a comparison would touch it), capped just past ``limit``. Each
    distinct object is measured once, so counting costs its distinct size, not the total."""
    sizes: dict[int, int] = {}

    def size(item: Any, depth: int) -> int:
        if isinstance(item, (str, bytes)):
            return len(item)
        if not isinstance(item, (list, tuple, set, frozenset, dict)) or depth > MAX_NESTING:
            return 0
        known = sizes.get(id(item))
        if known is not None:
            return known
        total = len(item)
        for child in item.values() if isinstance(item, dict) else item:
            if total > limit:
                break
            total += size(child, depth + 1)
        sizes[id(item)] = total = min(total, limit + 1)
        return total

    return size(value, 0)


def deep_work(value: Any) -> int:
    """Steps to charge for comparing against (``in``) or sorting ``value``: its whole size."""
    budget = _budget()
    return deep_size(value, (MAX_STEPS - budget.steps + 1) * UNITS_PER_STEP) // UNITS_PER_STEP


def work(value: Any) -> int:
    """Steps to charge for handling (or building) ``value``."""
    if isinstance(value, (str, list, tuple, dict, set, frozenset, range)):
        return len(value) // UNITS_PER_STEP
    return 0


def _counted(items: Iterator[Any], budget: _Budget) -> Iterator[Any]:
    for item in items:
        _charge_to(budget, 1)
        yield item


def bounded_result(result: Any) -> Any:
    """Charge for what a call built; iterators (``map``, ``slice``...) charge per item drawn."""
    if isinstance(result, Iterator):
        return _counted(result, _budget())
    charge(work(result))
    return result


def text_floor(value: Any, limit: int = MAX_RENDERED_CHARS) -> int:
    """A lower bound on ``len(str(value))``, found without building the text; stops counting
    once past ``limit``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        # "[a, b]": brackets, ", " between items, quotes around strings.
        total = 2 + 2 * max(0, len(value) - 1)
        items: Iterable[Any] = value.items() if isinstance(value, dict) else value
        for item in items:
            if total > limit:
                break
            parts = item if isinstance(value, dict) else (item,)
            for part in parts:
                total += text_floor(part, limit - total) + (2 if isinstance(part, str) else 0)
        return total
    return 1


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


def _widest_number(value: Any) -> int:
    """The largest number a value could put into a format spec: an int, or any run of digits
    in a string given as a spec (``'<999999999'``)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, str):
        runs = re.findall(r"\d+", value)
        if any(len(r) > 9 for r in runs):
            return MAX_RENDERED_CHARS + 1
        return max((int(r) for r in runs), default=0)
    return 0


def _values(values: Any) -> list[Any]:
    if isinstance(values, dict):
        return list(values.values())
    if isinstance(values, (tuple, list)):
        return list(values)
    return [values]


def check_printf(spec: Any, values: Any = ()) -> None:
    """``spec % values``: literal widths and precisions, and ``*`` ones taken from the values;
    mapping keys with parentheses inside (``%((a))9s``, legal in Python) are refused, since
    their width cannot be read without Python's own parser."""
    if not isinstance(spec, str):
        return
    if re.search(r"%\([^)]*\(", spec):
        raise jinja2.exceptions.SecurityError("printf keys with parentheses inside are not allowed in a template")
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
            # A spec given as an argument ('{0:{1}}'.format(1, '<999999999')): any number in
            # any argument could become the width.
            for value in [*args, *(kwargs or {}).values()]:
                refuse_if_large(_widest_number(value), "a format width")
            check_format(format_spec, args, kwargs)
            continue
        # [[fill]align][sign][z][#][0][width][grouping][.precision][type]
        match = re.fullmatch(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?", format_spec)
        if match:
            refuse_if_large(max(_as_int(match.group(1) or 0), _as_int(match.group(2) or 0)), "a format width")


def _str_len(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    # Check a lower bound before building the text: str() of a long list is itself too large.
    refuse_if_large(text_floor(value), "printing a value")
    return len(str(value))


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
#: Filters with no use in a prompt whose output is hard to bound, and ``random``: a prompt
#: must render the same every time (the run records one text per cell).
_REMOVED_FILTERS = ("urlize", "xmlattr", "pprint", "random")
#: Filters that compare their items with each other (``n log n`` comparisons, each as deep
#: as the items): charged for the items' whole size, not their count.
_COMPARING_FILTERS = frozenset({"sort", "unique", "dictsort", "min", "max", "groupby"})
#: What ``escape`` adds per special character at most (``&`` -> ``&amp;``, ``"`` -> ``&#34;``).
_ESCAPE_GROWTH = 4


def _check_filter(env: jinja2.Environment, name: str, value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse a filter call whose result would pass the cap, before it runs. Returns the
    value to filter (an iterable to join read into a list once)."""
    if name == "join":  # value|join(d="", attribute=None): the separator is repeated
        items = list(value)
        shown = items
        attribute = kwargs.get("attribute", rest[1] if len(rest) > 1 else None)
        if attribute is not None:
            shown = [make_attrgetter(env, attribute)(i) for i in items]
        check_call("join", kwargs.get("d", rest[0] if rest else ""), (shown,), {})
        return items
    if name == "format":  # value|format(*args, **kwargs) is printf-style: value % args
        check_printf(value, kwargs or rest)
    elif name == "batch":  # value|batch(linecount, fill_with=None) pads to linecount
        refuse_if_large(_as_int(kwargs.get("linecount", rest[0] if rest else 0)), name)
    elif name == "tojson":  # indentation is repeated on every line
        refuse_if_large(_as_int(kwargs.get("indent", rest[0] if rest else 0)) * 1000, name)
        refuse_if_large(text_floor(value), name)
    elif name in ("string", "urlencode"):  # the whole value printed as text
        refuse_if_large(text_floor(value), name)
    elif name in ("escape", "e", "forceescape"):
        text = value if isinstance(value, str) else ""
        specials = sum(text.count(c) for c in "&<>\"'")
        refuse_if_large(text_floor(value) + _ESCAPE_GROWTH * specials, name)
    elif name == "sum":  # sum(start=[]) concatenates lists, in quadratic time
        start = kwargs.get("start", rest[1] if len(rest) > 1 else 0)
        if not isinstance(start, (int, float)):
            raise jinja2.exceptions.SecurityError("sum only adds numbers in a template")
    elif name in ("center", "indent", "wordwrap", "replace"):
        check_call(name, value, rest, kwargs)
    elif name in _COMPARING_FILTERS:
        n = len(value) if isinstance(value, (list, tuple, dict, set, frozenset, str)) else 0
        charge(deep_work(value) * max(1, n.bit_length()))
    return value


def _guarded_filter(env: jinja2.Environment, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its size guard checked before it runs, and its work charged."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead = 0  # leading context / eval-context / environment arguments pass through
        while lead < len(args) and isinstance(args[lead], _JINJA_STATE):
            lead += 1
        head, value, rest = args[:lead], args[lead] if len(args) > lead else "", args[lead + 1 :]
        charge(1 + work(value) + sum(work(a) for a in rest) + sum(work(v) for v in kwargs.values()))
        if len(args) > lead:
            value = _check_filter(env, name, value, rest, kwargs)
            return bounded_result(func(*head, value, *rest, **kwargs))
        return bounded_result(func(*args, **kwargs))

    if hasattr(func, "jinja_pass_arg"):  # jinja2's pass_context / pass_eval_context marker
        guarded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _guarded_test(func: Callable[..., Any]) -> Callable[..., Any]:
    """A test (``x is in big``) charged for the values it looks through."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        charge(1 + sum(deep_work(a) for a in args) + sum(deep_work(v) for v in kwargs.values()))
        return func(*args, **kwargs)

    if hasattr(func, "jinja_pass_arg"):
        guarded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _body_cost(body: list[nodes.Node]) -> int:
    """One pass over a body costs its size in nodes (jinja2 allows no custom node to hold it)."""
    return 1 + len(body) + sum(1 for child in body for _ in child.find_all(nodes.Node))


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles the hooks jinja2 has no place for: ``a ~ b`` to a size-checked join, a charge
    at the head of every loop and macro body, a charge on the right of ``in`` and the other
    comparisons, and a size check on every printed value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bodies to charge, by id of their node list (kept alive here, so ids stay unique).
        self._charged: dict[int, tuple[list[nodes.Node], int]] = {}

    def _charge_body(self, body: list[nodes.Node]) -> None:
        self._charged[id(body)] = (body, _body_cost(body))

    def blockvisit(self, body: Iterable[nodes.Node], frame: Frame) -> None:
        charged = self._charged.get(id(body))
        if charged is not None and charged[0] is body:
            self.writeline(f"environment.charge({charged[1]})")
        super().blockvisit(body, frame)

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._charge_body(node.body)
        super().visit_For(node, frame)

    def visit_Macro(self, node: nodes.Macro, frame: Frame) -> None:
        self._charge_body(node.body)
        super().visit_Macro(node, frame)

    def visit_CallBlock(self, node: nodes.CallBlock, frame: Frame) -> None:
        self._charge_body(node.body)
        super().visit_CallBlock(node, frame)

    def visit_Operand(self, node: nodes.Operand, frame: Frame) -> None:
        # `x in big` scans big in C, with no hook of its own.
        self.write(f" {operators[node.op]} environment.scanned(")
        self.visit(node.expr, frame)
        self.write(")")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.printable(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(")")
        super()._output_child_post(node, frame, finalize)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox that also refuses to build anything too large or to work
    without end (see the module docstring). Render only through :func:`render_bounded`."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.globals.pop("lipsum", None)
        for name in _REMOVED_FILTERS:
            self.filters.pop(name, None)
        for name, func in list(self.filters.items()):
            self.filters[name] = _guarded_filter(self, name, func)
        for name, test in list(self.tests.items()):
            self.tests[name] = _guarded_test(cast("Callable[..., Any]", test))

    charge = staticmethod(charge)

    @staticmethod
    def scanned(value: Any) -> Any:
        # `x in big` compares x with every item of big, each comparison as deep as the items.
        charge(deep_work(value))
        return value

    @staticmethod
    def printable(value: Any) -> Any:
        refuse_if_large(text_floor(value), "printing a value")
        return value

    @staticmethod
    def concat(parts: Iterable[str]) -> str:  # type: ignore[override]
        """Joins captured output ({% set %} blocks, macro and call bodies, filter blocks)."""
        pieces = list(parts)
        size = sum(len(p) for p in pieces)
        refuse_if_large(size, "captured output ({% set %} block, macro or call)")
        charge(size // UNITS_PER_STEP)
        return "".join(pieces)

    @staticmethod
    def bounded_concat(parts: tuple[Any, ...]) -> str:
        for p in parts:
            if not isinstance(p, str):
                refuse_if_large(text_floor(p), "printing a value")
        strings = [p if isinstance(p, str) else str(p) for p in parts]
        size = sum(len(s) for s in strings)
        refuse_if_large(size, "concatenation")
        charge(size // UNITS_PER_STEP)
        return "".join(strings)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and ints and right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS:
            raise jinja2.exceptions.SecurityError("number too large in a template")
        if operator == "*":
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise jinja2.exceptions.SecurityError("number too large in a template")
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                    refuse_if_large(len(seq) * count, "repetition")
        if operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            refuse_if_large(len(left) + len(right), "concatenation")
        if operator == "%":
            check_printf(left, right)
            for value in _values(right):
                refuse_if_large(text_floor(value), "printing a value")
        charge(1)
        return bounded_result(super().call_binop(context, operator, left, right))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # No bytes in a prompt: str.encode would open every bytes method (ljust, *, ...) with
        # none of the size guards that str's have.
        if attr == "encode" or isinstance(obj, (bytes, bytearray, memoryview)):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

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
        budget = _budget()
        _charge_to(budget, 1 + work(owner) + sum(work(a) for a in args) + sum(work(v) for v in kwargs.values()))
        nests = isinstance(__obj, (Macro, LoopContext))
        if nests:
            if budget.depth >= MAX_NESTING:
                raise TooMuchWork(
                    f"macro calls (or recursive loops) nest more than {MAX_NESTING} deep; "
                    "a phrasing's macro must not call itself without end"
                )
            budget.depth += 1
        try:
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            if nests:
                budget.depth -= 1
        return bounded_result(result)


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render with a fresh work budget, stopping as soon as the output passes the cap (a loop
    of allowed pieces)."""
    parts: list[str] = []
    total = 0
    with work_budget():
        stream: Iterator[str] = template.generate(**context)
        for part in stream:
            total += len(part)
            if total > MAX_RENDERED_CHARS:
                raise jinja2.exceptions.SecurityError(f"renders to more than the {MAX_RENDERED_CHARS} characters allowed")
            parts.append(part)
    return "".join(parts)
