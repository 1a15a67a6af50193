"""Rewriting other projects' templates into ours: renamed jinja variables, str.format to jinja.

Rewriting never renders or executes a template: jinja templates are only lexed (tokenised)
and Python format strings only parsed, so a hostile template can do no more than fail to
import. The one check that renders (:func:`check_choice_template`, on made-up rows) does so in
the sandbox of harness/render.py, as every phrasing is rendered.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2

from harness.render import TemplateProblem, render_text, template_fields

# Lexing only; the sandboxed environment in harness.render is the one that renders.
_LEXER_ENV = jinja2.Environment(autoescape=False, keep_trailing_newline=True)

#: Tokens after which a name is an attribute, a filter or a test, never a variable.
_NOT_A_VARIABLE_AFTER = {"dot", "pipe"}
_TEST_KEYWORDS = {"is"}
#: The raw lexer calls every operator ``operator``; these get their parser names.
_OPERATORS = {".": "dot", "|": "pipe", "[": "lbracket", "]": "rbracket"}


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
    names. Every free variable must be in ``mapping``. A key ``name.attr`` renames that one
    attribute path as a whole (``choices.text`` or ``choices["text"]`` -> ``choices``); a
    variable with only such keys may be used only through them.

    Args:
        text: a jinja template.
        mapping: variable name (or ``variable.attribute``) -> jinja expression to put in its place.

    Raises:
        UnmappedPlaceholder: the template reads variables (or attributes of them) that ``mapping`` lacks.
        TemplateProblem: the template does not parse.
    """
    free = template_fields(text)
    with_paths = {key.split(".", 1)[0] for key in mapping if "." in key}
    missing = sorted(free - set(mapping) - with_paths)
    if missing:
        raise UnmappedPlaceholder(missing)
    try:
        tokens = [(_OPERATORS.get(value, kind) if kind == "operator" else kind, value) for _, kind, value in _LEXER_ENV.lex(text)]
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    if "".join(value for _, value in tokens) != text:
        # The lexer normalised something (line endings): do not guess, refuse.
        raise TemplateProblem("template cannot be rewritten token by token")
    out: list[str] = []
    unmapped: list[str] = []
    previous = ""
    previous_value = ""
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        step = 1
        if kind == "name" and value in free and previous not in _NOT_A_VARIABLE_AFTER and previous_value not in _TEST_KEYWORDS:
            attribute, length = _attribute_after(tokens, i + 1)
            if attribute is not None and f"{value}.{attribute}" in mapping:
                out.append(mapping[f"{value}.{attribute}"])
                step += length
            elif value in mapping:
                out.append(mapping[value])
            else:
                unmapped.append(value if attribute is None else f"{value}.{attribute}")
                out.append(value)
        else:
            out.append(value)
        for k in range(i, i + step):
            if tokens[k][0] != "whitespace":
                previous, previous_value = tokens[k]
        i += step
    if unmapped:
        raise UnmappedPlaceholder(sorted(set(unmapped)))
    result = "".join(out)
    template_fields(result)  # the rewrite must still parse
    return result


def _attribute_after(tokens: list[tuple[str, str]], i: int) -> tuple[str | None, int]:
    """The attribute read right at ``tokens[i]`` (``.name`` or ``["name"]``) and its token count."""
    kinds = [kind for kind, _ in tokens[i : i + 3]]
    if kinds[:2] == ["dot", "name"]:
        return tokens[i + 1][1], 2
    if kinds == ["lbracket", "string", "rbracket"]:
        literal = tokens[i + 1][1]
        if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"" and "\\" not in literal:
            return literal[1:-1], 3
    return None, 0


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


# --------------------------------------------------------------------------- multiple choice

#: One row of a dataset in its source (Hugging Face hub) format.
Row = dict[str, Any]


