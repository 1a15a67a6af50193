"""Tuning with a recorded phrasing split: LoRA or soft-prompt tuning, each with or without a
KL term across paraphrases (`irh tune`), and the experiment that compares them."""

from __future__ import annotations

from harness.tune.record import METHODS, TuneError, TuneRecord, read_tune_record

__all__ = ["METHODS", "TuneError", "TuneRecord", "read_tune_record"]
