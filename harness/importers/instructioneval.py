"""Phrasings from a user-supplied checkout of InstructionEval (Sun, Shaib & Wallace 2023).

The repository is not on PyPI, so the user points us at a checkout
(``--observed instructioneval=PATH``). Its phrasings are Python string literals in config
modules; they are read with ``ast`` and never imported or executed. Expected layout::

    PATH/
      configs/
        MMLU/<name>.py                   -> every MMLU subject (family mmlu)
        BBH/<kind>/<bbl task>.py         -> that BIG-bench Lite task (bbl.<task>)
        processors/, Adv/, Paraphrase/   -> not read (see below)

In each config module, a class (a ``Preprocessor`` subclass) has zero-shot methods
``unobserved1``, ``unobserved2``, ... that assign a literal ``input_template`` (a
``str.format`` string) and return ``self.unobserved_template(item, input_template)`` (or
``unobserved_template_QA``). Only that shape is imported, placeholders mapped to our fields:
``{question}`` -> the task's input (``question`` for MMLU, ``input`` for BIG-bench Lite), and
for MMLU ``{choiceA}`` ... ``{choiceD}`` -> ``choices[0..3]`` with letter answers.

Skipped, each with a reason: few-shot variants (``*_fs``); methods that rewrite the document
in code first (``item[...] = ...``) or build their text in other ways; placeholders that the
config fills by code (``{context}``, ``{labels}``, ``{domain}``, ...); four-option layouts on
BIG-bench tasks (whose option counts vary); ``configs/processors`` (the observed FLAN/P3/NIV2
templates, which need per-task field mappings; import those collections directly);
adversarial and paraphrase experiment folders. InstructionEval's own phrasings were written
for that paper, so they are imported as *unobserved*.

Tested only on synthetic files in this layout (no checkout was available when this was
written); `irh import list instructioneval=PATH --skipped` shows what a real
checkout yields.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from harness.importers.result import ImportResult
from harness.importers.templating import UnmappedPlaceholder, format_placeholders, format_to_jinja
from harness.registry import RegisteredInstruction
from harness.schema import AnswerStyle, Instruction, Provenance

AUTHOR = "InstructionEval authors (Sun, Shaib & Wallace 2023)"
#: Helpers that only ``str.format`` the template with the document's fields.
PLAIN_HELPERS = {"unobserved_template", "unobserved_template_QA"}
#: Config file names that differ from our BIG-bench Lite task ids.
BBL_ALIASES = {"strategy_qa": "strategyqa", "bbq_lite": "bbq_lite_json"}
NOT_PHRASINGS = {"__init__.py", "preprocessor.py", "utils.py", "server_configs.py"}

_METHOD = re.compile(r"^unobserved(?P<n>\d+)(?P<fs>_fs)?$")
_CHOICES = {f"choice{letter}": f"{{{{ choices[{i}] }}}}" for i, letter in enumerate("ABCD")}


def _literal(node: ast.expr | None) -> str | None:
    """The value of a string literal (adjacent literals and ``+`` joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _rewrites_document(func: ast.FunctionDef) -> bool:
    """Whether the method assigns into the document (``item[...] = ...``) before formatting."""
    for node in ast.walk(func):
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == "item":
                    return True
    return False


def _template_and_helper(func: ast.FunctionDef) -> tuple[str | None, str | None]:
    """The literal ``input_template`` of a method and the ``self.<helper>`` it returns through."""
    template = helper = None
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "input_template" for t in node.targets):
            template = _literal(node.value)
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            callee = node.value.func
            if isinstance(callee, ast.Attribute) and isinstance(callee.value, ast.Name) and callee.value.id == "self":
                helper = callee.attr
    return template, helper


def _git_revision(root: Path) -> str | None:
    """The checked-out commit, read from .git files (no git command); None if unknown."""
    head = root / ".git" / "HEAD"
    try:
        text = head.read_text(encoding="utf-8").strip()
        if text.startswith("ref:"):
            ref = text.split(":", 1)[1].strip()
            loose = root / ".git" / ref
            if loose.exists():
                text = loose.read_text(encoding="utf-8").strip()
            else:
                packed = (root / ".git" / "packed-refs").read_text(encoding="utf-8")
                text = next(line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref))
    except (OSError, StopIteration, IndexError):
        return None
    return text[:12] if re.fullmatch(r"[0-9a-f]{40}", text) else None


