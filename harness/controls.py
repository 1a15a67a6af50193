"""Control phrasings: what a score means when the instruction is missing, negated, noise, or
another task's.

For any task, four phrasings are generated from the registry (nothing is stored):

- ``ctl-none``: no instruction, the document alone (its fields, and the options as plain
  lines where the task's original phrasing shows them), options scored as their text;
- ``ctl-negated``: the original phrasing with its instruction negated (its first imperative
  verb becomes "Do not <verb>", or, lacking one, "Do not do the following task." opens it);
- ``ctl-random``: as many random words as the original phrasing's instruction has, drawn
  (seeded) from the other tasks' phrasings, then the document alone;
- ``ctl-other-task``: the instruction words of another task's original phrasing (seeded
  choice), then the document alone.

The original is the task's first phrasing in registry order (as for `irh tune`). Controls
carry ``status: control``: runs score them (``irh run --controls``), but no across-phrasing
or seen-vs-unseen statistic counts them; reports show them beside the valid phrasings' range.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Iterable
from types import MappingProxyType

from harness.registry import RegisteredInstruction, Registry
from harness.render import TemplateProblem, template_fields
from harness.schema import Instruction, Provenance, TaskSpec

CONTROL_KINDS = ("none", "negated", "random", "other-task")
CONTROL_FILE = "<generated: harness/controls.py>"
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_WORD = re.compile(r"[A-Za-z][a-z]+")
#: Imperative openings that the negated control turns into "Do not ...".
_VERBS = (
    "Answer|Choose|Select|Pick|Decide|Determine|Identify|Classify|Read|Reply|Respond|Tell|Say|Give|Write|Name|"
    "Think|Consider|Evaluate|Judge|Assess|Find|Indicate|State|Complete|Predict|Translate|Output|Provide|Label|"
    "Solve|Explain|Look|Check|Figure|Guess|Match|Use|Return|Fill|Describe|Rate|Mark|Categorize|Categorise"
)
_IMPERATIVE = re.compile(rf"(^|\n)[ \t]*({_VERBS})\b(?=[ \t]+\S)")


def instruction_words(text: str) -> list[str]:
    """The words a template writes itself (everything outside its jinja tags)."""
    return _JINJA.sub(" ", text).split()


def document_template(task: TaskSpec, original: Instruction) -> str:
    """The document alone: the fields the original phrasing shows, one per line (options as
    plain lines, never lettered)."""
    try:
        used = template_fields(original.text)
    except TemplateProblem:
        used = set(task.fields)
    fields = [f for f in task.fields if f in used and f != "choices"] or [f for f in task.fields if f != "choices"]
    lines = [f"{{{{ {f} }}}}" for f in fields]
    if "choices" in used:
        lines.append('{{ choices | join("\\n") }}')
    return "\n".join(lines)


def negate(text: str) -> str:
    """The template with its instruction negated (see the module docstring)."""
    parts = _JINJA.split(text)
    tags = _JINJA.findall(text)
    for i, part in enumerate(parts):
        match = _IMPERATIVE.search(part)
        if match:
            verb = match.group(2)
            parts[i] = part[: match.start(2)] + "Do not " + verb.lower() + part[match.end(2) :]
            return "".join(p + (tags[j] if j < len(tags) else "") for j, p in enumerate(parts))
    return "Do not do the following task.\n" + text


def _clean(words: Iterable[str]) -> str:
    return " ".join(w.replace("{", "").replace("}", "") for w in words).strip()


def _control(
    task: TaskSpec, original: RegisteredInstruction, kind: str, text: str, answer_choices: object, detail: str
) -> RegisteredInstruction:
    inst = original.instruction
    instruction = Instruction(
        id=f"{task.id}.ctl-{kind}",
        text=text,
        answer_choices=answer_choices,  # type: ignore[arg-type]
        target_delimiter=inst.target_delimiter,
        until=inst.until,
        provenance=Provenance(status="control", source=f"harness/controls.py: {kind} control of {original.id}"),
        notes=detail,
    )
    return RegisteredInstruction(instruction, CONTROL_FILE, "task", task.id)


def control_instructions(registry: Registry, task: TaskSpec, seed: int = 0) -> list[RegisteredInstruction]:
    """The four control phrasings of one task (empty when the task has no phrasing at all)."""
    entries = [e for e in registry.instructions_for(task.id) if e.instruction.provenance.status != "control"]
    if not entries:
        return []
    original = entries[0]
    inst = original.instruction
    document = document_template(task, inst)
    n_words = max(1, len(instruction_words(inst.text)))
    rng = random.Random(f"controls:{seed}:{task.id}")
    own = {e.id for e in entries}
    others = [t for t in sorted(registry.tasks) if t != task.id and registry.tasks[t].family != task.family]
    others = others or [t for t in sorted(registry.tasks) if t != task.id]
    vocabulary = sorted(
        {
            w.lower()
            for e in registry.instructions.values()
            if e.id not in own and e.file != CONTROL_FILE
            for w in _WORD.findall(_JINJA.sub(" ", e.instruction.text))
        }
    )
    random_words = _clean(rng.choice(vocabulary) for _ in range(n_words)) if vocabulary else "lorem"
    other_text, other_id = "", ""
    for other in rng.sample(others, len(others)):
        pool = [e for e in registry.instructions_for(other) if e.instruction.provenance.status != "control" and e.id not in own]
        if pool and instruction_words(pool[0].instruction.text):
            other_text, other_id = _clean(instruction_words(pool[0].instruction.text)), pool[0].id
            break
    controls = [
        _control(task, original, "none", document, "text", "the document alone, no instruction"),
        _control(task, original, "negated", negate(inst.text), inst.answer_choices, f"{original.id} with its instruction negated"),
        _control(task, original, "random", f"{random_words}\n{document}", "text", f"{n_words} random words, then the document"),
    ]
    if other_text:
        controls.append(
            _control(
                task, original, "other-task", f"{other_text}\n{document}", "text", f"the instruction words of {other_id}, then the document"
            )
        )
    return controls


def with_controls(registry: Registry, tasks: Iterable[TaskSpec], seed: int = 0) -> Registry:
    """The registry plus the control phrasings of the given tasks."""
    added = {c.id: c for task in tasks for c in control_instructions(registry, task, seed)}
    return dataclasses.replace(registry, instructions=MappingProxyType({**registry.instructions, **added}))


def is_control_id(instruction_id: str) -> bool:
    """Whether an id names a control phrasing (``<task>.ctl-<kind>``)."""
    return any(instruction_id.endswith(f".ctl-{kind}") for kind in CONTROL_KINDS)
