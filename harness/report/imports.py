"""Import results made elsewhere, so reports and comparisons need no re-run.

Two formats (documented in harness/report/README.md):

- lm-eval ``samples_<task>_<date>.jsonl`` (``lm_eval --log_samples``): one file per task and
  phrasing. The phrasing id comes from ``instruction_id`` or else the lm-eval task name in the
  file name; correctness from the sample's ``acc`` field (``exact_match`` when there is no
  ``acc``).
- A long-format CSV: one row per model, task, phrasing and document (``doc_id`` + ``correct``)
  or per model, task and phrasing (``score`` + ``n``).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harness.report.sources import ResultSource
from harness.stats.data import PhrasingResults

#: Columns every long-format CSV row needs.
REQUIRED_COLUMNS = ("model", "task", "instruction_id", "status")
#: Metric fields of an lm-eval sample read as correctness, in order of preference.
LM_EVAL_METRICS = ("acc", "exact_match")
_LM_EVAL_NAME = re.compile(r"^samples_(?P<task>.+?)_(?P<date>\d{4}-\d{2}-\d{2}T[0-9.\-]+)$")
_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0"}
_MAX_PROBLEMS = 20


class ImportProblem(ValueError):
    """An import file that cannot be read as results; lists every problem found (file, line, what to do)."""


class ImportOptions(NamedTuple):
    """What lm-eval sample files do not say about themselves."""

    #: Model name for lm-eval files (default: ``model_name`` of a results_*.json beside them).
    model: str | None = None
    #: Task id for lm-eval files (default: the lm-eval task name in the file name).
    task: str | None = None
    #: Phrasing id for an lm-eval file (default: the lm-eval task name in the file name).
    instruction_id: str | None = None
    #: Phrasing ids the model saw in tuning: imported as status observed and seen.
    seen_ids: frozenset[str] = frozenset()


def _parse_bool(value: str) -> bool | None:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _parse_float(value: str) -> float | None:
    v = value.strip()
    if v == "" or v.lower() in ("nan", "na", "null", "none"):
        return math.nan
    try:
        return float(v)
    except ValueError:
        return None


class _Cells:
    """Per-document rows of one (model, task, phrasing) while a CSV is read."""

    def __init__(self, status: str, seen: bool, text: str):
        self.status, self.seen, self.text = status, seen, text
        self.docs: dict[str, tuple[float, float]] = {}


def read_long_csv(path: Path) -> list[ResultSource]:
    """Read a long-format results CSV; one :class:`ResultSource` per model in it.

    Raises:
        ImportProblem: listing every bad row (line number and column) at once.
    """
    problems: list[str] = []
    per_doc: dict[tuple[str, str, str], _Cells] = {}
    aggregate: dict[tuple[str, str, str], PhrasingResults] = {}
    tasks: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportProblem(
                f"{path}: missing column(s) {', '.join(missing)}; a long-format CSV needs "
                f"{', '.join(REQUIRED_COLUMNS)} and either doc_id + correct or score + n (see harness/report/README.md)"
            )
        reader.fieldnames = header
        for line, raw in enumerate(reader, start=2):
            row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{path}:{line}"
            model, task, inst, status = (row["model"], row["task"], row["instruction_id"], row["status"])
            if not (model and task and inst):
                problems.append(f"{where}: model, task and instruction_id must not be empty")
                continue
            if status not in ("observed", "unobserved"):
                problems.append(f"{where}: status must be observed or unobserved, got {status!r}")
                continue
            seen_text = row.get("seen", "")
            seen = _parse_bool(seen_text) if seen_text else status == "observed"
            if seen is None:
                problems.append(f"{where}: seen must be true/false (or 1/0, yes/no), got {seen_text!r}")
                continue
            key = (model, task, inst)
            tasks.setdefault(model, set()).add(task)
            if row.get("doc_id"):
                correct_text = row.get("correct", "")
                # An empty or NaN correctness is a document without a valid result (left out, and reported).
                no_result = correct_text == "" or correct_text.lower() in ("nan", "na", "null", "none")
                correct = None if no_result else _parse_bool(correct_text)
                if correct is None and not no_result:
                    problems.append(f"{where}: correct must be 1/0 or true/false (empty or nan for no result), got {correct_text!r}")
                    continue
                score = _parse_float(row["score"]) if row.get("score") else float(correct) if correct is not None else math.nan
                if correct is None:
                    score = math.nan
                if score is None:
                    problems.append(f"{where}: score is not a number: {row.get('score')!r}")
                    continue
                if key in aggregate:
                    problems.append(f"{where}: {inst} of {model} on {task} has both per-document rows and a per-phrasing score")
                    continue
                cells = per_doc.setdefault(key, _Cells(status, seen, row.get("text", "")))
                if row["doc_id"] in cells.docs:
                    problems.append(f"{where}: document {row['doc_id']} repeated for {inst} of {model} on {task}")
                    continue
                cells.docs[row["doc_id"]] = (score, math.nan if correct is None else float(correct))
            else:
                score = _parse_float(row.get("score", ""))
                n_text = row.get("n", "")
                if score is None or not row.get("score"):
                    problems.append(f"{where}: a row without doc_id needs a numeric score (the phrasing's score) and n")
                    continue
                if not n_text.isdigit():
                    problems.append(f"{where}: n must be a whole number of documents, got {n_text!r}")
                    continue
                if key in aggregate or key in per_doc:
                    problems.append(f"{where}: {inst} of {model} on {task} appears twice")
                    continue
                aggregate[key] = PhrasingResults(
                    task=task,
                    instruction_id=inst,
                    status=status,
                    seen=seen,
                    prompt=row.get("text", ""),
                    reported_score=score,
                    reported_n=int(n_text),
                )
            if len(problems) >= _MAX_PROBLEMS:
                problems.append("(stopped after 20 problems)")
                break
    if problems:
        raise ImportProblem("\n".join(problems))
    by_model: dict[str, list[PhrasingResults]] = {}
    for (model, task, inst), cells in per_doc.items():
        docs = list(cells.docs)
        by_model.setdefault(model, []).append(
            PhrasingResults(
                task=task,
                instruction_id=inst,
                status=cells.status,
                seen=cells.seen,
                doc_ids=tuple(docs),
                scores=np.array([cells.docs[d][0] for d in docs]),
                correct=np.array([cells.docs[d][1] for d in docs]),
                prompt=cells.text,
            )
        )
    for (model, _, _), p in aggregate.items():
        by_model.setdefault(model, []).append(p)
    return [
        ResultSource(
            model=m,
            origin=f"import of {path.name}",
            phrasings=ps,
            tasks=sorted(tasks[m]),
            details=[f"imported from {path} (long-format CSV)"],
        )
        for m, ps in sorted(by_model.items())
    ]


def lm_eval_task_name(path: Path) -> str:
    """The lm-eval task name in ``samples_<task>_<date>.jsonl`` (the stem when it does not match)."""
    match = _LM_EVAL_NAME.match(path.stem)
    if match:
        return match.group("task")
    return path.stem.removeprefix("samples_")


def _lm_eval_prompt(sample: dict[str, Any]) -> str:
    args = sample.get("arguments")
    # Saved files hold {"gen_args_0": {"arg_0": context, ...}}; in-memory samples a list of tuples.
    if isinstance(args, dict) and args:
        first = next(iter(args.values()))
        if isinstance(first, dict):
            return str(first.get("arg_0", ""))
    if isinstance(args, list) and args and isinstance(args[0], (list, tuple)) and args[0]:
        return str(args[0][0])
    return ""


def _lm_eval_model_name(folder: Path) -> str | None:
    for results in sorted(folder.glob("results_*.json"), reverse=True):
        try:
            name = json.loads(results.read_text(encoding="utf-8")).get("model_name")
        except (OSError, ValueError, AttributeError):
            continue
        if name:
            return str(name)
    return None


def read_lm_eval_samples(path: Path, options: ImportOptions | None = None) -> ResultSource:
    """Read one lm-eval ``samples_*.jsonl`` file as one phrasing of one task.

    Raises:
        ImportProblem: when the file is not lm-eval samples or has no usable metric.
    """
    options = options or ImportOptions()
    name = lm_eval_task_name(path)
    task = options.task or name
    inst = options.instruction_id or name
    docs: dict[str, tuple[float, str]] = {}
    metric: str | None = None
    first_filter: str | None = None
    filters: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except ValueError as exc:
                raise ImportProblem(f"{path}:{line_no}: not JSON ({exc}); give lm-eval's samples_<task>_<date>.jsonl files") from None
            if not isinstance(sample, dict) or "doc_id" not in sample:
                raise ImportProblem(f"{path}:{line_no}: no doc_id; this is not an lm-eval samples file (run lm_eval with --log_samples)")
            if metric is None:
                metric = next((m for m in LM_EVAL_METRICS if m in sample), None)
                if metric is None:
                    numeric = sorted(k for k, v in sample.items() if isinstance(v, (int, float)) and k != "doc_id")
                    raise ImportProblem(
                        f"{path}:{line_no}: no {' or '.join(LM_EVAL_METRICS)} field to read correctness from "
                        f"(numeric fields: {', '.join(numeric) or 'none'})"
                    )
            # A task with several filters logs one line per filter; keep the first filter's lines.
            filt = str(sample.get("filter", ""))
            filters.add(filt)
            first_filter = filt if first_filter is None else first_filter
            if filt != first_filter:
                continue
            value = sample.get(metric)
            score = math.nan if value is None else float(value)
            docs[str(sample["doc_id"])] = (score, _lm_eval_prompt(sample) if not docs else "")
    if not docs:
        raise ImportProblem(f"{path}: no samples")
    ids = list(docs)
    scores = np.array([docs[d][0] for d in ids])
    seen = inst in options.seen_ids
    details = [f"imported from {path} (lm-eval samples, `{metric}` as correctness, task {task}, phrasing {inst})"]
    if len(filters) > 1:
        details.append(f"{path.name}: several lm-eval filters; used the first, {first_filter!r}")
    phrasing = PhrasingResults(
        task=task,
        instruction_id=inst,
        status="observed" if seen else "unobserved",
        seen=seen,
        doc_ids=tuple(ids),
        scores=scores,
        correct=np.where(np.isnan(scores), np.nan, (scores >= 1.0).astype(float)),
        prompt=docs[ids[0]][1],
    )
    model = options.model or _lm_eval_model_name(path.parent) or "imported"
    return ResultSource(model=model, origin=f"import of {path.name}", phrasings=[phrasing], tasks=[task], details=details)


def import_results(paths: Sequence[Path], options: ImportOptions | None = None) -> list[ResultSource]:
    """Import files (``.csv`` long format, ``.jsonl`` lm-eval samples); one source per model.

    Files of the same model are merged; a (task, phrasing) given twice is an error.

    Raises:
        ImportProblem: unknown file kinds, unreadable files, duplicates.
    """
    options = options or ImportOptions()
    if options.instruction_id and sum(1 for p in paths if p.suffix == ".jsonl") > 1:
        raise ImportProblem(
            "an instruction id given for several lm-eval files would merge them; import them one at a time, "
            "or let their file names name the phrasings"
        )
    parts: list[ResultSource] = []
    for path in paths:
        if not path.is_file():
            raise ImportProblem(f"{path}: no such file")
        if path.suffix == ".csv":
            parts.extend(read_long_csv(path))
        elif path.suffix == ".jsonl":
            parts.append(read_lm_eval_samples(path, options))
        else:
            raise ImportProblem(f"{path}: unknown kind; give a long-format .csv or lm-eval samples_*.jsonl")
    if not parts:
        raise ImportProblem(f"no results in {', '.join(str(p) for p in paths)}: the files hold a header only")
    merged: dict[str, ResultSource] = {}
    for part in parts:
        prev = merged.get(part.model)
        if prev is None:
            merged[part.model] = part
            continue
        have = {(p.task, p.instruction_id) for p in prev.phrasings}
        dupes = sorted(f"{p.task}/{p.instruction_id}" for p in part.phrasings if (p.task, p.instruction_id) in have)
        if dupes:
            raise ImportProblem(f"{part.origin}: {part.model} already has results for {', '.join(dupes)}")
        merged[part.model] = ResultSource(
            model=part.model,
            origin=f"{prev.origin}, {part.origin.removeprefix('import of ')}",
            phrasings=[*prev.phrasings, *part.phrasings],
            tasks=sorted(set(prev.tasks) | set(part.tasks)),
            details=[*prev.details, *part.details],
        )
    return list(merged.values())


def load_sources(paths: Sequence[Path], options: ImportOptions | None = None) -> list[ResultSource]:
    """Run folders and import files, in the order given; import files may hold several models.

    Raises:
        ImportProblem: for import files that cannot be read.
        harness.results.RunError: for folders that are not run folders.
    """
    from harness.report.sources import load_run

    sources: list[ResultSource] = []
    files = [p for p in paths if not p.is_dir()]
    imported = iter(import_results(files, options)) if files else iter(())
    # Keep run folders in place and put the imported models where their files first appear.
    placed = False
    for path in paths:
        if path.is_dir():
            sources.append(load_run(path))
        elif not placed:
            sources.extend(imported)
            placed = True
    return sources
