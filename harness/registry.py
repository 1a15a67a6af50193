"""Load and validate the task specs and phrasing files, collecting every problem at once."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError

from harness.errors import HarnessError, UnknownName
from harness.render import TemplateProblem, allowed_fields, template_fields
from harness.schema import Instruction, InstructionFile, TaskFile, TaskSpec, normalise_text

#: Normalised-text similarity (difflib ratio) at or above which two phrasings of the same
#: task are called near-duplicates. 0.95 flags phrasings that differ by a word or two in a
#: sentence-length text, and leaves alone ones that differ in structure.
NEAR_DUPLICATE_THRESHOLD = 0.95
#: A registry file larger than this is refused before it is parsed: the largest real one is
#: about 13 kB, and a huge text makes every load (and every `irh` command) crawl.
MAX_REGISTRY_FILE_BYTES = 1_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Problem(NamedTuple):
    """One validation problem, located as precisely as we can: ``file:line: id: message``."""

    file: str
    item: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.item:
            where = f"{where}: {self.item}"
        return f"{where}: {self.message}"


class RegistryError(HarnessError):
    """Raised when the registry has problems; carries all of them."""

    def __init__(self, problems: list[Problem], where: str = ""):
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        # Name the registry: a copy of the checkout and the installed one look alike.
        at = f" at {where}" if where else ""
        super().__init__(f"{len(problems)} problem(s) in the registry{at}:\n{lines}")


@dataclass(frozen=True)
class RegisteredInstruction:
    """A phrasing together with where it came from and which tasks it applies to."""

    instruction: Instruction
    file: str
    target_kind: str
    target: str
    #: Line of the phrasing in its file (None for phrasings imported at run time).
    line: int | None = None
    #: (source, id) of an imported phrasing that is one entry of a listing that names each
    #: entry (InstructionEval's ``instructions.json``: ``NIV2/QA/32`` for MMLU_General).
    #: Distinct entries of one listing are the source's own distinct instructions, kept even
    #: where their texts are alike (see :func:`distinct_upstream`).
    upstream: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return self.instruction.id

    @property
    def sha256(self) -> str:
        return text_sha256(self.instruction)


@dataclass(frozen=True)
class Registry:
    """Immutable view of all tasks and phrasings."""

    tasks: Mapping[str, TaskSpec]
    instructions: Mapping[str, RegisteredInstruction]
    #: The folder holding tasks/ and instructions/ (see :func:`find_root`).
    root: Path
    problems: tuple[Problem, ...] = field(default=())
    #: How ``root`` was chosen, in words (``IRH_REGISTRY``, the nearest folder above the
    #: working directory, the installed package's, or given by the caller); run.json records it.
    origin: str = ""

    def task(self, task_id: str) -> TaskSpec:
        try:
            return self.tasks[task_id]
        except KeyError:
            close = difflib.get_close_matches(task_id, list(self.tasks), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownName(f"unknown task {task_id!r}.{hint} See `irh list tasks`.") from None

    def instruction(self, instruction_id: str) -> RegisteredInstruction:
        try:
            return self.instructions[instruction_id]
        except KeyError:
            close = difflib.get_close_matches(instruction_id, list(self.instructions), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownName(f"unknown phrasing {instruction_id!r}.{hint} See `irh list instructions`.") from None

    def applies(self, entry: RegisteredInstruction, task: TaskSpec) -> bool:
        """Whether a phrasing can be used for a task (its target matches and its fields fit)."""
        if entry.target_kind == "task":
            return entry.target == task.id
        if entry.target_kind == "family" and entry.target != task.family:
            return False
        if entry.target_kind == "category" and entry.target != task.category:
            return False
        try:
            return template_fields(entry.instruction.text) <= allowed_fields(task)
        except TemplateProblem:
            return False

    def instructions_for(self, task_id: str) -> list[RegisteredInstruction]:
        """Every phrasing that applies to a task, in registry order."""
        task = self.task(task_id)
        return [e for e in self.instructions.values() if self.applies(e, task)]

    def digest(self) -> str:
        """A hash over every task spec and phrasing: changes whenever the registry does."""
        h = hashlib.sha256()
        for task_id in sorted(self.tasks):
            h.update(self.tasks[task_id].model_dump_json().encode())
        for inst_id in sorted(self.instructions):
            h.update(self.instructions[inst_id].instruction.model_dump_json().encode())
        return h.hexdigest()


def text_sha256(instruction: Instruction) -> str:
    """Hash of everything that changes what the model sees: template and answer style."""
    # option_count joins the hash only where set, so phrasings without it keep their hashes.
    fields = {"text", "answer_choices", "target_delimiter", "until"} | ({"option_count"} if instruction.option_count else set())
    payload = instruction.model_dump_json(include=fields)
    return hashlib.sha256(payload.encode()).hexdigest()


class RegistryRoot(NamedTuple):
    """Where the registry is, and why there (said by `irh validate` and `irh list`)."""

    path: Path
    origin: str


#: The folder this package was installed from (an editable install of a checkout).
INSTALLED_ROOT = Path(__file__).resolve().parent.parent


def find_root(cwd: Path | None = None) -> RegistryRoot:
    """The folder holding `tasks/` and `instructions/`: ``IRH_REGISTRY`` if set; else the
    nearest folder at or above the working directory that holds both; else the installed
    package's. Commands thus read the phrasings of the checkout the user stands in."""
    env = os.environ.get("IRH_REGISTRY")
    if env:
        return RegistryRoot(Path(env), "IRH_REGISTRY")
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "tasks").is_dir() and (folder / "instructions").is_dir():
            return RegistryRoot(folder, "nearest tasks/ + instructions/ at or above the working directory")
    return RegistryRoot(INSTALLED_ROOT, "the installed package's; no tasks/ + instructions/ at or above the working directory")


