"""Workload (a): the README's many-option registry workload, at a size for the idle 2-core run.

language_identification, symbol_interpretation and novel_concepts (5-11 multi-token options),
the registry's phrasings in the model's chat template, sent in `irh run`'s calls (one per
phrasing and chunk of 32 documents). The README's speed table used 10 phrasings x 20
documents; this size keeps the five workloads' script within ~25 minutes.
"""

REGISTRY = {
    "tasks": ["bbl.language_identification", "bbl.symbol_interpretation", "bbl.novel_concepts"],
    "phrasings": 5,
    "limit": 6,
    "seed": 1234,
}
