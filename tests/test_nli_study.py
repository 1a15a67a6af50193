"""`irh nli`: the study's stages (skip, redo, refuse), its report's arithmetic, the CLI, bad input.

The model calls are fakes (harness.nli.study.Hooks), so the whole machinery runs in seconds.
"""

from __future__ import annotations

import csv
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.nli import study as study_mod
from harness.nli.examples import LABELS3, Example, NLIStudyError, read_examples
from harness.nli.report import (
    BASELINE,
    CHALLENGING,
    IN_DIST,
    STANDARD,
    SetInfo,
    StudyResults,
    bootstrap_gain,
    computed_grouping,
    mean_std,
    summarise,
)
from harness.nli.study import Hooks, StudySettings, run_study
from harness.nli.suite import NLISet

SETS = [
    NLISet("indist", "nlis.vitaminc", 3, {"T": "entailment", "N": "neutral", "F": "contradiction"}, None, "test"),
    NLISet("hard", "nlis.rte", 2, {"0": "entailment", "1": "not_entailment"}, "challenging", "ood"),
    NLISet("easy", "nlis.cb", 3, {"0": "entailment", "1": "contradiction", "2": "neutral"}, "standard", "ood"),
]
#: The `offline` preset's shape: a 2-way in-distribution set (RTE) and one 3-way OOD set (CB).
TWO_WAY_SETS = [
    NLISet("rte", "nlis.rte_heldout", 2, {"0": "entailment", "1": "not_entailment"}, None, "test"),
    NLISet("cb", "nlis.cb", 3, {"0": "entailment", "1": "contradiction", "2": "neutral"}, "standard", "ood"),
]
#: The accuracy each fake evaluation gives a set: "hard" stays below 70%, "easy" above.
LEVEL = {"indist": 0.6, "hard": 0.4, "easy": 0.8, "rte": 0.6, "cb": 0.5}


@dataclass
class FakeSuite:
    preset: str = "offline"
    sets: list[NLISet] = field(default_factory=lambda: list(SETS))
    size: int = 60

    @property
    def test_set(self) -> NLISet:
        return self.sets[0]

    @property
    def ood_sets(self) -> list[NLISet]:
        return [s for s in self.sets if s.role == "ood"]

    def pool(self, *, seed: int) -> list[Example]:
        # Premises shared by three hypotheses, so concatenation finds triples.
        return [Example(f"p{i}", f"Premise number {i // 3}.", f"Hypothesis {i}.", LABELS3[i % 3], "toy") for i in range(self.size)]


@dataclass
class TwoWaySuite(FakeSuite):
    """A 2-way in-distribution pool, as RTE's: not-entailment kept as contradiction, label2 in meta."""

    sets: list[NLISet] = field(default_factory=lambda: list(TWO_WAY_SETS))

    def pool(self, *, seed: int) -> list[Example]:
        labels = ("entailment", "contradiction")
        return [
            Example(
                f"r{i}",
                f"RTE premise {i}.",
                f"Hypothesis {i}.",
                labels[i % 2],
                "rte",
                meta={"label2": ("entailment", "not_entailment")[i % 2]},
            )
            for i in range(self.size)
        ]


