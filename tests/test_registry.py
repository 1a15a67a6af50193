"""Loading and validating the registry: every problem reported at once, with file and id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.data.catalog import data_dir, store_documents
from harness.registry import (
    INSTALLED_ROOT,
    MAX_REGISTRY_FILE_BYTES,
    NEAR_DUPLICATE_THRESHOLD,
    Registry,
    RegistryRoot,
    check_renders,
    find_root,
    load_registry,
)
from harness.sandbox import MAX_NESTING, MAX_STEPS
from harness.schema import MAX_TEXT_CHARS

REPO = Path(__file__).resolve().parent.parent

TASKS = """schema_version: 1
tasks:
  - {id: toy.yesno, family: toy, category: binary-classification, fields: [question], labels: ["yes", "no"]}
  - {id: toy.mc, family: toy, category: multiple-choice-qa, fields: [question, choices]}
"""

GOOD = """schema_version: 1
task: toy.yesno
instructions:
  - id: toy.yesno.w01
    text: "{{ question }} Answer yes or no."
    answer_choices: {"yes": "yes", "no": "no"}
    provenance: {status: unobserved, author: instruction-robustness contributors}
"""


def make_root(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "tasks").mkdir(parents=True)
    (tmp_path / "tasks" / "toy.yaml").write_text(TASKS)
    (tmp_path / "instructions").mkdir()
    for name, text in files.items():
        (tmp_path / "instructions" / name).write_text(text)
    return tmp_path


def problems_of(root: Path) -> list[str]:
    return [str(p) for p in load_registry(root, strict=False).problems]


def test_the_real_registry_is_valid(registry: Registry) -> None:
    assert not registry.problems
    assert check_renders(registry) == []


def test_good_file_loads(tmp_path: Path) -> None:
    reg = load_registry(make_root(tmp_path, {"a.yaml": GOOD}))
    assert [e.id for e in reg.instructions_for("toy.yesno")] == ["toy.yesno.w01"]
    assert reg.instructions_for("toy.mc") == []


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("{{ question }}", "{{ questoin }}")
        + """  - id: toy.yesno.w01
    text: "Different text {{ question }} yes or no"
    answer_choices: {"yes": "yes", "no": "no"}
    provenance: {status: unobserved, author: x}
  - id: toy.yesno.w03
    text: "Is it? {{ question }}"
    answer_choices: {"yes": "y", "nope": "n"}
    provenance: {status: observed, author: x}
"""
    )
    broken_yaml = "schema_version: 1\ntask: toy.mc\ninstructions:\n  - id: x\n    text: [unclosed\n"
    probs = problems_of(make_root(tmp_path, {"a.yaml": bad, "b.yaml": broken_yaml}))
    text = "\n".join(probs)
    # Every problem as file:line: id: message; the YAML error at the line the unclosed bracket
    # opens (not the end of the file where the parser gave up), under the phrasing it is in.
    assert (
        "instructions/b.yaml:5: x: YAML syntax error at line 6, column 1: did not find expected ',' or ']' "
        "(while parsing a flow sequence that starts at line 5, column 11)"
    ) in probs
    assert "instructions/a.yaml:4: toy.yesno.w01: unknown placeholder(s) ['questoin']" in text
    assert "instructions/a.yaml:8: toy.yesno.w01: duplicate id (also in instructions/a.yaml:4)" in probs
    assert "instructions/a.yaml:15: toy.yesno.w03: provenance: Value error, an observed phrasing must name its collections" in probs
    assert len(probs) == 4


def test_verbaliser_must_match_labels_and_fit_the_task(tmp_path: Path) -> None:
    text = GOOD.replace('{"yes": "yes", "no": "no"}', '{"yes": "yes", "maybe": "no"}')
    (prob,) = problems_of(make_root(tmp_path, {"a.yaml": text}))
    assert "verbaliser keys ['maybe', 'yes'] must be the labels of toy.yesno" in prob


def test_exact_and_near_duplicates(tmp_path: Path) -> None:
    base = "Read the question below and answer it with yes or no, please. {{ question }}"
    near = base.replace("please", "pleas")
    entries = "".join(
        f"""  - id: toy.yesno.w0{i}
    text: "{t}"
    answer_choices: {{"yes": "yes", "no": "no"}}
    provenance: {{status: unobserved, author: x}}
