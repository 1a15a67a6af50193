"""Rewriting other projects' templates into ours: renamed jinja variables, str.format to jinja.

Nothing here renders or executes a template: jinja templates are only lexed (tokenised) and
Python format strings only parsed, so a hostile template can do no more than fail to import.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import jinja2

from harness.render import TemplateProblem, template_fields

# Lexing only; the sandboxed environment in harness.render is the one that renders.
_LEXER_ENV = jinja2.Environment(autoescape=False, keep_trailing_newline=True)

#: Tokens after which a name is an attribute, a filter or a test, never a variable.
_NOT_A_VARIABLE_AFTER = {"dot", "pipe"}
_TEST_KEYWORDS = {"is"}


class UnmappedPlaceholder(ValueError):
    """A template uses placeholders that have no counterpart in our task fields."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"placeholder(s) {names} have no field in our tasks")

    @property
    def skip_reason(self) -> str:
        """The reason an importer records when it skips such a template."""
        return f"uses {self.names}, which have no field in our tasks"


def rename_variables(text: str, mapping: dict[str, str]) -> str:
    """Replace template variables by jinja expressions (e.g. ``sentence1`` by ``premise``).

    Only free variables are renamed: attributes (``x.label``), filters and tests keep their
    names. Every free variable must be in ``mapping``.

    Args:
        text: a jinja template.
        mapping: variable name -> jinja expression to put in its place.

    Raises:
        UnmappedPlaceholder: the template reads variables that ``mapping`` lacks.
        TemplateProblem: the template does not parse.
    """
    free = template_fields(text)
    missing = sorted(free - set(mapping))
    if missing:
        raise UnmappedPlaceholder(missing)
    try:
        tokens = list(_LEXER_ENV.lex(text))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    if "".join(value for _, _, value in tokens) != text:
        # The lexer normalised something (line endings): do not guess, refuse.
        raise TemplateProblem("template cannot be rewritten token by token")
    out: list[str] = []
    previous = ""
    previous_value = ""
    for _, kind, value in tokens:
        if kind == "name" and value in free and previous not in _NOT_A_VARIABLE_AFTER and previous_value not in _TEST_KEYWORDS:
            out.append(mapping[value])
        else:
            out.append(value)
        if kind != "whitespace":
            previous, previous_value = kind, value
    result = "".join(out)
    template_fields(result)  # the rewrite must still parse
    return result


def escape_literal(text: str) -> str:
    """Make plain text safe to embed in a jinja template (it must render as itself)."""
    if any(opener in text for opener in ("{{", "{%", "{#")):
        return text.replace("{", "{{ '{' }}")
    return text


def format_to_jinja(template: str, mapping: dict[str, str]) -> str:
    """Turn a Python ``str.format`` template into jinja.

    Args:
        template: text with ``{name}`` placeholders (``{{``/``}}`` for literal braces).
        mapping: placeholder name -> jinja text to put in its place (e.g. ``{{ premise }}``).

    Raises:
        UnmappedPlaceholder: a placeholder (or a positional ``{}``) is not in ``mapping``.
        ValueError: the format string is malformed.
    """
    parts: list[str] = []
    missing: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        parts.append(escape_literal(literal))
        if name is None:
            continue
        if name not in mapping or spec or conversion:
            missing.append("{" + name + "}")
            continue
        parts.append(mapping[name])
    if missing:
        raise UnmappedPlaceholder(sorted(set(missing)))
    return "".join(parts)


def format_placeholders(template: str) -> set[str]:
    """Names of the ``{name}`` placeholders in a Python format string (``""`` for ``{}``)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@dataclass(frozen=True)
class DatasetMapping:
    """How one source dataset's templates map onto our tasks (FLAN and promptsource)."""

    target_kind: str
    target: str
    #: Their template variable / document field -> our field.
    fields: dict[str, str]
    #: Our label for each of their label indices (their ``label`` 0, 1, ...).
    labels: tuple[str, ...]
    #: Name used in phrasing ids where several datasets share templates (ANLI's rounds).
    stem: str = ""
