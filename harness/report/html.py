"""Self-contained HTML reports: a jinja2 template (autoescaped) with the plots embedded.

Every text from results (phrasing ids, prompts, model names) goes through jinja2's
autoescaping, so a prompt holding ``<script>`` is shown, never run. Nothing is loaded from
the network: styles are inline and plots are PNG data URIs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
import markupsafe

from harness.report.format import fmt, fmt_ci, fmt_p
from harness.report.methods import method_lines
from harness.report.run_facts import placement_lines, seen_source_text
from harness.report.sources import ResultSource
from harness.stats.analysis import Analysis
from harness.stats.data import PhrasingResults
from harness.stats.label_bias import DEGENERATE_SHARE

TEMPLATES = Path(__file__).resolve().parent / "templates"


class PhrasingText(NamedTuple):
    instruction_id: str
    score: float
    seen: bool
    text: str


class BestWorst(NamedTuple):
    task: str
    best: PhrasingText | None
    worst: PhrasingText | None


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The report templates' environment: autoescape on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, fmt_ci=fmt_ci, fmt_p=fmt_p, breakable=breakable)
    return env


#: Where a long id may wrap: after these separators.
_BREAK_AFTER = re.compile(r"([._/:-])")


def breakable(value: Any) -> markupsafe.Markup:
    """Text escaped for HTML, with a line-break opportunity (``<wbr>``) after each ``.``, ``_``,
    ``/``, ``:`` and ``-``, so long task and phrasing ids wrap in narrow table columns."""
    escaped = str(markupsafe.escape(value))
    # Escaping yields only &lt; &gt; &amp; &#34; &#39;, which hold none of the separators, so a
    # break never lands inside an entity.
    return markupsafe.Markup(_BREAK_AFTER.sub(r"\1<wbr>", escaped))


def header_items(source: ResultSource) -> list[tuple[str, str]]:
    """(label, value) pairs describing the run or the import."""
    m = source.manifest
    if m is None:
        return [("model", source.model), ("results", source.origin), *[("source", d) for d in source.details]]
    model = m.model
    commit = (m.git_commit or "?")[:10] + (" (dirty)" if m.git_dirty else "")
    return [
        ("run", f"{m.run_id} (status {m.status}, {source.samples} scored samples)"),
        ("model", f"{model.get('backend')} {model.get('name')}, dtype {model.get('dtype') or model.get('args', {}).get('dtype', '?')}"),
        ("placement", f"{m.placement}; chat template applied: {m.chat_template_applied}"),
        *[("placement did", line) for line in placement_lines(m)],
        ("documents", f"{m.limit or 'all'} per task, seed {m.seed}"),
        ("harness", f"{m.harness_version}, commit {commit}"),
        ("seen", seen_source_text(source)),
    ]


def best_and_worst(analysis: Analysis) -> list[BestWorst]:
    """Each task's best and worst phrasing with the text shown to the model (first document's prompt)."""

    def text_of(phrasings: list[PhrasingResults], pid: str) -> PhrasingText | None:
        for p in phrasings:
            if p.instruction_id == pid:
                return PhrasingText(pid, p.score, p.seen, p.prompt)
        return None

    return [
        BestWorst(t.task, text_of(analysis.by_task[t.task], t.best), text_of(analysis.by_task[t.task], t.worst))
        for t in analysis.tasks
        if t.best
    ]


def render_report_html(source: ResultSource, analysis: Analysis, plots: dict[str, Any], chance: Mapping[str, float] | None = None) -> str:
    """The HTML report of one model's results.

    Args:
        source: what the results are (run or import), for the header.
        analysis: the statistics.
        plots: ``strips`` (list of data URIs), ``seen_unseen`` and ``heatmap`` (data URI or None).
        chance: task -> score of a random option (:func:`harness.report.chance.chance_from_rows`),
            shown beside each task's mean; tasks without one show a dash.
    """
    from harness.report.noise import noise_rows, noise_status
    from harness.report.plots import shared_phrasings

    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=f"Instruction robustness report: {source.model}",
            header=header_items(source),
            a=analysis,
            pct=round(100 * analysis.level),
            plots=plots,
            best_worst=best_and_worst(analysis),
            methods=method_lines(analysis),
            any_seen=any(s.applicable for s in analysis.seen_unseen),
            seen_source=seen_source_text(source),
            chance=dict(chance or {}),
            bias={b.task: b for b in analysis.label_bias},
            degenerate_tasks=[b.task for b in analysis.label_bias if b.degenerate_phrasings],
            degenerate_pct=round(100 * DEGENERATE_SHARE),
            shared_phrasings=len(shared_phrasings(analysis.by_task)),
            noise=noise_rows(source.manifest, analysis),
            noise_status=noise_status(source.manifest),
        )
    )


def render_compare_html(context: dict[str, Any]) -> str:
    """The HTML model comparison (context built by :mod:`harness.report.compare`)."""
    return environment().get_template("compare.html.j2").render(**context)
