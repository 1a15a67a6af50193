"""Templates that got past the sandbox's guards: each is refused by its own guard, quickly and
in bounded memory. The whole set runs in a child process under a time and memory limit, so a
guard that fails shows up as a failed test, not a hung or swapped machine."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LISTS = "{% set L=range(100000)|list %}{% set M=range(99999)|list+[-1] %}"

#: attack -> (template, what its refusal says)
ATTACKS: dict[str, tuple[str, str]] = {
    "bytes ljust": ("{{ 'a'.encode().ljust(1000000000)|length }}", "attribute 'encode' of 'str' object is unsafe"),
    "bytes repetition": ("{{ ('a'.encode()*10000000000)|length }}", "attribute 'encode' of 'str' object is unsafe"),
    "format spec as an argument": ("{{ '{0:{1}}'.format(1,'<999999999') }}", "a format width would build a string too large"),
    "format_map spec as a value": ("{{ '{a:{b}}'.format_map({'a':1,'b':'<999999999'}) }}", "a format width would build a string too large"),
    "printf key with parentheses": ("{{ '%((a))999999999s' % {'(a)':1} }}", "printf keys with parentheses inside are not allowed"),
    "containment of nested lists": (_LISTS + "{{ M in [L]*200000 }}", "more than the 400,000 steps"),
    "sorting nested lists": (_LISTS + "{{ ([L,M]*50000)|sort|length }}", "more than the 400,000 steps"),
    "statically nested blocks": ("{% for a in [1] %}" * 30 + "x" + "{% endfor %}" * 30, "nests too deeply"),
    "random filter": ("{{ ['one','two','three']|random }}", "No filter named 'random'"),
}

_CHILD = """
import json, sys, time
from harness.render import TemplateProblem, render_text
out = {}
for name, text in json.loads(sys.stdin.read()).items():
    start = time.monotonic()
    try:
        out[name] = ["rendered", render_text(text, {})[:80], time.monotonic() - start]
    except TemplateProblem as exc:
        out[name] = ["refused", str(exc), time.monotonic() - start]
print(json.dumps(out))
"""


def _limits() -> None:
    gib = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (3 * gib, 3 * gib))


def test_every_attack_is_refused_by_its_own_guard_fast_and_small() -> None:
    templates = {name: text for name, (text, _) in ATTACKS.items()}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(templates),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        preexec_fn=_limits,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    for name, (_, message) in ATTACKS.items():
        status, text, seconds = outcome[name]
        assert status == "refused" and message in text, f"{name}: {status} {text}"
        assert "\n" not in text
        assert seconds < 10, f"{name} took {seconds:.1f} s before its refusal"


def test_real_uses_of_the_guarded_operations_still_render() -> None:
    from harness.render import render_text

    fields = {"choices": ["red", "green"], "question": "cause"}
    text = (
        "{{ 'x' in choices }} {{ choices|sort|join(', ') }} {{ '{0:>{1}}'.format('a', 3) }} "
        "{{ '%(n)s' % {'n': 1} }} {% if question in ['cause', 'effect'] %}ok{% endif %}"
    )
    assert render_text(text, fields) == "False green, red   a 1 ok"
