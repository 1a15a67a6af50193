"""Loading and validating the registry: every problem reported at once, with file and id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.registry import NEAR_DUPLICATE_THRESHOLD, Registry, check_renders, load_registry

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
    (tmp_path / "tasks").mkdir()
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
    assert "instructions/b.yaml: YAML syntax error at line" in text
    assert "toy.yesno.w01: unknown placeholder(s) ['questoin']" in text
    assert "toy.yesno.w01: duplicate id" in text
    assert "toy.yesno.w03: provenance: Value error, an observed phrasing must name its collections" in text
    assert len(probs) >= 4


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
    expected = len(load_registry(root).instructions)
    assert f"ok: 93 tasks, {expected} phrasings" in ok.output
    (root / "instructions" / "bbl" / "strategyqa.yaml").write_text("schema_version: 1\ntask: [oops\n")
    bad = CliRunner().invoke(main, ["validate", "--docs", "0"])
    assert bad.exit_code == 1
    assert "instructions/bbl/strategyqa.yaml: YAML syntax error at line 3, column 1" in bad.output


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