def _score(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass
class Fakes:
    """Fake model calls that record what they were asked and write what the real ones write."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    voters: list[str | None] = field(default_factory=list)
    fail_on: str | None = None
    suite: FakeSuite = field(default_factory=FakeSuite)

    def finetune(self, base: str, examples: list[Example], out: Path, **kwargs: Any) -> Path:
        self.calls.append(("finetune", str(out)))
        if self.fail_on and self.fail_on in str(out):
            (out.parent / "half-written.tmp").write_text("partial")
            raise KeyboardInterrupt
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "ids": [ex.id for ex in examples]}))
        return out

    def evaluate(self, spec: str, sets: list[NLISet], folder: Path, settings: StudySettings, say: Any, progress: Any) -> dict[str, Any]:
        self.calls.append(("evaluate", spec))
        (folder / "runs").mkdir(exist_ok=True)
        # Scores keyed on the spec without the temporary folder, so they are the same in every run.
        key = re.sub(r"peft=.*/(?=seed-\d+/)", "peft=", spec)
        out: dict[str, Any] = {}
        for s in sets:
            out[s.name] = {
                p: {f"d{d}": float(_score(key, s.name, p, d) % 100 < 100 * LEVEL[s.name]) for d in range(settings.limit)}
                for p in ("nli3.w01", "nli3.w02")
            }
        return out

    def label_probabilities(self, model: str, examples: list[Example], **kwargs: Any) -> dict[str, list[float]]:
        self.calls.append(("probs", model))
        out = {}
        for ex in examples:
            raw = [1 + _score(ex.id, i) % 7 for i in range(3)]
            out[ex.id] = [r / sum(raw) for r in raw]
        return out

    def difficulty_ratings(self, model: str, examples: list[Example], *, log: Path, **kwargs: Any) -> dict[str, float]:
        self.calls.append(("difficulty", model))
        log.write_text("".join(json.dumps({"id": ex.id}) + "\n" for ex in examples))
        return {ex.id: float(1 + _score(ex.id) % 10) for ex in examples}

    def generate_synthetic(self, model: str, variant: str, counts: dict[str, int], *, log_path: Path, **kwargs: Any) -> list[Example]:
        self.calls.append(("generate", variant))
        self.voters.append(kwargs.get("voter"))
        log_path.write_text('{"attempt": 0}\n')
        return [
            Example(
                f"syn-{label}-{i}", f"Made-up premise {i}.", f"Made-up hypothesis {i}.", label, "synthetic", origin=f"synthetic:{variant}"
            )
            for label in LABELS3
            for i in range(counts[label])
        ]

    def hooks(self) -> Hooks:
        return Hooks(
            load_suite=lambda preset: self.suite,
            resolve_base=lambda model: "/fake/base",
            finetune=self.finetune,
            evaluate=self.evaluate,
            label_probabilities=self.label_probabilities,
            difficulty_ratings=self.difficulty_ratings,
            generate_synthetic=self.generate_synthetic,
            release=lambda: None,
            dtype=lambda: "float32",
        )

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)


SMALL = StudySettings(budget=12, k_percent=50, seeds=(1, 2), candidates=20, limit=10, max_instructions=2, synthetic=("short_simple",))


def _run(out: Path, fakes: Fakes, settings: StudySettings = SMALL) -> Path:
    return run_study(settings, out, hooks=fakes.hooks())


def test_the_whole_study_runs_and_a_second_run_skips_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "study"
    fakes = Fakes()
    report = _run(out, fakes)
    variants = SMALL.variants
    assert variants == ["baseline", "random", "uncertainty", "misclassified", "difficulty", "concat", "synthetic-short_simple"]
    assert fakes.count("finetune") == 2 * len(variants)
    assert fakes.count("evaluate") == 2 * len(variants) + 1  # + the un-tuned model once
    assert fakes.count("probs") == 2 and fakes.count("difficulty") == 2 and fakes.count("generate") == 2
    for seed in (1, 2):
        sd = out / f"seed-{seed}"
        initial = read_examples(sd / "draw" / "initial.jsonl")
        assert len(initial) == 12
        for variant in variants:
            assert (sd / variant / "train" / ".done").is_file() and (sd / variant / "eval" / ".done").is_file()
            train = read_examples(sd / variant / "train" / "train.jsonl")
            assert len(train) == 12  # the budget never grows
            if variant != "baseline":
                replaced = [ex for ex in train if ex.origin != "pool"]
                assert replaced and all(ex.origin in (f"select:{variant}", "synthetic:short_simple") for ex in replaced)
                assert len(replaced) <= 6  # K = 50% of each class of 12 (4 per class -> 2 each)
        grouping = json.loads((sd / "grouping" / "grouping.json").read_text())
        assert grouping["computed"] == {"hard": "challenging", "easy": "standard"}
        assert (sd / "synthetic-short_simple" / "select" / "generation.log.jsonl").is_file()
        assert (sd / "scores" / "difficulty" / "ratings.log.jsonl").is_file()
    # The fake evaluation scores by the adapter folder's path: uncertainty's adapter is evaluated.
    assert any("uncertainty/train/adapter" in spec for kind, spec in fakes.calls if kind == "evaluate")
    assert any(kind == "probs" and "baseline/train/adapter" in spec for kind, spec in fakes.calls)
    for name in ("report.md", "report.csv", "sets.csv", "report.png"):
        assert (out / name).is_file()
    text = report.read_text()
    assert "| concat |" in text and "| un-tuned |" in text and "paired bootstrap over documents" in text
    settings = json.loads((out / "study.json").read_text())["settings"]
    assert settings["budget"] == 12 and settings["seeds"] == [1, 2]

    again = Fakes()
    _run(out, again)
    assert again.calls == []


@pytest.mark.parametrize(
    ("voter", "expected", "reported"),
    [
        ("model", [None, None], "the generating (un-tuned) model"),
        ("baseline", ["seed-1/baseline/train/adapter", "seed-2/baseline/train/adapter"], "the seed's baseline fine-tune"),
        ("hf:pretrained=/v", ["hf:pretrained=/v"] * 2, "`hf:pretrained=/v`"),
    ],
)
def test_the_voter_setting_picks_who_votes_on_synthetic_examples(
    tmp_path: Path, voter: str, expected: list[str | None], reported: str
) -> None:
    from dataclasses import replace

    fakes = Fakes()
    _run(tmp_path / "study", fakes, replace(SMALL, strategies=(), voter=voter))
    assert len(fakes.voters) == 2
    for got, want in zip(fakes.voters, expected, strict=True):
        if want is None or want.startswith("hf:"):
            assert got == want
        else:
            assert got is not None and got.startswith("irh-fast:pretrained=/fake/base,peft=") and got.endswith(want)
    text = (tmp_path / "study" / "report.md").read_text()
    assert f"few-shot votes by {reported} all give its intended label" in text


def test_a_2way_in_distribution_set_runs_every_variant_without_neutral(tmp_path: Path) -> None:
    """The `offline` preset's shape: RTE's pool has no neutral class; CB is the one OOD set."""
    out = tmp_path / "study"
    fakes = Fakes(suite=TwoWaySuite())
    asked: list[dict[str, Any]] = []
    hooks = fakes.hooks()

    def generate(model: str, variant: str, counts: dict[str, int], **kwargs: Any) -> list[Example]:
        asked.append({"counts": dict(counts), "labels": kwargs.get("labels")})
        return fakes.generate_synthetic(model, variant, counts, **kwargs)

    hooks.generate_synthetic = generate
    notes: list[str] = []
    run_study(SMALL, out, hooks=hooks, say=notes.append)
    assert [a["labels"] for a in asked] == [("entailment", "contradiction")] * 2
    assert all(a["counts"]["neutral"] == 0 and a["counts"]["entailment"] > 0 for a in asked)
    assert not any("0 for neutral" in n for n in notes)  # no class to replace, nothing to warn about
    for seed in (1, 2):
        for variant in SMALL.variants:
            train = read_examples(out / f"seed-{seed}" / variant / "train" / "train.jsonl")
            assert len(train) == 12 and "neutral" not in {ex.label for ex in train}
    grouping = json.loads((out / "seed-1" / "grouping" / "grouping.json").read_text())
    assert grouping["computed"] == {"cb": "challenging"}
    assert (out / "report.md").is_file()


def test_a_folder_run_on_other_sets_is_refused(tmp_path: Path) -> None:
    """A study started when `offline` meant VitaminC is not resumed on RTE's sets."""
    out = tmp_path / "study"
    settings = StudySettings(budget=12, k_percent=50, seeds=(1,), strategies=(), synthetic=(), untuned=False, candidates=10, limit=4)
    _run(out, Fakes(), settings)
    fakes = Fakes(suite=TwoWaySuite())
    with pytest.raises(NLIStudyError, match=r"other sets .*offline-bigbench") as err:
        _run(out, fakes, settings)
    assert "\n" not in str(err.value) and fakes.calls == []


def test_a_stage_killed_mid_write_is_redone_and_nothing_before_it(tmp_path: Path) -> None:
    out = tmp_path / "study"
    fakes = Fakes(fail_on="seed-1/uncertainty/train")
    with pytest.raises(KeyboardInterrupt):
        _run(out, fakes)
    stage = out / "seed-1" / "uncertainty" / "train"
    assert not (stage / ".done").exists()
    assert (stage / "half-written.tmp").exists()
    assert (out / "seed-1" / "random" / "eval" / ".done").is_file()
    assert (out / "seed-1" / "uncertainty" / "select" / ".done").is_file()
    resumed = Fakes()
    _run(out, resumed)
    trained = [path for kind, path in resumed.calls if kind == "finetune"]
    assert trained[0].endswith("seed-1/uncertainty/train/adapter")  # the killed stage first, nothing earlier
    assert not any("seed-1/baseline" in p or "seed-1/random" in p for p in trained)
    assert (stage / ".done").is_file() and not (stage / "half-written.tmp").exists()
    # Seed 1 from uncertainty on, then all of seed 2; the un-tuned model was evaluated before.
    assert resumed.count("evaluate") == (len(SMALL.variants) - 2) + len(SMALL.variants)


def test_an_evaluation_redone_keeps_its_run_folder_for_resume(tmp_path: Path) -> None:
    out = tmp_path / "study"
    settings = StudySettings(budget=12, k_percent=50, seeds=(1,), strategies=(), synthetic=(), untuned=False, candidates=10, limit=4)
    _run(out, Fakes(), settings)
    stage = out / "seed-1" / "baseline" / "eval"
    (stage / ".done").unlink()
    (stage / "runs" / "kept.txt").write_text("rows scored so far")
    (stage / "stale.json").write_text("{}")
    fakes = Fakes()
    _run(out, fakes, settings)
    assert fakes.count("evaluate") == 1 and fakes.count("finetune") == 0
    assert (stage / "runs" / "kept.txt").exists() and not (stage / "stale.json").exists()


def test_changed_settings_are_refused_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "study"
    settings = StudySettings(
        budget=12, k_percent=50, seeds=(1,), strategies=("random",), synthetic=(), untuned=False, candidates=10, limit=4
    )
    _run(out, Fakes(), settings)
    before = (out / "study.json").read_text()
    fakes = Fakes()
    with pytest.raises(NLIStudyError) as err:
        _run(out, fakes, study_mod.with_overrides(settings, budget=15, k_percent=10))
    message = str(err.value)
    assert "\n" not in message and "budget: 12 -> 15" in message and "k_percent" in message and "--resume" in message
    assert fakes.calls == [] and (out / "study.json").read_text() == before


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"k_percent": 150}, "between 0 and 100"),
        ({"k_percent": -1}, "between 0 and 100"),
        ({"budget": 61}, "larger than the pool"),
        ({"strategies": ("random", "entropy")}, "unknown or repeated strategy"),
        ({"synthetic": ("tiny",)}, "unknown or repeated synthetic variant"),
        ({"seeds": ()}, "at least one seed"),
        ({"score_phrasing": "nli2.w01"}, "not a 3-way NLI phrasing"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path: Path, changes: dict[str, Any], match: str) -> None:
    out = tmp_path / "study"
    fakes = Fakes()
    with pytest.raises(NLIStudyError, match=match) as err:
        _run(out, fakes, study_mod.with_overrides(SMALL, **changes))
    assert "\n" not in str(err.value)
    assert not out.exists() and fakes.calls == []