def default_root() -> Path:
    """The folder holding `tasks/` and `instructions/` (see :func:`find_root`)."""
    return find_root().path


class _Marks(NamedTuple):
    """Lines (1-based) of a registry file's parts, so problems can name them."""

    #: Top-level key -> line.
    keys: dict[str, int]
    #: ``instructions`` / ``tasks`` -> each entry's line and the lines of its keys.
    items: dict[str, list[tuple[int, dict[str, int]]]]

    def of(self, loc: tuple[Any, ...]) -> int | None:
        """The line of a pydantic error location, as precisely as known."""
        if len(loc) >= 2 and isinstance(loc[1], int) and loc[0] in self.items and loc[1] < len(self.items[loc[0]]):
            line, keys = self.items[loc[0]][loc[1]]
            return keys.get(str(loc[2]), line) if len(loc) > 2 else line
        return self.keys.get(str(loc[0])) if loc else None


_NO_MARKS = _Marks({}, {})


def _marks_of(node: yaml.Node | None) -> _Marks:
    if not isinstance(node, yaml.MappingNode):
        return _NO_MARKS
    keys: dict[str, int] = {}
    items: dict[str, list[tuple[int, dict[str, int]]]] = {}
    for key, value in node.value:
        name = str(key.value)
        keys[name] = key.start_mark.line + 1
        if isinstance(value, yaml.SequenceNode):
            items[name] = [
                (
                    entry.start_mark.line + 1,
                    {str(k.value): k.start_mark.line + 1 for k, _ in entry.value} if isinstance(entry, yaml.MappingNode) else {},
                )
                for entry in value.value
            ]
    return _Marks(keys, items)


_ID_LINE = re.compile(r"^\s*-?\s*id:\s*['\"]?([^'\"#\s]+)")


def _id_above(text: str, line: int) -> str:
    """The id of the phrasing (or task) whose entry holds ``line``, read from the raw text:
    a file that does not parse still names the phrasing its error is in."""
    for raw in reversed(text.splitlines()[:line]):
        match = _ID_LINE.match(raw)
        if match:
            return match.group(1)
    return ""


def _yaml_problem(rel: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return Problem(rel, "", f"YAML syntax error: {problem}")
    message = f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    line = mark.line + 1
    context = getattr(exc, "context", None)
    if context_mark is not None and context:
        # The parser fails where it gives up (often the end of the file); the construct it was
        # reading (an unclosed bracket or quote) starts where the mistake is.
        message += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
        line = min(line, context_mark.line + 1)
    return Problem(rel, _id_above(text, line), message, line)


def _read_yaml(path: Path, problems: list[Problem], rel: str) -> tuple[Any, _Marks]:
    """Parse one registry file, keeping the line of each part; on failure add its problem."""
    try:
        size = path.stat().st_size
        if size > MAX_REGISTRY_FILE_BYTES:
            problems.append(
                Problem(
                    rel,
                    "",
                    f"file is {size:,} bytes, more than the {MAX_REGISTRY_FILE_BYTES:,} a registry file may have; "
                    "not read. Split its phrasings over several files, or shorten them",
                )
            )
            return None, _NO_MARKS
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(rel, "", f"cannot read: {exc}"))
        return None, _NO_MARKS
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(
            Problem(
                rel,
                "",
                f"not UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason}); save the file as UTF-8",
                line,
            )
        )
        return None, _NO_MARKS
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        problems.append(_yaml_problem(rel, text, exc))
        return None, _NO_MARKS
    finally:
        loader.dispose()
    duplicates = list(_duplicate_keys(node))
    for key, line, first in duplicates:
        problems.append(Problem(rel, _id_above(text, line), f"key {key!r} given twice (lines {first} and {line}); keep one", line))
    if duplicates:
        return None, _NO_MARKS
    return data, _marks_of(node)


