"""Workload (b): the README's default registry workload (`irh bench`'s own default tasks).

logical_deduction, conceptual_combinations and strange_stories (3-7 options), the registry's
phrasings in the model's chat template, in `irh run`'s calls. The README's speed table used 10
phrasings x 20 documents; this size keeps the five workloads' script within ~25 minutes.
"""

REGISTRY = {
    "tasks": ["bbl.logical_deduction", "bbl.conceptual_combinations", "bbl.strange_stories"],
    "phrasings": 5,
    "limit": 12,
    "seed": 1234,
}
