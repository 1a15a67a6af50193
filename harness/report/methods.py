"""The methods text shared by the Markdown and HTML reports: what every number means."""

from __future__ import annotations

from harness.stats.analysis import Analysis


def method_lines(analysis: Analysis) -> list[str]:
    """Plain sentences (Markdown inline code allowed) describing how the report was computed."""
    pct = round(100 * analysis.level)
    return [
        "Score: the task's metric averaged over documents (accuracy; BIG-bench multiple_choice_grade; exact match or "
        "ROUGE-Lsum ×100 for generation). Correctness (0/1) is used for consistency and the variance decomposition.",
        f"Per-phrasing {pct}% CIs: percentile bootstrap over documents ({analysis.n_boot} replicates, seed {analysis.seed}, numpy).",
        "Across phrasings: std uses ddof=1 (sample std); percentiles and IQR use numpy's linear interpolation. "
        "MaxP = best phrasing's score, AvgP = mean over phrasings, CPS = (1 − (MaxP − AvgP)) × MaxP (Mizrahi et al. 2024), "
        "on scores in [0, 1] (0–100 metrics divided by 100 first).",
        f"{pct}% CIs of the across-phrasing mean and std: two-way percentile bootstrap resampling phrasings and documents "
        "together (documents every phrasing scored); where only per-phrasing scores exist, phrasings only.",
        "Consistency: share of documents answered correctly under every phrasing (all right) and under none (none right).",
        "Seen vs unseen (the model's seen flag): difference of means (seen − unseen) with a two-way bootstrap CI; "
        "Welch's t and Mann–Whitney U (two-sided, scipy) across phrasings; Cohen's d and Hedges' g (pooled ddof=1 std; "
        "undefined with fewer than two phrasings on a side); "
        "rank-biserial r = 2U/(n₁n₂) − 1; paired per-document Wilcoxon signed-rank test on each document's mean score "
        "under seen minus unseen phrasings, with the matched-pairs rank-biserial. "
        "Multiple-task correction: Holm's step-down method per test across the tasks of this report "
        "(Benjamini–Hochberg q-values, scipy.stats.false_discovery_control, in summary.json and per_task.csv).",
        "Variance decomposition: two-way random-effects ANOVA sums of squares on the phrasing × document 0/1 correctness "
        "matrix; with one observation per cell the phrasing × document interaction is confounded with residual noise. "
        "Shares of the total sum of squares, and variance components from expected mean squares (negative estimates set to 0).",
        "A dash (–) marks a statistic that is undefined for these results (empty in the CSV files, null in summary.json).",
        "Family and category rows: task statistics macro-averaged over the group's tasks; 'shared' columns describe the "
        "phrasings run on every task of the group, each scored by its mean over those tasks.",
    ]
