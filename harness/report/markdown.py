"""The Markdown report."""

from __future__ import annotations

from harness.report.format import fmt, fmt_ci, fmt_p, md_text
from harness.report.methods import method_lines
from harness.report.noise import noise_lines
from harness.report.sources import ResultSource
from harness.stats.analysis import Analysis


def _md(value: object) -> str:
    """Data as inert Markdown text; '–' where it is empty."""
    text = md_text(value)
    return text if text else "–"


def header_lines(source: ResultSource) -> list[str]:
    """Bullet points saying what was run (run folder) or imported."""
    m = source.manifest
    if m is None:
        return [f"- model: {_md(source.model)}", f"- results: {_md(source.origin)}", *[f"- {_md(d)}" for d in source.details]]
    model = m.model
    return [
        f"- run: {_md(m.run_id)} (status **{m.status}**, {source.samples} scored samples)",
        f"- model: {_md(model.get('backend'))} {_md(model.get('name'))}, "
        f"dtype {_md(model.get('dtype') or model.get('args', {}).get('dtype', '?'))}",
        f"- phrasing placement: {m.placement}; chat template applied: {m.chat_template_applied}",
        f"- seed {m.seed}, documents per task: {m.limit or 'all'}; "
        f"harness {m.harness_version}, commit {(m.git_commit or '?')[:10]}{' (dirty)' if m.git_dirty else ''}",
        *(
            _seen_from_lines(model.get("seen_from"))
            or [
                f"- seen collections for this model: {_md(', '.join(m.seen_collections) or 'none')}"
                + (f" (tasks held out of its tuning, counted unseen: {_md(', '.join(m.held_out_tasks))})" if m.held_out_tasks else "")
            ]
        ),
        *[f"- {_md(d)}" for d in source.details],
    ]


def _seen_from_lines(seen_from: object) -> list[str]:
    """Where a tuned model's seen flags came from (its tune.json), when they did."""
    if not isinstance(seen_from, dict):
        return []
    return [
        f"- seen flags from {_md(seen_from.get('source'))} {_md(seen_from.get('path'))}, not from collections "
        f"(method {_md(seen_from.get('method'))}, seed {_md(seen_from.get('seed'))}, sha256 {_md(str(seen_from.get('sha256'))[:12])}): "
        f"{_md(seen_from.get('rule'))}"
    ]


