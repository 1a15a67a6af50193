"""Write a run's report: report.md, per_instruction.csv, per_task.csv, summary.json."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from harness.data.cache import atomic_write_bytes
from harness.results import RunManifest, iter_samples, read_manifest
from harness.stats import PhrasingScore, TaskSummary, per_phrasing, per_task


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _csv_bytes(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    return buf.getvalue().encode("utf-8")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(manifest: RunManifest, phrasings: list[PhrasingScore], tasks: list[TaskSummary], rows: int) -> str:
    """The Markdown report: what was run, the spread per task, and every phrasing's score."""
    model = manifest.model
    lines = [
        f"# Instruction robustness report: {model.get('name', '?')}",
        "",
        f"- run: `{manifest.run_id}` (status **{manifest.status}**, {rows} scored samples)",
        f"- model: {model.get('backend')} `{model.get('name')}`, dtype {model.get('dtype') or model.get('args', {}).get('dtype', '?')}",
        f"- phrasing placement: {manifest.placement}; chat template applied: {manifest.chat_template_applied}",
        f"- seed {manifest.seed}, documents per task: {manifest.limit or 'all'}; "
        f"harness {manifest.harness_version}, commit {(manifest.git_commit or '?')[:10]}{' (dirty)' if manifest.git_dirty else ''}",
        f"- seen collections for this model: {', '.join(manifest.seen_collections) or 'none'}",
        "",
        "Score: the task's metric averaged over documents (accuracy; BIG-bench multiple_choice_grade;",
        "exact match or ROUGE-Lsum ×100 for generation). Std across phrasings uses ddof=1.",
        "",
        "## Across phrasings, per task",
        "",
        "| task | phrasings | docs | mean | std | min | max | range | observed mean | unobserved mean | best | worst |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for t in tasks:
        lines.append(
            f"| {t.task} | {t.phrasings} | {t.documents} | {_fmt(t.mean)} | {_fmt(t.std)} | {_fmt(t.min)} | "
            f"{_fmt(t.max)} | {_fmt(t.range)} | {_fmt(t.observed_mean)} | {_fmt(t.unobserved_mean)} | "
            f"`{t.best}` | `{t.worst}` |"
        )
    lines += ["", "## Per phrasing", "", "| task | phrasing | status | seen | n | score | accuracy |", "|---|---|---|---|---:|---:|---:|"]
    for p in phrasings:
        lines.append(
            f"| {p.task} | `{_md_escape(p.instruction_id)}` | {p.status} | {'yes' if p.seen else 'no'} | {p.n} | {_fmt(p.score)} | {_fmt(p.accuracy)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Compute the statistics of a run folder and write the report files; returns their paths."""
    manifest = read_manifest(run_dir)
    rows = list(iter_samples(run_dir))
    phrasings = per_phrasing(rows)
    tasks = per_task(phrasings)
    out = out_dir or run_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report.md": out / "report.md",
        "per_instruction.csv": out / "per_instruction.csv",
        "per_task.csv": out / "per_task.csv",
        "summary.json": out / "summary.json",
    }
    atomic_write_bytes(paths["report.md"], render_markdown(manifest, phrasings, tasks, len(rows)).encode("utf-8"))
    atomic_write_bytes(paths["per_instruction.csv"], _csv_bytes([tuple(p) for p in phrasings], PhrasingScore._fields))
    atomic_write_bytes(paths["per_task.csv"], _csv_bytes([tuple(t) for t in tasks], TaskSummary._fields))
    summary = {
        "run_id": manifest.run_id,
        "status": manifest.status,
        "model": manifest.model.get("name"),
        "samples": len(rows),
        "tasks": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in t._asdict().items()} for t in tasks],
    }
    atomic_write_bytes(paths["summary.json"], (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return paths
