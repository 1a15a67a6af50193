"""The Markdown report."""

from __future__ import annotations

from harness.report.format import fmt, fmt_ci, fmt_p, md_text
from harness.report.methods import method_lines
from harness.report.noise import noise_lines
from harness.report.run_facts import placement_lines, seen_source_text
from harness.report.sources import ResultSource
from harness.stats.analysis import Analysis
from harness.stats.label_bias import DEGENERATE_SHARE


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
        *[f"  - {_md(line)}" for line in placement_lines(m)],
        f"- seed {m.seed}, documents per task: {m.limit or 'all'}; "
        f"harness {m.harness_version}, commit {(m.git_commit or '?')[:10]}{' (dirty)' if m.git_dirty else ''}",
        f"- seen: {_md(seen_source_text(source))}",
        *_seen_from_lines(model.get("seen_from")),
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
        "| task | control | n | score | " + f"{round(100 * a.level)}% CI" + " | valid min | valid max | where | degenerate |",
        "|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for p in a.controls:
        low, high = ranges.get(p.task, (float("nan"), float("nan")))
        where = "below" if p.score < low else "above" if p.score > high else "inside" if low <= p.score <= high else "–"
        lines.append(
            f"| {_md(p.task)} | {_md(p.instruction_id)} | {p.n} | {fmt(p.score)} | {fmt_ci(p.ci_low, p.ci_high)} | "
            f"{fmt(low)} | {fmt(high)} | {where} | {'**degenerate**' if p.degenerate else 'no'} |"
        )
    return lines


def degenerate_mark(a: Analysis, task: str, instruction_id: str) -> str:
    """' (degenerate)' after a phrasing id that gives one answer on >= 90% of its documents."""
    return " (degenerate)" if instruction_id and instruction_id in a.degenerate_ids(task) else ""


def label_bias_lines(a: Analysis) -> list[str]:
    """The across-phrasing statistics twice where a task has degenerate phrasings: over all
    phrasings, and over the informative ones only."""
    bias = {b.task: b for b in a.label_bias}
    flagged = [(t, bias[t.task]) for t in a.tasks if t.task in bias and bias[t.task].degenerate_phrasings]
    if not flagged:
        return []
    lines = [
        "",
        "## Label bias: all phrasings and informative ones",
        "",
        f"Degenerate: a phrasing that gives one answer on ≥ {DEGENERATE_SHARE:.0%} of its documents; its score is mostly the "
        "share of documents whose right answer is its favourite. Constant answer: the best score of always giving the same "
        "option (which one in brackets). Informative: the phrasings that are not degenerate.",
        "",
        "| task | phrasings | degenerate | chance | constant answer | all: mean | all: std | all: min | all: max "
        "| informative | inf.: mean | inf.: std | inf.: min | inf.: max | inf.: range | note |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t, b in flagged:
        lines.append(
            f"| {_md(t.task)} | {t.phrasings} | {b.degenerate_phrasings} | {fmt(b.chance)} | {fmt(b.constant_answer)} "
            f"({_md(b.constant_answer_is or '–')}) | {fmt(t.mean)} | {fmt(t.std)} | {fmt(t.min)} | {fmt(t.max)} | "
            f"{b.informative_phrasings} | {fmt(b.informative_mean)} | {fmt(b.informative_std)} | {fmt(b.informative_min)} | "
            f"{fmt(b.informative_max)} | {fmt(b.informative_range)} | {_md(b.note)} |"
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
        "| task | phrasings | degenerate | docs | mean | mean CI | chance | constant answer | std | std CI | min | max | range | IQR "
        "| p5 | p95 | MaxP | AvgP | CPS | all right | none right |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bias = {b.task: b for b in a.label_bias}
    for t in a.tasks:
        b = bias.get(t.task)
        lines.append(
            f"| {_md(t.task)} | {t.phrasings} | {b.degenerate_phrasings if b else '–'} | {t.documents} | {fmt(t.mean)} | "
            f"{fmt_ci(t.mean_ci_low, t.mean_ci_high)} | {fmt(b.chance if b else None)} | {fmt(b.constant_answer if b else None)} | "
            f"{fmt(t.std)} | "
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
            f"| {_md(t.task)} | {_md(t.best)}{degenerate_mark(a, t.task, t.best)} | {_md(t.worst)}{degenerate_mark(a, t.task, t.worst)} | "
            f"{fmt(t.observed_mean)} | {fmt(t.unobserved_mean)} | {fmt(t.seen_mean)} | {fmt(t.unseen_mean)} | {_md(t.ci_method)} |"
        )
    lines += noise_lines(source.manifest, a)
    lines += label_bias_lines(a)
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
        f"Seen flags: {_md(seen_source_text(source))}.",
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
        "| task | phrasing | status | seen | n | score | "
        + f"{pct}% CI"
        + " | accuracy | top answer | top share | entropy (bits) | degenerate |",
        "|---|---|---|---|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for p in a.phrasings:
        lines.append(
            f"| {_md(p.task)} | {_md(p.instruction_id)} | {_md(p.status)} | {'yes' if p.seen else 'no'} | {p.n} | {fmt(p.score)} | "
            f"{fmt_ci(p.ci_low, p.ci_high)} | {fmt(p.accuracy)} | {_md(p.top_answer)} | {fmt(p.top_answer_share)} | "
            f"{fmt(p.answer_entropy, 2)} | {'**degenerate**' if p.degenerate else 'no'} |"
        )
    lines += control_lines(a)
    lines += ["", "## Methods", "", *[f"- {m}" for m in method_lines(a)]]
    return "\n".join(lines) + "\n"