def control_lines(a: Analysis) -> list[str]:
    """Control phrasings beside the range of the task's valid phrasings."""
    if not a.controls:
        return []
    ranges = {t.task: (t.min, t.max) for t in a.tasks}
    lines = [
        "",
        "## Control phrasings",
        "",
        "No instruction, the instruction negated, random words, another task's instruction (harness/controls.py). "
        "They are in no statistic above; here each is set beside the range of the task's valid phrasings.",
        "",
        "| task | control | n | score | " + f"{round(100 * a.level)}% CI" + " | valid min | valid max | where |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    for p in a.controls:
        low, high = ranges.get(p.task, (float("nan"), float("nan")))
        where = "below" if p.score < low else "above" if p.score > high else "inside" if low <= p.score <= high else "–"
        lines.append(
            f"| {_md(p.task)} | {_md(p.instruction_id)} | {p.n} | {fmt(p.score)} | {fmt_ci(p.ci_low, p.ci_high)} | "
            f"{fmt(low)} | {fmt(high)} | {where} |"
        )
    return lines


def render_markdown(source: ResultSource, analysis: Analysis) -> str:
    """The Markdown report: what was run, spread per task and group, seen vs unseen,
    variance decomposition, every phrasing's score, and the methods."""
    a = analysis
    pct = round(100 * a.level)
    lines = [f"# Instruction robustness report: {_md(source.model)}", "", *header_lines(source), ""]
    if a.notes:
        lines += ["## Notes", "", *[f"- {_md(n)}" for n in a.notes], ""]
    lines += [
        "## Across phrasings, per task",
        "",
        f"Mean and std with {pct}% CIs (std ddof=1). Consistency on the documents every phrasing scored.",
        "",
        "| task | phrasings | docs | mean | mean CI | std | std CI | min | max | range | IQR | p5 | p95 | MaxP | AvgP | CPS "
        "| all right | none right |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in a.tasks:
        lines.append(
            f"| {_md(t.task)} | {t.phrasings} | {t.documents} | {fmt(t.mean)} | {fmt_ci(t.mean_ci_low, t.mean_ci_high)} | {fmt(t.std)} | "
            f"{fmt_ci(t.std_ci_low, t.std_ci_high)} | {fmt(t.min)} | {fmt(t.max)} | {fmt(t.range)} | {fmt(t.iqr)} | {fmt(t.p05)} | "
            f"{fmt(t.p95)} | {fmt(t.max_p)} | {fmt(t.avg_p)} | {fmt(t.cps)} | {fmt(t.all_right)} | {fmt(t.none_right)} |"
        )
    lines += [
        "",
        "| task | best phrasing | worst phrasing | observed mean | unobserved mean | seen mean | unseen mean | CI method |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for t in a.tasks:
        lines.append(
            f"| {_md(t.task)} | {_md(t.best)} | {_md(t.worst)} | {fmt(t.observed_mean)} | {fmt(t.unobserved_mean)} | "
            f"{fmt(t.seen_mean)} | {fmt(t.unseen_mean)} | {_md(t.ci_method)} |"
        )
    lines += noise_lines(source.manifest, a)
    for kind, groups in (("family", a.families), ("category", a.categories)):
        if not groups:
            continue
        lines += [
            "",
            f"## Per {kind}",
            "",
            "| " + kind + " | tasks | phrasings | mean of task means | mean of task stds | mean range | mean CPS | all right | none right "
            "| shared phrasings | shared mean | shared std | shared best | shared worst | shared CPS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
        ]
        for g in groups:
            lines.append(
                f"| {_md(g.name)} | {g.tasks} | {g.phrasings} | {fmt(g.macro_mean)} | {fmt(g.macro_std)} | {fmt(g.macro_range)} | "
                f"{fmt(g.macro_cps)} | {fmt(g.macro_all_right)} | {fmt(g.macro_none_right)} | {g.shared_phrasings} | "
                f"{fmt(g.shared_mean)} | {fmt(g.shared_std)} | {_md(g.shared_best)} | "
                f"{_md(g.shared_worst)} | {fmt(g.shared_cps)} |"
            )
    lines += [
        "",
        "## Seen vs unseen phrasings",
        "",
        "p-values two-sided; *Holm* = Holm-adjusted across the tasks of this report, per test.",
        "",
        "| task | seen / unseen | seen mean | unseen mean | diff | diff CI | Welch t | p (Holm) | MWU U | p (Holm) | Hedges g "
        "| rank-biserial | paired docs | Wilcoxon W | p (Holm) | note |",
        "|---|---|---:|---:|---:|---|---:|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for s in a.seen_unseen:
        if not s.applicable:
            lines.append(
                f"| {_md(s.task)} | {s.n_seen} / {s.n_unseen} | {fmt(s.seen_mean)} | {fmt(s.unseen_mean)} | "
                + "– | " * 11
                + f"{_md(s.note)} |"
            )
            continue
        lines.append(
            f"| {_md(s.task)} | {s.n_seen} / {s.n_unseen} | {fmt(s.seen_mean)} | {fmt(s.unseen_mean)} | {fmt(s.diff)} | "
            f"{fmt_ci(s.diff_ci_low, s.diff_ci_high)} | {fmt(s.welch_t, 2)} | {fmt_p(s.welch_p)} ({fmt_p(s.welch_p_holm)}) | "
            f"{fmt(s.mwu_u, 1)} | {fmt_p(s.mwu_p)} ({fmt_p(s.mwu_p_holm)}) | {fmt(s.hedges_g, 2)} | {fmt(s.rank_biserial, 2)} | "
            f"{s.paired_documents} | {fmt(s.wilcoxon_w, 1)} | {fmt_p(s.wilcoxon_p)} ({fmt_p(s.wilcoxon_p_holm)}) | {_md(s.note)} |"
        )
    lines += [
        "",
        "## Variance decomposition of correctness",
        "",
        "Two-way random-effects ANOVA on the phrasing × document 0/1 matrix. One observation per cell: the interaction "
        "is confounded with residual noise.",
        "",
        "| task | phrasings × docs | SS share phrasing | SS share document | SS share interaction+residual | σ² phrasing | σ² document "
        "| σ² interaction+residual | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v in a.variance:
        lines.append(
            f"| {_md(v.task)} | {v.phrasings} × {v.documents} | {fmt(v.share_phrasing)} | {fmt(v.share_document)} | "
            f"{fmt(v.share_interaction)} | {fmt(v.var_phrasing, 4)} | {fmt(v.var_document, 4)} | {fmt(v.var_interaction, 4)} | "
            f"{_md(v.note)} |"
        )
    lines += [
        "",
        "## Per phrasing",
        "",
        "| task | phrasing | status | seen | n | score | " + f"{pct}% CI" + " | accuracy |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for p in a.phrasings:
        lines.append(
            f"| {_md(p.task)} | {_md(p.instruction_id)} | {_md(p.status)} | {'yes' if p.seen else 'no'} | {p.n} | {fmt(p.score)} | "
            f"{fmt_ci(p.ci_low, p.ci_high)} | {fmt(p.accuracy)} |"
        )
    lines += control_lines(a)
    lines += ["", "## Methods", "", *[f"- {m}" for m in method_lines(a)]]
    return "\n".join(lines) + "\n"
