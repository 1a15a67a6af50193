"""Write a model comparison: compare.md, compare.csv (per task and model), compare_pairs.csv,
compare.json and a self-contained compare.html."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.data.cache import atomic_write_bytes
from harness.errors import HarnessError
from harness.report.format import csv_bytes, fmt, fmt_ci, jsonable, md_text
from harness.report.sources import ResultSource, unique_labels
from harness.stats.bootstrap import DEFAULT_BOOT
from harness.stats.compare import Comparison, ModelResults, compare_models

COMPARE_FILES = ("compare.md", "compare.csv", "compare_pairs.csv", "compare.json", "compare.html")


class CompareProblem(HarnessError, ValueError):
    """Results that cannot be compared (too few models, no task in common); says what to do."""


def check_comparable(labels: list[str], sources: list[ResultSource]) -> None:
    """Refuse a comparison whose tables would be empty: no task scored by two of the models.

    Raises:
        CompareProblem: naming each model's tasks.
    """
    scored = [sorted({p.task for p in s.phrasings if not math.isnan(p.score)}) for s in sources]
    counts: dict[str, int] = {}
    for tasks in scored:
        for t in tasks:
            counts[t] = counts.get(t, 0) + 1
    if not any(c >= 2 for c in counts.values()):
        listed = "; ".join(
            f"{label}: {', '.join(tasks[:5]) or 'none'}{' ...' if len(tasks) > 5 else ''}"
            for label, tasks in zip(labels, scored, strict=True)
        )
        raise CompareProblem(f"no task in common, nothing to compare ({listed}); compare results of the same tasks")


def default_compare_dir(reports_dir: Path = Path("reports")) -> Path:
    """A new folder ``reports/compare_<UTC time>`` (no ':' in the name)."""
    return reports_dir / f"compare_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def method_lines(n_boot: int, seed: int) -> list[str]:
    """How the comparison was computed."""
    return [
        "Models are compared on the phrasings they share (same phrasing id and, for runs, the same text hash). "
        "Per-model mean and std (ddof=1) use the phrasings all models share when there are any, else each model's own.",
        "Rank stability: each shared phrasing ranks the models; Kendall's tau-b between every pair of phrasings' rankings "
        "(mean and minimum), and Kendall's W (coefficient of concordance, tie-corrected, phrasings as raters) per task and "
        "over every (task, phrasing) overall. W = 1: every phrasing orders the models the same way.",
        "P(A beats B): share of shared phrasings on which A scores higher than B (ties count half) = the probability that A "
        f"wins under a randomly drawn phrasing. 95% CI: percentile bootstrap ({n_boot} replicates, seed {seed}) resampling "
        "phrasings and, where both models scored the same documents, documents (paired) too.",
        "Rank flip: a phrasing under which the pair's order is the reverse of their order by mean; pairs with any are flagged.",
    ]


def render_compare_markdown(labels: dict[str, str], comparison: Comparison, n_boot: int, seed: int) -> str:
    """The comparison as Markdown."""
    c = comparison
    lines = ["# Model comparison across phrasings", "", "| model | results |", "|---|---|"]
    lines += [f"| {md_text(label)} | {md_text(origin)} |" for label, origin in labels.items()]
    o = c.overall
    lines += [
        "",
        f"Overall Kendall's W over {o.shared_phrasings} (task, phrasing) rankings of {o.models} models: **{fmt(o.kendall_w)}**",
        "",
    ]
    if c.notes:
        lines += ["## Notes", "", *[f"- {md_text(n)}" for n in c.notes], ""]
    lines += [
        "## Per task and model",
        "",
        "| task | model | phrasings | shared | mean | std | min | max | rank |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in c.per_model:
        lines.append(
            f"| {md_text(m.task)} | {md_text(m.model)} | {m.phrasings} | {'yes' if m.shared else 'no'} | {fmt(m.mean)} | {fmt(m.std)} | "
            f"{fmt(m.min)} | {fmt(m.max)} | {m.rank} |"
        )
    lines += [
        "",
        "## Rank stability per task",
        "",
        "| task | models | shared phrasings | Kendall's W | mean tau | min tau | phrasing pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in c.stability:
        lines.append(
            f"| {md_text(s.task)} | {s.models} | {s.shared_phrasings} | {fmt(s.kendall_w)} | {fmt(s.mean_tau)} | {fmt(s.min_tau)} | "
            f"{s.tau_pairs} |"
        )
    lines += [
        "",
        "## Who wins under a random phrasing",
        "",
        "| task | A | B | shared | mean A | mean B | P(A beats B) | 95% CI | A wins / B wins / ties | rank flips | flag |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for p in c.pairs:
        flag = f"**rank flip** ({md_text(p.flipped_phrasings.replace(';', ', '))})" if p.flipped else ""
        lines.append(
            f"| {md_text(p.task)} | {md_text(p.model_a)} | {md_text(p.model_b)} | {p.shared_phrasings} | "
            f"{fmt(p.mean_a)} | {fmt(p.mean_b)} | "
            f"{fmt(p.p_a_beats_b)} | {fmt_ci(p.ci_low, p.ci_high)} | {p.a_wins} / {p.b_wins} / {p.ties} | {p.flips} | {flag} |"
        )
    lines += ["", "## Methods", "", *[f"- {m}" for m in method_lines(n_boot, seed)]]
    return "\n".join(lines) + "\n"


def write_compare(
    sources: list[ResultSource], out: Path, *, n_boot: int = DEFAULT_BOOT, seed: int = 0, html: bool = True
) -> dict[str, Path]:
    """Compare two or more models' results and write the comparison files into ``out``.

    Raises:
        CompareProblem: with fewer than two sources, or no task scored by two of them.
    """
    if len(sources) < 2:
        raise CompareProblem("a comparison needs at least two runs or imported models")
    names = unique_labels(sources)
    check_comparable(names, sources)
    comparison = compare_models([ModelResults(n, s.phrasings) for n, s in zip(names, sources, strict=True)], n_boot=n_boot, seed=seed)
    labels = {n: s.origin for n, s in zip(names, sources, strict=True)}
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in COMPARE_FILES if html or name != "compare.html"}
    atomic_write_bytes(paths["compare.md"], render_compare_markdown(labels, comparison, n_boot, seed).encode("utf-8"))
    stability = {s.task: s for s in comparison.stability}
    header = [*comparison.per_model[0]._fields, "kendall_w", "mean_tau", "min_tau"] if comparison.per_model else ["task", "model"]
    rows = [(*m, stability[m.task].kendall_w, stability[m.task].mean_tau, stability[m.task].min_tau) for m in comparison.per_model]
    atomic_write_bytes(paths["compare.csv"], csv_bytes(rows, header))
    pair_fields = comparison.pairs[0]._fields if comparison.pairs else ("task", "model_a", "model_b")
    atomic_write_bytes(paths["compare_pairs.csv"], csv_bytes([tuple(p) for p in comparison.pairs], pair_fields))
    data = {
        "models": labels,
        "bootstrap": {"replicates": n_boot, "seed": seed, "method": "percentile"},
        "overall": comparison.overall._asdict(),
        "per_model": [m._asdict() for m in comparison.per_model],
        "stability": [s._asdict() for s in comparison.stability],
        "pairs": [p._asdict() for p in comparison.pairs],
        "notes": comparison.notes,
    }
    atomic_write_bytes(paths["compare.json"], (json.dumps(jsonable(data), indent=2) + "\n").encode("utf-8"))
    if html:
        from harness.report.html import render_compare_html
        from harness.report.plots import plot_model_lines

        scores: dict[str, dict[str, dict[str, float]]] = {}
        for name, s in zip(names, sources, strict=True):
            for p in s.phrasings:
                if not math.isnan(p.score):
                    scores.setdefault(p.task, {}).setdefault(name, {})[p.instruction_id] = p.score
        context: dict[str, Any] = {
            "title": "Model comparison across phrasings",
            "labels": labels,
            "c": comparison,
            "plots": plot_model_lines(comparison, scores, [s.task for s in comparison.stability if s.shared_phrasings]),
            "methods": method_lines(n_boot, seed),
        }
        atomic_write_bytes(paths["compare.html"], render_compare_html(context).encode("utf-8"))
    return paths
