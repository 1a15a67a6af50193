"""Number formatting shared by the Markdown, HTML, CSV and JSON writers, and CSV text itself."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Any

#: Characters with a Markdown meaning anywhere in a line (backslash first, so escapes are not doubled).
_MD_BACKSLASH = str.maketrans({c: "\\" + c for c in "\\`*[]|~"})
#: A start that would turn a line (or a list item's text) into a heading, list, quote, rule or ordered item.
_MD_LEADING = re.compile(r"^(\s*\d*)([#+=\-.)])")
#: Emphasis underscores: not between two word characters (``nli_rte`` stays as it is).
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def is_missing(value: Any) -> bool:
    """True for None and NaN (a statistic that could not be computed)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: fixed digits, '–' where the statistic is missing."""
    if is_missing(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.{digits}f}"
        # -0.0004 is not a negative effect: print it as the zero it rounds to.
        return text[1:] if text.startswith("-") and not text.strip("-0.") else text
    return str(value)


def md_text(value: Any) -> str:
    """Text from data (ids, model names, notes, imported fields) made inert for a Markdown line or table cell.

    HTML is escaped as entities (no raw ``<script>`` reaches a renderer), Markdown punctuation
    (``|`` that would split a table cell, backticks, emphasis, links) is backslash-escaped, a
    leading ``#``/``-``/``+``/``1.`` is escaped so the text cannot start a heading or list, and
    newlines become ``<br>`` so a value stays in its table row.
    """
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.translate(_MD_BACKSLASH)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    text = _MD_LEADING.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def fmt_p(value: Any) -> str:
    """A p-value: three significant digits, '<0.001' below that."""
    if is_missing(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def fmt_ci(low: Any, high: Any, digits: int = 3) -> str:
    """A confidence interval as '[low, high]', '–' where missing."""
    if is_missing(low) or is_missing(high):
        return "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def jsonable(value: Any) -> Any:
    """NaN to None (JSON has no NaN), numpy scalars to Python, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def csv_cell(value: Any) -> Any:
    """A CSV cell: empty for missing values."""
    return "" if is_missing(value) else value


def csv_bytes(rows: Sequence[tuple[Any, ...]], header: Sequence[str]) -> bytes:
    """CSV text with missing values (None, NaN) as empty cells."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")
