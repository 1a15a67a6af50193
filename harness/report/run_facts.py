"""Sentences about how a run was set up that the Markdown and HTML reports share: where the
seen flags came from, and what the phrasing placement did."""

from __future__ import annotations

from typing import Any

from harness.report.sources import ResultSource
from harness.results import RunManifest


def _names(values: Any) -> str:
    return ", ".join(str(v) for v in values or []) or "none"


def seen_source_text(source: ResultSource) -> str:
    """Where the seen flags of these results came from, in one sentence (no final period)."""
    m = source.manifest
    if m is None:
        return "as given in the imported results"
    recorded = m.seen_source
    seen_from = m.model.get("seen_from")
    if recorded is None and isinstance(seen_from, dict):
        recorded = {"kind": "tune.json", "path": seen_from.get("path"), "sha256": seen_from.get("sha256")}
    if recorded is None:
        return f"collections counted as seen: {_names(m.seen_collections)} (where they came from is not recorded: run.json predates it)"
    kind = recorded.get("kind")
    if kind == "tune.json":
        return (
            f"from the tune.json {recorded.get('path')} (sha256 {str(recorded.get('sha256'))[:12]}): "
            "its train phrasings are seen, every other phrasing unseen"
        )
    if kind == "declared":
        return f"declared by the user ({recorded.get('option')}): collections counted as seen: {_names(recorded.get('collections'))}"
    if kind == "family-map":
        held = recorded.get("held_out_tasks")
        return (
            f"from the family map {recorded.get('file')}, family {recorded.get('family')} ({recorded.get('reference') or 'no reference'}): "
            f"collections counted as seen: {_names(recorded.get('collections'))}"
            + (f"; tasks held out of its tuning, counted unseen: {_names(held)}" if held else "")
        )
    where = recorded.get("file") or "harness/model_families.yaml"
    return f"not applicable: no family in {where} matches this model, and neither --seen nor a tune.json was given"


def placement_lines(manifest: RunManifest | None) -> list[str]:
    """Per task, what ``--placement system`` did; one line per task (none for other placements)."""
    if manifest is None or not manifest.placement_effect:
        return []
    lines = []
    for task, e in manifest.placement_effect.items():
        if e.with_system_part == 0:
            lines.append(f"{task}: no phrasing split into a system part (all {e.phrasings} render as under placement user)")
        else:
            lines.append(
                f"{task}: {e.with_system_part} of {e.phrasings} phrasing(s) with a system part, "
                f"{e.unchanged_from_user} unchanged from placement user"
            )
    if manifest.placement_applied == "none":
        lines.append("the model has no chat template, so no phrasing was given a system turn (placement applied: none)")
    return lines