def test_a_set_without_a_label_mapping_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    def suite_without_mapping(preset: str) -> FakeSuite:
        return FakeSuite(sets=[SETS[0], NLISet("nomap", "nlis.rte", 2, {}, "standard", "ood")])

    fakes = Fakes()
    hooks = fakes.hooks()
    hooks.load_suite = suite_without_mapping
    with pytest.raises(NLIStudyError, match="no label mapping") as err:
        run_study(SMALL, tmp_path / "study", hooks=hooks)
    assert "\n" not in str(err.value) and not (tmp_path / "study").exists()


class _SilentLM:
    """A generation model that answers every prompt with nothing."""

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return ["" for _ in requests]

    def chat_template(self, *args: Any) -> None:
        return None


def test_a_generator_that_returns_nothing_stops_the_stage_without_marking_it(tmp_path: Path) -> None:
    from harness.nli.synthetic import generate_synthetic

    fakes = Fakes()
    hooks = fakes.hooks()
    hooks.generate_synthetic = lambda model, variant, counts, **kw: generate_synthetic(_SilentLM(), variant, counts, **kw)
    settings = study_mod.with_overrides(SMALL, seeds=(1,), strategies=(), untuned=False)
    with pytest.raises(NLIStudyError, match="empty outputs") as err:
        run_study(settings, tmp_path / "study", hooks=hooks)
    assert "\n" not in str(err.value)
    stage = tmp_path / "study" / "seed-1" / "synthetic-short_simple" / "select"
    assert not (stage / ".done").exists() and not (stage / "train.jsonl").exists() and not (stage / "generated.jsonl").exists()
    assert (stage / "generation.log.jsonl").is_file()  # the log of what was tried is kept
    assert not (tmp_path / "study" / "seed-1" / "synthetic-short_simple" / "train").exists()


