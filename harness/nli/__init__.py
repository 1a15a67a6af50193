"""The NLI distribution-shift study (``irh nli``).

A model is fine-tuned for NLI on a fixed budget of in-distribution examples, part of which is
replaced by selected or synthetic examples; each variant is then scored in distribution and on
out-of-distribution sets grouped into *challenging* and *standard*.

Rooms: ``examples`` (the record every stage passes on), ``suite`` (the sets, their label
mappings and groups), ``select`` (the budget and the selection strategies), ``synthetic``
(examples the model writes, with their filters), ``train`` (LoRA fine-tuning and the JSONL
export), ``study`` (the stages, the study folder and resume), ``report`` (tables and plot).
"""
