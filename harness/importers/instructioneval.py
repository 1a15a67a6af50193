"""The instruction set of InstructionEval (Sun, Shaib & Wallace 2023), from a user's checkout.

The repository is not on PyPI, so the user points us at a checkout
(``--observed instructioneval=PATH``). Its ``instructions.json`` lists, for each of the
study's tasks, the ids of the instructions the study ran (``MMLU/Unobserved/3``,
``NIV2/QA/32``, ``Alpaca/QA/7``, ...); the config modules under ``configs/`` map each id to
the code that formats a document. That code is read with ``ast`` and never imported or run.

Every id listed for the study's task set (MMLU general and 14 BIG-bench Lite tasks) is
imported zero-shot, or skipped with the reason. Its handler is read *symbolically*: the
literals, ``str.format``, ``+``/``+=``, loops over the options (``zip``, ``enumerate`` with a
last-item branch), splits, slices and ``replace`` of the input, ``", ".join(options)``, the
document rewritten in place (``item["answer"] = ...``, ``item.pop``), FLAN's ``set_style``
with its module-level option marks, branches on values known when reading, and calls to other
methods become one jinja template that renders what the Python would build on any document
(:class:`Reader`). BIG-bench's default prompts read ``task_prefix``/``description`` and the
example and choice prefixes from the task's ``task.json`` in the cached bigbench sdist, as
InstructionEval's Preprocessor does. The answer words are the ``label_space`` the study scored
on: letters (A, B, ... or a, b, ...) where its code uses letters (also where the prompt asks
for a letter without listing the options), the option texts where it uses the options, and,
where it scores fixed words that code maps from the answer (``"Yes" if answer == "different"
else "No"``), a verbaliser of the task's labels built from that mapping.

Provenance follows the id's prefix: ``*/Unobserved/*`` and ``*/Default/*`` (written for the
study) are *unobserved*; ``NIV2/*`` is observed in ``super-natural-instructions``, ``FLAN/*``
in ``flan-2021``, ``T0/*`` in ``p3-promptsource``, ``Alpaca/QA|BC/*`` in ``alpaca``, so the
model-family map makes them seen exactly for the families the study counted. Ids keep
InstructionEval's: ``ie.<task>.<id>`` (``/`` as ``-``, lower case: ``ie.mmlu.niv2-qa-32``),
and the exact id ends the provenance source (``...#MMLU_General:NIV2/QA/32``), so results
join with the study's per-instruction results. One template that the study ran on several
tasks becomes one phrasing per task. Each phrasing's identity is (the listing, ``task:id``)
(``RegisteredInstruction.upstream``), so the registry's same-text and near-duplicate rules do
not drop one of the study's instructions for resembling another of them (it lists
near-identical ones on purpose, e.g. ``Alpaca/QA/4`` and ``/10``); the rules still hold
against written phrasings and other sources.

Documents are the ones the study's ``load_data`` reads (:func:`read_data_folders`): where it
narrows them to one subtask (strange_stories' boolean one, logical_deduction's five objects),
the target is the task that holds that subtask alone (``bbl.strange_stories.boolean``), and
default prompts read the task.json that ``load_data`` hands the Preprocessor.

Where the product departs from the study: a template whose text ends in ``(`` is scored with
no space before the letter (``(A``), where InstructionEval's encoder-decoder models score the
letter as a separate output; options are the BIG-bench ``target_scores`` keys with white
space stripped; a template that shows a fixed number of options on a task whose documents vary
in option count (:data:`OPTION_COUNTS`) is scored on the documents with that many only
(``Instruction.option_count``; InstructionEval's own code fails on the others), and so are
the logic-grid templates scored on "1".."5" (:data:`NUMBERED_OPTIONS`), which the study ran on
every puzzle. Skipped, each with the reason (on a1b6882, only the first kind and one listed-order
template occur):
what InstructionEval's own code cannot run (a keyword the method does not take, a format
field never passed), a fixed option count that no document has, fixed answer words on a task
without fixed labels, a template that lists the options in each document's own order where
our task shows its labels in one order (:data:`LABEL_ORDERS_VARY`), a config that reads
another subtask's documents than the target holds, and a default prompt whose task.json is
not in the sdist.
"""

from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from harness.importers.result import ImportResult
from harness.registry import RegisteredInstruction
from harness.render import template_fields
from harness.schema import LETTERS, AnswerStyle, Collection, Instruction, Provenance

AUTHOR = "InstructionEval authors (Sun, Shaib & Wallace 2023)"

#: instructions.json task name -> (config file stem, target kind, target, id stem).
STUDY_TASKS: dict[str, tuple[str, str, str, str]] = {
    "MMLU_General": ("general", "family", "mmlu", "mmlu"),
    "BBQ_Lite": ("bbq_lite", "task", "bbl.bbq_lite_json", "bbq_lite_json"),
    "Code_Line_Description": ("code_line_description", "task", "bbl.code_line_description", "code_line_description"),
    "Conceptual_Combinations": ("conceptual_combinations", "task", "bbl.conceptual_combinations", "conceptual_combinations"),
    "Hindu_Knowledge": ("hindu_knowledge", "task", "bbl.hindu_knowledge", "hindu_knowledge"),
    "Known_Unknowns": ("known_unknowns", "task", "bbl.known_unknowns", "known_unknowns"),
    "Language_Identification": ("language_identification", "task", "bbl.language_identification", "language_identification"),
    "Logic_Grid_Puzzle": ("logic_grid_puzzle", "task", "bbl.logic_grid_puzzle", "logic_grid_puzzle"),
    "Logical_Deduction": ("logical_deduction", "task", "bbl.logical_deduction.five_objects", "logical_deduction"),
    "Novel_Concepts": ("novel_concepts", "task", "bbl.novel_concepts", "novel_concepts"),
    "Play_Dialog": ("play_dialog_same_or_different", "task", "bbl.play_dialog_same_or_different", "play_dialog_same_or_different"),
    "Strange_Stories": ("strange_stories", "task", "bbl.strange_stories.boolean", "strange_stories"),
    "StrategyQA": ("strategy_qa", "task", "bbl.strategyqa", "strategyqa"),
    "Vitaminc_Fact_Verification": ("vitaminc_fact_verification", "task", "bbl.vitaminc_fact_verification", "vitaminc_fact_verification"),
    "Winowhy": ("winowhy", "task", "bbl.winowhy", "winowhy"),
}

#: The option counts of each target's documents (bigbench 1.0.0, MMLU; checked by
#: tests/test_instructioneval.py on the cached data). A template that shows a fixed number of
#: options ("A, B, C, D = options", which fails in InstructionEval's code on any other count)
#: applies to the documents with that many: to all where every document has it, else it is
#: scored on those documents only (``Instruction.option_count``).
OPTION_COUNTS: dict[str, tuple[int, ...]] = {
    "mmlu": (4,),
    "bbl.bbq_lite_json": (3,),
    "bbl.code_line_description": (4, 5),
    "bbl.conceptual_combinations": (4,),
    "bbl.hindu_knowledge": (4, 5, 6),
    "bbl.known_unknowns": (2,),
    "bbl.language_identification": (11,),
    "bbl.logic_grid_puzzle": (2, 3, 4, 5),
    "bbl.logical_deduction.five_objects": (5,),
    "bbl.novel_concepts": (5, 10),
    "bbl.play_dialog_same_or_different": (2,),
    "bbl.strange_stories.boolean": (2,),
    "bbl.strategyqa": (2,),
    "bbl.vitaminc_fact_verification": (3,),
    "bbl.winowhy": (2,),
}
#: Targets whose documents with N options have the options "1", ..., "N" (logic grid
#: puzzles ask for a house number): fixed words "1"-"5" are the option texts of the
#: five-option documents, and a template scored on them is scored on those documents.
NUMBERED_OPTIONS = {"bbl.logic_grid_puzzle"}
#: Targets with fixed labels whose documents list their options in varying order, with how
#: (checked on the cached data): our templates show the labels in one order, so a template
#: that shows a document's options in its own order cannot be rendered as the study did.
LABEL_ORDERS_VARY = {"bbl.strange_stories.boolean": "yes before no in 24 documents, no before yes in 29"}

