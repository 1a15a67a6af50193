"""Statistics against hand-computed values and scipy, with the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.stats import (
    PhrasingResults,
    analyse,
    benjamini_hochberg,
    build_matrix,
    compare_seen_unseen,
    decompose_matrix,
    describe_scores,
    holm,
    score_phrasings,
    summarise_task,
)
from harness.stats.across import PHRASINGS_ONLY, TWO_WAY, bootstrap_mean_std, consistency
from harness.stats.bootstrap import make_rng


def phrasing(
    task: str, pid: str, correct: list[float], *, seen: bool = False, status: str = "unobserved", docs: list[str] | None = None
) -> PhrasingResults:
    values = np.array(correct, dtype=float)
    return PhrasingResults(
        task=task,
        instruction_id=pid,
        status=status,
        seen=seen,
        doc_ids=tuple(docs or [f"d{i}" for i in range(len(values))]),
        scores=values,
        correct=values.copy(),
        prompt=f"prompt of {pid}",
    )


def aggregate(task: str, pid: str, score: float, n: int = 100, seen: bool = False) -> PhrasingResults:
    return PhrasingResults(
        task=task, instruction_id=pid, seen=seen, status="observed" if seen else "unobserved", reported_score=score, reported_n=n
    )


# ------------------------------------------------------------------ across phrasings


def test_describe_scores_matches_hand_computed_values() -> None:
    s = describe_scores(["a", "b", "c", "d"], [0.5, 0.6, 0.7, 0.9])
    assert s.phrasings == 4
    assert s.mean == pytest.approx(0.675)
    # deviations -.175 -.075 .025 .225: squares sum to .0875; / (4 - 1); sqrt
    assert s.std == pytest.approx(math.sqrt(0.0875 / 3))
    assert (s.min, s.max, s.range) == pytest.approx((0.5, 0.9, 0.4))
    # numpy linear percentiles: p25 at rank .75 -> .575, p75 at 2.25 -> .75, p5 at .15 -> .515, p95 at 2.85 -> .87
    assert s.iqr == pytest.approx(0.175)
    assert (s.p05, s.p95) == pytest.approx((0.515, 0.87))
    assert (s.best, s.worst) == ("d", "a")
    assert (s.max_p, s.avg_p) == pytest.approx((0.9, 0.675))
    assert s.cps == pytest.approx((1 - (0.9 - 0.675)) * 0.9)  # 0.6975
    assert s.score_scale == 1.0


def test_describe_scores_edge_cases() -> None:
    one = describe_scores(["only"], [0.4])
    assert one.phrasings == 1 and math.isnan(one.std) and one.range == 0.0
    assert one.cps == pytest.approx(0.4)  # MaxP = AvgP: CPS = MaxP
    assert one.best == one.worst == "only"
    none = describe_scores([], [])
    assert none.phrasings == 0 and math.isnan(none.mean) and none.best == ""
    with_nan = describe_scores(["a", "b", "c"], [0.2, math.nan, 0.4])
    assert with_nan.phrasings == 2 and with_nan.mean == pytest.approx(0.3)
    # ties: the smaller id wins both ways, independent of order
    assert describe_scores(["z", "y"], [0.5, 0.5])[9:11] == ("y", "y")


def test_cps_on_a_0_100_metric_is_computed_on_the_unit_scale() -> None:
    s = describe_scores(["a", "b"], [50.0, 70.0])
    assert s.score_scale == 100.0
    assert s.cps == pytest.approx((1 - 0.1) * 0.7)


def test_consistency_counts_documents_right_under_all_and_none() -> None:
    ps = [phrasing("t", "p1", [1, 1, 0, 0]), phrasing("t", "p2", [1, 0, 0, 1]), phrasing("t", "p3", [1, 1, 0, 0])]
    assert consistency(build_matrix("t", ps)) == (0.25, 0.25)


def test_task_summary_keeps_reported_scores_of_aggregate_imports() -> None:
    ps = [aggregate("t", f"p{i}", s) for i, s in enumerate([0.62, 0.55, 0.71, 0.48])]
    s = summarise_task("t", ps, build_matrix("t", ps), n_boot=200)
    assert round(s.mean, 2) == 0.59 and round(s.std, 2) == 0.10
    assert s.ci_method == PHRASINGS_ONLY and not s.per_document
    assert math.isnan(s.all_right) and s.documents == 100
    assert s.mean_ci_low <= s.mean <= s.mean_ci_high


# ------------------------------------------------------------------ bootstrap


def test_per_phrasing_ci_agrees_with_scipy_percentile_bootstrap() -> None:
    values = [1.0] * 26 + [0.0] * 14  # accuracy 0.65 over 40 documents
    (row,) = score_phrasings([phrasing("t", "p", values)], n_boot=4000, seed=3)
    ref = sps.bootstrap((np.array(values),), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(3))
    assert row.score == pytest.approx(0.65) and row.n == 40
    assert row.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert row.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.03)
    # and the normal approximation is close too: 0.65 ± 1.96 sqrt(.65 .35 / 40)
    assert row.ci_low == pytest.approx(0.65 - 1.96 * math.sqrt(0.65 * 0.35 / 40), abs=0.04)


def test_per_phrasing_edge_cases_single_document_nan_and_aggregate() -> None:
    single = phrasing("t", "one", [1.0])
    with_nan = PhrasingResults(
        "t", "nan", doc_ids=("a", "b", "c"), scores=np.array([1.0, math.nan, 0.0]), correct=np.array([1.0, 0.0, 0.0])
    )
    rows = {r.instruction_id: r for r in score_phrasings([single, with_nan, aggregate("t", "agg", 0.7)], n_boot=100)}
    assert rows["one"].n == 1 and rows["one"].score == 1.0 and math.isnan(rows["one"].ci_low)
    assert rows["nan"].n == 2 and rows["nan"].score == 0.5 and rows["nan"].accuracy == 0.5
    assert rows["agg"].score == 0.7 and rows["agg"].n == 100 and math.isnan(rows["agg"].ci_high) and math.isnan(rows["agg"].accuracy)


def test_two_way_bootstrap_of_a_constant_matrix_is_degenerate() -> None:
    ps = [phrasing("t", f"p{i}", [1.0] * 10) for i in range(3)]
    means, stds, method = bootstrap_mean_std(ps, build_matrix("t", ps), make_rng(0, "x"), 200)
    assert method == TWO_WAY
    assert np.all(means == 1.0) and np.all(stds == 0.0)


def test_two_way_bootstrap_reflects_phrasing_and_document_noise() -> None:
    rng = np.random.default_rng(1)
    ps = [phrasing("t", f"p{i}", list((rng.random(50) < p).astype(float))) for i, p in enumerate([0.3, 0.5, 0.7, 0.6])]
    s = summarise_task("t", ps, build_matrix("t", ps), n_boot=1000, seed=5)
    assert s.ci_method == TWO_WAY
    assert s.mean_ci_low < s.mean < s.mean_ci_high
    assert s.std_ci_low < s.std < s.std_ci_high
    # Phrasings that nearly agree: resampling phrasings alone gives a narrow interval, while the
    # two-way bootstrap also carries the document sampling noise, about ±1.96 sqrt(.25 / 50).
    base = (np.arange(50) % 2).astype(float)
    near = [phrasing("t", f"q{k}", list(np.where(np.arange(50) == k, 1 - base, base))) for k in range(4)]
    two_way = summarise_task("t", near, build_matrix("t", near), n_boot=1000, seed=5)
    only = summarise_task("t", [aggregate("t", p.instruction_id, p.score) for p in near], build_matrix("t", []), n_boot=1000, seed=5)
    assert only.mean_ci_high - only.mean_ci_low < 0.05
    assert two_way.mean_ci_high - two_way.mean_ci_low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 50), abs=0.05)
    # same seed, same answer
    again = summarise_task("t", ps, build_matrix("t", ps), n_boot=1000, seed=5)
    assert again.mean_ci_low == s.mean_ci_low


# ------------------------------------------------------------------ variance decomposition


def test_variance_decomposition_matches_hand_computation() -> None:
    v = decompose_matrix("t", np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    # grand .5; row means 2/3, 1/3; column means 1, .5, 0
    assert v.ss_total == pytest.approx(1.5)
    assert v.ss_phrasing == pytest.approx(1 / 6)
    assert v.ss_document == pytest.approx(1.0)
    assert v.ss_interaction == pytest.approx(1 / 3)
    assert v.share_phrasing + v.share_document + v.share_interaction == pytest.approx(1.0)
    # MS_p = 1/6, MS_d = 1/2, MS_res = 1/6: sigma2_p = 0, sigma2_d = (1/2 - 1/6) / 2, sigma2_res = 1/6
    assert v.var_phrasing == pytest.approx(0.0)
    assert v.var_document == pytest.approx(1 / 6)
    assert v.var_interaction == pytest.approx(1 / 6)
    assert "confounded" in v.note


def test_variance_decomposition_agrees_with_scipy_f_oneway_sums() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random((5, 30)) < 0.6).astype(float)
    v = decompose_matrix("t", y)
    # One-way ANOVA over phrasings has the same between-group SS and F against the within-group SS.
    f = sps.f_oneway(*y)
    within = v.ss_document + v.ss_interaction
    assert f.statistic == pytest.approx((v.ss_phrasing / 4) / (within / (5 * 30 - 5)))


def test_variance_decomposition_edge_cases() -> None:
    assert not decompose_matrix("t", np.ones((1, 10))).applicable
    assert not decompose_matrix("t", np.ones((4, 1))).applicable
    flat = decompose_matrix("t", np.ones((3, 4)))
    assert flat.applicable and math.isnan(flat.share_phrasing) and "no variation" in flat.note


# ------------------------------------------------------------------ seen vs unseen


def _seen_unseen_task() -> list[PhrasingResults]:
    # 20 documents; seen phrasings score .85 and .9 on average, unseen .5, .6, .7.
    def make(pid: str, k: int, seen: bool) -> PhrasingResults:
        return phrasing("t", pid, [1.0] * k + [0.0] * (20 - k), seen=seen, status="observed" if seen else "unobserved")

    return [make("s1", 17, True), make("s2", 18, True), make("u1", 10, False), make("u2", 12, False), make("u3", 14, False)]


def test_seen_vs_unseen_matches_scipy_and_hand_computed_effect_sizes() -> None:
    ps = _seen_unseen_task()
    r = compare_seen_unseen("t", ps, build_matrix("t", ps), n_boot=500, seed=1)
    seen, unseen = np.array([0.85, 0.9]), np.array([0.5, 0.6, 0.7])
    assert r.applicable and (r.n_seen, r.n_unseen) == (2, 3)
    assert r.diff == pytest.approx(0.875 - 0.6)
    welch = sps.ttest_ind(seen, unseen, equal_var=False)
    assert (r.welch_t, r.welch_p) == pytest.approx((welch.statistic, welch.pvalue))
    mwu = sps.mannwhitneyu(seen, unseen, alternative="two-sided")
    assert (r.mwu_u, r.mwu_p) == pytest.approx((mwu.statistic, mwu.pvalue))
    assert r.rank_biserial == pytest.approx(1.0)  # every seen phrasing beats every unseen one
    pooled = math.sqrt((1 * np.var(seen, ddof=1) + 2 * np.var(unseen, ddof=1)) / 3)
    assert r.cohens_d == pytest.approx(0.275 / pooled)
    assert r.hedges_g == pytest.approx(0.275 / pooled * (1 - 3 / 11))
    assert r.diff_ci_low < r.diff < r.diff_ci_high
    # paired: per document, mean over seen minus mean over unseen phrasings
    m = build_matrix("t", ps).scores
    diffs = m[:2].mean(axis=0) - m[2:].mean(axis=0)
    assert r.paired_documents == 20 and r.paired_diff == pytest.approx(diffs.mean())
    wil = sps.wilcoxon(diffs)
    assert (r.wilcoxon_w, r.wilcoxon_p) == pytest.approx((wil.statistic, wil.pvalue))


def test_seen_vs_unseen_is_not_applicable_without_seen_phrasings() -> None:
    ps = [phrasing("t", "u1", [1, 0, 1]), phrasing("t", "u2", [0, 0, 1])]
    r = compare_seen_unseen("t", ps, build_matrix("t", ps), n_boot=50)
    assert not r.applicable and "not applicable" in r.note and "no seen" in r.note
    assert math.isnan(r.diff) and math.isnan(r.welch_p) and r.n_unseen == 2


def test_seen_vs_unseen_with_one_phrasing_per_group_has_no_welch_test() -> None:
    ps = [phrasing("t", "s", [1, 1, 0, 1], seen=True), phrasing("t", "u", [1, 0, 0, 0])]
    r = compare_seen_unseen("t", ps, build_matrix("t", ps), n_boot=50)
    assert r.applicable and math.isnan(r.welch_p) and "Welch" in r.note
    assert r.diff == pytest.approx(0.5) and r.mwu_u == 1.0


def test_holm_and_benjamini_hochberg_corrections() -> None:
    p = [0.01, 0.04, 0.03, math.nan]
    # sorted .01 .03 .04 times 3 2 1 -> .03 .06 .04 -> running max .03 .06 .06
    assert holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(holm(p)[3])
    assert benjamini_hochberg(p)[:3] == pytest.approx(list(sps.false_discovery_control([0.01, 0.04, 0.03])))
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# ------------------------------------------------------------------ the whole analysis, edge cases


def test_analyse_edge_cases_one_phrasing_no_documents_nan_and_single_document() -> None:
    ps = [
        phrasing("one.phrasing", "p", [1, 0, 1, 1]),
        phrasing("single.doc", "a", [1]),
        phrasing("single.doc", "b", [0]),
        PhrasingResults(
            "nan.scores", "x", doc_ids=("d0", "d1", "d2"), scores=np.array([1.0, math.nan, 0.0]), correct=np.array([1.0, 1.0, 0.0])
        ),
        phrasing("nan.scores", "y", [1, 1, 1]),
    ]
    a = analyse(ps, tasks=["empty.task"], n_boot=50)
    tasks = {t.task: t for t in a.tasks}
    assert set(tasks) == {"one.phrasing", "single.doc", "nan.scores", "empty.task"}
    assert tasks["one.phrasing"].mean == 0.75 and math.isnan(tasks["one.phrasing"].std)
    assert math.isnan(tasks["empty.task"].mean) and tasks["empty.task"].phrasings == 0 and tasks["empty.task"].documents == 0
    assert tasks["single.doc"].mean == 0.5 and tasks["single.doc"].documents == 1
    assert tasks["nan.scores"].matrix_documents == 2  # d1 has no valid score under x
    assert tasks["nan.scores"].all_right == 0.5 and tasks["nan.scores"].none_right == 0.0
    variance = {v.task: v for v in a.variance}
    assert not variance["single.doc"].applicable and not variance["empty.task"].applicable
    assert all(not s.applicable for s in a.seen_unseen)  # no observed/seen phrasings anywhere
    assert any("empty.task: no documents" in n for n in a.notes)
    assert any("nan.scores: 1 NaN score" in n for n in a.notes)


def test_group_summary_uses_phrasings_shared_by_every_task() -> None:
    ps = [
        aggregate("m.a", "x", 0.4),
        aggregate("m.a", "y", 0.6),
        aggregate("m.b", "x", 0.6),
        aggregate("m.b", "y", 0.9),
        aggregate("m.b", "only_b", 0.1),
    ]
    a = analyse(ps, n_boot=20)
    (family,) = a.families
    assert family.name == "m" and family.tasks == 2 and family.shared_phrasings == 2
    assert family.shared_mean == pytest.approx(0.625)  # x: .5, y: .75
    assert family.shared_best == "y" and family.shared_worst == "x"
    assert family.macro_mean == pytest.approx((0.5 + (0.6 + 0.9 + 0.1) / 3) / 2)


def test_effect_size_is_undefined_with_one_phrasing_on_a_side() -> None:
    # One seen phrasing below three unseen ones: rank-biserial is -1, but there is no within-group
    # spread on the seen side to scale the difference by, so d and g are undefined (not a number near 0).
    ps = [aggregate("t", "s", 0.50, seen=True), aggregate("t", "u1", 0.51), aggregate("t", "u2", 0.52), aggregate("t", "u3", 0.99)]
    r = compare_seen_unseen("t", ps, build_matrix("t", ps), n_boot=50)
    assert r.applicable and r.rank_biserial == pytest.approx(-1.0)
    assert math.isnan(r.cohens_d) and math.isnan(r.hedges_g)
    assert "Hedges' g need two phrasings per group" in r.note


def test_declared_scale_is_used_instead_of_a_guess() -> None:
    # A 0-100 metric whose scores happen to be small: guessing from the values would take it for 0-1.
    guessed = describe_scores(["a", "b"], [0.5, 0.9])
    declared = describe_scores(["a", "b"], [0.5, 0.9], scale=100.0)
    assert guessed.score_scale == 1.0 and declared.score_scale == 100.0
    assert declared.cps == pytest.approx((1 - (0.9 - 0.7) / 100) * 0.9 / 100)