"""
        for i, t in enumerate([base, base.upper(), near, "Totally different wording: {{ question }} (yes/no)"])
    )
    probs = problems_of(make_root(tmp_path, {"a.yaml": "schema_version: 1\ntask: toy.yesno\ninstructions:\n" + entries}))
    assert any("toy.yesno.w01: same text as toy.yesno.w00" in p for p in probs)
    assert any("toy.yesno.w02: near-duplicate of toy.yesno.w00" in p for p in probs)
    assert not any("w03" in p for p in probs)
    assert NEAR_DUPLICATE_THRESHOLD == 0.95


def test_distinct_entries_of_one_listing_are_not_duplicates(tmp_path: Path) -> None:
    """Imported entries that one source lists under distinct ids are kept even when alike;
    the rules still hold within an entry, against written phrasings and between sources."""
    from harness.registry import RegisteredInstruction
    from harness.schema import Instruction, Provenance

    base = "Read the question below and answer it with yes or no, please. {{ question }}"

    def entry(pid: str, text: str, upstream: tuple[str, str] | None) -> RegisteredInstruction:
        prov = Provenance(status="unobserved", author="x", source="made-up listing")
        inst = Instruction(id=pid, text=text, answer_choices={"yes": "yes", "no": "no"}, provenance=prov)
        return RegisteredInstruction(inst, "made-up", "task", "toy.yesno", upstream=upstream)

    extra = [
        entry("toy.yesno.i1", base, ("listing", "Task:A/1")),
        entry("toy.yesno.i2", base, ("listing", "Task:A/2")),  # same text, distinct id
        entry("toy.yesno.i3", base.replace("please", "pleas"), ("listing", "Task:A/3")),  # near
        entry("toy.yesno.i4", base.upper(), ("other listing", "Task:A/1")),  # another source
        entry("toy.yesno.i5", base.replace("please", "plz"), None),  # not from a listing
    ]
    root = make_root(tmp_path, {})
    probs = [str(p) for p in load_registry(root, strict=False, extra=extra).problems]
    assert not any("toy.yesno.i2:" in p or "toy.yesno.i3:" in p for p in probs)
    assert any("toy.yesno.i4: same text as toy.yesno.i1" in p for p in probs)
    assert any("toy.yesno.i5: near-duplicate of toy.yesno.i" in p for p in probs)


def test_unknown_keys_and_schema_version_are_errors(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    wrong_version = GOOD.replace("schema_version: 1", "schema_version: 2")
    (prob,) = problems_of(make_root(tmp_path / "one", {"a.yaml": wrong_version}))
    assert "schema_version: Input should be 1" in prob
    typo = GOOD.replace("    text:", "    txet: x\n    text:")
    (prob,) = problems_of(make_root(tmp_path / "two", {"a.yaml": typo}))
    assert "toy.yesno.w01: txet: Extra inputs are not permitted" in prob


def test_unreachable_letters_are_caught(tmp_path: Path) -> None:
    text = """schema_version: 1
task: toy.mc
instructions:
  - id: toy.mc.w01
    text: "{{ question }} Pick one of: {{ choices | join(', ') }}. Answer:"
    answer_choices: letters
    provenance: {status: unobserved, author: x}
"""
    reg = load_registry(make_root(tmp_path, {"a.yaml": text}))
    (prob,) = check_renders(reg)
    assert "answers are letters but the prompt never shows ['A', 'B', 'C', 'D']" in str(prob)


def test_validate_command_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "empty-cache"))
    root = tmp_path / "copy"
    shutil.copytree(REPO / "tasks", root / "tasks")
    shutil.copytree(REPO / "instructions", root / "instructions")
    monkeypatch.setenv("IRH_REGISTRY", str(root))
    ok = CliRunner().invoke(main, ["validate", "--docs", "0"])
    assert ok.exit_code == 0, ok.output
    copied = load_registry(root)
    assert f"ok: {len(copied.tasks)} tasks, {len(copied.instructions)} phrasings" in ok.output
    (root / "instructions" / "bbl" / "strategyqa.yaml").write_text("schema_version: 1\ntask: [oops\n")
    bad = CliRunner().invoke(main, ["validate", "--docs", "0"])
    assert bad.exit_code == 1
    assert "instructions/bbl/strategyqa.yaml:2: YAML syntax error at line 3, column 1" in bad.output


def test_minimum_counts_of_the_written_registry(registry: Registry) -> None:
    written = [e for e in registry.instructions.values() if e.instruction.provenance.status == "unobserved"]
    assert len(written) >= 319
    mmlu = [e for e in written if e.target_kind == "family" and e.target == "mmlu"]
    assert len(mmlu) >= 30
    bbl = [t for t in registry.tasks.values() if t.family == "bbl"]
    assert len(bbl) == 24
    assert all(len(registry.instructions_for(t.id)) >= 12 for t in bbl)
    for category in ("nli-2way", "nli-3way"):
        assert len([e for e in written if e.target == category]) >= 10
    covered = [t for t in registry.tasks.values() if registry.instructions_for(t.id)]
    assert len(covered) >= 80


def _cli(args: list[str]) -> Any:
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, (RecursionError, UnicodeDecodeError)), result.exception
    return result


def _phrasing(pid: str, text: str) -> str:
    return f"""  - id: {pid}
    text: {json.dumps(text)}
    answer_choices: {{"yes": "yes", "no": "no"}}
    provenance: {{status: unobserved, author: x}}