#: Collection of an observed id's prefix (``NIV2/QA/3`` -> super-natural-instructions).
COLLECTION_OF: dict[str, Collection] = {
    "NIV2": "super-natural-instructions",
    "FLAN": "flan-2021",
    "T0": "p3-promptsource",
    "Alpaca": "alpaca",
}
UNOBSERVED_KINDS = {"Unobserved", "Default"}


class Problem(Exception):
    """A template this importer cannot express; the message is the skip reason."""


@dataclass
class Config:
    """What one config module (with the shared Preprocessor) says about its instruction ids."""

    #: instruction id -> the AST of what it maps to (``self.method`` or a lambda).
    handlers: dict[str, ast.expr] = field(default_factory=dict)
    #: method name -> definition (the task class first, then the shared classes).
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)
    #: class-level string lists (``_UNOBSERVED_ALPACA_INSTRUCTIONS``).
    lists: dict[str, list[str]] = field(default_factory=dict)
    #: module-level {int: str} tables (``LEN2WORD``: 2 -> "two").
    number_words: dict[str, dict[int, str]] = field(default_factory=dict)
    #: module-level lists, unread (FLAN's ``TEXT_ITEM_CANDIDATES``, ``OPT_CANDIDATES``).
    module_lists: dict[str, ast.List] = field(default_factory=dict)


def _literal(node: ast.expr | None) -> str | None:
    """The value of a string literal (``+`` of literals joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        if left is not None and right is not None:
            return left + right
    return None


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


def _self_attr(node: ast.expr, name: str | None = None) -> str | None:
    """``X`` for ``self.X`` (and only ``self.name`` when ``name`` is given)."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        if name is None or node.attr == name:
            return node.attr
    return None


def _read_classes(path: Path, config: Config, *, handlers: bool) -> None:
    module = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.Dict):
                table = {}
                for k, v in zip(node.value.keys, node.value.values, strict=True):
                    if isinstance(k, ast.Constant) and isinstance(k.value, int) and _literal(v) is not None:
                        table[k.value] = _literal(v) or ""
                if table and len(table) == len(node.value.keys):
                    config.number_words.setdefault(node.targets[0].id, table)
            if isinstance(node.value, ast.List):
                config.module_lists.setdefault(node.targets[0].id, node.value)
    for cls in (n for n in module.body if isinstance(n, ast.ClassDef)):
        for node in cls.body:
            if isinstance(node, ast.FunctionDef):
                config.methods.setdefault(node.name, node)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, ast.List):
                    values = [_literal(v) for v in node.value.elts]
                    if all(v is not None for v in values):
                        config.lists.setdefault(node.targets[0].id, [v for v in values if v is not None])
        if not handlers:
            continue
        for func in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            for found in ast.walk(func):
                if not isinstance(found, ast.Assign) or len(found.targets) != 1:
                    continue
                target = found.targets[0]
                # self.instr2preprocessor["ID"] = handler
                if isinstance(target, ast.Subscript) and _self_attr(target.value, "instr2preprocessor"):
                    key = _literal(target.slice)
                    if key is not None:
                        config.handlers[key] = found.value
                # self.instr2preprocessor = {"ID": handler, ...}
                if _self_attr(target, "instr2preprocessor") and isinstance(found.value, ast.Dict):
                    for k, v in zip(found.value.keys, found.value.values, strict=True):
                        key = _literal(k) if k is not None else None
                        if key is not None:
                            config.handlers.setdefault(key, v)


def read_config(configs: Path, task_file: Path) -> Config:
    """Handlers and methods of a task's config module, with the shared Preprocessor's."""
    config = Config()
    # The task's own assignments (add_unobserved_instructions) override the shared dict.
    _read_classes(task_file, config, handlers=True)
    shared = Config()
    _read_classes(configs / "preprocessor.py", shared, handlers=True)
    for key, value in shared.handlers.items():
        config.handlers.setdefault(key, value)
    for key, func in shared.methods.items():
        config.methods.setdefault(key, func)
    for key, words in shared.lists.items():
        config.lists.setdefault(key, words)
    for key, table in shared.number_words.items():
        config.number_words.setdefault(key, table)
    for key, node in shared.module_lists.items():
        config.module_lists.setdefault(key, node)
    for path in sorted((configs / "processors").glob("*.py")):
        _read_classes(path, config, handlers=False)
    return config


# --- a symbolic reading of InstructionEval's formatting code -----------------------------
#
# The config methods build each prompt with a small set of string operations: literals,
# ``str.format``, ``+`` / ``+=``, loops over the options, ``split`` of the input, calls to
# other methods. They are read here *symbolically*: each value is the jinja text that renders
# to what the Python would produce on any document, so one read gives the whole template.
# Anything outside that subset raises Problem (the template is skipped with the reason).

_LETTER = "{{ '" + LETTERS + "'[loop.index0] }}"
_MAX_DEPTH = 8


def _lit(text: str) -> str:
    """Literal text inside a jinja template."""
    return text.replace("{", "{{ '{' }}") if "{" in text else text


@dataclass(frozen=True)
class Text:
    """A string: its jinja, and its Python value where it is a literal (for ``.format``)."""

    jinja: str
    raw: str | None = None


@dataclass(frozen=True)
class Opaque:
    """A value the prompt text never shows (the answer, an index, an explanation)."""

    what: str


@dataclass(frozen=True)
class Answer(Opaque):
    """The document's answer as the word the study scores: the option text, then each step
    ``(value, then, otherwise)`` of ``then if answer == value else otherwise`` in turn."""

    steps: tuple[tuple[str, str, str], ...] = ()

    def word(self, label: str) -> str:
        for value, then, otherwise in self.steps:
            label = then if label == value else otherwise
        return label


@dataclass(frozen=True)
class Seq:
    """A list: ``letters`` (A, B, ... per option), ``options`` (the option texts), fixed words,
    or ``marks`` (what FLAN puts before each option: ``jinja`` per option in a loop)."""

    kind: str
    words: tuple[str, ...] = ()
    jinja: str = ""


@dataclass(frozen=True)
class Int(Opaque):
    """An integer literal (an index into a module-level list)."""

    value: int = 0


@dataclass(frozen=True)
class ModuleList:
    """A module-level list, read element by element when indexed."""

    node: ast.List


@dataclass(frozen=True)
class Split:
    """``item["question"].split(...)``: its pieces are indexable."""

    jinja: str
    #: The pieces as our fields, where the task already splits the input there.
    pieces: tuple[str, ...] = ()

    def piece(self, index: int) -> Text:
        if self.pieces:
            if index >= len(self.pieces):
                raise Problem("reads a piece of the input that our fields do not hold")
            return Text(self.pieces[index])
        return Text("{{ " + _piece(self.jinja, index) + " }}")


@dataclass(frozen=True)
class Length:
    """``len(options)``: the number of options."""


@dataclass(frozen=True)
class Item:
    """The document (``item``) or a dict built from it (key -> value)."""

    values: dict[str, object]


@dataclass(frozen=True)
class NumberWords:
    words: dict[int, str]


@dataclass(frozen=True)
class MethodRef:
    name: str


@dataclass(frozen=True)
class Tup:
    values: tuple[object, ...]


class Reader:
    """Reads methods of one config symbolically."""

    def __init__(self, config: Config, target: Target):
        self.config = config
        self.target = target
        self.option_count: int | None = None
        #: ``self.X`` attributes the code sets while formatting (FLAN's ``set_style``).
        self.attrs: dict[str, object] = {}
        #: Texts sliced so far (each gets its own jinja variable).
        self.cuts = 0

    # statements ------------------------------------------------------------------------

    def call(self, name: str, args: list[object], kwargs: dict[str, object], depth: int = 0, *, statement: bool = False) -> object:
        """What ``self.name(*args, **kwargs)`` returns (``statement``: called for its effect on
        ``self``, such as FLAN's ``set_style``, and may return nothing)."""
        func = self.config.methods.get(name)
        if func is None:
            raise Problem(f"calls self.{name}, which is not in the config")
        if depth > _MAX_DEPTH:
            raise Problem(f"calls nest too deep at {name}")
        params = [a.arg for a in func.args.args]
        if params and params[0] == "self":
            params = params[1:]
        env: dict[str, object] = {}
        for pname, value in zip(params, args, strict=False):
            env[pname] = value
        if len(args) > len(params):
            raise Problem(f"calls {name} with too many arguments")
        for key, value in kwargs.items():
            if key not in params:
                raise Problem(f"calls {name} with {key}=, which it does not take (InstructionEval's own code raises TypeError)")
            env[key] = value
        for pname in params:
            env.setdefault(pname, Opaque(f"missing {pname}"))
        result = self.run(func.body, env, depth)
        if result is None:
            if statement:
                return Opaque(f"what {name} returns")
            raise Problem(f"{name} returns nothing readable")
        return result

    def run(self, body: list[ast.stmt], env: dict[str, object], depth: int) -> object | None:
        for stmt in body:
            if isinstance(stmt, ast.Return):
                return self.expr(stmt.value, env, depth) if stmt.value is not None else None
            if isinstance(stmt, ast.Assign):
                value = self.expr(stmt.value, env, depth)
                for target in stmt.targets:
                    self.assign(target, value, env)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and isinstance(stmt.target, ast.Name):
                env[stmt.target.id] = self.concat(env.get(stmt.target.id), self.expr(stmt.value, env, depth))
            elif isinstance(stmt, ast.For):
                self.loop(stmt, env, depth)
            elif isinstance(stmt, ast.Try):
                result = self.run(stmt.body, env, depth)
                if result is not None:
                    return result
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                callee = stmt.value.func
                method = _self_attr(callee)
                if method is not None and method in self.config.methods:
                    # self.set_style(("text", 8), 1): sets attributes the formatting reads.
                    self.call_expr(stmt.value, env, depth, statement=True)
                elif not (isinstance(callee, ast.Name) and callee.id == "print"):
                    raise Problem(f"runs {ast.unparse(stmt)[:60]}")
            elif isinstance(stmt, ast.Pass):
                continue
            elif isinstance(stmt, ast.If):
                decided = self.static_test(stmt.test, env, depth)
                if decided is None:
                    raise Problem(f"branches in code ({ast.unparse(stmt.test)[:50]})")
                result = self.run(stmt.body if decided else stmt.orelse, env, depth)
                if result is not None:
                    return result
            else:
                raise Problem(f"runs {type(stmt).__name__} statements")
        return None

    def static_test(self, test: ast.expr, env: dict[str, object], depth: int) -> bool | None:
        """The value of ``a == b`` / ``a != b`` where both sides are known literals (FLAN's
        ``self.style == "letter"``), else None."""
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.NotEq)):
            return None
        try:
            left, right = self.expr(test.left, env, depth), self.expr(test.comparators[0], env, depth)
        except Problem:
            return None
        if isinstance(left, Text) and isinstance(right, Text) and left.raw is not None and right.raw is not None:
            return (left.raw == right.raw) == isinstance(test.ops[0], ast.Eq)
        return None

    def assign(self, target: ast.expr, value: object, env: dict[str, object]) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
            return
        attr = _self_attr(target)
        if attr is not None:
            self.attrs[attr] = value
            return
        if isinstance(target, ast.Tuple):
            names = target.elts
            if isinstance(value, Tup) and len(value.values) == len(names):
                for n, v in zip(names, value.values, strict=True):
                    self.assign(n, v, env)
                return
            if isinstance(value, Seq) and value.kind == "options":
                self.option_count = len(names)
                for i, n in enumerate(names):
                    self.assign(n, Text("{{ choices[" + str(i) + "] }}"), env)
                return
            if isinstance(value, Split):
                for i, n in enumerate(names):
                    self.assign(n, value.piece(i), env)
                return
            raise Problem(f"unpacks {type(value).__name__} into {len(names)} names")
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            holder = env.get(target.value.id)
            key = _literal(target.slice)
            if isinstance(holder, Item) and key is not None:
                holder.values[key] = value
                return
        raise Problem(f"assigns to {ast.unparse(target)[:40]}")

    def loop(self, stmt: ast.For, env: dict[str, object], depth: int) -> None:
        """A loop over the options: each ``+=`` in it becomes a jinja loop over ``choices``."""
        it = stmt.iter
        names: list[str] = []
        kinds: list[str] = []
        seqs: list[object] = []
        index: str | None = None
        target = stmt.target
        if (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "enumerate"
            and len(it.args) == 1
            and isinstance(target, ast.Tuple)
            and len(target.elts) == 2
            and isinstance(target.elts[0], ast.Name)
        ):
            # for i, option in enumerate(options): i is only ever compared with the last index.
            index, target, it = target.elts[0].id, target.elts[1], it.args[0]
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip":
            seqs = [self.expr(a, env, depth) for a in it.args]
            if not isinstance(target, ast.Tuple) or len(target.elts) != len(seqs):
                raise Problem("loops over a zip it does not unpack")
            names = [n.id for n in target.elts if isinstance(n, ast.Name)]
            kinds = [s.kind if isinstance(s, Seq) else "?" for s in seqs]
        else:
            seq = self.expr(it, env, depth)
            seqs = [seq]
            if isinstance(target, ast.Name):
                names = [target.id]
                kinds = [seq.kind if isinstance(seq, Seq) else "?"]
        if len(names) != len(kinds) or any(k not in ("letters", "letters in lower case", "numbers", "options", "marks") for k in kinds):
            raise Problem(f"loops over {ast.unparse(it)[:50]}")
        inner = dict(env)
        shown = {"options": "{{ c }}", "letters": _LETTER, "letters in lower case": _LETTER.lower(), "numbers": "{{ loop.index }}"}
        for name, kind, seq in zip(names, kinds, seqs, strict=True):
            inner[name] = Text(seq.jinja) if isinstance(seq, Seq) and kind == "marks" else Text(shown[kind])
        letters = next((n for n, k in zip(names, kinds, strict=True) if k.startswith("letters")), None)
        pieces = self.loop_body(stmt.body, inner, depth, letters, index)
        for name, piece in pieces.items():
            env[name] = self.concat(env.get(name), Text("{% for c in choices %}" + piece + "{% endfor %}"))

    def loop_body(
        self, body: list[ast.stmt], env: dict[str, object], depth: int, letters: str | None, index: str | None = None
    ) -> dict[str, str]:
        """Jinja of what each ``+=`` in a loop body adds per option (``letters``: the loop's
        letter variable; ``index``: its ``enumerate`` counter)."""
        pieces: dict[str, str] = {}
        for stmt in body:
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and isinstance(stmt.target, ast.Name):
                value = self.expr(stmt.value, env, depth)
                if not isinstance(value, Text):
                    raise Problem("adds a non-text value in a loop")
                pieces[stmt.target.id] = pieces.get(stmt.target.id, "") + value.jinja
            elif isinstance(stmt, ast.If) and _is_last(stmt.test, letters, index):
                yes = self.loop_body(stmt.body, env, depth, letters, index)
                no = self.loop_body(stmt.orelse, env, depth, letters, index)
                for name in dict.fromkeys([*yes, *no]):
                    branch = "{% if loop.last %}" + yes.get(name, "") + "{% else %}" + no.get(name, "") + "{% endif %}"
                    pieces[name] = pieces.get(name, "") + branch
            else:
                raise Problem(f"runs {ast.unparse(stmt)[:50]} in a loop over the options")
        return pieces

    # expressions -----------------------------------------------------------------------

    def concat(self, left: object, right: object) -> Text:
        if not isinstance(left, Text) or not isinstance(right, Text):
            raise Problem("joins a non-text value")
        raw = left.raw + right.raw if left.raw is not None and right.raw is not None else None
        return Text(left.jinja + right.jinja, raw)

    def expr(self, node: ast.expr, env: dict[str, object], depth: int) -> object:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return Text(_lit(node.value), node.value)
            if isinstance(node.value, int) and not isinstance(node.value, bool):
                return Int(repr(node.value), node.value)
            return Opaque(repr(node.value))
        if isinstance(node, ast.Name):
            if node.id not in env and node.id in self.config.number_words:
                return NumberWords(self.config.number_words[node.id])
            if node.id not in env and node.id in self.config.module_lists:
                return ModuleList(self.config.module_lists[node.id])
            if node.id not in env:
                raise Problem(f"uses {node.id}, which is not defined in the method")
            return env[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.concat(self.expr(node.left, env, depth), self.expr(node.right, env, depth))
        if isinstance(node, ast.Dict):
            values: dict[str, object] = {}
            for k, v in zip(node.keys, node.values, strict=True):
                key = _literal(k) if k is not None else None
                if key is None:
                    raise Problem("builds a dict with computed keys")
                values[key] = self.expr(v, env, depth)
            return Item(values)
        if isinstance(node, ast.List):
            words = [_literal(e) for e in node.elts]
            if all(w is not None for w in words):
                fixed = tuple(w for w in words if w is not None)
                if fixed and LETTERS.startswith("".join(fixed)) and all(len(w) == 1 for w in fixed):
                    return Seq("letters", fixed)
                return Seq("words", fixed)
            raise Problem("builds a list in code")
        if isinstance(node, ast.Tuple):
            return Tup(tuple(self.expr(e, env, depth) for e in node.elts))
        if isinstance(node, ast.ListComp) and _is_option_numbers(node):
            return Seq("numbers")
        if isinstance(node, ast.ListComp):
            return _marks(node)  # ["\n" + chr(x) + ". " for x in range(ord("A"), ...)]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if node.attr in self.attrs:
                return self.attrs[node.attr]
            if node.attr in self.config.lists:
                return Seq("words", tuple(self.config.lists[node.attr]))
            if node.attr in self.config.methods:
                return MethodRef(node.attr)
            if node.attr in TASK_JSON_FIELDS:
                read = self.target.task_json.get(node.attr) if self.target.task_json is not None else None
                if read is None:
                    raise Problem(f"reads self.{node.attr} from BIG-bench's task.json, {self.target.task_json_problem}")
                return Text(_lit(read), read)
            raise Problem(f"reads self.{node.attr}, set at run time")
        if isinstance(node, ast.Subscript):
            return self.subscript(node, env, depth)
        if isinstance(node, ast.Call):
            return self.call_expr(node, env, depth)
        if isinstance(node, ast.JoinedStr):
            parts: list[str] = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(_lit(value.value))
                elif isinstance(value, ast.FormattedValue) and value.conversion == -1 and value.format_spec is None:
                    shown = self.expr(value.value, env, depth)
                    if not isinstance(shown, Text):
                        raise Problem(f"an f-string shows {type(shown).__name__}")
                    parts.append(shown.jinja)
                else:
                    raise Problem("an f-string with a conversion or spec")
            return Text("".join(parts))
        if isinstance(node, ast.IfExp):
            # answer = "Yes" if item["answer"] == "different" else "No": the answer's word.
            return self.answer_map(node, env, depth)
        raise Problem(f"computes {ast.unparse(node)[:50]}")

    def answer_map(self, node: ast.IfExp, env: dict[str, object], depth: int) -> object:
        """``then if <answer> == value else otherwise`` with literals: the answer mapped to a
        word (the verbaliser the study scored); any other conditional is never shown."""
        test = node.test
        then, otherwise = _literal(node.body), _literal(node.orelse)
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and _literal(test.comparators[0]) is not None
            and then is not None
            and otherwise is not None
        ):
            subject = self.expr(test.left, env, depth)
            if isinstance(subject, Answer):
                step = (_literal(test.comparators[0]) or "", then, otherwise)
                return Answer("the answer", (*subject.steps, step))
        decided = self.static_test(test, env, depth)
        if decided is not None:
            # LETTER_ITEM_CANDIDATES[idx] if self.style == "letter" else TEXT_ITEM_CANDIDATES[idx]
            return self.expr(node.body if decided else node.orelse, env, depth)
        return Opaque("conditional")

    def cut(self, text: Text, where: ast.Slice) -> Text:
        """``text[2:]`` with literal bounds: a jinja block captures the text, then slices it."""
        bounds = []
        for bound in (where.lower, where.upper, where.step):
            if bound is None:
                bounds.append("")
            elif isinstance(bound, ast.Constant) and isinstance(bound.value, int):
                bounds.append(str(bound.value))
            elif isinstance(bound, ast.UnaryOp) and isinstance(bound.op, ast.USub) and isinstance(bound.operand, ast.Constant):
                if not isinstance(bound.operand.value, int):
                    raise Problem(f"slices a text at {ast.unparse(where)[:30]}")
                bounds.append(f"-{bound.operand.value}")
            else:
                raise Problem(f"slices a text at {ast.unparse(where)[:30]}")
        if text.raw is not None:
            pieces = [int(b) if b else None for b in bounds]
            kept = text.raw[slice(*pieces)]
            return Text(_lit(kept), kept)
        self.cuts += 1
        name = f"_cut{self.cuts}"
        spec = ":".join(bounds[:2]) + (f":{bounds[2]}" if bounds[2] else "")
        return Text("{% set " + name + " %}" + text.jinja + "{% endset %}{{ " + name + "[" + spec + "] }}")

    def subscript(self, node: ast.Subscript, env: dict[str, object], depth: int) -> object:
        source = ast.unparse(node.value)
        bare = isinstance(node.value, ast.ListComp) and ast.unparse(node.value.elt).startswith("chr(")
        if "chr(" in source and (bare or not isinstance(node.value, ast.ListComp)):
            # [chr(x) for x in range(ord("A"), ord("Z") + 1)][:len(options)]
            if "ord('A')" in source:
                return Seq("letters")
            return Seq("letters in lower case" if "ord('a')" in source else f"letters from {source[:40]}")
        holder = self.expr(node.value, env, depth)
        if isinstance(holder, ModuleList):
            position = self.expr(node.slice, env, depth)
            if not isinstance(position, Int) or not 0 <= position.value < len(holder.node.elts):
                raise Problem(f"indexes a module-level list with {ast.unparse(node.slice)[:30]}")
            element = holder.node.elts[position.value]
            return _marks(element) if isinstance(element, ast.ListComp) else self.expr(element, {}, depth)
        if isinstance(holder, Text) and isinstance(node.slice, ast.Slice):
            return self.cut(holder, node.slice)
        if isinstance(holder, Seq) and holder.kind == "marks" and isinstance(node.slice, ast.Slice):
            # self.item[:len(options)]: one mark per option, as before.
            if node.slice.lower is None and node.slice.step is None and node.slice.upper is not None:
                if isinstance(self.expr(node.slice.upper, env, depth), Length):
                    return holder
        key = _literal(node.slice)
        if isinstance(holder, Item) and key is not None:
            if key not in holder.values:
                raise Problem(f"reads field {key!r} that the document does not have")
            return holder.values[key]
        index = node.slice.value if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, int) else None
        if isinstance(holder, Split) and index is not None:
            return holder.piece(index)
        if isinstance(holder, NumberWords) and isinstance(node.slice, ast.Call):
            if isinstance(self.expr(node.slice, env, depth), Length):
                table = ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(holder.words.items()))
                return Text("{{ {" + table + "}[choices|length] }}")
        if isinstance(holder, Seq) and holder.kind == "words" and index is not None and 0 <= index < len(holder.words):
            word = holder.words[index]
            return Text(_lit(word), word)
        if isinstance(holder, Seq):
            return Opaque("an option picked in code")  # item_names[options.index(answer)]
        raise Problem(f"indexes {ast.unparse(node)[:50]}")

    def call_expr(self, node: ast.Call, env: dict[str, object], depth: int, *, statement: bool = False) -> object:
        callee = node.func
        if isinstance(callee, ast.Attribute) and callee.attr == "format":
            receiver = self.expr(callee.value, env, depth)
            if not isinstance(receiver, Text) or receiver.raw is None:
                raise Problem("formats a string built in code")
            args = [self.expr(a, env, depth) for a in node.args]
            kwargs: dict[str, object] = {}
            for kw in node.keywords:
                value = self.expr(kw.value, env, depth)
                if kw.arg is None:
                    if not isinstance(value, Item):
                        raise Problem("formats with ** of a non-dict")
                    kwargs.update(value.values)
                else:
                    kwargs[kw.arg] = value
            return _format(receiver.raw, args, kwargs)
        if isinstance(callee, ast.Attribute) and callee.attr == "pop" and len(node.args) == 1 and not node.keywords:
            # item.pop("question"): the value, gone from the (symbolic) document.
            holder = self.expr(callee.value, env, depth)
            key = _literal(node.args[0])
            if isinstance(holder, Item) and key is not None and key in holder.values:
                return holder.values.pop(key)
            raise Problem(f"calls {ast.unparse(callee)[:50]}")
        if isinstance(callee, ast.Attribute) and callee.attr == "replace" and len(node.args) == 2 and not node.keywords:
            base = self.expr(callee.value, env, depth)
            old, new = _literal(node.args[0]), _literal(node.args[1])
            if isinstance(base, Text) and old is not None and new is not None:
                if base.raw is not None:
                    return Text(_lit(base.raw.replace(old, new)), base.raw.replace(old, new))
                inner = _expression(base)
                if inner is not None:
                    return Text("{{ (" + inner + ").replace(" + json.dumps(old) + ", " + json.dumps(new) + ") }}")
            raise Problem(f"replaces in {ast.unparse(callee.value)[:40]}")
        if isinstance(callee, ast.Attribute) and callee.attr == "split":
            base = self.expr(callee.value, env, depth)
            if not isinstance(base, Text) or (base.jinja != self.whole() and _expression(base) is None) or len(node.args) != 1:
                raise Problem("splits a text built in code")
            sep = _literal(node.args[0])
            maxsplit = None
            for kw in node.keywords:
                if kw.arg == "maxsplit" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int):
                    maxsplit = kw.value.value
                else:
                    raise Problem("splits with computed arguments")
            if sep is None:
                raise Problem("splits at a computed separator")
            whole = base.jinja == self.whole()
            if whole and self.target.target in WHOLE_INPUT and (self.target.target, sep) not in WHOLE_SPLITS:
                raise Problem(f"splits the input at {sep!r}, where our fields do not")
            known = WHOLE_SPLITS.get((self.target.target, sep), ()) if whole else ()
            inner = self.whole()[3:-3] if whole else f"({_expression(base)})"
            return Split(f"{inner}.split({json.dumps(sep)}" + (f", {maxsplit})" if maxsplit is not None else ")"), known)
        func: str | None = None
        if isinstance(callee, ast.Attribute) and isinstance(callee.value, ast.Name) and callee.value.id == "self":
            func = callee.attr
        elif isinstance(callee, ast.Name) and isinstance(env.get(callee.id), MethodRef):
            ref = env[callee.id]
            func = ref.name if isinstance(ref, MethodRef) else None
        if isinstance(callee, ast.Attribute) and callee.attr == "join" and len(node.args) == 1 and not node.keywords:
            # ", ".join(options): the option texts with the separator between them.
            sep = _literal(callee.value)
            joined = self.expr(node.args[0], env, depth)
            if sep is not None and isinstance(joined, Seq) and joined.kind == "options":
                return Text("{{ choices|join(" + json.dumps(sep) + ") }}")
            raise Problem(f"joins {ast.unparse(node)[:50]}")
        if isinstance(callee, ast.Name) and callee.id == "len" and len(node.args) == 1:
            if isinstance(self.expr(node.args[0], env, depth), Seq):
                return Length()
        if isinstance(callee, ast.Name) and callee.id == "str" and len(node.args) == 1:
            value = self.expr(node.args[0], env, depth)
            if isinstance(value, Length):
                return Text("{{ choices|length }}")
        if func is None:
            raise Problem(f"calls {ast.unparse(callee)[:50]}")
        args = []
        for a in node.args:
            args.append(self.expr(a, env, depth))
        kwargs = {}
        for kw in node.keywords:
            value = self.expr(kw.value, env, depth)
            if kw.arg is None:
                if not isinstance(value, Item):
                    raise Problem("passes ** of a non-dict")
                kwargs.update(value.values)
            else:
                kwargs[kw.arg] = value
        return self.call(func, args, kwargs, depth + 1, statement=statement)

    def whole(self) -> str:
        return _whole_input(self.target)

    def document(self) -> Item:
        return Item({"question": Text(self.whole()), "options": Seq("options"), "answer": Answer("the answer")})