def _duplicate_keys(node: yaml.Node | None) -> Iterator[tuple[str, int, int]]:
    """(key, line, line of its first use) for every key that a YAML mapping repeats: a
    parser keeps the last one silently, so a phrasing with two ``text:`` would lose one."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in first:
                yield name, line, first[name]
            first.setdefault(name, line)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


def _pydantic_problems(rel: str, data: Any, exc: ValidationError, prefix: tuple[Any, ...] = (), marks: _Marks = _NO_MARKS) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        line = marks.of(loc)
        item = ""
        # Name the phrasing or task by its id where the error sits inside a list entry.
        if len(loc) >= 2 and loc[0] in ("instructions", "tasks") and isinstance(loc[1], int):
            try:
                item = str(data[loc[0]][loc[1]].get("id", f"{loc[0]}[{loc[1]}]"))
            except (KeyError, IndexError, TypeError, AttributeError):
                item = f"{loc[0]}[{loc[1]}]"
            loc = loc[2:]
        field_path = ".".join(str(p) for p in loc)
        msg = err["msg"]
        out.append(Problem(rel, item, f"{field_path}: {msg}" if field_path else msg, line))
    return out


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_tasks(root: Path, problems: list[Problem]) -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for path in _yaml_files(root / "tasks"):
        rel = str(path.relative_to(root))
        data, marks = _read_yaml(path, problems, rel)
        if data is None:
            continue
        try:
            parsed = TaskFile.model_validate(data)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(rel, data, exc, marks=marks))
            continue
        for i, spec in enumerate(parsed.tasks):
            if spec.id in tasks:
                problems.append(Problem(rel, spec.id, "duplicate task id", marks.of(("tasks", i))))
            tasks[spec.id] = spec
    return tasks


def _check_instruction(entry: RegisteredInstruction, tasks: dict[str, TaskSpec], problems: list[Problem]) -> list[TaskSpec]:
    """Check one phrasing against the tasks it targets; return those tasks."""
    inst = entry.instruction
    if entry.target_kind == "task":
        targets = [tasks[entry.target]] if entry.target in tasks else []
    elif entry.target_kind == "family":
        targets = [t for t in tasks.values() if t.family == entry.target]
    else:
        targets = [t for t in tasks.values() if t.category == entry.target]
    if not targets:
        problems.append(Problem(entry.file, inst.id, f"no task matches {entry.target_kind} {entry.target!r}", entry.line))
        return []
    try:
        used = template_fields(inst.text)
    except TemplateProblem as exc:
        problems.append(Problem(entry.file, inst.id, str(exc), entry.line))
        return []
    if entry.target_kind != "category":
        # Family and task phrasings must fit every task they target; category phrasings
        # apply only where they fit, but must fit at least one.
        for task in targets:
            unknown = sorted(used - allowed_fields(task))
            if unknown:
                problems.append(
                    Problem(
                        entry.file,
                        inst.id,
                        f"unknown placeholder(s) {unknown} for task {task.id}; allowed: {sorted(allowed_fields(task))}",
                        entry.line,
                    )
                )
                return []
    else:
        targets = [t for t in targets if used <= allowed_fields(t)]
        if not targets:
            problems.append(Problem(entry.file, inst.id, f"placeholders {sorted(used)} fit no task of this category", entry.line))
            return []
    for task in targets:
        if task.output_type == "generate_until" and inst.answer_choices != "text":
            problems.append(Problem(entry.file, inst.id, "answer_choices only applies to multiple-choice tasks", entry.line))
        if isinstance(inst.answer_choices, dict):
            if not task.labels:
                problems.append(
                    Problem(entry.file, inst.id, f"a verbaliser needs a task with fixed labels; {task.id} has none", entry.line)
                )
            elif set(inst.answer_choices) != set(task.labels):
                problems.append(
                    Problem(
                        entry.file,
                        inst.id,
                        f"verbaliser keys {sorted(inst.answer_choices)} must be the labels of {task.id}: {task.labels}",
                        entry.line,
                    )
                )
        if inst.until is not None and task.output_type != "generate_until":
            problems.append(Problem(entry.file, inst.id, "`until` only applies to generation tasks", entry.line))
        count = inst.option_count
        if count is not None and (task.output_type != "multiple_choice" or (task.labels and len(task.labels) != count)):
            problems.append(Problem(entry.file, inst.id, f"option_count {count} matches no document of {task.id}", entry.line))
    return targets


def distinct_upstream(a: RegisteredInstruction, b: RegisteredInstruction) -> bool:
    """Whether ``a`` and ``b`` are two distinct entries of one source's own listing.

    Such a pair is exempt from the same-text and near-duplicate rules: the source lists them
    as different instructions on purpose (InstructionEval runs Alpaca/QA/4 and /10, near
    identical, as two of its instructions), and results must join on its ids. The rules
    still apply to written phrasings and between sources.
    """
    return a.upstream is not None and b.upstream is not None and a.upstream[0] == b.upstream[0] and a.upstream[1] != b.upstream[1]


def _check_duplicates(entries: list[RegisteredInstruction], problems: list[Problem], by_task: dict[str, list[str]]) -> None:
    seen_text: dict[str, list[RegisteredInstruction]] = {}
    for entry in entries:
        norm = normalise_text(entry.instruction.text)
        same = [e for e in seen_text.get(norm, []) if not distinct_upstream(e, entry)]
        if same:
            problems.append(Problem(entry.file, entry.id, f"same text as {same[0].id}", entry.line))
        else:
            seen_text.setdefault(norm, []).append(entry)
    index = {e.id: e for e in entries}
    reported: set[tuple[str, str]] = set()
    # Tasks of one family share their phrasing list: compare each distinct list once.
    for ids in {tuple(v) for v in by_task.values()}:
        texts = [(i, normalise_text(index[i].instruction.text)) for i in ids]
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                (id_a, ta), (id_b, tb) = texts[a], texts[b]
                if ta == tb or (id_a, id_b) in reported or distinct_upstream(index[id_a], index[id_b]):
                    continue
                matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
                if matcher.real_quick_ratio() < NEAR_DUPLICATE_THRESHOLD or matcher.quick_ratio() < NEAR_DUPLICATE_THRESHOLD:
                    continue
                ratio = matcher.ratio()
                if ratio >= NEAR_DUPLICATE_THRESHOLD:
                    reported.add((id_a, id_b))
                    problems.append(
                        Problem(
                            index[id_b].file,
                            id_b,
                            f"near-duplicate of {id_a} (similarity {ratio:.2f} >= {NEAR_DUPLICATE_THRESHOLD})",
                            index[id_b].line,
                        )
                    )


def _parse_instruction_file(rel: str, data: Any, problems: list[Problem], marks: _Marks = _NO_MARKS) -> list[RegisteredInstruction]:
    """Validate the file header, then each phrasing on its own, so one bad phrasing does not
    hide the problems (or the good phrasings) of the rest of the file."""
    if not isinstance(data, dict):
        problems.append(Problem(rel, "", "expected a mapping with schema_version, task|family|category and instructions"))
        return []
    raw = data.get("instructions")
    try:
        header = InstructionFile.model_validate({**data, "instructions": []})
    except ValidationError as exc:
        problems.extend(_pydantic_problems(rel, data, exc, marks=marks))
        return []
    if not isinstance(raw, list):
        problems.append(Problem(rel, "", "instructions: expected a list of phrasings", marks.of(("instructions",))))
        return []
    kind, name = header.target
    out = []
    for i, item in enumerate(raw):
        line = marks.of(("instructions", i))
        try:
            out.append(RegisteredInstruction(Instruction.model_validate(item), rel, kind, name, line))
        except ValidationError as exc:
            problems.extend(_pydantic_problems(rel, {"instructions": raw}, exc, prefix=("instructions", i), marks=marks))
    return out


def load_registry(root: Path | None = None, *, strict: bool = True, extra: Iterable[RegisteredInstruction] = ()) -> Registry:
    """Load every task spec and phrasing under ``root`` and validate them together.

    Args:
        root: folder holding ``tasks/`` and ``instructions/``; see :func:`find_root`.
        strict: raise :class:`RegistryError` listing every problem (else return them).
        extra: phrasings from importers, validated along with the files.
    """
    found = find_root()
    if root is None:
        root, origin = found
    else:
        root = Path(root)
        # Callers that resolved the default themselves (importers) still report how.
        origin = found.origin if root.resolve() == found.path.resolve() else "given by the caller"
    problems: list[Problem] = []
    if not (root / "tasks").is_dir():
        problems.append(Problem(str(root), "", "no tasks/ folder; set IRH_REGISTRY to the folder holding tasks/ and instructions/"))
    tasks = load_tasks(root, problems)
    entries: list[RegisteredInstruction] = []
    for path in _yaml_files(root / "instructions"):
        rel = str(path.relative_to(root))
        data, marks = _read_yaml(path, problems, rel)
        if data is None:
            continue
        entries.extend(_parse_instruction_file(rel, data, problems, marks))
    entries.extend(extra)

    instructions: dict[str, RegisteredInstruction] = {}
    by_task: dict[str, list[str]] = {}
    for entry in entries:
        if entry.id in instructions:
            first = instructions[entry.id]
            also = f"{first.file}:{first.line}" if first.line else first.file
            problems.append(Problem(entry.file, entry.id, f"duplicate id (also in {also})", entry.line))
            continue
        instructions[entry.id] = entry
        for task in _check_instruction(entry, tasks, problems):
            by_task.setdefault(task.id, []).append(entry.id)
    _check_duplicates(list(instructions.values()), problems, by_task)
    if problems and strict:
        raise RegistryError(problems, f"{root} ({origin})")
    return Registry(
        tasks=MappingProxyType(tasks),
        instructions=MappingProxyType(instructions),
        root=root,
        problems=tuple(problems),
        origin=origin,
    )


def example_document(task: TaskSpec, options: int | None = None) -> dict[str, Any]:
    """A stand-in document with every declared field, for checking templates without data
    (``options``: how many options, where the task has no fixed labels; 4 by default)."""
    n = len(task.labels) if task.labels else options or 4
    choices = list(task.labels) if task.labels else [f"option text {i + 1}" for i in range(n)]
    doc: dict[str, Any] = {
        "id": "example/0",
        "fields": {name: f"<{name}>" for name in task.fields if name != "choices"},
        "choices": choices,
        "scores": [1.0] + [0.0] * (n - 1),
        "targets": ["<target>"],
    }
    return doc


def _reachability_problem(instruction: Instruction, text: str, options: list[str]) -> str | None:
    """Why the scored options cannot be reached from this prompt, or None if they can."""
    import re

    style = instruction.answer_choices
    if style in ("letters", "lowercase", "numbers"):
        missing = [o for o in options if not re.search(rf"(?<![A-Za-z0-9]){re.escape(o)}(?![A-Za-z0-9])", text)]
        if missing:
            return f"answers are {style} but the prompt never shows {missing}"
    elif isinstance(style, dict):
        lowered = text.lower()
        missing = [w for w in options if w.lower() not in lowered]
        if missing:
            return f"verbaliser word(s) {missing} never appear in the prompt, so the model cannot know them"
    return None


def check_renders(registry: Registry, documents: Mapping[str, list[dict[str, Any]]] | None = None) -> list[Problem]:
    """Render every phrasing on documents of each task it applies to, and check its options.

    Args:
        registry: the loaded registry.
        documents: real documents per task id (e.g. the first few of the cache); tasks not
            given are checked on :func:`example_document`.
    """
    from harness.render import render_prompt

    problems: list[Problem] = []
    reported: set[str] = set()
    for task in registry.tasks.values():
        docs = (documents or {}).get(task.id) or [example_document(task)]
        for entry in registry.instructions_for(task.id):
            if entry.id in reported:
                continue
            count = entry.instruction.option_count
            # A phrasing for documents with N options is checked on those (a stand-in if none).
            applicable = [d for d in docs if entry.instruction.applies_to(d)] or [example_document(task, count)]
            for doc in applicable:
                try:
                    prompt = render_prompt(entry.instruction, task, doc)
                    render_prompt(entry.instruction, task, doc, "system")
                except (TemplateProblem, KeyError) as exc:
                    problems.append(Problem(entry.file, entry.id, f"does not render on {task.id} document {doc['id']}: {exc}", entry.line))
                    reported.add(entry.id)
                    break
                if not prompt.user.strip():
                    problems.append(Problem(entry.file, entry.id, f"renders to an empty prompt on {task.id}", entry.line))
                    reported.add(entry.id)
                    break
                # An imported phrasing with an upstream id is kept as its study scored it, even where
                # its answer words are not in the prompt (e.g. a yes/no question scored on "Yes"/"No"):
                # the check is a rule for phrasings written here, not a fault in someone's data.
                text = prompt.system + "\n" + prompt.user
                why = None if entry.upstream else _reachability_problem(entry.instruction, text, prompt.options)
                if why:
                    problems.append(Problem(entry.file, entry.id, f"{task.id} document {doc['id']}: {why}", entry.line))
                    reported.add(entry.id)
                    break
    return problems
