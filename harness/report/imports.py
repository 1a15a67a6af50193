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
import dataclasses
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from harness.errors import HarnessError
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
#: The results of an imported model, written beside its report so `irh compare` can read the folder.
IMPORTED_RESULTS = "imported.csv"


class ImportProblem(HarnessError, ValueError):
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


#: Longest line a results file may have (bytes). The csv module refuses fields over 128 KiB
#: anyway; checking lines first refuses a huge one in bounded memory and at once.
MAX_LINE_BYTES = 1 << 20


def _check_line_lengths(path: Path) -> None:
    """Refuse a file with a line longer than :data:`MAX_LINE_BYTES`, naming the line, reading
    at most that much of any line."""
    with open(path, "rb") as fh:
        line_no = 0
        while chunk := fh.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            if len(chunk) > MAX_LINE_BYTES:
                raise ImportProblem(f"{path}:{line_no}: a line longer than {MAX_LINE_BYTES:,} bytes; a results row is never that long")


def read_text(path: Path) -> str:
    """A file's text as UTF-8 (a byte-order mark is allowed).

    Raises:
        ImportProblem: naming the line of the first byte that is not UTF-8.
    """
    _check_line_lengths(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportProblem(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8 "
            f"(e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.csv`)"
        ) from None


def _parse_scale(text: str) -> float | None:
    """A declared score scale (the metric's maximum): a positive finite number; None when invalid."""
    value = _parse_float(text)
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


def _score_problem(value: float, scale: float) -> str | None:
    """Why an imported score cannot be used (None when it can): not finite, or outside 0..scale."""
    if math.isnan(value):
        return None
    if not math.isfinite(value):
        return f"score {value} is not a finite number; give the metric's value (empty or nan: no result)"
    if not 0.0 <= value <= scale:
        if scale == 1.0:
            return (
                f"score {value:g} is outside 0–1; give accuracy-like scores as fractions, or declare the metric's "
                "scale in a `scale` column (e.g. 100 for BLEU on 0–100)"
            )
        return f"score {value:g} is outside 0–{scale:g} (the `scale` given on this row); fix the score or the scale"
    return None


def read_long_csv(path: Path) -> list[ResultSource]:
    """Read a long-format results CSV; one :class:`ResultSource` per model in it.

    Scores are on 0–1 unless a ``scale`` column declares the metric's maximum (e.g. 100); a
    score outside ``0..scale``, an infinite score and ``n`` below 1 are refused.

    Raises:
        ImportProblem: listing every bad row (line number and column) at once; a file that is
            not UTF-8 or a field over the csv module's size limit, with its line.
    """
    problems: list[str] = []
    per_doc: dict[tuple[str, str, str], _Cells] = {}
    aggregate: dict[tuple[str, str, str], PhrasingResults] = {}
    tasks: dict[str, set[str]] = {}
    scales: dict[tuple[str, str], float] = {}
    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ImportProblem(
                f"{path}: missing column(s) {', '.join(missing)}; a long-format CSV needs "
                f"{', '.join(REQUIRED_COLUMNS)} and either doc_id + correct or score + n (see harness/report/README.md)"
            )
        reader.fieldnames = header
        for raw in reader:
            line = reader.line_num
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
            scale_text = row.get("scale", "")
            scale = _parse_scale(scale_text) if scale_text else 1.0
            if scale is None:
                problems.append(f"{where}: scale must be a positive number (the metric's maximum, e.g. 1 or 100), got {scale_text!r}")
                continue
            if scales.setdefault((model, task), scale) != scale:
                problems.append(
                    f"{where}: scale {scale:g} differs from {scales[(model, task)]:g} on an earlier row of {model} on {task}; "
                    "give one scale per model and task"
                )
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
                if scale != 1.0 and correct is not None and not row.get("score"):
                    problems.append(f"{where}: a row with a scale of {scale:g} needs its score (on 0–{scale:g}) besides correct")
                    continue
                bad = _score_problem(score, scale)
                if bad:
                    problems.append(f"{where}: {bad}")
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
                bad = _score_problem(score, scale)
                if bad:
                    problems.append(f"{where}: {bad}")
                    continue
                if not n_text.isdigit() or int(n_text) < 1:
                    problems.append(f"{where}: n must be a whole number of documents, at least 1, got {n_text!r}")
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
                    score_scale=scale,
                )
            if len(problems) >= _MAX_PROBLEMS:
                problems.append("(stopped after 20 problems)")
                break
    except csv.Error as exc:
        # e.g. a field over csv's 131,072-character limit: one line, not a traceback.
        problems.append(
            f"{path}:{reader.reader.line_num}: {exc}; a long-format CSV holds ids, scores and short texts: shorten the field "
            "(or check that its quotes are balanced)"
        )
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
                score_scale=scales[(model, task)],
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
            details=[
                f"imported from {path} (long-format CSV)",
                *[
                    f"scores of {t} are on 0–{scales[(m, t)]:g} (declared in the scale column)"
                    for t in sorted(tasks[m])
                    if scales[(m, t)] != 1.0
                ],
            ],
        )
        for m, ps in sorted(by_model.items())
    ]


