"""The Markdown report."""

from __future__ import annotations

from harness.report.format import fmt, fmt_ci, fmt_p
from harness.report.methods import method_lines
from harness.report.sources import ResultSource
from harness.stats.analysis import Analysis


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def header_lines(source: ResultSource) -> list[str]:
    """Bullet points saying what was run (run folder) or imported."""
    m = source.manifest
    if m is None:
        return [f"- model: `{source.model}`", f"- results: {source.origin}", *[f"- {d}" for d in source.details]]
    model = m.model
    return [
        f"- run: `{m.run_id}` (status **{m.status}**, {source.samples} scored samples)",
        f"- model: {model.get('backend')} `{model.get('name')}`, dtype {model.get('dtype') or model.get('args', {}).get('dtype', '?')}",
        f"- phrasing placement: {m.placement}; chat template applied: {m.chat_template_applied}",
        f"- seed {m.seed}, documents per task: {m.limit or 'all'}; "
        f"harness {m.harness_version}, commit {(m.git_commit or '?')[:10]}{' (dirty)' if m.git_dirty else ''}",
        f"- seen collections for this model: {', '.join(m.seen_collections) or 'none'}"
        + (f" (tasks held out of its tuning, counted unseen: {', '.join(m.held_out_tasks)})" if m.held_out_tasks else ""),
    ]


def render_markdown(source: ResultSource, analysis: Analysis) -> str:
    """The Markdown report: what was run, spread per task and group, seen vs unseen,
    variance decomposition, every phrasing's score, and the methods."""
    a = analysis
    pct = round(100 * a.level)
    lines = [f"# Instruction robustness report: {source.model}", "", *header_lines(source), ""]
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
            f"| {t.task} | {t.phrasings} | {t.documents} | {fmt(t.mean)} | {fmt_ci(t.mean_ci_low, t.mean_ci_high)} | {fmt(t.std)} | "
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
            f"| {t.task} | `{_md(t.best)}` | `{_md(t.worst)}` | {fmt(t.observed_mean)} | {fmt(t.unobserved_mean)} | "
            f"{fmt(t.seen_mean)} | {fmt(t.unseen_mean)} | {t.ci_method or '–'} |"
        )
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
                f"| {g.name} | {g.tasks} | {g.phrasings} | {fmt(g.macro_mean)} | {fmt(g.macro_std)} | {fmt(g.macro_range)} | "
                f"{fmt(g.macro_cps)} | {fmt(g.macro_all_right)} | {fmt(g.macro_none_right)} | {g.shared_phrasings} | "
                f"{fmt(g.shared_mean)} | {fmt(g.shared_std)} | {'`' + _md(g.shared_best) + '`' if g.shared_best else '–'} | "
                f"{'`' + _md(g.shared_worst) + '`' if g.shared_worst else '–'} | {fmt(g.shared_cps)} |"
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
                f"| {s.task} | {s.n_seen} / {s.n_unseen} | {fmt(s.seen_mean)} | {fmt(s.unseen_mean)} | "
                f"| | | | | | | | | | | {_md(s.note)} |"
            )
            continue
        lines.append(
            f"| {s.task} | {s.n_seen} / {s.n_unseen} | {fmt(s.seen_mean)} | {fmt(s.unseen_mean)} | {fmt(s.diff)} | "
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
            f"| {v.task} | {v.phrasings} × {v.documents} | {fmt(v.share_phrasing)} | {fmt(v.share_document)} | "
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
            f"| {p.task} | `{_md(p.instruction_id)}` | {p.status} | {'yes' if p.seen else 'no'} | {p.n} | {fmt(p.score)} | "
            f"{fmt_ci(p.ci_low, p.ci_high)} | {fmt(p.accuracy)} |"
        )
    lines += ["", "## Methods", "", *[f"- {m}" for m in method_lines(a)]]
    return "\n".join(lines) + "\n"