@dataclass(frozen=True)
class ChoiceMapping:
    """How one source dataset's templates map onto a multiple-choice task of ours whose options
    are each document's own texts (the phrasing scores them with ``answer_choices: text``).

    A template is only taken over when :func:`check_choice_template` shows, on stand-in rows
    of the source format, that it asks the same question with the same options in our order.
    """

    target_kind: str
    target: str
    #: Our task whose converter (harness/data/olmo.py) turns a source row into a document.
    task: str
    #: Their template variable (or ``variable.attribute``) -> jinja expression over our fields.
    fields: dict[str, str]
    #: Which stand-in rows (:func:`stand_in_rows`) test a template.
    rows: str
    #: Documents differ in their number of options (ARC): a template that states a count
    #: ("between 4 options") is scored only on documents with that many (``option_count``).
    variable_options: bool = False
    #: Name used in phrasing ids (FLAN).
    stem: str = ""


_WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fjord")


def _texts(n: int, r: int, what: str = "option") -> list[str]:
    """``n`` distinct option texts for stand-in row ``r``."""
    return [f"{_WORDS[k]} {what} {r}" for k in range(n)]


def _keyed_rows(question: str, layouts: list[tuple[str, int]], extra: dict[str, Any] | None = None) -> list[Row]:
    """ARC / OpenBookQA / CommonsenseQA rows: ``choices`` {text, label}, ``answerKey``."""
    rows = []
    for r, (labels, gold) in enumerate(layouts):
        rows.append(
            {
                "id": f"stand-in-{r}",
                question: f"Which stand-in answer fits question {r}?",
                "choices": {"text": _texts(len(labels), r), "label": list(labels)},
                "answerKey": labels[gold],
                **(extra or {}),
            }
        )
    return rows


def stand_in_rows(kind: str) -> list[Row]:
    """Made-up rows in one source format, with distinct option texts and the right option in
    every position (and, for ARC, 3-5 options and numeric keys as in the real data).

    Kinds: ``arc``, ``openbookqa``, ``csqa``, ``copa``, ``hellaswag``, ``piqa``, ``sciq``,
    ``siqa``, ``winogrande``.
    """
    if kind == "arc":
        return _keyed_rows("question", [("ABCD", g) for g in range(4)] + [("1234", 1), ("ABC", 2), ("ABCDE", 4)])
    if kind == "openbookqa":
        return _keyed_rows("question_stem", [("ABCD", g) for g in range(4)])
    if kind == "csqa":
        return _keyed_rows("question", [("ABCDE", g) for g in range(5)], {"question_concept": "stand-in"})
    if kind == "copa":
        return [
            {
                "premise": f"The stand-in premise {r} happened.",
                "choice1": _texts(2, r)[0],
                "choice2": _texts(2, r)[1],
                "question": question,
                "idx": r,
                "label": gold,
            }
            for r, (question, gold) in enumerate([("cause", 0), ("cause", 1), ("effect", 0), ("effect", 1)])
        ]
    if kind == "hellaswag":
        rows = []
        for r in range(4):
            ctx_a, ctx_b = f"A stand-in scene {r} begins.", "Then the person"
            rows.append(
                {
                    "ind": r,
                    "activity_label": f"Stand-in activity {r}",
                    "ctx_a": ctx_a,
                    "ctx_b": ctx_b,
                    "ctx": f"{ctx_a} {ctx_b}",
                    "endings": _texts(4, r, "ending"),
                    "source_id": "activitynet~stand-in",
                    "split": "val",
                    "split_type": "indomain",
                    "label": str(r),
                }
            )
        return rows
    if kind == "piqa":
        return [{"goal": f"Stand-in goal {r}.", "sol1": _texts(2, r)[0], "sol2": _texts(2, r)[1], "label": r} for r in range(2)]
    if kind == "sciq":
        return [
            {
                "question": f"Which stand-in answer fits question {r}?",
                "distractor1": _texts(4, r)[0],
                "distractor2": _texts(4, r)[1],
                "distractor3": _texts(4, r)[2],
                "correct_answer": _texts(4, r)[3],
                "support": f"Stand-in support {r}.",
            }
            for r in range(4)
        ]
    if kind == "siqa":
        return [
            {
                "context": f"Stand-in person {r} did something.",
                "question": "What will they want to do next?",
                "answerA": _texts(3, r)[0],
                "answerB": _texts(3, r)[1],
                "answerC": _texts(3, r)[2],
                "label": str(r + 1),
            }
            for r in range(3)
        ]
    if kind == "winogrande":
        return [
            {
                "sentence": f"Stand-in sentence {r} where _ fits.",
                "option1": _texts(2, r)[0],
                "option2": _texts(2, r)[1],
                "answer": str(r + 1),
            }
            for r in range(2)
        ]
    raise KeyError(f"no stand-in rows of kind {kind!r}")


