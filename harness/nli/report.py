"""The NLI study's report, from the study folder alone (`irh nli report DIR`).

Per variant (the baseline, each selection strategy, each synthetic variant; the un-tuned model
as a reference row): accuracy in distribution, on every OOD set, and averaged over the
challenging and the standard OOD sets, each as mean ± std over seeds, with the gain over the
baseline and its 95% CI, and the spread across phrasings. Files: ``report.md``,
``report.csv`` (long: one row per variant and measure), ``sets.csv`` (one row per variant,
seed and set), ``report.png``.

Definitions (also written into report.md):

- a set's accuracy is the mean score over every (phrasing, document) pair scored; a group's
  is the unweighted mean of its sets' accuracies;
- the grouping is the study's rule on the fine-tuned baseline (challenging below 70%),
  applied to the baseline's accuracy averaged over seeds; the preset's grouping is shown too;
- std is the sample standard deviation over seeds (n - 1; none with one seed);
- gain = variant − baseline, per seed, averaged over seeds; its CI is a paired percentile
  bootstrap over documents: in each replicate every (seed, set) resamples its documents with
  replacement, the same documents for the variant and the baseline (each document's score
  averaged over phrasings first), and the gain is recomputed; seeds are not resampled, so the
  CI reflects the evaluation documents, and the std column the seeds.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.nli.layout import DONE, STUDY_FILE, Scores, is_done, read_json, seed_dir, set_accuracy
from harness.nli.settings import StudySettings

BASELINE = "baseline"
UNTUNED = "un-tuned"
THRESHOLD = 0.70
N_BOOT = 2000
IN_DIST = "in-distribution"
CHALLENGING = "challenging"
STANDARD = "standard"
SUMMARY_MEASURES = (IN_DIST, CHALLENGING, STANDARD)
PRESET_MEASURES = (f"{CHALLENGING} (preset)", f"{STANDARD} (preset)")


@dataclass(frozen=True)
class SetInfo:
    name: str
    task_id: str
    n_way: int
    role: str
    group: str | None


@dataclass
class StudyResults:
    """What the study folder holds: settings, sets, and every finished evaluation."""

    settings: dict[str, Any]
    sets: list[SetInfo]
    #: variant -> seed -> scores (set -> phrasing -> document -> score)
    scores: dict[str, dict[int, Scores]]
    untuned: Scores | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    selections: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    synthetic: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)

    @property
    def test_set(self) -> SetInfo:
        return next(s for s in self.sets if s.role == "test")

    @property
    def ood_sets(self) -> list[SetInfo]:
        return [s for s in self.sets if s.role == "ood"]

    @property
    def variants(self) -> list[str]:
        return list(self.scores)


def load_study_results(out: Path) -> StudyResults:
    """Read every finished evaluation of a study folder (unfinished ones are left out)."""
    from harness.nli.examples import NLIStudyError

    if not (out / STUDY_FILE).is_file():
        raise NLIStudyError(f"{out} holds no {STUDY_FILE}; give the folder of an `irh nli run`")
    study = read_json(out / STUDY_FILE)
    settings = study["settings"]
    if not is_done(out / "suite"):
        raise NLIStudyError(f"{out}: the suite stage has not finished; run `irh nli run --out {out} --resume`")
    sets = [SetInfo(s["name"], s["task_id"], s["n_way"], s["role"], s["group"]) for s in read_json(out / "suite" / "sets.json")["sets"]]
    variants = StudySettings.from_json(settings).variants
    results = StudyResults(settings, sets, {})
    for variant in variants:
        for seed in settings["seeds"]:
            folder = out / seed_dir(seed) / variant
            if is_done(folder / "eval"):
                results.scores.setdefault(variant, {})[seed] = read_json(folder / "eval" / "scores.json")["scores"]
            if is_done(folder / "select"):
                results.selections.setdefault(variant, {})[seed] = read_json(folder / "select" / "select.json")
                summary = folder / "select" / "generation.log.summary.json"
                if summary.is_file():
                    results.synthetic.setdefault(variant, {})[seed] = read_json(summary)
    if is_done(out / "untuned" / "eval"):
        results.untuned = read_json(out / "untuned" / "eval" / "scores.json")["scores"]
    results.stages = sorted((read_json(p) for p in out.rglob(DONE)), key=lambda d: d.get("finished", ""))
    return results


# --------------------------------------------------------------------------- arithmetic


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (n - 1) of the finite values; std NaN with fewer than two."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else math.nan


def phrasing_accuracies(set_scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {inst: sum(docs.values()) / len(docs) for inst, docs in set_scores.items() if docs}


def phrasing_spread(set_scores: Mapping[str, Mapping[str, float]]) -> tuple[float, float, float]:
    """(sd, min, max) of the per-phrasing accuracies of one set (sd NaN with one phrasing)."""
    acc = list(phrasing_accuracies(set_scores).values())
    if not acc:
        return math.nan, math.nan, math.nan
    return (statistics.stdev(acc) if len(acc) > 1 else math.nan), min(acc), max(acc)


def computed_grouping(results: StudyResults, threshold: float = THRESHOLD) -> dict[str, str]:
    """Each OOD set's group by the study's rule, on the baseline averaged over its seeds
    (the preset's group where the baseline has not been evaluated)."""
    base = results.scores.get(BASELINE, {})
    out = {}
    for s in results.ood_sets:
        accs = [set_accuracy(scores[s.name]) for scores in base.values() if s.name in scores]
        out[s.name] = (CHALLENGING if statistics.fmean(accs) < threshold else STANDARD) if accs else (s.group or STANDARD)
    return out


def _group_mean(set_acc: Mapping[str, Any], members: Sequence[str]) -> Any:
    """The unweighted mean of the members' accuracies; NaN for an empty group or a missing set."""
    if not members or any(m not in set_acc for m in members):
        return math.nan
    return sum(set_acc[m] for m in members) / len(members)


def measures(set_acc: Mapping[str, Any], results: StudyResults, groups: Mapping[str, str]) -> dict[str, Any]:
    """Summary measures from per-set accuracies (floats, or arrays of bootstrap replicates)."""
    out: dict[str, Any] = {IN_DIST: set_acc.get(results.test_set.name, math.nan)}
    for measure, grouping in ((CHALLENGING, groups), (STANDARD, groups)):
        out[measure] = _group_mean(set_acc, [n for n, g in grouping.items() if g == measure])
    for measure in PRESET_MEASURES:
        group = measure.split(" ")[0]
        out[measure] = _group_mean(set_acc, [s.name for s in results.ood_sets if s.group == group])
    for s in results.sets:
        out[f"set:{s.name}"] = set_acc.get(s.name, math.nan)
    return out


def seed_measures(scores: Scores, results: StudyResults, groups: Mapping[str, str]) -> dict[str, float]:
    return measures({name: set_accuracy(v) for name, v in scores.items()}, results, groups)


def _doc_means(set_scores: Mapping[str, Mapping[str, float]], phrasings: Sequence[str], docs: Sequence[str]) -> np.ndarray:
    return np.array([statistics.fmean(set_scores[p][d] for p in phrasings) for d in docs])


def bootstrap_gain(
    variant: Mapping[int, Scores],
    baseline: Mapping[int, Scores],
    results: StudyResults,
    groups: Mapping[str, str],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile CI of every measure's gain (variant − baseline, mean over seeds), from a
    paired bootstrap over documents within each seed and set (see the module docstring)."""
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        return {}
    per_seed = []
    for s in seeds:
        v_acc: dict[str, np.ndarray] = {}
        b_acc: dict[str, np.ndarray] = {}
        for name in set(variant[s]) & set(baseline[s]):
            v, b = variant[s][name], baseline[s][name]
            phrasings_v = [p for p in v if p in b]
            docs = sorted(set.intersection(*(set(v[p]) & set(b[p]) for p in phrasings_v))) if phrasings_v else []
            if not docs:
                continue
            dv, db = _doc_means(v, phrasings_v, docs), _doc_means(b, phrasings_v, docs)
            # The same resampled documents for every variant of a (seed, set): a stable seed.
            rng = np.random.default_rng([seed % 2**32, s % 2**32, zlib.crc32(name.encode())])
            index = rng.integers(0, len(docs), size=(n_boot, len(docs)))
            v_acc[name], b_acc[name] = dv[index].mean(axis=1), db[index].mean(axis=1)
        mv, mb = measures(v_acc, results, groups), measures(b_acc, results, groups)
        per_seed.append({m: np.asarray(mv[m], dtype=float) - np.asarray(mb[m], dtype=float) for m in mv})
    out = {}
    for m in per_seed[0]:
        stacked = np.stack([np.broadcast_to(d[m], (n_boot,)) for d in per_seed]).mean(axis=0)
        if np.isnan(stacked).all():
            out[m] = (math.nan, math.nan)
        else:
            out[m] = (float(np.nanpercentile(stacked, 2.5)), float(np.nanpercentile(stacked, 97.5)))
    return out


@dataclass(frozen=True)
class Row:
    """One variant's one measure over seeds."""

    variant: str
    measure: str
    seeds: int
    mean: float
    std: float
    gain: float
    gain_low: float
    gain_high: float
    phrasing_sd: float


def summarise(results: StudyResults, n_boot: int = N_BOOT, seed: int = 0) -> tuple[list[Row], dict[str, str]]:
    """Every variant's measures (mean ± std over seeds, gain over the baseline with its CI,
    mean sd across phrasings), and the computed grouping they use."""
    groups = computed_grouping(results)
    baseline = results.scores.get(BASELINE, {})
    base_by_seed = {s: seed_measures(sc, results, groups) for s, sc in baseline.items()}
    rows = []
    for variant, by_seed in results.scores.items():
        per_seed = {s: seed_measures(sc, results, groups) for s, sc in by_seed.items()}
        cis = bootstrap_gain(by_seed, baseline, results, groups, n_boot, seed) if variant != BASELINE else {}
        spread = _spreads(by_seed, results, groups)
        for measure in next(iter(per_seed.values())):
            mean, std = mean_std([v[measure] for v in per_seed.values()])
            paired = [per_seed[s][measure] - base_by_seed[s][measure] for s in per_seed if s in base_by_seed]
            gain = statistics.fmean(paired) if paired and variant != BASELINE else math.nan
            low, high = cis.get(measure, (math.nan, math.nan))
            rows.append(Row(variant, measure, len(per_seed), mean, std, gain, low, high, spread.get(measure, math.nan)))
    if results.untuned is not None:
        untuned = seed_measures(results.untuned, results, groups)
        spread = _spreads({0: results.untuned}, results, groups)
        for measure, value in untuned.items():
            rows.append(Row(UNTUNED, measure, 1, value, math.nan, math.nan, math.nan, math.nan, spread.get(measure, math.nan)))
    return rows, groups


def _spreads(by_seed: Mapping[int, Scores], results: StudyResults, groups: Mapping[str, str]) -> dict[str, float]:
    """Each measure's sd across phrasings (per set, then as the measure combines sets),
    averaged over seeds."""
    per_seed = [measures({name: phrasing_spread(v)[0] for name, v in sc.items()}, results, groups) for sc in by_seed.values()]
    return {m: mean_std([d[m] for d in per_seed])[0] for m in per_seed[0]} if per_seed else {}


# --------------------------------------------------------------------------- files


def _pts(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}"


def _mean_std(row: Row | None) -> str:
    if row is None or math.isnan(row.mean):
        return "—"
    return _pts(row.mean) if math.isnan(row.std) else f"{_pts(row.mean)} ± {_pts(row.std)}"


def _gain(row: Row | None) -> str:
    if row is None or math.isnan(row.gain):
        return "—"
    sign = "+" if row.gain >= 0 else ""
    ci = "" if math.isnan(row.gain_low) else f" [{100 * row.gain_low:+.1f}, {100 * row.gain_high:+.1f}]"
    return f"{sign}{100 * row.gain:.1f}{ci}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]], align: str = "r") -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|---|" + "|".join("---:" if align == "r" else "---" for _ in header[1:]) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def _synthetic_line(st: Mapping[str, Any]) -> str:
    if not st.get("synthetic"):
        return ""
    voter = st.get("voter", "model")
    who = {"model": "the generating (un-tuned) model", "baseline": "the seed's baseline fine-tune"}.get(voter, f"`{voter}`")
    return (
        f" Synthetic data: at most {st['synthetic_attempts']} generations per variant and seed, an example kept when "
        f"{st['votes']} few-shot votes by {who} all give its intended label."
    )


def render_markdown(results: StudyResults, rows: Sequence[Row], groups: Mapping[str, str], out: Path) -> str:
    st = results.settings
    index = {(r.variant, r.measure): r for r in rows}
    variants = [v for v in [*results.variants, UNTUNED] if any(r.variant == v for r in rows)]
    seeds_done = {v: len(results.scores.get(v, {})) for v in results.variants}
    lines = [
        "# NLI distribution-shift study",
        "",
        f"Preset `{st['preset']}`, model `{st['model']}`; budget B = {st['budget']} examples per fine-tune, "
        f"up to K = {st['k_percent']:g}% of each class replaced; seeds {', '.join(map(str, st['seeds']))}; "
        f"{st['candidates']} candidate pool examples per seed to select from; "
        f"LoRA r = {st['lora_rank']}, {st['epochs']} epoch(s), lr {st['learning_rate']:g}, batch {st['batch_size']}; "
        f"evaluation: {st['limit']} documents per set x {st['max_instructions']} phrasings "
        f"(seed {st['eval_seed']}, the same for every variant and seed)." + _synthetic_line(st),
        "",
        f"Command: `irh nli run --out {out} --resume` continues or reproduces this study; `irh nli report {out}` rewrites this report.",
        "",
        "Accuracy in points (0-100). mean ± std over seeds (std: sample std, n - 1). Δ = gain over the baseline (variant − baseline, per "
        "seed, averaged over seeds) with a 95% CI from a paired bootstrap over documents within each seed and set "
        f"({N_BOOT} replicates; the variant and the baseline resample the same documents; seeds are not resampled). "
        "Groups: the study's rule, challenging when the fine-tuned baseline (mean over seeds) scores below 70%. "
        "2-way sets are scored with the 3-way phrasings, neutral and contradiction both counting as not-entailment. "
        "phrasing sd: the standard deviation of accuracy across phrasings, per set, averaged over the measure's sets and the seeds.",
        "",
        "## Summary (computed grouping)",
        "",
    ]
    body = []
    for v in variants:
        r = [index.get((v, m)) for m in SUMMARY_MEASURES]
        n = seeds_done.get(v, 1)
        body.append(
            [
                v,
                str(n),
                *(_mean_std(x) for x in r),
                *(_gain(x) for x in r),
                _pts(index[(v, IN_DIST)].phrasing_sd) if (v, IN_DIST) in index else "—",
            ]
        )
    lines += _table(
        [
            "variant",
            "seeds",
            "in-distribution",
            "challenging",
            "standard",
            "Δ in-dist [95% CI]",
            "Δ challenging [95% CI]",
            "Δ standard [95% CI]",
            "phrasing sd (in-dist)",
        ],
        body,
    )
    lines += ["", "## Summary (the preset's grouping)", ""]
    body = []
    for v in variants:
        r = [index.get((v, m)) for m in PRESET_MEASURES]
        body.append([v, *(_mean_std(x) for x in r), *(_gain(x) for x in r)])
    lines += _table(["variant", *PRESET_MEASURES, *(f"Δ {m} [95% CI]" for m in PRESET_MEASURES)], body)
    lines += ["", "## Per set", "", "Accuracy (mean ± std over seeds):", ""]
    names = [s.name for s in results.sets]
    lines += _table(["variant", *names], [[v, *(_mean_std(index.get((v, f"set:{n}"))) for n in names)] for v in variants])
    lines += ["", "Gain over the baseline [95% CI]:", ""]
    lines += _table(
        ["variant", *names], [[v, *(_gain(index.get((v, f"set:{n}"))) for n in names)] for v in variants if v not in (BASELINE, UNTUNED)]
    )
    lines += ["", "Spread across phrasings (sd of per-phrasing accuracy, points, mean over seeds):", ""]
    lines += _table(
        ["variant", *names],
        [[v, *(_pts(index[(v, f"set:{n}")].phrasing_sd) if (v, f"set:{n}") in index else "—" for n in names)] for v in variants],
    )
    lines += ["", "## Sets and grouping", ""]
    base = results.scores.get(BASELINE, {})
    body = []
    for s in results.sets:
        accs = [set_accuracy(sc[s.name]) for sc in base.values() if s.name in sc]
        docs = {d for sc in base.values() for docs in sc.get(s.name, {}).values() for d in docs}
        phr = {p for sc in base.values() for p in sc.get(s.name, {})}
        body.append(
            [
                s.name,
                s.task_id,
                s.role,
                f"{s.n_way}-way",
                str(len(docs)),
                str(len(phr)),
                _pts(statistics.fmean(accs)) if accs else "—",
                groups.get(s.name, "—") if s.role == "ood" else "—",
                s.group or "—",
            ]
        )
    lines += _table(
        ["set", "task", "role", "labels", "documents", "phrasings", "baseline (mean over seeds)", "computed group", "preset group"],
        body,
        align="l",
    )
    if results.selections:
        lines += [
            "",
            "## What replaced part of the budget",
            "",
            "Per seed: examples replaced of those allowed (K per class: entailment/neutral/contradiction).",
            "",
        ]
        body = []
        for v, by_seed in results.selections.items():
            cells = []
            for seed, sel in sorted(by_seed.items()):
                k, rep = sel["k"], sel["replaced"]
                per_class = "/".join(str(rep[lab]) for lab in ("entailment", "neutral", "contradiction"))
                cells.append(f"seed {seed}: {sum(rep.values())}/{sum(k.values())} ({per_class})")
            syn = results.synthetic.get(v, {})
            gen = "; ".join(
                f"seed {s}: {sum(d.get('kept', {}).values())} kept of {d.get('attempted')} generated" for s, d in sorted(syn.items())
            )
            body.append([v, "; ".join(cells), gen or "—"])
        lines += _table(["variant", "replaced", "synthetic generation"], body, align="l")
    lines += ["", "## Time and memory", ""]
    totals: dict[str, list[float]] = {}
    for stage in results.stages:
        key = stage["stage"].split("/", 1)[-1] if stage["stage"].startswith("seed-") else stage["stage"]
        kind = key.split("/")[-1] if "/" in key else key
        totals.setdefault(kind, []).append(float(stage.get("seconds", 0.0)))
    lines += _table(
        ["stage kind", "stages", "seconds (total)", "seconds (mean)"],
        [[k, str(len(v)), f"{sum(v):.0f}", f"{statistics.fmean(v):.0f}"] for k, v in totals.items()],
    )
    total = sum(float(s.get("seconds", 0.0)) for s in results.stages)
    peak = max((float(s.get("peak_rss_mib", 0.0)) for s in results.stages), default=0.0)
    lines += ["", f"All stages: {total:.0f} s ({total / 60:.1f} min) of work; peak resident memory {peak:.0f} MiB.", ""]
    lines += ["![accuracy per variant and gain over the baseline](report.png)", ""]
    return "\n".join(lines)


def write_csvs(results: StudyResults, rows: Sequence[Row], out: Path) -> tuple[Path, Path]:
    report_csv, sets_csv = out / "report.csv", out / "sets.csv"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variant", "measure", "seeds", "mean", "std", "gain", "gain_ci_low", "gain_ci_high", "phrasing_sd"])
    for r in rows:
        writer.writerow(
            [r.variant, r.measure, r.seeds, *(_cell(x) for x in (r.mean, r.std, r.gain, r.gain_low, r.gain_high, r.phrasing_sd))]
        )
    _atomic_text(report_csv, buf.getvalue())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variant", "seed", "set", "role", "accuracy", "phrasing_sd", "phrasing_min", "phrasing_max", "documents", "phrasings"])
    role = {s.name: s.role for s in results.sets}
    entries = [(v, str(s), sc) for v, by_seed in results.scores.items() for s, sc in sorted(by_seed.items())]
    if results.untuned is not None:
        entries.append((UNTUNED, "", results.untuned))
    for variant, seed, scores in entries:
        for name, set_scores in scores.items():
            sd, lo, hi = phrasing_spread(set_scores)
            docs = {d for v in set_scores.values() for d in v}
            writer.writerow(
                [
                    variant,
                    seed,
                    name,
                    role.get(name, ""),
                    _cell(set_accuracy(set_scores)),
                    _cell(sd),
                    _cell(lo),
                    _cell(hi),
                    len(docs),
                    len(set_scores),
                ]
            )
    _atomic_text(sets_csv, buf.getvalue())
    return report_csv, sets_csv


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _atomic_text(path: Path, text: str) -> None:
    from harness.data.cache import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def plot(rows: Sequence[Row], path: Path) -> None:
    """Left: accuracy per variant (mean ± std over seeds) in distribution and per group;
    right: each variant's gain over the baseline with its CI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    index = {(r.variant, r.measure): r for r in rows}
    variants = list(dict.fromkeys(r.variant for r in rows))
    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    x = np.arange(len(variants))
    width = 0.8 / len(SUMMARY_MEASURES)
    for i, measure in enumerate(SUMMARY_MEASURES):
        means = [100 * index[(v, measure)].mean if (v, measure) in index else np.nan for v in variants]
        stds = [100 * index[(v, measure)].std if (v, measure) in index else np.nan for v in variants]
        left.bar(x + (i - 1) * width, means, width, yerr=np.nan_to_num(stds), capsize=3, label=measure)
    left.set_xticks(x, variants, rotation=30, ha="right")
    left.set_ylim(0, 100)
    left.set_ylabel("accuracy (points), mean ± std over seeds")
    left.legend(fontsize=8, loc="upper right")
    others = [v for v in variants if v not in (BASELINE, UNTUNED)]
    xo = np.arange(len(others))
    for i, measure in enumerate(SUMMARY_MEASURES):
        gains, err = [], []
        for v in others:
            r = index.get((v, measure))
            g = 100 * r.gain if r is not None else np.nan
            gains.append(g)
            lo = 100 * r.gain_low if r is not None else np.nan
            hi = 100 * r.gain_high if r is not None else np.nan
            err.append([max(0.0, g - lo) if not np.isnan(lo) else 0.0, max(0.0, hi - g) if not np.isnan(hi) else 0.0])
        right.errorbar(xo + (i - 1) * width, gains, yerr=np.array(err).T if err else None, fmt="o", capsize=3, label=measure)
    right.axhline(0, color="grey", linewidth=0.8)
    right.set_xticks(xo, others, rotation=30, ha="right")
    right.set_ylabel("gain over the baseline (points), 95% CI")
    right.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    from harness.data.cache import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def write_report(out: Path, n_boot: int = N_BOOT, seed: int = 0) -> Path:
    """Write report.md, report.csv, sets.csv and report.png into the study folder; returns report.md."""
    results = load_study_results(out)
    rows, groups = summarise(results, n_boot, seed)
    write_csvs(results, rows, out)
    if rows:
        plot(rows, out / "report.png")
    path = out / "report.md"
    _atomic_text(path, render_markdown(results, rows, groups, out) + "\n")
    return path
