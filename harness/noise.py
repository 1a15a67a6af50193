"""The numerical noise floor of a run: a seeded share of its cells scored again in float32.

A run in bf16 or fp16 rounds every activation; the same cell in float32 can get another
prediction. Those flips move a phrasing's accuracy as a change of wording would, so a run
measures them: after its rows are complete, ``--noise-check F`` (default 0.02, at least
``MIN_CELLS`` cells per task; 0 skips it) of each task's cells, seeded, are scored
again with the same model in float32. ``noise_check.jsonl`` holds those rows and run.json's
``noise_check`` the comparison per task: cells, predictions that flip (with a Wilson 95% CI),
accuracy in the run's dtype and in float32, and the largest loglikelihood difference. Reports
show it and mark across-phrasing differences smaller than the task's floor as within
numerical noise.

A run already in float32 needs no check (recorded as such). Process count needs none either:
irh-fast's numbers do not depend on it (tests/test_history.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.backends.models import HF_BACKENDS, LoadedModel, ModelSpec, load_model
from harness.data.cache import atomic_write_bytes
from harness.results import NoiseCheck, SampleRow, TaskNoise, iter_sample_file, iter_samples

#: The file of a run folder that holds the float32 rows.
NOISE_ROWS = "noise_check.jsonl"
#: At least this many cells are checked (all of them in a smaller run).
MIN_CELLS = 50
#: The dtype a check compares against.
REFERENCE_DTYPE = "float32"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def reference_spec(spec: ModelSpec) -> tuple[ModelSpec | None, str]:
    """The same model in float32, or None and why a check is not needed or not possible."""
    dtype = spec.args.get("dtype") or "auto"
    mixed = spec.args.get("mixed_precision_dtype")
    if spec.backend not in (*HF_BACKENDS, "irh-fake"):
        return None, f"not possible: the {spec.backend} backend's precision is set by its server"
    full = ("float32", "fp32")
    if dtype in full and (mixed is None or mixed in full):
        return None, "not needed: the run is in float32"
    args = {k: v for k, v in spec.args.items() if k != "mixed_precision_dtype"}
    label = f"{dtype} with {mixed} autocast" if mixed else dtype
    return ModelSpec(spec.backend, {**args, "dtype": REFERENCE_DTYPE}, spec.label), label


def choose_cells(rows: list[SampleRow], fraction: float, seed: int, minimum: int = MIN_CELLS) -> list[SampleRow]:
    """Per task, a seeded sample of ``max(minimum, fraction x the task's rows)`` rows (all of
    them in a smaller task), so that every task gets its own floor."""
    if fraction <= 0:
        return []
    by_task: dict[str, list[SampleRow]] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
    chosen: list[SampleRow] = []
    for task, group in sorted(by_task.items()):
        wanted = min(len(group), max(minimum, math.ceil(fraction * len(group))))
        chosen += random.Random(f"{seed}:noise-check:{task}").sample(group, wanted)
    return chosen


def compare(run_rows: list[SampleRow], reference_rows: list[SampleRow]) -> dict[str, TaskNoise]:
    """Per task: how the reference rows differ from the run's rows for the same cells."""
    mine = {row.key: row for row in run_rows}
    by_task: dict[str, list[tuple[SampleRow, SampleRow]]] = {}
    for ref in reference_rows:
        if ref.key in mine:
            by_task.setdefault(ref.task, []).append((mine[ref.key], ref))
    out: dict[str, TaskNoise] = {}
    for task, pairs in sorted(by_task.items()):
        flips = sum(a.prediction != b.prediction for a, b in pairs)
        diffs = [abs(x - y) for a, b in pairs for x, y in zip(a.loglikelihoods or [], b.loglikelihoods or [], strict=False)]
        out[task] = TaskNoise(
            cells=len(pairs),
            flips=flips,
            flip_share=flips / len(pairs),
            flip_ci=wilson(flips, len(pairs)),
            accuracy_run=sum(a.score for a, _ in pairs) / len(pairs),
            accuracy_reference=sum(b.score for _, b in pairs) / len(pairs),
            max_abs_loglikelihood_diff=max(diffs, default=0.0),
        )
    return out


def run_noise_check(
    run_dir: Path,
    spec: ModelSpec,
    fraction: float,
    seed: int,
    score: Callable[[LoadedModel, list[SampleRow]], list[SampleRow]],
    say: Callable[[str], Any] | None = None,
) -> NoiseCheck:
    """Score a share of the run's cells again in float32 (``score`` scores rows' cells with a
    model, as the run did) and compare. The reference rows are written to noise_check.jsonl."""
    reference, why = reference_spec(spec)
    if reference is None or fraction <= 0:
        return NoiseCheck(status=why if fraction > 0 else "not run: --noise-check 0", fraction=fraction, seed=seed)
    rows = list(iter_samples(run_dir))
    chosen = choose_cells(rows, fraction, seed)
    path = run_dir / NOISE_ROWS
    done = {row.key: row for row in iter_sample_file(path)} if path.exists() else {}
    todo = [row for row in chosen if row.key not in done]
    if todo:
        if say:
            say(f"noise check: scoring {len(todo)} of the run's cells again in {REFERENCE_DTYPE} (--noise-check {fraction:g}; 0 skips it)")
        fresh = score(load_model(reference), todo)
        done.update((row.key, row) for row in fresh)
        atomic_write_bytes(path, "".join(row.model_dump_json() + "\n" for row in done.values()).encode("utf-8"))
    reference_rows = [done[row.key] for row in chosen if row.key in done]
    return NoiseCheck(status="done", fraction=fraction, seed=seed, run_dtype=why, tasks=compare(chosen, reference_rows))