def _converter(task: str) -> Callable[[Row, int], dict[str, Any]]:
    from harness.data.olmo import SETS

    for hub_set in SETS:
        if hub_set.task == task:
            return hub_set.convert
    raise KeyError(f"no converter for task {task!r} in harness/data/olmo.py")


def _options_problem(shown: list[str], options: list[str], row: Row) -> str | None:
    """Why answer choices rendered on a row are not the document's options in our order."""
    if shown == options:
        return None
    keys = row.get("choices", {}).get("label") if isinstance(row.get("choices"), dict) else None
    if shown == keys or all(len(word) <= 2 for word in shown):
        return "answer choices are letters or numbers, not the option texts"
    if sorted(shown) == sorted(options):
        return "answer choices are the document's options in another order than ours"
    if set(shown) < set(options):
        return "answer choices are a subset of the document's options"
    return "answer choices are not the document's options (fixed words or other texts)"


#: Renders a template on a source row: (prompt, target) as the source shows them, or why not.
SourceRenderer = Callable[[Row, list[str] | None], tuple[str, str] | str]


def check_choice_template(
    mapping: ChoiceMapping, render_source: SourceRenderer, answer_choices: str | None = None, text: str | None = None
) -> str | None:
    """Whether a source template is our task with the document's own options as continuations
    (and, given ``text``, whether its rewrite to our fields shows the same prompt); None if
    so, else the reason it is not.

    On every stand-in row of ``mapping.rows`` (rendered in the sandbox, never by plain jinja):
    the source's ``answer_choices`` template (if any) must give the options our converter
    makes of the row, in its order; the source template must render a prompt and, as its
    target, the right option; and ``text`` rendered on our document must give the same
    prompt as the source template on the row.

    Args:
        mapping: the dataset's mapping.
        render_source: renders the source template on a row, given its answer choices.
        answer_choices: the source's per-document ``answer_choices`` template (promptsource).
        text: the template rewritten to our fields; None checks the source template alone.
    """
    convert = _converter(mapping.task)
    for i, row in enumerate(stand_in_rows(mapping.rows)):
        doc = convert(row, i)
        options = list(doc["choices"])
        gold = options[doc["scores"].index(1.0)]
        shown: list[str] | None = None
        if answer_choices is not None:
            try:
                shown = [word.strip() for word in render_text(answer_choices, row).split("|||")]
            except TemplateProblem as exc:
                return f"answer choices do not render on a source row: {exc}"
            problem = _options_problem(shown, options, row)
            if problem:
                return problem
        try:
            source = render_source(row, shown)
        except TemplateProblem as exc:
            return f"does not render on a source row: {exc}"
        if isinstance(source, str):
            return source
        prompt, target = source
        if target.strip() != gold:
            return "target is not the document's right option"
        if text is None:
            continue
        try:
            ours = render_text(text, {**doc["fields"], "choices": options})
        except TemplateProblem as exc:
            return f"does not render on our documents: {exc}"
        if ours.strip() != prompt.strip():
            return "renders differently on our document than on the source row"
    return None


_STATED_COUNT = re.compile(r"\b(2|3|4|5|two|three|four|five)\s+(?:\w+\s+)?(?:options|choices|possibilities|alternatives|answers)\b", re.I)
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5}


def stated_option_count(text: str) -> int | None:
    """The number of options a template's wording states ("between 4 options"), if any."""
    match = _STATED_COUNT.search(text)
    if not match:
        return None
    word = match.group(1).lower()
    return _NUMBERS.get(word) or int(word)