# --------------------------------------------------------------------------- report arithmetic


def _scores(per_set: dict[str, list[list[int]]]) -> dict[str, dict[str, dict[str, float]]]:
    """set -> [per phrasing: per document 0/1] as the study's scores."""
    return {name: {f"w{p}": {f"d{d}": float(v) for d, v in enumerate(row)} for p, row in enumerate(rows)} for name, rows in per_set.items()}


def _hand_results() -> StudyResults:
    sets = [SetInfo("indist", "t0", 3, "test", None), SetInfo("a", "t1", 3, "ood", "standard"), SetInfo("b", "t2", 2, "ood", "challenging")]
    # Baseline: indist 2/4 and 2/4 (0.5); a: 3/4 (0.75) per seed; b: 1/4 (0.25) seed 1, 2/4 (0.5) seed 2.
    base1 = _scores({"indist": [[1, 1, 0, 0], [1, 1, 0, 0]], "a": [[1, 1, 1, 0], [1, 1, 1, 0]], "b": [[1, 0, 0, 0], [1, 0, 0, 0]]})
    base2 = _scores({"indist": [[1, 0, 1, 0], [0, 1, 0, 1]], "a": [[1, 1, 1, 0], [0, 1, 1, 1]], "b": [[1, 1, 0, 0], [1, 1, 0, 0]]})
    # Variant: indist 0.75 / 0.5; a 0.75 / 1.0; b 0.5 / 0.5.
    var1 = _scores({"indist": [[1, 1, 1, 0], [1, 1, 1, 0]], "a": [[1, 1, 1, 0], [1, 1, 1, 0]], "b": [[1, 1, 0, 0], [1, 1, 0, 0]]})
    var2 = _scores({"indist": [[1, 1, 0, 0], [1, 1, 0, 0]], "a": [[1, 1, 1, 1], [1, 1, 1, 1]], "b": [[1, 1, 0, 0], [1, 0, 1, 0]]})
    settings = {"seeds": [1, 2], "strategies": ["random"], "synthetic": []}
    return StudyResults(settings, sets, {BASELINE: {1: base1, 2: base2}, "random": {1: var1, 2: var2}})


