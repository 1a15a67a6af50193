"""instruction-robustness: how much does an instruction-tuned model depend on the wording?"""

from __future__ import annotations

import os
import sys
from typing import Any

__version__ = "0.1.0"

# MKL's float32 matrix products sum in an order that depends on the number of threads, so one
# process with two threads and two processes with one each (``--processes 2``) would give
# numbers that differ in the last bits. Strict conditional numerical reproducibility makes
# them independent of the thread count at no measured cost (README, "Reliability"). MKL reads
# it when it first runs, which is after this import in every irh entry point; a value the user
# set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

#: The public API (harness/api.py), imported on first use so that `import harness` stays light.
_API = ("run", "resume", "compare", "load_results", "RunResult", "RunStopped", "InvalidRequest")


def __getattr__(name: str) -> Any:
    if name in _API:
        from harness import api

        return getattr(api, name)
    if name == "report":
        # `harness.report` is also the subpackage of report writers; the package is callable
        # (harness/report/__init__.py) and calls `harness.api.report`.
        import harness.report  # noqa: F401  (loads the package)

        return sys.modules["harness.report"]
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = ["__version__", *_API, "report"]
