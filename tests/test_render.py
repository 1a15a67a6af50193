"""The sandboxed renderer: exact output, answer styles, system split, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from harness.render import TemplateProblem, render_prompt, render_text, split_system_part, template_fields
from harness.schema import Instruction, TaskSpec

PROV = {"status": "unobserved", "author": "instruction-robustness contributors"}
MC = TaskSpec(id="toy.mc", family="toy", category="multiple-choice-qa", fields=["question", "choices", "subject"])
YN = TaskSpec(id="toy.yn", family="toy", category="binary-classification", fields=["input"], labels=["Yes", "No"])


def inst(text: str, **kw: Any) -> Instruction:
    return Instruction(id="toy.w01", text=text, provenance=PROV, **kw)


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


@pytest.mark.parametrize(
    "text",
    [
        "{{ 'x' * 10**9 }}",
        "{{ 'ab' * 1000000 }}",
        "{{ 2 ** 100000 }}",
        "{% for c in choices %}{{ c }}{% endfor %}{{ 'y' * 300000 }}",
        # Filters and str methods that build a string of a given width or count.
        "{{ 'x'|center(10**9) }}",
        "{{ 'x'|indent(10**9, true) }}",
        "{{ 'x'.center(10**9) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x'.zfill(10**9) }}",
        "{{ ('a\tb').expandtabs(10**9) }}",
        "{{ '%999999999s' % 'x' }}",
        "{{ '%.999999999f' % 1.5 }}",
        "{{ '%999999999s'|format('x') }}",
        "{{ '{:>999999999}'.format('x') }}",
        "{{ '{a:>999999999}'.format_map({'a': 'x'}) }}",
        "{{ '%*s' % (10**9, 'x') }}",
        "{{ '{:>{}}'.format('x', 10**9) }}",
        "{{ '{a:>{w}}'.format_map({'a': 'x', 'w': 10**9}) }}",
        # Replacements and joins that multiply a string within the per-step cap.
        "{{ ('ab' * 1000)|replace('', 'cd' * 1000) }}",
        "{{ ('ab' * 1000).replace('b', 'cd' * 1000) }}",
        "{{ range(100000)|join('x' * 1000) }}",
        "{{ range(100)|join(d='x' * 199999) }}",
        "{{ ('y' * 5000).join(['a'] * 1000) }}",
        # Width times lines or tabs; named and string widths.
        "{{ ('a\n' * 1000)|indent(199999) }}",
        "{{ ('a\n' * 1000)|indent('x' * 199999) }}",
        "{{ ('\t' * 100).expandtabs(tabsize=199999) }}",
        "{{ ('ab ' * 60000)|wordwrap(2, wrapstring='x' * 100) }}",
        "{{ ['a']|batch(10**9, 'x')|list }}",
        "{{ choices|tojson(indent=10**6) }}",
        # Widths from names, fills and nested string values.
        "{{ '%(a)300000s' % {'a': 'x'} }}",
        "{{ '%(a)300000s'|format(a='x') }}",
        "{{ '{:0>300000}'.format(1) }}",
        "{{ '{:>{}}'.format(1, '300000') }}",
        # Growth spread over a loop, a namespace or a recursive macro.
        "{% for i in range(20) %}{{ 'x' * 199999 }}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ f('ab', 40) }}",
        "{% set ns = namespace(x=3) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
        "{{ (10**64) ** 64 }}",
        "{{ lipsum(10**6) }}",
    ],
)
def test_sandbox_refuses_memory_bombs(text: str) -> None:
    with pytest.raises(TemplateProblem, match=r"too large|more than|lipsum"):
        render_text(text, {"choices": ["a"]})


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
