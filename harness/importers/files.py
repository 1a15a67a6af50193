"""Phrasings from plain JSONL, CSV or YAML files (``--observed file=PATH``).

One phrasing per row (JSONL line, CSV row, or YAML list item; a YAML file may also be a
mapping with a ``phrasings`` list). Columns / keys:

- ``id``: stable, readable, unique (``[a-z0-9][a-z0-9_.-]*``);
- exactly one of ``task``, ``family``, ``category``: what the phrasing applies to;
- ``text``: the jinja template over the task's fields;
- ``answer_choices`` (optional): ``text``, ``letters``, ``numbers``, or a mapping
  label -> word (in CSV: a JSON object, e.g. ``{"entailment": "yes", ...}``);
- ``status``: ``observed`` or ``unobserved``;
- ``collections``: a list (CSV: comma-separated) of collection names from harness/schema.py,
  required for observed phrasings;
- ``source``, ``author``: where it comes from / who wrote it;
- optional ``target_delimiter``, ``notes``.

Every row is validated like a phrasing file entry; a row that fails is skipped with the reason.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.importers.result import ImportResult
from harness.registry import RegisteredInstruction
from harness.schema import Instruction

TARGET_KEYS = ("task", "family", "category")
KNOWN_KEYS = {"id", "text", "answer_choices", "target_delimiter", "notes", "status", "collections", "source", "author", *TARGET_KEYS}


def _rows(path: Path) -> list[tuple[str, Any]]:
    """(location, row) pairs of a phrasing file, whatever its format."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        out: list[tuple[str, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append((f"line {number}", ValueError(f"not JSON: {exc.msg}")))
        return out
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        return [(f"row {number}", row) for number, row in enumerate(reader, start=2)]
    if suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
        if isinstance(data, dict):
            data = data.get("phrasings")
        if not isinstance(data, list):
            raise ValueError(f"{path}: a YAML phrasing file is a list of rows, or a mapping with a `phrasings` list")
        return [(f"item {number}", row) for number, row in enumerate(data, start=1)]
    raise ValueError(f"{path}: unknown phrasing file type {suffix!r}; use .jsonl, .csv, .yaml or .yml")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Drop empty CSV cells and decode the CSV spellings of lists and mappings."""
    out = {k: v for k, v in row.items() if v is not None and v != ""}
    choices = out.get("answer_choices")
    if isinstance(choices, str) and choices.strip().startswith("{"):
        try:
            out["answer_choices"] = json.loads(choices)
        except json.JSONDecodeError:
            pass  # left as is: validation names the problem
    collections = out.get("collections")
    if isinstance(collections, str):
        out["collections"] = [c.strip() for c in collections.split(",") if c.strip()]
    return out


def _pydantic_reason(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"invalid {where}: {err['msg']}" if where else f"invalid: {err['msg']}"


def import_file(path: Path) -> ImportResult:
    """Read phrasings from one JSONL, CSV or YAML file.

    Raises:
        ValueError: the file type is unknown or a YAML file has no list of rows.
        OSError: the file cannot be read.
    """
    result = ImportResult("file", str(path))
    for where, raw in _rows(path):
        item = f"{path.name} {where}"
        if isinstance(raw, Exception):
            result.skip(item, str(raw))
            continue
        if not isinstance(raw, dict):
            result.skip(item, "not a mapping of column -> value")
            continue
        row = _clean(raw)
        if "id" in row:
            item = f"{item} ({row['id']})"
        unknown = sorted(set(row) - KNOWN_KEYS)
        if unknown:
            result.skip(item, f"unknown column(s) {unknown}")
            continue
        targets = [k for k in TARGET_KEYS if k in row]
        if len(targets) != 1:
            result.skip(item, "give exactly one of task, family or category")
            continue
        kind = targets[0]
        provenance = {k: row.pop(k) for k in ("status", "collections", "source", "author") if k in row}
        target = str(row.pop(kind))
        try:
            instruction = Instruction.model_validate({**row, "provenance": provenance})
        except ValidationError as exc:
            result.skip(item, _pydantic_reason(exc))
            continue
        result.add(RegisteredInstruction(instruction, str(path), kind, target))
    return result
