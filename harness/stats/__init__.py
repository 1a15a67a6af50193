"""Statistics over results: per phrasing, across phrasings, seen vs unseen, variance, models.

Everything here reads results (run folders or imports turned into
:class:`~harness.stats.data.PhrasingResults`), never a model.
"""

from __future__ import annotations

from harness.stats.across import AcrossStats, GroupSummary, TaskSummary, describe_scores, summarise_groups, summarise_task
from harness.stats.analysis import Analysis, analyse
from harness.stats.compare import Comparison, ModelResults, compare_models, kendalls_w, pairwise_tau
from harness.stats.data import PhrasingResults, TaskInfo, TaskMatrix, build_matrix, default_task_info, phrasings_from_rows
from harness.stats.per_phrasing import PhrasingScore, score_phrasings
from harness.stats.seen_unseen import SeenUnseen, benjamini_hochberg, compare_seen_unseen, holm
from harness.stats.variance import VarianceDecomposition, decompose_matrix, decompose_task

__all__ = [
    "AcrossStats",
    "Analysis",
    "Comparison",
    "GroupSummary",
    "ModelResults",
    "PhrasingResults",
    "PhrasingScore",
    "SeenUnseen",
    "TaskInfo",
    "TaskMatrix",
    "TaskSummary",
    "VarianceDecomposition",
    "analyse",
    "benjamini_hochberg",
    "build_matrix",
    "compare_models",
    "compare_seen_unseen",
    "decompose_matrix",
    "decompose_task",
    "default_task_info",
    "describe_scores",
    "holm",
    "kendalls_w",
    "pairwise_tau",
    "phrasings_from_rows",
    "score_phrasings",
    "summarise_groups",
    "summarise_task",
]
