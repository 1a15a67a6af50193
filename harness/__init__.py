"""instruction-robustness: how much does an instruction-tuned model depend on the wording?"""

from __future__ import annotations

__version__ = "0.1.0"