def _expression(text: Text) -> str | None:
    """The jinja expression of a text that is one ``{{ ... }}`` and nothing else, else None."""
    inner = text.jinja[3:-3]
    if text.jinja.startswith("{{ ") and text.jinja.endswith(" }}") and not any(t in inner for t in ("{{", "}}", "{%", "%}", "{#")):
        return inner
    return None


def _marks(node: ast.ListComp) -> Seq:
    """FLAN's option marks, one per option: ``["\\n - " for _ in range(26)]`` (the same each
    time), ``["\\n(" + chr(x) + "). " for x in range(ord("a"), ...)]`` (a letter), or
    ``str(x) for x in range(1, 27)`` (a number)."""
    if len(node.generators) != 1 or node.generators[0].ifs or not isinstance(node.generators[0].target, ast.Name):
        raise Problem(f"computes {ast.unparse(node)[:50]}")
    var = node.generators[0].target.id
    source = ast.unparse(node.generators[0].iter)
    per_option = {
        "range(ord('a'), ord('z') + 1)": _LETTER.lower(),
        "range(ord('A'), ord('Z') + 1)": _LETTER,
        "range(1, 27)": "{{ loop.index }}",
    }

    def part(elt: ast.expr) -> str:
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
            return _lit(elt.value)
        if isinstance(elt, ast.BinOp) and isinstance(elt.op, ast.Add):
            return part(elt.left) + part(elt.right)
        if ast.unparse(elt) in (f"chr({var})", f"str({var})") and source in per_option:
            return per_option[source]
        raise Problem(f"computes {ast.unparse(node)[:50]}")

    return Seq("marks", jinja=part(node.elt))


def _is_option_numbers(node: ast.ListComp) -> bool:
    """``[str(i) for i in range(1, len(options) + 1)]``: "1", "2", ... per option."""
    return (
        len(node.generators) == 1
        and not node.generators[0].ifs
        and isinstance(node.elt, ast.Call)
        and ast.unparse(node.elt) == f"str({ast.unparse(node.generators[0].target)})"
        and ast.unparse(node.generators[0].iter) == "range(1, len(options) + 1)"
    )


def _is_last(test: ast.expr, letters: str | None, index: str | None = None) -> bool:
    """``item == item_names[-1]`` (the loop's letter is the last one) or
    ``i == len(options) - 1`` (the loop's counter is the last index)."""
    if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and len(test.comparators) == 1):
        return False
    if not (len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    other = test.comparators[0]
    if letters is not None and test.left.id == letters:
        return isinstance(other, ast.Subscript) and ast.unparse(other.slice) == "-1"
    return index is not None and test.left.id == index and ast.unparse(other) == "len(options) - 1"


def _format(template: str, args: list[object], kwargs: dict[str, object]) -> Text | Opaque:
    """Jinja of ``template.format(*args, **kwargs)`` over symbolic values (Opaque where it
    shows a value that is never part of a prompt, such as the answer)."""
    out: list[str] = []
    auto = 0
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(_lit(literal))
        if name is None:
            continue
        if spec or conversion:
            raise Problem(f"formats {{{name}}} with a conversion or spec")
        if name == "":
            value = args[auto] if auto < len(args) else None
            auto += 1
        elif name.isdigit():
            value = args[int(name)] if int(name) < len(args) else None
        else:
            value = kwargs.get(name)
        if value is None:
            raise Problem(f"formats {{{name}}} without passing it (InstructionEval's own code raises KeyError or IndexError)")
        if isinstance(value, Answer) and template == "{" + name + "}":
            return value  # "{answer}".format(answer=answer): the answer itself
        if isinstance(value, Opaque):
            return Opaque(f"text showing {value.what}")
        if isinstance(value, Length):
            value = Text("{{ choices|length }}")
        if not isinstance(value, Text):
            raise Problem(f"shows {{{name}}} as {type(value).__name__}")
        out.append(value.jinja)
    return Text("".join(out))


def _verbaliser(words: tuple[str, ...], output: object, labels: tuple[str, ...] | None, target: str) -> AnswerStyle | dict[str, str]:
    """The study's fixed answer words as a verbaliser of the task's labels: each label's word is
    what the code makes of that answer (``"Yes" if answer == "different" else "No"``)."""
    if not isinstance(output, Answer):
        raise Problem(f"scored on fixed words {list(words)}, with an answer the reader cannot follow")
    if not labels:
        how = "mapped from the answer in code" if output.steps else "whatever the document's options"
        raise Problem(f"scored on fixed words {list(words)} {how}, but {target} has no fixed labels (its options vary by document)")
    mapping = {label: output.word(label) for label in labels}
    if sorted(mapping.values()) != sorted(words):
        raise Problem(f"scored on fixed words {list(words)}, but code maps the labels {list(labels)} to {sorted(set(mapping.values()))}")
    if all(word == label for label, word in mapping.items()):
        return "text"
    return mapping


def _answer_style(label_space: object, output: object = None, target: Target | None = None) -> AnswerStyle | dict[str, str]:
    if isinstance(label_space, Seq) and label_space.kind == "words" and label_space.words:
        return _verbaliser(label_space.words, output, target.labels if target else None, target.target if target else "the task")
    if isinstance(label_space, Seq) and label_space.kind == "letters":
        return "letters"
    if isinstance(label_space, Seq) and label_space.kind == "options":
        return "text"
    if isinstance(label_space, Seq) and label_space.kind == "letters in lower case":
        return "lowercase"
    if isinstance(label_space, Seq) and label_space.kind.startswith("letters "):
        raise Problem(f"scored on {label_space.kind}")
    raise Problem("label space built in code")


def _read_handler(reader: Reader, handler: ast.expr) -> tuple[str, AnswerStyle | dict[str, str]]:
    """(jinja text, answer words) of an instruction id's handler."""
    doc = reader.document()
    env: dict[str, object] = {"item": doc}
    if isinstance(handler, ast.Lambda):
        result = reader.expr(handler.body, env, 0)
    else:
        name = _self_attr(handler)
        if name is None:
            raise Problem(f"handler {ast.unparse(handler)[:50]}")
        result = reader.call(name, [doc], {})
    if not isinstance(result, Item) or not isinstance(result.values.get("input_text"), Text):
        raise Problem("returns no readable input_text")
    shown = result.values["input_text"]
    assert isinstance(shown, Text)  # checked above
    label_space, output = result.values.get("label_space"), result.values.get("output_text")
    numbers = _numbered_options(label_space, output, reader.target)
    if numbers is not None:
        # Scored on "1".."N", which are the options of this target's N-option documents.
        if reader.option_count not in (None, numbers):
            raise Problem(f"shows exactly {reader.option_count} options but is scored on the numbers 1-{numbers}")
        reader.option_count = numbers
        return shown.jinja, "text"
    return shown.jinja, _answer_style(label_space, output, reader.target)


def _numbered_options(label_space: object, output: object, target: Target) -> int | None:
    """N where the study scores the fixed words "1".."N" and the answer itself on a target
    whose N-option documents have exactly those options (:data:`NUMBERED_OPTIONS`)."""
    if target.target not in NUMBERED_OPTIONS or not isinstance(label_space, Seq) or label_space.kind != "words":
        return None
    words = label_space.words
    if words and words == tuple(str(i) for i in range(1, len(words) + 1)) and isinstance(output, Answer) and not output.steps:
        return len(words)
    return None


@dataclass(frozen=True)
class Target:
    name: str  # instructions.json task name
    kind: str
    target: str
    stem: str
    input_field: str
    #: The task's fixed labels (None where options vary), for verbalisers.
    labels: tuple[str, ...] | None = None
    #: What InstructionEval's Preprocessor reads from BIG-bench's task.json (TASK_JSON_FIELDS),
    #: or None with the reason in task_json_problem.
    task_json: dict[str, str] | None = None
    task_json_problem: str = "which is not read for this task"


#: The whole document text InstructionEval formats (its ``item["question"]``), where our task
#: splits it into fields: BIG-bench's vitaminc input is "<passage>\nClaim: <claim>".
WHOLE_INPUT = {"bbl.vitaminc_fact_verification": "{{ passage }}\nClaim: {{ claim }}"}
#: Splits of the whole input that our fields already hold (InstructionEval keeps the space
#: after "Claim:" in the claim).
WHOLE_SPLITS = {("bbl.vitaminc_fact_verification", "\nClaim:"): ("{{ passage }}", " {{ claim }}")}


def _whole_input(target: Target) -> str:
    return WHOLE_INPUT.get(target.target, "{{ " + target.input_field + " }}")


def _piece(split: str, index: int) -> str:
    """Jinja for piece ``index`` of a split: that piece, or "" where the input has fewer pieces
    (InstructionEval's unpacking would fail there; the study's documents all have them)."""
    return f"({split} + {json.dumps([''] * (index + 1))})[{index}]"


def _entry(config: Config, target: Target, ie_id: str, label: str) -> Instruction:
    handler = config.handlers.get(ie_id)
    if handler is None:
        raise Problem("listed in instructions.json but no config maps it to a method")
    source_kind, kind = ie_id.split("/")[:2]
    observed = kind not in UNOBSERVED_KINDS
    if source_kind not in COLLECTION_OF and observed:
        raise Problem(f"unknown collection prefix {source_kind!r}")
    reader = Reader(config, target)
    text, answer = _read_handler(reader, handler)
    option_count = _option_count(reader.option_count, target.target)
    if target.target in LABEL_ORDERS_VARY and "choices" in template_fields(text):
        raise Problem(
            f"shows the options in each document's own order ({LABEL_ORDERS_VARY[target.target]}), "
            f"but {target.target} shows its labels in one fixed order"
        )
    if text.endswith("\n"):
        # The renderer drops one trailing newline of a template; keep InstructionEval's.
        text += "{{ '' }}"
    # An answer expected right after "(" (as in "Answer: (") is scored as "(A", not "( A".
    delimiter = "" if text.endswith("(") else " "
    slug = re.sub(r"[^a-z0-9]+", "-", ie_id.lower()).strip("-")
    source = f"{label}:instructions.json#{target.name}:{ie_id}"
    provenance = (
        Provenance(status="observed", collections=[COLLECTION_OF[source_kind]], source=source)
        if observed
        else Provenance(status="unobserved", author=AUTHOR, source=source)
    )
    return Instruction(
        id=f"ie.{target.stem}.{slug}",
        text=text,
        answer_choices=answer,
        target_delimiter=delimiter,
        option_count=option_count,
        provenance=provenance,
    )


def _option_count(shown: int | None, target: str) -> int | None:
    """The documents a template that shows ``shown`` options applies to: None for all of them
    (it shows no fixed number, or every document has that many), else that many options."""
    if shown is None:
        return None
    counts = OPTION_COUNTS.get(target)
    if counts is None:
        raise Problem(f"shows exactly {shown} options, and the option counts of {target} are not known here")
    if shown not in counts:
        have = " or ".join(str(c) for c in counts)
        raise Problem(
            f"shows exactly {shown} options, but every document of {target} has {have} (InstructionEval's own code fails on them)"
        )
    return shown if len(counts) > 1 else None


def study_targets(configs: Path, labels: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, tuple[Target, Path | str]]:
    """Each study task's target and its config file (or why it has none).

    Args:
        configs: the checkout's ``configs/`` folder.
        labels: fixed labels of our tasks, by task id (for verbalisers).
    """
    out: dict[str, tuple[Target, Path | str]] = {}
    for name, (file_stem, kind, target, stem) in STUDY_TASKS.items():
        folder = configs / "MMLU" if target == "mmlu" else configs / "BBH"
        found = sorted(folder.rglob(f"{file_stem}.py"))
        where: Path | str = found[0] if found else f"no configs/{folder.name}/**/{file_stem}.py"
        fixed = (labels or {}).get(target)
        out[name] = (Target(name, kind, target, stem, "question" if target == "mmlu" else "input", fixed), where)
    return out


#: What InstructionEval's Preprocessor reads from a BIG-bench task.json, and how: the field,
#: then (task.json key, fallback key, default where both are missing).
TASK_JSON_FIELDS: dict[str, tuple[str, str | None, str | None]] = {
    "description": ("task_prefix", "description", None),
    "example_input_prefix": ("example_input_prefix", None, "\n"),
    "example_output_prefix": ("example_output_prefix", None, ""),
    "choice_prefix": ("choice_prefix", None, ""),
}


def _preprocessor_fields(spec: dict[str, object]) -> dict[str, str]:
    """The TASK_JSON_FIELDS values InstructionEval derives from one task.json."""
    out: dict[str, str] = {}
    for name, (key, fallback, default) in TASK_JSON_FIELDS.items():
        value = spec[key] if key in spec else spec.get(fallback) if fallback else default
        if isinstance(value, str):
            out[name] = value
    return out


#: Version of what :func:`_read_task_json` keeps beside the archive (bumped when it changes).
_KEPT_LAYOUT = 2


def _read_task_json() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Per BIG-bench task.json folder (``strategyqa``, ``strange_stories/boolean``): the fields
    InstructionEval's default prompts read, from the cached bigbench sdist; and, per folder
    (``""``: all), why not."""
    from harness.data.bigbench_sources import BigBenchCopy, local_copy
    from harness.data.cache import DataMissing, atomic_write_json
    from harness.data.sources import BIGBENCH, verify_source

    # A local copy (IRH_BIGBENCH) is read as it is: it may change, so nothing is kept.
    copy = local_copy(None)
    if isinstance(copy, BigBenchCopy):
        return _task_json_from(copy.path)
    # Reading the 358 MB archive takes seconds: the few fields are kept beside it, named by
    # the archive's pinned checksum.
    kept = BIGBENCH.path.with_name(f"{BIGBENCH.filename}.{BIGBENCH.sha256[:12]}.instructioneval.json")
    try:
        saved = json.loads(kept.read_text(encoding="utf-8"))
        if saved.get("layout") == _KEPT_LAYOUT:
            return dict(saved["fields"]), dict(saved["problems"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        archive = verify_source(BIGBENCH)
    except DataMissing as exc:
        return {}, {"": f"which needs BIG-bench's task.json files (IRH_BIGBENCH=PATH to a copy, or the sdist: {exc})"}
    fields, problems = _task_json_from(archive)
    try:
        atomic_write_json(kept, {"layout": _KEPT_LAYOUT, "fields": fields, "problems": problems})
    except OSError:
        pass  # a read-only cache only costs the next import the same seconds
    return fields, problems


@lru_cache(maxsize=2)
def _task_json_from(archive: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The fields of every task.json of the study's BIG-bench tasks, by folder: ``<task>``
    (the task's own, also where it has subtasks) and ``<task>/<subtask>``."""
    from harness.data.bigbench import iter_task_json

    wanted = {target.removeprefix("bbl.").split(".")[0] for _, kind, target, _ in STUDY_TASKS.values() if kind == "task"}
    fields: dict[str, dict[str, str]] = {}
    for task, subtask, spec in iter_task_json(archive, wanted):
        fields[task if subtask == task else f"{task}/{subtask}"] = _preprocessor_fields(spec)
    return fields, {}


class DataFolders(NamedTuple):
    """What a BIG-bench config's ``load_data`` reads, relative to the task's folder ("" for
    the folder itself): the documents' subtask folder, and the folder whose task.json its
    Preprocessor reads (None where it passes none)."""

    documents: str
    task_json: str | None


def _joined_folder(node: ast.expr) -> str | None:
    """``x`` for ``os.path.join(input_dir, "x")``, else None."""
    if (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) == "os.path.join"
        and len(node.args) == 2
        and ast.unparse(node.args[0]) == "input_dir"
        and _literal(node.args[1]) is not None
    ):
        return _literal(node.args[1])
    return None


