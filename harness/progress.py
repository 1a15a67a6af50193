"""Progress bars for the command line: a tqdm bar on stderr behind the ``update(done, total)``
callable (with ``.close()``) that the API's ``progress=`` factories return."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(desc: str, unit: str = "sample", leave: bool = True) -> Any:
    """A tqdm bar on stderr as an ``update(done, total)`` callable (with ``.close()``)."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=leave)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update