def test_report_means_stds_gains_and_grouping_on_hand_made_results() -> None:
    results = _hand_results()
    rows, groups = summarise(results, n_boot=500)
    # Baseline means over seeds: a 0.75 (standard), b 0.375 (challenging, below 70%).
    assert groups == {"a": "standard", "b": "challenging"}
    assert computed_grouping(results) == groups
    row = {(r.variant, r.measure): r for r in rows}
    base_in, var_in = row[(BASELINE, IN_DIST)], row[("random", IN_DIST)]
    assert base_in.mean == pytest.approx(0.5) and base_in.std == pytest.approx(0.0)
    assert var_in.mean == pytest.approx(0.625) and var_in.std == pytest.approx(math.sqrt(0.03125))
    assert var_in.gain == pytest.approx(0.125)  # (0.25 + 0.0) / 2
    assert math.isnan(base_in.gain)
    assert row[("random", CHALLENGING)].mean == pytest.approx(0.5)
    assert row[("random", CHALLENGING)].gain == pytest.approx(0.125)  # b: 0.5 - 0.375
    assert row[("random", STANDARD)].gain == pytest.approx(0.125)  # a: 0.875 - 0.75
    assert row[("random", "set:a")].std == pytest.approx(math.sqrt(0.03125))
    # The preset calls a "standard" and b "challenging" too: the same numbers.
    assert row[("random", "challenging (preset)")].gain == pytest.approx(0.125)
    # Spread across phrasings: seed 2 baseline indist phrasings 0.5 and 0.5 -> 0; a seed 2: 0.75, 0.75.
    assert row[(BASELINE, "set:indist")].phrasing_sd == pytest.approx(0.0)
    low, high = row[("random", IN_DIST)].gain_low, row[("random", IN_DIST)].gain_high
    assert low <= 0.125 <= high and low < high