def read_data_folders(task_file: Path) -> DataFolders:
    """Which subtask's documents and which task.json a config's ``load_data`` uses.

    ``input_dir = os.path.join(input_dir, "boolean")`` narrows the documents to a subtask;
    the Preprocessor's fourth argument (``input_dir``, or ``os.path.join(input_dir,
    "age_ambig")``) names the task.json its default prompts read. A config without
    ``load_data`` reads the task's own folder.

    Raises:
        Problem: ``load_data`` sets its folders in code this reading does not follow.
    """
    module = ast.parse(task_file.read_text(encoding="utf-8"), filename=str(task_file))
    func = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "load_data"), None)
    if func is None:
        return DataFolders("", "")
    documents = ""
    for stmt in func.body:
        if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["input_dir"]:
            folder = _joined_folder(stmt.value)
            if folder is None:
                raise Problem(f"load_data sets input_dir = {ast.unparse(stmt.value)[:50]}, which the importer does not follow")
            documents = f"{documents}/{folder}".strip("/")
    task_json: str | None = documents
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("Preprocessor"):
            given = node.args[3] if len(node.args) > 3 else next((k.value for k in node.keywords if k.arg == "input_dir"), None)
            if given is None:
                task_json = None
            elif ast.unparse(given) == "input_dir":
                task_json = documents
            else:
                folder = _joined_folder(given)
                if folder is None:
                    raise Problem(f"load_data passes its Preprocessor {ast.unparse(given)[:50]}, which the importer does not follow")
                task_json = f"{documents}/{folder}".strip("/")
    return DataFolders(documents, task_json)


