"""Number formatting shared by the Markdown, HTML, CSV and JSON writers."""

from __future__ import annotations

import math
from typing import Any


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
        return f"{value:.{digits}f}"
    return str(value)


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