def test_bootstrap_ci_is_a_point_when_the_variant_equals_the_baseline_and_covers_a_shift() -> None:
    results = _hand_results()
    groups = computed_grouping(results)
    same = bootstrap_gain(results.scores[BASELINE], results.scores[BASELINE], results, groups, n_boot=200)
    assert same[IN_DIST] == (0.0, 0.0)
    better = {
        s: {name: {p: dict.fromkeys(docs, 1.0) for p, docs in v.items()} for name, v in sc.items()}
        for s, sc in results.scores[BASELINE].items()
    }
    ci = bootstrap_gain(better, results.scores[BASELINE], results, groups, n_boot=200)
    assert ci[IN_DIST][0] > 0


def test_mean_std_uses_the_sample_std_and_no_std_for_one_seed() -> None:
    assert mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(math.sqrt(0.02)))
    mean, std = mean_std([0.4])
    assert mean == 0.4 and math.isnan(std)


def test_report_files_from_a_partial_study(tmp_path: Path) -> None:
    from harness.nli.report import write_report

    out = tmp_path / "study"
    fakes = Fakes(fail_on="seed-2/baseline/train")
    with pytest.raises(KeyboardInterrupt):
        _run(out, fakes)
    path = write_report(out)
    text = path.read_text()
    assert "| baseline | 1 |" in text  # one seed finished
    with (out / "sets.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["variant"] for r in rows} == {*SMALL.variants, "un-tuned"}
    assert {r["seed"] for r in rows if r["variant"] == "baseline"} == {"1"}


# --------------------------------------------------------------------------- CLI


@pytest.fixture()
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    fakes = Fakes()
    monkeypatch.setattr(study_mod, "default_hooks", fakes.hooks)
    return fakes


def _irh(*args: str) -> Any:
    from harness.cli import main

    return CliRunner().invoke(main, list(args))


def test_cli_run_resume_report_and_export(tmp_path: Path, fake_cli: Fakes) -> None:
    out = tmp_path / "study"
    common = [
        "--budget",
        "12",
        "--k-percent",
        "50",
        "--seeds",
        "1",
        "--strategies",
        "random,concat",
        "--synthetic",
        "none",
        "--candidates",
        "10",
        "--limit",
        "4",
    ]
    result = _irh("nli", "run", "--out", str(out), *common)
    assert result.exit_code == 0, result.output
    assert "seed 1 · random · fine-tune" in result.output and "report:" in result.output
    n_calls = len(fake_cli.calls)
    result = _irh("nli", "run", "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert len(fake_cli.calls) == n_calls and "skipped" in result.output
    result = _irh("nli", "run", "--out", str(out), "--resume", "--budget", "14")
    assert result.exit_code == 1 and "budget: 12 -> 14" in result.output
    assert result.output.count("\n") == 1
    result = _irh("nli", "report", str(out))
    assert result.exit_code == 0 and (out / "report.md").is_file()
    result = _irh("nli", "export", str(out))
    assert result.exit_code == 0, result.output
    exported = sorted((out / "export" / "seed-1").iterdir())
    assert [p.name for p in exported] == ["baseline.jsonl", "concat.jsonl", "random.jsonl"]
    lines = (out / "export" / "seed-1" / "random.jsonl").read_text().splitlines()
    assert len(lines) == 12
    roles = [[m["role"] for m in json.loads(line)["messages"]] for line in lines]
    assert all(r == ["user", "assistant"] for r in roles)


def test_cli_bad_k_is_one_line(tmp_path: Path, fake_cli: Fakes) -> None:
    result = _irh("nli", "run", "--out", str(tmp_path / "s"), "--k-percent", "120")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --k-percent must be between 0 and 100, not 120"
    assert not (tmp_path / "s").exists()
    result = _irh("nli", "run", "--out", str(tmp_path / "s"), "--resume")
    assert result.exit_code == 1 and "nothing to resume" in result.output
