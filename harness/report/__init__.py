"""Reports from run folders or imported results: Markdown, self-contained HTML, CSV, JSON,
and model comparisons."""

import sys
import types
from typing import Any


class _CallableReportPackage(types.ModuleType):
    """``harness.report(...)`` is the public API's report function, while ``harness.report``
    stays the package of report writers: importing a submodule rebinds the name to the
    package, so the package itself answers the call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from harness.api import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableReportPackage
