"""`irh tune-experiment`: the base model against each tuning method on the same held-out
phrasings and documents, in one comparison.

Stages, each its own `irh` process and each resumable (rerun the same command):
1. `irh tune` once per method into ``OUT/adapters/<method>`` (same seed: same split);
2. `irh run` of the base model (seen flags from the first adapter's tune.json, so its gap is
   the baseline between the same two phrasing sets) and of every adapter, into
   ``OUT/runs/<name>``, on the evaluation documents the tuning kept aside;
3. ``OUT/experiment.md`` (+ .csv, .png, .json): per model, task and overall, mean and std
   across seen and across unseen phrasings with CIs, the gap and its tests.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.tune.record import METHODS, TuneError, read_tune_record

DEFAULT_TASKS = ("glue.sst2", "commonsense.piqa", "arc.easy", "mmlu.high_school_geography")


@dataclass(frozen=True)
class ExperimentConfig:
    out: Path
    model: str = "default"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    methods: tuple[str, ...] = METHODS
    steps: int = 40
    eval_limit: int = 20
    phrasings: int | None = 12
    seed: int = 1234
    kl_weight: float = 1.0
    controls: bool = False
    dtype: str | None = None


def _irh(args: Sequence[str], stage: str, log: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"[{stage}] irh {' '.join(args)}")
    began = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "harness.cli", *args])
    log.setdefault("stages", {})[stage] = {
        "command": "irh " + " ".join(args),
        "seconds": round(time.monotonic() - began, 1),
        "exit": code,
        # Largest resident set of any stage so far (the OS keeps one maximum over children).
        "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    if code != 0:
        raise TuneError(f"stage {stage} failed (exit {code}); fix the cause and rerun the same command to resume")


def _adapter(out: Path, method: str) -> Path:
    return out / "adapters" / method.replace("+", "-")


def _existing_run(reports: Path) -> Path | None:
    runs = sorted(d for d in reports.iterdir() if (d / "run.json").exists()) if reports.is_dir() else []
    return runs[-1] if runs else None


def run_experiment(config: ExperimentConfig, echo: Callable[[str], None] = print) -> Path:
    """Tune, evaluate and compare; returns the path of experiment.md. Rerunning resumes."""
    from harness.backends.models import default_dtype
    from harness.results import read_manifest
    from harness.tune.train import resolve_base_model

    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise TuneError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "experiment.json"
    log: dict[str, Any] = json.loads(log_path.read_text()) if log_path.exists() else {}
    log["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in config.__dict__.items()}
    base = resolve_base_model(config.model)["pretrained"]
    dtype = config.dtype or default_dtype()
    tasks = ",".join(config.tasks)
    try:
        for method in config.methods:
            folder = _adapter(out, method)
            if (folder / "tune.json").exists():
                if read_tune_record(folder).status == "complete":
                    continue
                _irh(["tune", "--resume", str(folder)], f"tune {method}", log, echo)
                continue
            args = ["tune", "--model", config.model, "--method", method, "--tasks", tasks, "--out", str(folder)]
            args += ["--steps", str(config.steps), "--eval-limit", str(config.eval_limit), "--seed", str(config.seed)]
            args += ["--kl-weight", str(config.kl_weight), "--dtype", dtype]
            if config.phrasings:
                args += ["--phrasings", str(config.phrasings)]
            _irh(args, f"tune {method}", log, echo)
        records = {m: read_tune_record(_adapter(out, m)) for m in config.methods}
        splits = {m: r.tasks for m, r in records.items()}
        first = config.methods[0]
        for method, split in splits.items():
            if split != splits[first]:
                raise TuneError(f"{method} was tuned on another split than {first}; tune every method with the same seed and tasks")
        models = {"base": f"irh-fast:pretrained={base}"}
        for method in config.methods:
            backend = "irh-fast" if method.startswith("lora") else "hf"  # irh-fast would drop a soft prompt
            models[method] = f"{backend}:pretrained={base},peft={_adapter(out, method)}"
        run_dirs: dict[str, Path] = {}
        for name, spec in models.items():
            reports = out / "runs" / name.replace("+", "-")
            existing = _existing_run(reports)
            if existing is not None:
                if read_manifest(existing).status != "complete":
                    _irh(["run", "--resume", str(existing), "--no-report"], f"run {name}", log, echo)
                run_dirs[name] = existing
                continue
            args = ["run", "--model", spec, "--tasks", tasks, "--limit", str(config.eval_limit), "--seed", str(config.seed)]
            args += ["--dtype", dtype, "--reports-dir", str(reports), "--no-report"]
            wanted = records[first].phrasing_ids() + (["*.ctl-*"] if config.controls else [])
            args += ["--instructions", ",".join(wanted)]
            if name == "base":
                args += ["--seen-from", str(_adapter(out, first))]
            if config.controls:
                args.append("--controls")
            _irh(args, f"run {name}", log, echo)
            found = _existing_run(reports)
            if found is None:
                raise TuneError(f"run {name} wrote no run folder under {reports}")
            run_dirs[name] = found
    finally:
        log_path.write_text(json.dumps(log, indent=2) + "\n")
    return write_experiment_report(out, run_dirs, config, log)


def write_experiment_report(out: Path, run_dirs: dict[str, Path], config: ExperimentConfig, log: dict[str, Any]) -> Path:
    """experiment.md, .csv and .png from the run folders (and the adapters' tune.json)."""
    from harness.report.sources import load_run
    from harness.tune.summary import plot_gaps, render_table, task_rows, write_csv

    rows = []
    for name, run_dir in run_dirs.items():
        rows.extend(task_rows(name, load_run(run_dir).phrasings, seed=config.seed))
    write_csv(rows, out / "experiment.csv")
    plot_gaps(rows, out / "experiment.png")
    lines = [
        "# Tuning experiment: seen vs unseen phrasings, base model and each method",
        "",
        f"Tasks: {', '.join(config.tasks)}; {config.eval_limit} evaluation documents per task (none trained on); seed {config.seed}.",
        "Seen = the phrasings the methods were tuned on (for the base model: the same set, never trained on); "
        "unseen = the held-out phrasings. p (gap): Welch's t across phrasings per task, a permutation of the seen labels "
        "within tasks overall; p (paired): Wilcoxon signed-rank over documents. CIs: two-way bootstrap (documents, then "
        "phrasings within each side), within each task for the overall row; overall = the mean over tasks.",
        "",
        render_table(rows),
        "",
        "![seen and unseen means per model, and each task's gap](experiment.png)",
        "",
        "## Tuning",
        "",
        "| method | steps | lr | λ (KL) | seconds | peak memory MiB | first loss | last loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in config.methods:
        record = read_tune_record(_adapter(out, method))
        h = record.hyperparameters
        curve = record.loss_curve
        lines.append(
            f"| {method} | {record.steps_done} | {h.learning_rate:g} | {h.kl_weight:g} | {record.seconds:.0f} | {record.peak_memory_mib} | "
            f"{curve[0].loss:.3f} | {curve[-1].loss:.3f} |"
            if curve
            else f"| {method} | 0 | | | | | | |"
        )
    lines += ["", "## Stages", "", "| stage | seconds | command |", "|---|---:|---|"]
    for stage, info in log.get("stages", {}).items():
        lines.append(f"| {stage} | {info['seconds']:.0f} | `{info['command']}` |")
    lines += ["", "Run folders: " + ", ".join(f"{n}: {d}" for n, d in run_dirs.items())]
    path = out / "experiment.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
