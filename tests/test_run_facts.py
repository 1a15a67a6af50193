"""Where "seen" came from (family map, --seen, tune.json, nothing) and what --placement system
did, in run.json, on the run's messages and in the report."""

from __future__ import annotations

import json
from pathlib import Path

import harness
from harness.report.tables import write_report
from harness.results import MANIFEST, iter_samples


def _run(tmp_path: Path, model: str = "irh-fake", **kwargs: object) -> Path:
    [result] = harness.run("nli.rte", models=model, limit=4, max_instructions=3, reports_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert result.status == "complete"
    return result.run_dir


def _manifest(run: Path) -> dict:
    return json.loads((run / MANIFEST).read_text())


def _seen_lines(run: Path) -> tuple[str, str, str]:
    """The report.md header's seen line, the seen-vs-unseen section's, and report.html's seen-vs-unseen text."""
    md = (run / "report.md").read_text().splitlines()
    header = next(line for line in md if line.startswith("- seen: "))
    section = next(line for line in md if line.startswith("Seen flags: "))
    html = (run / "report.html").read_text()
    start = html.index('<p class="muted">Seen flags: ')
    return header, section, html[start : html.index("</p>", start)]


def test_seen_from_the_family_map_names_the_family_and_its_reference(cache: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, "irh-fake:model=google/flan-t5-small", say=None)
    source = _manifest(run)["seen_source"]
    assert source["kind"] == "family-map" and source["family"] == "flan-t5" and "flan-2021" in source["collections"]
    header, section, html = _seen_lines(run)
    for line in (header, section, html):
        assert "from the family map harness/model\\_families.yaml" in line or "from the family map harness/model_families.yaml" in line
        assert "family flan-t5 (Chung et al. 2022, Scaling Instruction-Finetuned Language Models" in line


def test_seen_declared_by_the_user(cache: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, seen="flan-2021,p3-promptsource", say=None)
    assert _manifest(run)["seen_source"] == {
        "kind": "declared",
        "option": "--seen flan-2021,p3-promptsource",
        "collections": ["flan-2021", "p3-promptsource"],
    }
    for line in _seen_lines(run):
        assert "declared by the user (--seen flan-2021,p3-promptsource)" in line


def test_seen_from_a_tune_json_gives_its_path_and_hash(cache: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, say=None, write_report=False)
    # A tuned run records its tune.json like this (harness.api.run); written by hand here, a tune is too slow for a test.
    manifest = _manifest(run)
    manifest["seen_source"] = {"kind": "tune.json", "path": "/work/adapters/rte/tune.json", "sha256": "ab12" * 16}
    (run / MANIFEST).write_text(json.dumps(manifest))
    write_report(run, n_boot=20)
    for line in _seen_lines(run):
        assert "from the tune.json /work/adapters/rte/tune.json (sha256 ab12ab12ab12)" in line


def test_no_source_of_seen_flags_is_not_applicable(cache: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, say=None)
    assert _manifest(run)["seen_source"] == {"kind": "none", "file": "harness/model_families.yaml"}
    for line in _seen_lines(run):
        assert "not applicable: no family in harness/model" in line and "neither --seen nor a tune.json was given" in line


#: nli2.w01 opens with the premise (no system part); nli2.w04 and nli2.w05 open with a sentence of instruction.
SPLIT_PLAN = "nli2.w01,nli2.w04,nli2.w05"


def test_placement_counts_in_run_json_messages_and_report(cache: Path, tmp_path: Path) -> None:
    said: list[str] = []
    run = _run(tmp_path, placement="system", instructions=SPLIT_PLAN, say=said.append)
    assert _manifest(run)["placement_effect"] == {"nli.rte": {"phrasings": 3, "with_system_part": 2, "unchanged_from_user": 1}}
    # Checked against the rows: the phrasings with a system part show the fake chat template's
    # system turn, and the unchanged one's prompts are byte-identical to a --placement user run's.
    rows = list(iter_samples(run))
    assert {r.instruction_id for r in rows if "<|system|>" in r.prompt} == {"nli2.w04", "nli2.w05"}
    user_rows = {r.key: r.prompt for r in iter_samples(_run(tmp_path, placement="user", instructions=SPLIT_PLAN, say=None))}
    assert {r.instruction_id for r in rows if user_rows[r.key] == r.prompt} == {"nli2.w01"}
    assert "placement system: nli.rte: 2 of 3 phrasing(s) have a system part, 1 unchanged from --placement user" in said
    expected = "nli.rte: 2 of 3 phrasing(s) with a system part, 1 unchanged from placement user"
    assert f"  - {expected}" in (run / "report.md").read_text().splitlines()
    assert f"<dt>placement did</dt><dd>{expected}</dd>" in (run / "report.html").read_text()


def test_a_task_whose_phrasings_never_split_says_so_in_one_line(cache: Path, tmp_path: Path) -> None:
    said: list[str] = []
    run = _run(tmp_path, placement="system", instructions="nli2.w01", say=said.append)
    assert _manifest(run)["placement_effect"] == {"nli.rte": {"phrasings": 1, "with_system_part": 0, "unchanged_from_user": 1}}
    assert [s for s in said if s.startswith("placement system:")] == [
        "placement system: nli.rte: none of its 1 phrasing(s) has a system part (each opens with the document); "
        "its prompts are those of --placement user"
    ]
    md = (run / "report.md").read_text()
    assert "  - nli.rte: no phrasing split into a system part (all 1 render as under placement user)" in md.splitlines()


def test_user_placement_records_no_placement_effect(cache: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, say=None, write_report=False)
    assert _manifest(run)["placement_effect"] is None
