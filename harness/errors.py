"""The project's one base class for problems a user can fix.

Every such exception says what to do in one line. The ``irh`` command prints it as
``Error: ...`` (exit status 1) instead of a traceback; the Python API raises it as it is. Each
subclass keeps the built-in base it had (``ValueError``, ``RuntimeError``, ``KeyError``), so
code that caught those still does.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix; its message says how, in one line."""


class UnknownName(HarnessError, KeyError):
    """A task or phrasing id the registry does not hold (a failed lookup, hence a KeyError)."""

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its key; this message is a sentence.
        return str(self.args[0]) if self.args else ""