"""


RECURSIVE = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ question }} yes or no? {{ f(0) }}"


def test_a_runaway_template_is_one_problem_with_file_line_and_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Endless recursion and endless work are per-phrasing problems in validate (file:line: id)
    and one line in render, never a traceback."""
    doubling = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ question }} yes or no {{ f(24) }}"
    text = GOOD + _phrasing("toy.yesno.w02", RECURSIVE) + _phrasing("toy.yesno.w03", doubling)
    root = make_root(tmp_path / "reg", {"a.yaml": text})
    monkeypatch.setenv("IRH_REGISTRY", str(root))
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    store_documents(
        "toy.yesno", {"test": [{"id": "toy/0", "fields": {"question": "Is it?"}, "choices": ["yes", "no"], "scores": [1, 0]}]}, "test"
    )

    problems = [str(p) for p in check_renders(load_registry(root))]
    assert problems == [
        "instructions/a.yaml:8: toy.yesno.w02: does not render on toy.yesno document example/0: template not allowed: "
        f"macro calls (or recursive loops) nest more than {MAX_NESTING} deep; a phrasing's macro must not call itself without end",
        "instructions/a.yaml:12: toy.yesno.w03: does not render on toy.yesno document example/0: template not allowed: "
        f"the template does more than the {MAX_STEPS:,} steps of work one render may take "
        "(loop passes and macro calls, weighted by their size, and data handled by filters); "
        "a phrasing should not loop or recurse over large ranges",
    ]
    validate = _cli(["validate", "--docs", "0"])
    assert validate.exit_code == 1
    assert "instructions/a.yaml:8: toy.yesno.w02: does not render" in validate.output
    assert "instructions/a.yaml:12: toy.yesno.w03: does not render" in validate.output

    render = _cli(["render", "--task", "toy.yesno", "--instruction", "toy.yesno.w02", "-n", "1", "--no-chat"])
    assert render.exit_code == 1
    (line,) = render.output.strip().splitlines()
    assert line == (
        "Error: instructions/a.yaml: toy.yesno.w02: template not allowed: macro calls (or recursive loops) "
        f"nest more than {MAX_NESTING} deep; a phrasing's macro must not call itself without end"
    )


def test_non_utf8_file_is_one_problem_and_the_others_are_still_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    observed = GOOD.replace("toy.yesno.w01", "toy.yesno.w05").replace("status: unobserved", "status: observed")
    root = make_root(tmp_path / "reg", {"b.yaml": observed})
    raw = GOOD.encode().replace(b"Answer yes", b"Answer \xff yes")
    (root / "instructions" / "a.yaml").write_bytes(raw)
    offset = raw.index(b"\xff")
    monkeypatch.setenv("IRH_REGISTRY", str(root))
    result = _cli(["validate", "--docs", "0"])
    assert result.exit_code == 1
    assert (f"instructions/a.yaml:5: not UTF-8: byte 0xff at offset {offset} (invalid start byte); save the file as UTF-8") in result.output
    assert "instructions/b.yaml:7: toy.yesno.w05: provenance: Value error, an observed phrasing must name its collections" in result.output
    assert result.output.splitlines()[-1] == "Error: 2 problem(s) found"


def test_corrupt_data_cache_is_a_problem_line_in_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    observed = _phrasing("toy.yesno.w02", "{{ question }} yes or no").replace("status: unobserved", "status: observed")
    root = make_root(tmp_path / "reg", {"a.yaml": GOOD + observed})
    monkeypatch.setenv("IRH_REGISTRY", str(root))
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    store_documents(
        "toy.yesno", {"test": [{"id": "toy/0", "fields": {"question": "Is it?"}, "choices": ["yes", "no"], "scores": [1, 0]}]}, "test"
    )
    (data_dir("toy.yesno") / "test.jsonl").write_text("{not json\n", encoding="utf-8")
    result = _cli(["validate", "--docs", "2"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    corrupt = [line for line in lines if line.startswith("data cache toy.yesno/test: toy.yesno: ")]
    assert len(corrupt) == 1 and "line 1 is corrupt" in corrupt[0] and "irh data fetch toy.yesno" in corrupt[0]
    # ...and the checks go on: the phrasing problem is listed too.
    assert "instructions/a.yaml:11: toy.yesno.w02: provenance: Value error, an observed phrasing must name its collections" in lines
    assert lines[-1] == "Error: 2 problem(s) found"


def test_oversized_files_and_texts_are_refused_before_parsing(tmp_path: Path) -> None:
    big_file = GOOD.replace("toy.yesno.w01", "toy.yesno.w07") + "# " + "x" * MAX_REGISTRY_FILE_BYTES + "\n"
    big_text = "schema_version: 1\ntask: toy.yesno\ninstructions:\n" + _phrasing("toy.yesno.w08", "{{ question }} " + "y" * MAX_TEXT_CHARS)
    reg = load_registry(make_root(tmp_path, {"a.yaml": GOOD, "big.yaml": big_file, "long.yaml": big_text}), strict=False)
    size = len(big_file.encode())
    assert [str(p) for p in reg.problems] == [
        f"instructions/big.yaml: file is {size:,} bytes, more than the {MAX_REGISTRY_FILE_BYTES:,} a registry file may have; "
        "not read. Split its phrasings over several files, or shorten them",
        f"instructions/long.yaml:5: toy.yesno.w08: text: String should have at most {MAX_TEXT_CHARS} characters",
    ]
    assert list(reg.instructions) == ["toy.yesno.w01"]  # the good file still loads


def test_problems_point_at_the_line_of_the_phrasing_or_key(tmp_path: Path) -> None:
    text = GOOD + _phrasing("toy.yesno.w02", "{{ question }} yes/no?").replace(
        "provenance: {status: unobserved, author: x}", "provenance: {status: observed}"
    )
    bad_task = TASKS + "  - {id: toy.yesno, family: toy, category: x, fields: [question], labels: [a]}\n"
    root = make_root(tmp_path, {"a.yaml": text, "b.yaml": "schema_version: 2\ntask: toy.mc\ninstructions: []\n"})
    (root / "tasks" / "toy.yaml").write_text(bad_task)
    problems = [str(p) for p in load_registry(root, strict=False).problems]
    assert "tasks/toy.yaml:5: toy.yesno: duplicate task id" in problems
    assert "instructions/a.yaml:11: toy.yesno.w02: provenance: Value error, an observed phrasing must name its collections" in problems
    assert "instructions/b.yaml:1: schema_version: Input should be 1" in problems


def test_registry_is_found_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a copy of the repository, commands read the copy's phrasings (not the installed
    checkout's), and say which registry they read."""
    root = make_root(tmp_path / "copy", {"a.yaml": GOOD.replace("{{ question }}", "{{ questoin }}")})
    monkeypatch.delenv("IRH_REGISTRY", raising=False)
    monkeypatch.chdir(root / "instructions")
    result = _cli(["validate", "--docs", "0"])
    assert result.exit_code == 1
    assert f"registry: {root.resolve()} (nearest tasks/ + instructions/ at or above the working directory)" in result.stderr.splitlines()
    assert "instructions/a.yaml:4: toy.yesno.w01: unknown placeholder(s) ['questoin']" in result.output
    broken = _cli(["list", "tasks"])
    assert broken.exit_code == 1
    assert f"problem(s) in the registry at {root.resolve()} (nearest tasks/ + instructions/" in broken.output
    (root / "instructions" / "a.yaml").write_text(GOOD)
    listing = _cli(["list", "tasks"])
    assert listing.exit_code == 0
    assert listing.stderr.splitlines()[0].startswith(f"registry: {root.resolve()} (nearest")
    assert "toy.yesno" in listing.stdout and "bbl.strategyqa" not in listing.stdout

    # IRH_REGISTRY wins; outside any registry, the installed package's is used.
    monkeypatch.setenv("IRH_REGISTRY", str(REPO))
    assert find_root() == RegistryRoot(REPO, "IRH_REGISTRY")
    assert load_registry().origin == "IRH_REGISTRY"
    monkeypatch.delenv("IRH_REGISTRY")
    (tmp_path / "elsewhere").mkdir()
    found = find_root(tmp_path / "elsewhere")
    assert found.path == INSTALLED_ROOT and found.origin.startswith("the installed package's")