def write_long_csv(source: ResultSource, path: Path) -> None:
    """Write one model's results as a long-format CSV that :func:`read_long_csv` reads back unchanged,
    so a folder made by ``irh report --import`` can be compared later."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*REQUIRED_COLUMNS, "seen", "doc_id", "correct", "score", "n", "scale", "text"])
    for p in source.phrasings:
        scale = "" if p.score_scale is None else repr(float(p.score_scale))
        head = [source.model, p.task, p.instruction_id, p.status, "true" if p.seen else "false"]
        if not p.per_document:
            writer.writerow([*head, "", "", repr(float(p.score)), p.n, scale, p.prompt])
            continue
        for i, (doc, score, correct) in enumerate(zip(p.doc_ids, p.scores, p.correct, strict=True)):
            right = "" if math.isnan(correct) else str(int(correct))
            writer.writerow([*head, doc, right, "nan" if math.isnan(score) else repr(float(score)), "", scale, p.prompt if i == 0 else ""])
    path.write_text(buf.getvalue(), encoding="utf-8")


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


def _lm_eval_score(value: Any) -> float | None:
    """A per-sample metric value on 0..1 (NaN stays NaN: no result); None when unusable."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)):
        return None
    score = float(value)
    return score if math.isnan(score) or 0.0 <= score <= 1.0 else None


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
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
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
        score = math.nan if value is None else _lm_eval_score(value)
        if score is None:
            raise ImportProblem(f"{path}:{line_no}: {metric} is {value!r}; lm-eval's {metric} is 0 or 1 per sample (null: no result)")
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
        score_scale=1.0,
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


def read_import_folder(folder: Path) -> list[ResultSource]:
    """The models of a folder written by ``irh report --import``: its ``imported.csv``, or, for an
    import of several models, the ``imported.csv`` of each model's subfolder."""
    files = [folder / IMPORTED_RESULTS] if (folder / IMPORTED_RESULTS).is_file() else sorted(folder.glob(f"*/{IMPORTED_RESULTS}"))
    sources = []
    for file in files:
        for source in read_long_csv(file):
            where = file.parent
            details = [f"imported results in {where}", *source.details[1:]]
            sources.append(dataclasses.replace(source, origin=f"imported results in {where}", details=details))
    return sources


def load_sources(paths: Sequence[Path], options: ImportOptions | None = None) -> list[ResultSource]:
    """Run folders, folders written by ``irh report --import`` and import files, in the order given;
    import files and import folders may hold several models.

    Raises:
        ImportProblem: for import files that cannot be read.
        harness.results.RunError: for folders that are neither run folders nor import folders.
    """
    from harness.report.sources import load_run
    from harness.results import MANIFEST

    sources: list[ResultSource] = []
    files = [p for p in paths if not p.is_dir()]
    imported = iter(import_results(files, options)) if files else iter(())
    # Keep folders in place and put the imported models where their files first appear.
    placed = False
    for path in paths:
        if path.is_dir():
            from_import = [] if (path / MANIFEST).exists() else read_import_folder(path)
            sources.extend(from_import or [load_run(path)])
        elif not placed:
            sources.extend(imported)
            placed = True
    return sources