def _task_labels() -> dict[str, tuple[str, ...]]:
    """Fixed labels of the registry's tasks (none for a registry without tasks/)."""
    from harness.registry import default_root, load_tasks

    return {task.id: tuple(task.labels) for task in load_tasks(default_root(), []).values() if task.labels}


def import_instructioneval(root: Path) -> ImportResult:
    """Read the study's zero-shot instructions from an InstructionEval checkout.

    Args:
        root: the checkout (the folder holding ``instructions.json`` and ``configs/``).

    Raises:
        FileNotFoundError: ``root`` lacks ``configs/`` or ``instructions.json``.
    """
    configs = root / "configs"
    listing = root / "instructions.json"
    if not configs.is_dir() or not listing.is_file():
        raise FileNotFoundError(f"{root} has no configs/ folder or instructions.json; pass the root of an InstructionEval checkout")
    revision = _git_revision(root)
    label = f"InstructionEval@{revision}" if revision else "InstructionEval"
    result = ImportResult("instructioneval", f"{label} ({root})")
    try:
        listed = json.loads(listing.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{listing}: not JSON ({exc})") from exc
    task_json, task_json_problem = _read_task_json()
    for name, (target, where) in study_targets(configs, _task_labels()).items():
        ids = listed.get(name)
        if not isinstance(ids, list):
            continue  # not in this checkout's listing: nothing to import or skip
        if isinstance(where, str):
            for ie_id in ids:
                result.skip(f"{name}:{ie_id}", where)
            continue
        try:
            config = read_config(configs, where)
            if target.kind == "task":
                target = _with_task_json(target, read_data_folders(where), task_json, task_json_problem)
        except (SyntaxError, UnicodeDecodeError, OSError) as exc:
            for ie_id in ids:
                result.skip(f"{name}:{ie_id}", f"config does not parse: {type(exc).__name__}")
            continue
        except Problem as exc:
            for ie_id in ids:
                result.skip(f"{name}:{ie_id}", str(exc))
            continue
        for ie_id in ids:
            try:
                instruction = _entry(config, target, str(ie_id), label)
            except Problem as exc:
                result.skip(f"{name}:{ie_id}", str(exc))
                continue
            except ValueError as exc:
                result.skip(f"{name}:{ie_id}", f"malformed template: {exc}")
                continue
            rel = f"{label}:configs/{where.relative_to(configs).as_posix()}"
            # Identity is the listing and the study's id (for this task): the registry's
            # duplicate rules leave the study's own distinct instructions alone.
            upstream = (f"{label}:instructions.json", f"{name}:{ie_id}")
            result.add(RegisteredInstruction(instruction, rel, target.kind, target.target, upstream=upstream))
    return result


def _with_task_json(target: Target, folders: DataFolders, task_json: Mapping[str, dict[str, str]], problems: Mapping[str, str]) -> Target:
    """The target with the task.json fields its config's Preprocessor reads.

    Raises:
        Problem: the config reads the documents of another subtask than the target holds.
    """
    task, _, subtask = target.target.removeprefix("bbl.").partition(".")
    if folders.documents != subtask:
        read = f"{task}/{folders.documents}" if folders.documents else f"all of {task}"
        holds = f"only {task}/{subtask}" if subtask else f"all of {task}"
        raise Problem(f"InstructionEval's load_data reads the documents of {read}, but {target.target} holds {holds}")
    if folders.task_json is None:
        return replace(target, task_json_problem="which its config does not pass to the Preprocessor")
    folder = f"{task}/{folders.task_json}" if folders.task_json else task
    if folder in task_json:
        return replace(target, task_json=task_json[folder])
    why = problems.get(folder) or problems.get("") or f"which the bigbench sdist does not hold ({folder}/task.json)"
    return replace(target, task_json_problem=why)


def skip_target(item: str) -> str | None:
    """The target (task or family) of a skipped item of this importer, for per-task counts.

    Items are ``<instructions.json task>:<id>`` (skipped while reading) or a phrasing id
    ``ie.<task>.<id>`` (skipped by the registry's checks).
    """
    by_name = {name: target for name, (_, _, target, _) in STUDY_TASKS.items()}
    by_stem = {stem: target for _, (_, _, target, stem) in STUDY_TASKS.items()}
    head = item.split(":", 1)[0].split("#")[-1]
    if head in by_name:
        return by_name[head]
    parts = item.split(".")
    if len(parts) >= 3 and parts[0] == "ie":
        return by_stem.get(parts[1])
    return None