def _target(rel: Path) -> tuple[str, str, str] | str:
    """(target kind, target, id stem) for a config file, or the reason it is not read."""
    parts = rel.parts  # relative to configs/
    stem = re.sub(r"[^a-z0-9_]+", "-", rel.stem.lower()).strip("-") or "x"
    if parts[0] == "MMLU" and len(parts) == 2:
        return "family", "mmlu", f"mmlu.{stem}"
    if parts[0] == "BBH" and len(parts) == 3:
        return "task", f"bbl.{BBL_ALIASES.get(stem, stem)}", f"bbl.{stem}"
    if parts[0] == "processors":
        return "observed FLAN/P3/NIV2 templates with per-task mappings; import those collections directly"
    return "outside configs/MMLU and configs/BBH (adversarial or paraphrase experiments)"


def import_instructioneval(root: Path) -> ImportResult:
    """Read the zero-shot phrasings of an InstructionEval checkout.

    Args:
        root: the checkout (the folder holding ``configs/``).

    Raises:
        FileNotFoundError: ``root`` has no ``configs/`` folder.
    """
    configs = root / "configs"
    if not configs.is_dir():
        raise FileNotFoundError(f"{root} has no configs/ folder; pass the root of an InstructionEval checkout")
    revision = _git_revision(root)
    label = f"InstructionEval@{revision}" if revision else "InstructionEval"
    result = ImportResult("instructioneval", f"{label} ({root})")
    for path in sorted(configs.rglob("*.py")):
        rel = path.relative_to(configs)
        if path.name in NOT_PHRASINGS or "__pycache__" in rel.parts:
            continue
        item_file = f"configs/{rel.as_posix()}"
        target = _target(rel)
        if isinstance(target, str):
            result.skip(item_file, target)
            continue
        kind, name, stem = target
        try:
            module = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
            result.skip(item_file, f"does not parse as Python: {type(exc).__name__}")
            continue
        for cls in (n for n in module.body if isinstance(n, ast.ClassDef)):
            for func in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
                match = _METHOD.match(func.name)
                if not match:
                    continue
                item = f"{item_file}#{cls.name}.{func.name}"
                if match.group("fs"):
                    result.skip(item, "few-shot variant (examples are not part of a phrasing)")
                    continue
                outcome = _phrasing(func, kind, name, stem, int(match.group("n")), item, label)
                if isinstance(outcome, str):
                    result.skip(item, outcome)
                else:
                    result.add(outcome)
    return result


def _phrasing(func: ast.FunctionDef, kind: str, name: str, stem: str, number: int, item: str, label: str) -> RegisteredInstruction | str:
    template, helper = _template_and_helper(func)
    if template is None:
        return "no literal input_template (the text is built in code)"
    if helper not in PLAIN_HELPERS:
        return f"formatted by helper {helper or '?'}, whose layout is not reproduced"
    if _rewrites_document(func):
        return "rewrites the document in code before formatting"
    used = format_placeholders(template)
    is_mmlu = name == "mmlu"
    placeholders = {"question": "{{ question }}" if is_mmlu else "{{ input }}"}
    if used & set(_CHOICES):
        if not is_mmlu:
            return "four fixed options ({choiceA}..{choiceD}), but BIG-bench tasks vary in option count"
        placeholders.update(_CHOICES)
    elif is_mmlu:
        return "does not show the answer options"
    try:
        text = format_to_jinja(template.strip(), placeholders)
    except UnmappedPlaceholder as exc:
        return f"uses {exc.names}, which the config fills in code"
    except ValueError as exc:
        return f"malformed format string: {exc}"
    style: AnswerStyle = "letters" if used & set(_CHOICES) else "text"
    instruction = Instruction(
        id=f"ie.{stem}.u{number:02d}",
        text=text,
        answer_choices=style,
        provenance=Provenance(status="unobserved", author=AUTHOR, source=f"{label}:{item}"),
    )
    return RegisteredInstruction(instruction, f"{label}:{item.split('#')[0]}", kind, name)
