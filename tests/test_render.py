"""The sandboxed renderer: exact output, answer styles, system split, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from harness.render import TemplateProblem, render_prompt, render_text, split_system_part, template_fields
from harness.sandbox import MAX_NESTING, MAX_RENDERED_CHARS, MAX_STEPS
from harness.schema import Instruction, Provenance, TaskSpec

#: Nine levels of {% set %}, each ten copies of the one before.
NESTED_SET_BLOCKS = (
    "{% set a0 %}xxxxxxxxxx{% endset %}"
    + "".join(f"{{% set a{i} %}}" + f"{{{{ a{i - 1} }}}}" * 10 + "{% endset %}" for i in range(1, 9))
    + "{{ a8|length }}"
)
PROV = {"status": "unobserved", "author": "instruction-robustness contributors"}
MC = TaskSpec(id="toy.mc", family="toy", category="multiple-choice-qa", fields=["question", "choices", "subject"])
YN = TaskSpec(id="toy.yn", family="toy", category="binary-classification", fields=["input"], labels=["Yes", "No"])


def inst(text: str, **kw: Any) -> Instruction:
    return Instruction(id="toy.w01", text=text, provenance=Provenance.model_validate(PROV), **kw)


def doc(**fields: Any) -> dict[str, Any]:
    return {"id": "d/0", "fields": fields, "choices": ["red", "green", "blue", "grey"], "scores": [0, 1, 0, 0]}


def test_golden_letters_prompt() -> None:
    text = "A question about {{ subject }}.\n{{ question }}\n{% for c in choices %}{{ 'ABCD'[loop.index0] }}. {{ c }}\n{% endfor %}Answer:"
    out = render_prompt(inst(text, answer_choices="letters"), MC, doc(question="Which colour is grass?", subject="botany"))
    assert out.user == "A question about botany.\nWhich colour is grass?\nA. red\nB. green\nC. blue\nD. grey\nAnswer:"
    assert out.options == ["A", "B", "C", "D"]
    assert out.system == ""


def test_labels_order_and_verbaliser() -> None:
    d = {"id": "d/1", "fields": {"input": "Is water wet?"}, "choices": ["No", "Yes"], "scores": [0, 1]}
    out = render_prompt(inst("{{ input }} yes or no?", answer_choices={"Yes": "yes", "No": "no"}), YN, d)
    assert out.options == ["yes", "no"]  # in the task's label order, not the document's
    numbers = render_prompt(inst("{{ input }}\n1) Yes\n2) No", answer_choices="numbers"), YN, d)
    assert numbers.options == ["1", "2"]
    lower = render_prompt(inst("{{ input }}\n(a) Yes\n(b) No", answer_choices="lowercase"), YN, d)
    assert lower.options == ["a", "b"]
    assert render_prompt(inst("{{ input }}"), YN, d).options == ["Yes", "No"]


def test_system_placement_splits_before_the_first_document_field() -> None:
    text = "You answer trivia.\nBe brief.\nQ: {{ question }}\nA:"
    system, user = split_system_part(text, {"question": "2+2?", "choices": [], "subject": "x"})
    assert system == "You answer trivia.\nBe brief."
    assert user == "Q: 2+2?\nA:"
    # A phrasing that starts with the document has no system part.
    assert split_system_part("{{ question }}\nAnswer:", {"question": "2+2?"}) == ("", "2+2?\nAnswer:")


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ question.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% for x in choices %}{{ x.__len__() }}{% endfor %}",
    ],
)
def test_sandbox_refuses_code_and_introspection(text: str) -> None:
    with pytest.raises(TemplateProblem):
        render_text(text, {"question": "q", "choices": ["a"]})


def test_unknown_field_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateProblem, match="unknown field"):
        render_text("{{ questoin }}", {"question": "q"})
    assert template_fields("{{ a }} {% for c in choices %}{{ c }}{% endfor %}") == {"a", "choices"}


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateProblem, match="line 2"):
        template_fields("ok\n{% for %}")


def test_system_split_stops_before_listed_options() -> None:
    text = "Answer the question.\nThe options are: {{ choices | join('; ') }}\n{{ question }}"
    system, user = split_system_part(text, {"question": "Which?", "choices": ["femur", "tibia"], "subject": "x"})
    assert system == "Answer the question."
    assert user.startswith("The options are: femur; tibia")


def test_system_split_refuses_where_the_head_depends_on_a_value() -> None:
    text = "{% if question|length > 3 %}Long one.{% else %}Short.{% endif %}\nSolve it.\n{{ question }}"
    assert split_system_part(text, {"question": "Which?"}) == ("", "Long one.\nSolve it.\nWhich?")


#: Refusals that are not "<guard> would build a string too large".
SANDBOX_MESSAGES = {
    "NUMBER": "template not allowed: number too large in a template",
    "OUTPUT": f"template not allowed: renders to more than the {MAX_RENDERED_CHARS} characters allowed",
    "LIPSUM": "unknown field: 'lipsum' is undefined",
    "STEPS": (
        f"template not allowed: the template does more than the {MAX_STEPS:,} steps of work one render may take "
        "(loop passes and macro calls, weighted by their size, and data handled by filters); "
        "a phrasing should not loop or recurse over large ranges"
    ),
    "NESTING": (
        f"template not allowed: macro calls (or recursive loops) nest more than {MAX_NESTING} deep; "
        "a phrasing's macro must not call itself without end"
    ),
}


@pytest.mark.parametrize(
    ("text", "guard"),
    [
        ("{{ 'x' * 10**9 }}", "repetition"),
        ("{{ 'ab' * 1000000 }}", "repetition"),
        ("{{ 2 ** 100000 }}", "NUMBER"),
        ("{% for c in choices %}{{ c }}{% endfor %}{{ 'y' * 300000 }}", "repetition"),
        # Filters and str methods that build a string of a given width or count.
        ("{{ 'x'|center(10**9) }}", "center"),
        ("{{ 'x'|indent(10**9, true) }}", "indent"),
        ("{{ 'x'.center(10**9) }}", "center"),
        ("{{ 'x'.ljust(10**9) }}", "ljust"),
        ("{{ 'x'.zfill(10**9) }}", "zfill"),
        ("{{ ('a\tb').expandtabs(10**9) }}", "expandtabs"),
        ("{{ '%999999999s' % 'x' }}", "a format width"),
        ("{{ '%.999999999f' % 1.5 }}", "a format width"),
        ("{{ '%999999999s'|format('x') }}", "a format width"),
        ("{{ '{:>999999999}'.format('x') }}", "a format width"),
        ("{{ '{a:>999999999}'.format_map({'a': 'x'}) }}", "a format width"),
        ("{{ '%*s' % (10**9, 'x') }}", "a format width"),
        ("{{ '{:>{}}'.format('x', 10**9) }}", "a format width"),
        ("{{ '{a:>{w}}'.format_map({'a': 'x', 'w': 10**9}) }}", "a format width"),
        # Replacements and joins that multiply a string within the per-step cap.
        ("{{ ('ab' * 1000)|replace('', 'cd' * 1000) }}", "replace"),
        ("{{ ('ab' * 1000).replace('b', 'cd' * 1000) }}", "replace"),
        ("{{ range(100000)|join('x' * 1000) }}", "join"),
        ("{{ range(100)|join(d='x' * 199999) }}", "join"),
        ("{{ ('y' * 5000).join(['a'] * 1000) }}", "join"),
        # Width times lines or tabs; named and string widths.
        ("{{ ('a\n' * 1000)|indent(199999) }}", "indent"),
        ("{{ ('a\n' * 1000)|indent('x' * 199999) }}", "indent"),
        ("{{ ('\t' * 100).expandtabs(tabsize=199999) }}", "expandtabs"),
        ("{{ ('ab ' * 60000)|wordwrap(2, wrapstring='x' * 100) }}", "wordwrap"),
        ("{{ ['a']|batch(10**9, 'x')|list }}", "batch"),
        ("{{ choices|tojson(indent=10**6) }}", "tojson"),
        # Widths from names, fills and nested string values.
        ("{{ '%(a)300000s' % {'a': 'x'} }}", "a format width"),
        ("{{ '%(a)300000s'|format(a='x') }}", "a format width"),
        ("{{ '{:0>300000}'.format(1) }}", "a format width"),
        ("{{ '{:>{}}'.format(1, '300000') }}", "a format width"),
        # Growth spread over a loop, a namespace or a recursive macro.
        ("{% for i in range(20) %}{{ 'x' * 199999 }}{% endfor %}", "OUTPUT"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "concatenation",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
            "concatenation",
        ),
        ("{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ f('ab', 40) }}", "concatenation"),
        ("{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}", "NUMBER"),
        ("{{ (10**64) ** 64 }}", "NUMBER"),
        ("{{ lipsum(10**6) }}", "LIPSUM"),
        # Captured output: nested {% set %} blocks multiply a string tenfold per level (a8 would
        # be 10**9 characters), as can macro output.
        (NESTED_SET_BLOCKS, "captured output ({% set %} block, macro or call)"),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}{{ 'x' * 100000 }}{% endif %}{% endmacro %}{{ f(3)|length }}",
            "captured output ({% set %} block, macro or call)",
        ),
        # A whole value printed as text: a list of 100,000 numbers prints as 688,890 characters.
        ("{{ range(100000)|list|string }}", "string"),
        ("{{ range(100000)|list|tojson }}", "tojson"),
        ("{{ range(100000)|list }}", "printing a value"),
        ("{{ (range(100000)|list) ~ '' }}", "printing a value"),
        ("{{ ['x' * 199999, 'y']|string }}", "string"),
        ("{{ ('&' * 199999)|e }}", "e"),
    ],
)
def test_sandbox_refuses_memory_bombs(text: str, guard: str) -> None:
    # Each case names the guard that must stop it *before* the string is built: the output cap
    # ("renders to more than") catches only what was already built, so a case that passed on
    # it would not notice its own guard going missing.
    with pytest.raises(TemplateProblem) as err:
        render_text(text, {"choices": ["a"]})
    assert str(err.value) == SANDBOX_MESSAGES.get(guard, f"template not allowed: {guard} would build a string too large for a template")


def test_sandbox_keeps_ordinary_string_work() -> None:
    text = (
        "{{ 'x'|center(5) }}|{{ 'a-b'|replace('-', ' ') }}|{{ choices|join(', ') }}|{{ '%3s' % 'x' }}|"
        "{{ '%s and %s'|format('a', 'b') }}|{{ '{:>3}'.format('y') }}|{{ 'q'.ljust(3, '.') }}|{{ 'line'|indent(2, true) }}|"
        "{{ ', '.join(choices) }}|{{ 'aXbX'.replace('X', '', 1) }}|{{ 'abc'.replace('a', 'bb', 1000000) }}|"
        "{{ '100%% %s' % 'x' }}|{{ '%(a)s!'|format(a='y') }}|{{ ('a\nb')|indent('> ') }}|{{ {'k': 1}|join(',') }}|"
        "{{ docs|join('; ', attribute='name') }}|{{ 'a' ~ 1 ~ 'b' }}|{{ 2 ** 10 }}|{{ [1] + [2] }}"
    )
    docs = [{"name": "x", "body": "z" * 150_000}, {"name": "y", "body": "z" * 150_000}]
    assert render_text(text, {"choices": ["a", "b"], "docs": docs}) == (
        "  x  |a b|a, b|  x|a and b|  y|q..|  line|a, b|abX|bbbc|100% x|y!|a\n> b|k|x; y|a1b|1024|[1, 2]"
    )


@pytest.mark.parametrize(
    ("text", "guard"),
    [
        # Endless recursion: a clean refusal, not Python's RecursionError.
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "NESTING"),
        ("{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}", "NESTING"),
        (
            "{% macro f() %}{{ caller() }}{% endmacro %}{% macro g() %}{% call f() %}{{ g() }}{% endcall %}{% endmacro %}{{ g() }}",
            "NESTING",
        ),
        # Work without end: 10**10 loop passes; 2**24 macro calls (a doubling macro).
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "STEPS"),
        ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(24) }}", "STEPS"),
        # Iterators drawn item by item: a billion slices; scans of a long list inside a loop.
        ("{{ [1]|slice(10**9)|list|length }}", "STEPS"),
        ("{% set big = range(100000)|list %}{% for i in range(100000) %}{{ i in big }}{% endfor %}", "STEPS"),
        ("{% set big = range(100000)|list %}{% for i in range(100000) %}{{ big|sum }}{% endfor %}", "STEPS"),
        ("{% set big = range(100000)|list %}{% for i in range(100000) %}{{ i is in big }}{% endfor %}", "STEPS"),
    ],
)
def test_sandbox_bounds_the_work_of_one_render(text: str, guard: str) -> None:
    with pytest.raises(TemplateProblem) as err:
        render_text(text, {"choices": ["a"]})
    assert str(err.value) == SANDBOX_MESSAGES[guard]


def test_every_render_has_its_own_budget() -> None:
    """The budget is per render: many ordinary renders in a row never add up to a refusal,
    and loops, macros and recursion of an ordinary size still work."""
    text = (
        "{% macro count(n) %}{{ n }}{% if n %},{{ count(n - 1) }}{% endif %}{% endmacro %}"
        "{% for c in choices %}{{ loop.index }}. {{ c }}\n{% endfor %}{{ count(20) }}"
    )
    expected = "1. a\n2. b\n" + ",".join(str(n) for n in range(20, -1, -1))
    with pytest.raises(TemplateProblem, match="steps of work"):
        render_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {})
    for _ in range(200):
        assert render_text(text, {"choices": ["a", "b"]}) == expected
    # A loop of 20,000 short passes is allowed; the budget is about runaway templates only.
    assert len(render_text("{% for i in range(20000) %}x{% endfor %}", {})) == 20000


def test_sum_adds_only_numbers_and_deep_nesting_is_refused() -> None:
    with pytest.raises(TemplateProblem, match=r"^template not allowed: sum only adds numbers in a template$"):
        render_text("{{ [[1]] * 1000|sum(start=[]) }}", {})
    assert render_text("{{ [1, 2, 3]|sum }}", {}) == "6"
    deep = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    for check in (template_fields, lambda t: render_text(t, {})):
        with pytest.raises(TemplateProblem, match="nests too deeply"):
            check(deep)
