"""The InstructionEval importer: a synthetic checkout in the real layout, and the real one.

Every template text of the synthetic checkout is made up here; no text of InstructionEval is
copied. The tests marked `reference` read the checkout at ../shared/reference/ (and run its
own formatting code to compare renderings); they skip, saying why, where it is absent.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.importers import SourceSpec, instructioneval, load_registry_with_observed, run_importers
from harness.importers.instructioneval import (
    LABEL_ORDERS_VARY,
    NUMBERED_OPTIONS,
    OPTION_COUNTS,
    STUDY_TASKS,
    import_instructioneval,
    read_data_folders,
    skip_target,
    study_targets,
)
from harness.registry import RegisteredInstruction, load_tasks
from harness.render import render_prompt

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "instructioneval-a1b6882"
needs_reference = pytest.mark.skipif(
    not (REFERENCE / "instructions.json").is_file(),
    reason=f"the InstructionEval reference checkout is not at {REFERENCE}",
)


def _write(path: Path, text: str, prefix: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prefix + textwrap.dedent(text).lstrip(), encoding="utf-8")


# --------------------------------------------------------------------------- synthetic checkout

LISTING = {
    "MMLU_General": ["MMLU/Unobserved/1", "MMLU/Unobserved/2", "NIV2/QA/1", "T0/QA/1", "Alpaca/QA/1", "Alpaca/Unobserved/1"],
    "Known_Unknowns": ["BBL/Default/1", "BBL/Unobserved/1", "BBL/Unobserved/2", "BBL/Unobserved/3"],
    "Language_Identification": ["BBL/Unobserved/1", "BBL/Unobserved/2"],
    "Vitaminc_Fact_Verification": ["BBL/Unobserved/1"],
    "StrategyQA": ["BBL/Unobserved/1", "BBL/Unobserved/2"],
}


def synthetic_checkout(root: Path, marker: Path) -> Path:
    """A checkout in InstructionEval's layout with made-up texts; running any module writes ``marker``."""
    ran = f"open({str(marker)!r}, 'w').write('ran')\n"
    (root).mkdir(parents=True, exist_ok=True)
    (root / "instructions.json").write_text(json.dumps(LISTING), encoding="utf-8")
    _write(
        root / "configs/preprocessor.py",
        """
        from configs.processors.NIV2_tasks import NIV2Tasks

        class Preprocessor(NIV2Tasks):
            def __init__(self, instruction, examples, eval_by_logits, input_dir=None):
                self.instr2preprocessor = {
                    "NIV2/QA/1": self.niv2_multiple_choice_1,
                    "T0/QA/1": self.t0_multiple_choice_1,
                    "Alpaca/QA/1": self.alpaca_multiple_choice_1,
                }
                self.add_unobserved_instructions()
                self.processor = self.instr2preprocessor[instruction]

            def default_QA(self, item):
                input_text = self.description + " " + item["question"]
                return {"input_text": input_text, "output_text": "A", "label_space": ["A", "B"]}

            def niv2_template(self, item, niv2_task, niv2_template):
                definition_text, input_text, _, answer, label_space = niv2_task(**item)
                input_text, output_text = niv2_template(definition_text, input_text, answer)
                return {"input_text": input_text, "output_text": output_text, "label_space": label_space}

            def niv2_multiple_choice_1(self, item):
                return self.niv2_template(item, self.niv2_9_made_up_qa, self.niv2_zs_template_1)
        """,
        prefix=ran,
    )
    _write(
        root / "configs/processors/NIV2_tasks.py",
        """
        COUNT = {2: "two", 4: "four"}

        class NIV2Tasks:
            def niv2_9_made_up_qa(self, question, answer, options):
                item_names = [chr(x) for x in range(ord("A"), ord("Z") + 1)][:len(options)]
                options_ = ""
                letters = ""
                for item, option in zip(item_names, options):
                    options_ += "[{}] {} ".format(item, option)
                    if item == item_names[-1]:
                        letters += "or {}".format(item)
                    else:
                        letters += "{}, ".format(item)
                answer = item_names[options.index(answer)]
                definition_text = "Synthetic definition: pick one of {} options, {}.".format(COUNT[len(options)], letters)
                input_text = "{} {}".format(question, options_)
                return definition_text, input_text, "none", answer, item_names

            def niv2_zs_template_1(self, definition, inputs, output):
                input_text = "Def: {Definition}\\nIn: {input}\\nOut:".format(Definition=definition, input=inputs)
                return input_text, "{output}".format(output=output)

            def t0_multiple_choice_1(self, item):
                options_ = ""
                for option in item["options"]:
                    options_ += "\\n* {}".format(option)
                input_text = "Synthetic P3 prompt. {question}{options_}".format(question=item["question"], options_=options_)
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}

            def alpaca_template_with_input(self, instruction, inputs, answer, label_space):
                input_text = "Synthetic wrapper.\\n## Task:\\n{instruction}\\n## Input:\\n{input}\\n## Answer:".format(
                    instruction=instruction, input=inputs)
                return {"input_text": input_text, "output_text": answer, "label_space": label_space}

            def alpaca_multiple_choice(self, item, instruction):
                question, answer, options = item["question"], item["answer"], item["options"]
                item_names = [chr(x) for x in range(ord("A"), ord("Z") + 1)][:len(options)]
                _options = ""
                for item, option in zip(item_names, options):
                    _options += "\\n<{}> {}".format(item, option)
                inputs = "Q: {question}{_options}".format(question=question, _options=_options)
                return self.alpaca_template_with_input(instruction, inputs, answer, item_names)

            def alpaca_multiple_choice_1(self, item):
                instruction = "Synthetic observed instruction."
                return self.alpaca_multiple_choice(item, instruction)
        """,
    )
    _write(
        root / "configs/MMLU/general.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpMMLU(Preprocessor):
            _UNOBSERVED_ALPACA_INSTRUCTIONS = ["Written for the made-up study: think it through, then give one letter."]

            def __init__(self, instruction, examples, eval_by_logits):
                super().__init__(instruction, examples, eval_by_logits)

            def add_unobserved_instructions(self):
                self.instr2preprocessor["MMLU/Unobserved/1"] = self.unobserved1
                self.instr2preprocessor["MMLU/Unobserved/2"] = self.unobserved2
                self.instr2preprocessor["Alpaca/Unobserved/1"] = lambda item: self.alpaca_multiple_choice(
                    item, self._UNOBSERVED_ALPACA_INSTRUCTIONS[0])

            def unobserved_template(self, item, input_temptlate):
                question, options, answer = item["question"], item["options"], item["answer"]
                A, B, C, D = options
                input_text = input_temptlate.format(question=question, choiceA=A, choiceB=B, choiceC=C, choiceD=D)
                return {"input_text": input_text, "output_text": "A", "label_space": ["A", "B", "C", "D"]}

            def unobserved1(self, item):
                input_template = "Synthetic exam. {question}\\n(A) {choiceA}\\n(B) {choiceB}\\n" \\
                                 "(C) {choiceC}\\n(D) {choiceD}\\nAnswer: ("
                return self.unobserved_template(item, input_template)

            def unobserved2(self, item):
                input_template = "Synthetic two: {question} A. {choiceA} B. {choiceB} C. {choiceC} D. {choiceD}"
                return self.unobserved_template(item, input_template)
        """,
        prefix=ran,
    )
    _write(
        root / "configs/BBH/multiple_choice/known_unknowns.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpKnown(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["BBL/Default/1"] = self.default_QA
                self.instr2preprocessor["BBL/Unobserved/1"] = self.unobserved1
                self.instr2preprocessor["BBL/Unobserved/2"] = self.unobserved2
                self.instr2preprocessor["BBL/Unobserved/3"] = self.unobserved3

            def unobserved_template_QA(self, item, input_temptlate):
                question, options, answer = item["question"], item["options"], item["answer"]
                A, B = options
                input_text = input_temptlate.format(question=question, choiceA=A, choiceB=B)
                label_space = ["A", "B"]
                return {"input_text": input_text, "output_text": "A", "label_space": label_space}

            def unobserved1(self, item):
                input_template = "Synthetic knowable? {question}\\nA: {choiceA}\\nB: {choiceB}"
                return self.unobserved_template_QA(item, input_template)

            def unobserved2(self, item):
                input_template = "Synthetic: {question}\\nSay B if nobody can know, else say A."
                return self.unobserved_template_QA(item, input_template)

            def unobserved3(self, item):
                item["question"] = item["question"].upper()
                input_template = "Synthetic shouting {question}"
                return self.unobserved_template_QA(item, input_template)
        """,
    )
    letters = "ABCDEFGHIJK"
    unpack = ", ".join(letters)
    kwargs = ", ".join(f"choice{x}={x}" for x in letters)
    _write(
        root / "configs/BBH/classification/language_identification.py",
        f"""
        from configs.preprocessor import Preprocessor

        class MadeUpLanguages(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["BBL/Unobserved/1"] = self.unobserved1
                self.instr2preprocessor["BBL/Unobserved/2"] = self.unobserved2

            def unobserved_template(self, item, input_temptlate):
                question, options, answer = item["question"], item["options"], item["answer"]
                {unpack} = options
                input_text = input_temptlate.format(question=question, {kwargs})
                label_space = {list(letters)!r}
                return {{"input_text": input_text, "output_text": "A", "label_space": label_space}}

            def unobserved1(self, item):
                input_template = "Synthetic: which letter, A to K, names the language of {{question}}?"
                return self.unobserved_template(item, input_template)

            def unobserved2(self, item):
                input_template = "{{question}}\\nSynthetic: it is one of {{choiceA}}, {{choiceK}}; it is"
                return_dict = self.unobserved_template(item, input_template)
                return_dict["label_space"] = item["options"]
                return return_dict
        """,
    )
    _write(
        root / "configs/BBH/classification/vitaminc_fact_verification.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpVitaminc(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["BBL/Unobserved/1"] = self.unobserved1

            def unobserved_template(self, item, input_template):
                context, claim = item["question"].split("\\nClaim:")
                input_text = input_template.format(context=context, claim=claim)
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}

            def unobserved1(self, item):
                input_template = "Synthetic evidence: {context}\\nSynthetic claim:{claim}\\nVerdict:"
                return self.unobserved_template(item, input_template)
        """,
    )
    _write(
        root / "configs/BBH/binary_classification/strategy_qa.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpStrategy(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["BBL/Unobserved/1"] = self.unobserved1
                self.instr2preprocessor["BBL/Unobserved/2"] = self.unobserved2

            def unobserved_template(self, item, input_template):
                input_text = input_template.format(**item)
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}

            def unobserved1(self, item):
                input_template = "Synthetic yes or no: {question}\\n"
                return self.unobserved_template(item, input_template)

            def unobserved2(self, item):
                input_template = "Synthetic {question} about {topic}"
                return self.unobserved_template(item, input_template)
        """,
    )
    _write(root / ".git/HEAD", "ref: refs/heads/main\n")
    _write(root / ".git/refs/heads/main", "0123456789abcdef0123456789abcdef01234567\n")
    return root


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Whatever the cache holds: BIG-bench's task.json is absent unless a test gives one.
    monkeypatch.setattr(instructioneval, "_read_task_json", lambda: ({}, {"": "which needs the BIG-bench sdist (not in the cache)"}))
    return synthetic_checkout(tmp_path / "InstructionEval", tmp_path / "executed")


def _imported(root: Path) -> dict[str, RegisteredInstruction]:
    result = import_instructioneval(root)
    return {e.id: e for e in result.phrasings}


MMLU_DOC: dict[str, Any] = {
    "id": "d0",
    "group": "",
    "fields": {"question": "Q?", "subject": "anatomy"},
    "choices": ["w", "x", "y", "z"],
    "scores": [0.0, 1.0, 0.0, 0.0],
}


def _render(entry: RegisteredInstruction, task_id: str, doc: dict[str, Any]) -> tuple[str, list[str]]:
    tasks = load_tasks(REPO, [])
    prompt = render_prompt(entry.instruction, tasks[task_id], doc)
    return prompt.user, prompt.options


def test_every_listed_id_is_imported_or_skipped_and_nothing_runs(checkout: Path) -> None:
    result = import_instructioneval(checkout)
    assert not (checkout.parent / "executed").exists()
    assert result.origin.startswith("InstructionEval@0123456789ab")
    assert len(result.phrasings) + len(result.skipped) == sum(len(v) for v in LISTING.values())
    why = {s.item: s.reason for s in result.skipped}
    assert "Known_Unknowns:BBL/Default/1" in why and "task.json" in why["Known_Unknowns:BBL/Default/1"]
    assert why["Known_Unknowns:BBL/Unobserved/3"] == "calls item['question'].upper"
    assert "{topic}" in why["StrategyQA:BBL/Unobserved/2"]


def test_ids_keep_instructionevals_and_provenance_names_the_collection(checkout: Path) -> None:
    entries = _imported(checkout)
    expected = {
        "ie.mmlu.mmlu-unobserved-1": ("unobserved", []),
        "ie.mmlu.alpaca-unobserved-1": ("unobserved", []),
        "ie.mmlu.niv2-qa-1": ("observed", ["super-natural-instructions"]),
        "ie.mmlu.t0-qa-1": ("observed", ["p3-promptsource"]),
        "ie.mmlu.alpaca-qa-1": ("observed", ["alpaca"]),
    }
    for pid, (status, collections) in expected.items():
        prov = entries[pid].instruction.provenance
        assert (prov.status, prov.collections) == (status, collections), pid
    assert entries["ie.mmlu.niv2-qa-1"].instruction.provenance.source.endswith("#MMLU_General:NIV2/QA/1")  # type: ignore[union-attr]
    assert (entries["ie.mmlu.niv2-qa-1"].target_kind, entries["ie.mmlu.niv2-qa-1"].target) == ("family", "mmlu")
    assert entries["ie.strategyqa.bbl-unobserved-1"].target == "bbl.strategyqa"


def test_observed_templates_render_as_their_code_builds_them(checkout: Path) -> None:
    entries = _imported(checkout)
    niv2, options = _render(entries["ie.mmlu.niv2-qa-1"], "mmlu.anatomy", MMLU_DOC)
    assert niv2 == "Def: Synthetic definition: pick one of four options, A, B, C, or D.\nIn: Q? [A] w [B] x [C] y [D] z \nOut:"
    assert options == ["A", "B", "C", "D"]
    t0, options = _render(entries["ie.mmlu.t0-qa-1"], "mmlu.anatomy", MMLU_DOC)
    assert t0 == "Synthetic P3 prompt. Q?\n* w\n* x\n* y\n* z"
    assert options == ["w", "x", "y", "z"]  # its label space is the options
    alpaca, options = _render(entries["ie.mmlu.alpaca-unobserved-1"], "mmlu.anatomy", MMLU_DOC)
    assert alpaca == (
        "Synthetic wrapper.\n## Task:\nWritten for the made-up study: think it through, then give one letter.\n"
        "## Input:\nQ: Q?\n<A> w\n<B> x\n<C> y\n<D> z\n## Answer:"
    )
    assert options == ["A", "B", "C", "D"]


def test_answer_words_are_the_label_space_the_study_scored(checkout: Path) -> None:
    """A prompt asking for a letter is scored on letters even where it shows no options (the
    study's label space); one whose method resets the label space to the options on texts."""
    entries = _imported(checkout)
    assert entries["ie.known_unknowns.bbl-unobserved-2"].instruction.answer_choices == "letters"
    assert entries["ie.language_identification.bbl-unobserved-1"].instruction.answer_choices == "letters"
    assert entries["ie.language_identification.bbl-unobserved-2"].instruction.answer_choices == "text"
    assert entries["ie.known_unknowns.bbl-unobserved-1"].instruction.answer_choices == "letters"
    doc = {"id": "k", "group": "", "fields": {"input": "Who?"}, "choices": ["Unknown", "Ann"], "scores": [1.0, 0.0]}
    _, options = _render(entries["ie.known_unknowns.bbl-unobserved-2"], "bbl.known_unknowns", doc)
    assert options == ["A", "B"]


def test_an_answer_after_an_open_parenthesis_has_no_space(checkout: Path) -> None:
    entry = _imported(checkout)["ie.mmlu.mmlu-unobserved-1"]
    assert entry.instruction.target_delimiter == ""
    prompt, options = _render(entry, "mmlu.anatomy", MMLU_DOC)
    assert prompt + entry.instruction.target_delimiter + options[0] == "Synthetic exam. Q?\n(A) w\n(B) x\n(C) y\n(D) z\nAnswer: (A"
    assert _imported(checkout)["ie.mmlu.mmlu-unobserved-2"].instruction.target_delimiter == " "


def test_split_fields_and_trailing_newlines_render_exactly(checkout: Path) -> None:
    entries = _imported(checkout)
    doc = {
        "id": "v",
        "group": "",
        "fields": {"passage": "The sky is blue.", "claim": "The sky is green."},
        "choices": ["True", "False", "Neither"],
        "scores": [0.0, 1.0, 0.0],
    }
    text, options = _render(entries["ie.vitaminc_fact_verification.bbl-unobserved-1"], "bbl.vitaminc_fact_verification", doc)
    # InstructionEval splits at "\nClaim:" and keeps the space after it in {claim}.
    assert text == "Synthetic evidence: The sky is blue.\nSynthetic claim: The sky is green.\nVerdict:"
    assert options == ["True", "False", "Neither"]
    sqa = {"id": "s", "group": "", "fields": {"input": "Is it?"}, "choices": ["Yes", "No"], "scores": [1.0, 0.0]}
    text, _ = _render(entries["ie.strategyqa.bbl-unobserved-1"], "bbl.strategyqa", sqa)
    assert text == "Synthetic yes or no: Is it?\n"


def test_eleven_option_templates_pass_the_registry_checks(checkout: Path) -> None:
    [result] = run_importers([SourceSpec("instructioneval", checkout)], load_tasks(REPO, []))
    kept = {e.id for e in result.phrasings}
    assert "ie.language_identification.bbl-unobserved-2" in kept
    assert "ie.mmlu.niv2-qa-1" in kept


def test_flan_t5_sees_niv2_and_p3_and_not_the_studys_own(checkout: Path) -> None:
    from harness.plan import build_plan, seen_collections_for

    registry, _ = load_registry_with_observed(sources=[SourceSpec("instructioneval", checkout)])
    tasks = [registry.task("mmlu.anatomy")]

    def seen_for(model: str) -> dict[str, bool]:
        plan = build_plan(registry, tasks, instruction_patterns=["ie.*"], seen_collections=seen_collections_for(model))
        return {item.entry.id: item.seen for item in plan}

    flan = seen_for("google/flan-t5-xl")
    assert flan["ie.mmlu.niv2-qa-1"] and flan["ie.mmlu.t0-qa-1"]
    assert not flan["ie.mmlu.mmlu-unobserved-1"] and not flan["ie.mmlu.alpaca-unobserved-1"] and not flan["ie.mmlu.alpaca-qa-1"]
    alpaca = seen_for("chavinlo/alpaca-native")
    assert alpaca["ie.mmlu.alpaca-qa-1"] and not alpaca["ie.mmlu.niv2-qa-1"] and not alpaca["ie.mmlu.alpaca-unobserved-1"]
    t0 = seen_for("bigscience/T0pp")
    assert t0["ie.mmlu.t0-qa-1"] and not t0["ie.mmlu.niv2-qa-1"]


def test_import_list_counts_per_task_status_and_collection(checkout: Path) -> None:
    out = CliRunner().invoke(main, ["import", "list", f"instructioneval={checkout}", "--by-task"])
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if line.startswith("| `mmlu`"))
    header = next(line for line in out.output.splitlines() if line.startswith("| Target"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")], strict=True))
    assert cells["unobserved"] == "3"
    assert cells["observed super-natural-instructions"] == "1"
    assert cells["observed p3-promptsource"] == "1"
    assert cells["observed alpaca"] == "1"
    assert cells["Total"] == "6"
    assert skip_target("Known_Unknowns:BBL/Default/1") == "bbl.known_unknowns"
    assert skip_target("ie.strategyqa.bbl-unobserved-2 (like x, 0.97)") == "bbl.strategyqa"


# --------------------------------------------------------------------------- the real checkout


@needs_reference
def test_reference_every_entry_is_accounted_for_with_its_status() -> None:
    listed = json.loads((REFERENCE / "instructions.json").read_text(encoding="utf-8"))
    result = import_instructioneval(REFERENCE)
    per_task: Counter[str] = Counter()
    for entry in result.phrasings:
        source = entry.instruction.provenance.source or ""
        task_name, ie_id = source.split("#", 1)[1].split(":", 1)
        per_task[task_name] += 1
        kind = ie_id.split("/")[1]
        prov = entry.instruction.provenance
        if kind in ("Unobserved", "Default"):
            assert prov.status == "unobserved", entry.id
        else:
            expected = {"NIV2": "super-natural-instructions", "FLAN": "flan-2021", "T0": "p3-promptsource", "Alpaca": "alpaca"}
            assert prov.collections == [expected[ie_id.split("/")[0]]], entry.id
    for item in result.skipped:
        per_task[item.item.split(":", 1)[0]] += 1
        assert item.reason
    assert per_task == Counter({name: len(listed[name]) for name in STUDY_TASKS})
    # 1,301 of 1,336 (97.4%) on a1b6882 with the bigbench sdist cached; the importer's
    # docstring says what is left and why.
    assert len(result.phrasings) / sum(per_task.values()) >= 0.95


def _reference_preprocessor(path: Path) -> Any:
    sys.path.insert(0, str(REFERENCE))
    try:
        rel = path.relative_to(REFERENCE).with_suffix("")
        module = importlib.import_module(".".join(rel.parts))
    finally:
        sys.path.remove(str(REFERENCE))
    return next(
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and "add_unobserved_instructions" in vars(obj)
    )


def _needs_bigbench() -> None:
    """Skip, naming the missing data, where no BIG-bench copy is to hand: InstructionEval's
    default prompts read BIG-bench's task.json files, and no test fixture may stand in for
    the real ones in these checks against the study's own code."""
    from harness.data.bigbench_sources import BigBenchCopy, local_copy
    from harness.data.cache import DataMissing
    from harness.data.sources import BIGBENCH, verify_source

    if isinstance(local_copy(None), BigBenchCopy):
        return
    try:
        verify_source(BIGBENCH)
    except DataMissing:
        pytest.skip(
            "needs BIG-bench's task.json files, which PyPI no longer serves: set IRH_BIGBENCH to a clone, "
            f"tarball or zip of BIG-bench, or put {BIGBENCH.filename} into {BIGBENCH.path.parent}"
        )


def _bigbench_task_dirs(tmp_path: Path) -> dict[str, Path]:
    """A folder per task.json of the study's BIG-bench tasks (``<task>`` and
    ``<task>/<subtask>``), from the cached sdist, without the examples: InstructionEval's
    Preprocessor reads only the prompt keys of the one its config passes it."""
    import tarfile

    from harness.data.cache import DataMissing
    from harness.data.sources import BIGBENCH, verify_source

    try:
        archive = verify_source(BIGBENCH)
    except DataMissing:
        return {}  # the default prompts are then skipped by the importer too
    wanted = {target.removeprefix("bbl.").split(".")[0] for _, _, target, _ in STUDY_TASKS.values()}
    dirs: dict[str, Path] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if parts[-1] != "task.json" or "benchmark_tasks" not in parts:
                continue
            rest = parts[parts.index("benchmark_tasks") + 1 : -1]
            if not rest or rest[0] not in wanted or len(rest) > 2:
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            spec = json.loads(handle.read().decode("utf-8"))
            folder = tmp_path.joinpath(*rest)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "task.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "examples"}), encoding="utf-8")
            dirs["/".join(rest)] = folder
    return dirs


def test_reference_renders_exactly_as_instructionevals_own_code(tmp_path: Path) -> None:
    """Every imported template, on 3 real documents, against InstructionEval's formatting code."""
    from harness.data.cache import DataMissing
    from harness.data.catalog import load_documents

    for module in ("torch", "datasets", "pandas"):
        pytest.importorskip(module, reason=f"InstructionEval's configs import {module}")
    tasks = load_tasks(REPO, [])
    targets = study_targets(REFERENCE / "configs")
    result = import_instructioneval(REFERENCE)
    task_dirs = _bigbench_task_dirs(tmp_path / "tasks")
    classes: dict[str, Any] = {}
    documents: dict[str, list[dict[str, Any]]] = {}
    compared = 0
    for entry in result.phrasings:
        source = entry.instruction.provenance.source or ""
        task_name, ie_id = source.split("#", 1)[1].split(":", 1)
        _, path = targets[task_name]
        assert isinstance(path, Path)
        cls = classes.setdefault(task_name, _reference_preprocessor(path))
        task_id = entry.target if entry.target_kind == "task" else "mmlu.anatomy"
        if task_id not in documents:
            try:
                documents[task_id] = load_documents(task_id, "test")
            except DataMissing as exc:
                pytest.skip(f"needs the real documents: {exc}")
        # The task.json its config hands the Preprocessor (strange_stories/boolean, ...).
        folder = read_data_folders(path).task_json
        base = task_id.removeprefix("bbl.").split(".")[0]
        input_dir = task_dirs.get(f"{base}/{folder}" if folder else base)
        args: tuple[Any, ...] = (ie_id, [], True, input_dir) if len(inspect.signature(cls.__init__).parameters) == 5 else (ie_id, [], True)
        processor = cls(*args).processor
        # The first 3 documents the phrasing is scored on (those with its option count).
        applicable = [d for d in documents[task_id] if entry.instruction.applies_to(d)][:3]
        assert len(applicable) == 3, entry.id
        for doc in applicable:
            fields = doc["fields"]
            if task_id == "bbl.vitaminc_fact_verification":
                question = fields["passage"] + "\nClaim: " + fields["claim"]
            else:
                question = fields["question"] if task_id.startswith("mmlu.") else fields["input"]
            options = list(doc["choices"])
            item = {"question": question, "options": options, "answer": options[doc["scores"].index(max(doc["scores"]))]}
            theirs = processor(dict(item, options=list(options)))
            ours = render_prompt(entry.instruction, tasks[task_id], doc)
            assert ours.user == theirs["input_text"], (entry.id, doc["id"])
            words = entry.instruction.answer_choices
            if isinstance(words, dict):
                # A verbaliser: the same words (in our labels' order), the gold one as theirs.
                assert sorted(ours.options) == sorted(str(x) for x in theirs["label_space"]), (entry.id, doc["id"])
                assert words[item["answer"]] == theirs["output_text"], (entry.id, doc["id"])
            else:
                assert ours.options == [str(x) for x in theirs["label_space"]], (entry.id, doc["id"])
            compared += 1
    assert compared >= 3 * len(result.phrasings) * 0.9


@needs_reference
def test_reference_skip_reasons_are_true_of_instructionevals_own_code(tmp_path: Path) -> None:
    """Each skip on a1b6882, checked by running InstructionEval's code on a real document:
    the TypeError and KeyError it names are what its code raises, and the default prompt that
    lists strange_stories' options in each document's order lists "no" first where the
    document does."""
    _needs_bigbench()
    from harness.data.cache import DataMissing
    from harness.data.catalog import load_documents

    for module in ("torch", "datasets", "pandas"):
        pytest.importorskip(module, reason=f"InstructionEval's configs import {module}")
    targets = study_targets(REFERENCE / "configs")
    result = import_instructioneval(REFERENCE)
    task_dirs = _bigbench_task_dirs(tmp_path / "tasks")
    assert len(result.skipped) <= 35
    raised: dict[str, tuple[type[Exception], ...]] = {
        "raises TypeError": (TypeError,),
        "raises KeyError or IndexError": (KeyError, IndexError),
    }
    for skip in result.skipped:
        task_name, ie_id = skip.item.split(":", 1)
        target, path = targets[task_name]
        assert isinstance(path, Path)
        cls = _reference_preprocessor(path)
        try:
            docs = load_documents(target.target, "test")
        except DataMissing as exc:
            pytest.skip(f"needs the real documents: {exc}")
        doc = next(d for d in docs if d["choices"][0] == "no") if "own order" in skip.reason else docs[0]
        fields = doc["fields"]
        question = fields["passage"] + "\nClaim: " + fields["claim"] if "passage" in fields else fields["input"]
        item = {"question": question, "options": list(doc["choices"]), "answer": doc["choices"][doc["scores"].index(1.0)]}
        folder = read_data_folders(path).task_json
        base = target.target.removeprefix("bbl.").split(".")[0]
        processor = cls(ie_id, [], True, task_dirs.get(f"{base}/{folder}" if folder else base)).processor
        kind = next((k for k in raised if k in skip.reason), None)
        if kind is not None:
            with pytest.raises(raised[kind]):
                processor(item)
        else:
            assert "own order" in skip.reason, skip
            shown = processor(item)["input_text"]
            assert "A. no\nB. yes" in shown, shown  # our labels would show "yes" first


@needs_reference
def test_reference_option_counts_numbers_and_orders_are_true_of_the_data() -> None:
    """What the importer knows of the data (OPTION_COUNTS, NUMBERED_OPTIONS,
    LABEL_ORDERS_VARY) is what the cached documents hold."""
    from harness.data.cache import DataMissing
    from harness.data.catalog import load_documents

    assert set(OPTION_COUNTS) == {target for _, _, target, _ in STUDY_TASKS.values()}
    for target, counts in OPTION_COUNTS.items():
        task_ids = [t.id for t in load_tasks(REPO, []).values() if t.family == "mmlu"] if target == "mmlu" else [target]
        try:
            docs = [d for task_id in task_ids for d in load_documents(task_id, "test")]
        except DataMissing as exc:
            pytest.skip(f"needs the real documents: {exc}")
        assert tuple(sorted({len(d["choices"]) for d in docs})) == counts, target
        if target in NUMBERED_OPTIONS:
            assert all(d["choices"] == [str(i) for i in range(1, len(d["choices"]) + 1)] for d in docs), target
    docs = load_documents("bbl.strange_stories.boolean", "test")
    orders = Counter(tuple(d["choices"]) for d in docs)
    assert orders == Counter({("yes", "no"): 24, ("no", "yes"): 29})
    assert LABEL_ORDERS_VARY["bbl.strange_stories.boolean"] == "yes before no in 24 documents, no before yes in 29"
    # The subtask tasks hold exactly the documents of that subtask of the pooled task.
    for task_id, pooled in (
        ("bbl.strange_stories.boolean", "bbl.strange_stories"),
        ("bbl.logical_deduction.five_objects", "bbl.logical_deduction"),
    ):
        subtask = task_id.rsplit(".", 1)[1]
        assert load_documents(task_id, "test") == [d for d in load_documents(pooled, "test") if d["group"] == subtask]


@needs_reference
def test_reference_imports_validate_and_flan_t5_sees_the_observed_ones() -> None:
    """`irh run --observed instructioneval=PATH --model <flan-t5>`: the plan marks the NIV2,
    FLAN and P3 instructions seen and the study's unobserved ones unseen (no model is run)."""
    _needs_bigbench()
    from harness.plan import build_plan, seen_collections_for

    registry, _ = load_registry_with_observed(sources=[SourceSpec("instructioneval", REFERENCE)])  # strict: no problems
    assert sum(1 for i in registry.instructions if i.startswith("ie.")) >= 1200  # the study's own, alike ones kept
    tasks = [registry.task("mmlu.anatomy"), registry.task("bbl.known_unknowns"), registry.task("bbl.strategyqa")]
    plan = build_plan(registry, tasks, instruction_patterns=["ie.*"], seen_collections=seen_collections_for("google/flan-t5-xxl"))
    by_kind: dict[str, set[bool]] = {}
    for item in plan:
        ie_id = (item.entry.instruction.provenance.source or "").rsplit(":", 1)[1]
        by_kind.setdefault("/".join(ie_id.split("/")[:2]), set()).add(item.seen)
    assert by_kind["NIV2/QA"] == {True}
    assert by_kind["T0/QA"] == {True}
    assert by_kind["FLAN/BC"] == {True}
    assert by_kind["BBL/Default"] == {False}
    assert by_kind["MMLU/Unobserved"] == {False}
    assert by_kind["BBL/Unobserved"] == {False}
    assert by_kind["Alpaca/Unobserved"] == {False}
    assert by_kind["Alpaca/QA"] == {False}  # Flan-T5 was not tuned on Alpaca


@needs_reference
def test_reference_validate_is_clean_with_the_studys_set() -> None:
    """`irh validate --observed instructioneval=PATH` reports no problem: the study's yes/no
    questions scored on words the prompt does not show are kept as the study scored them."""
    _needs_bigbench()
    from click.testing import CliRunner

    from harness.cli import main

    result = CliRunner().invoke(main, ["validate", "--observed", f"instructioneval={REFERENCE}", "--docs", "1"])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output


def test_the_studys_model_families_see_their_collections() -> None:
    from harness.plan import seen_collections_for

    assert {"flan-2021", "super-natural-instructions", "p3-promptsource"} <= set(seen_collections_for("google/flan-t5-xxl"))
    assert "alpaca" not in seen_collections_for("google/flan-t5-xxl")
    assert seen_collections_for("bigscience/T0pp") == ["p3-promptsource"]
    assert seen_collections_for("chavinlo/alpaca-13b") == ["alpaca"]
    flan_alpaca = set(seen_collections_for("declare-lab/flan-alpaca-xl"))
    assert {"alpaca", "super-natural-instructions", "p3-promptsource"} <= flan_alpaca


# --------------------------------------------------------------------------- study-set readings


def study_set_checkout(root: Path) -> Path:
    """A made-up checkout with what the study's own set needs: near-identical distinct ids,
    lower-case letters, numbered options, and fixed words mapped from the answer in code."""
    listing = {
        "MMLU_General": ["NIV2/QA/11", "NIV2/QA/12", "Alpaca/QA/4", "Alpaca/QA/10"],
        "Play_Dialog": ["FLAN/BC/1", "NIV2/QA/11"],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "instructions.json").write_text(json.dumps(listing), encoding="utf-8")
    _write(
        root / "configs/preprocessor.py",
        """
        class Preprocessor:
            def __init__(self, instruction, examples, eval_by_logits, input_dir=None):
                self.instr2preprocessor = {
                    "NIV2/QA/11": self.lower_letters,
                    "NIV2/QA/12": self.numbered,
                    "Alpaca/QA/4": self.alpaca_4,
                    "Alpaca/QA/10": self.alpaca_10,
                }
                self.add_unobserved_instructions()

            def lower_letters(self, item):
                options = item["options"]
                item_names = [chr(x) for x in range(ord("a"), ord("z") + 1)][:len(options)]
                text = "Synthetic lower: {}".format(item["question"])
                for name, option in zip(item_names, options):
                    text += "\\n({}) {}".format(name, option)
                return {"input_text": text, "output_text": "a", "label_space": item_names}

            def numbered(self, item):
                options = item["options"]
                items = [str(i) for i in range(1, len(options) + 1)]
                text = "Synthetic numbered: {}".format(item["question"])
                for number, option in zip(items, options):
                    text += ", {}) {}".format(number, option)
                return {"input_text": text, "output_text": item["answer"], "label_space": options}

            def alpaca_4(self, item):
                text = "Synthetic: choose the one right answer to this question. {}".format(item["question"])
                return {"input_text": text, "output_text": item["answer"], "label_space": item["options"]}

            def alpaca_10(self, item):
                text = "Synthetic: choose the one right answer to this question! {}".format(item["question"])
                return {"input_text": text, "output_text": item["answer"], "label_space": item["options"]}
        """,
    )
    _write(
        root / "configs/MMLU/general.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpMMLU(Preprocessor):
            def add_unobserved_instructions(self):
                pass
        """,
    )
    _write(
        root / "configs/BBH/binary_classification/play_dialog_same_or_different.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpDialog(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["FLAN/BC/1"] = lambda item: self.made_up_bc(self.map_made_up(item))

            def map_made_up(self, item):
                answer = "Yes" if item["answer"] == "different" else "No"
                return {"dialog": item["question"], "answer": answer}

            def made_up_bc(self, item):
                input_text = "{dialog}\\nSynthetic: two speakers? Yes or No.".format(dialog=item["dialog"])
                output_text = "{answer}".format(answer=item["answer"])
                return {"input_text": input_text, "output_text": output_text, "label_space": ["Yes", "No"]}
        """,
    )
    return root


def test_study_set_readings_import_and_render(tmp_path: Path) -> None:
    root = study_set_checkout(tmp_path / "InstructionEval")
    tasks = load_tasks(REPO, [])
    [result] = run_importers([SourceSpec("instructioneval", root)], tasks)
    assert result.skipped == []
    found = {e.id: e for e in result.phrasings}
    assert set(found) == {
        "ie.mmlu.niv2-qa-11",
        "ie.mmlu.niv2-qa-12",
        "ie.mmlu.alpaca-qa-4",
        "ie.mmlu.alpaca-qa-10",
        "ie.play_dialog_same_or_different.flan-bc-1",
        "ie.play_dialog_same_or_different.niv2-qa-11",
    }
    # Lower-case letters are scored as lower-case letters.
    user, options = _render(found["ie.mmlu.niv2-qa-11"], "mmlu.anatomy", MMLU_DOC)
    assert user == "Synthetic lower: Q?\n(a) w\n(b) x\n(c) y\n(d) z"
    assert options == ["a", "b", "c", "d"]
    # [str(i) for i in range(1, len(options) + 1)] numbers the options; scored on their texts.
    user, options = _render(found["ie.mmlu.niv2-qa-12"], "mmlu.anatomy", MMLU_DOC)
    assert user == "Synthetic numbered: Q?, 1) w, 2) x, 3) y, 4) z"
    assert options == ["w", "x", "y", "z"]
    # "Yes" if answer == "different" else "No": a verbaliser of the task's labels.
    flan = found["ie.play_dialog_same_or_different.flan-bc-1"]
    assert flan.instruction.answer_choices == {"same": "No", "different": "Yes"}
    assert flan.instruction.provenance.collections == ["flan-2021"]
    doc = {"id": "p0", "group": "", "fields": {"input": "Hi. Hello."}, "choices": ["same", "different"], "scores": [0.0, 1.0]}
    user, options = _render(flan, "bbl.play_dialog_same_or_different", doc)
    assert (user, options) == ("Hi. Hello.\nSynthetic: two speakers? Yes or No.", ["No", "Yes"])
    # One template run on two tasks, and two near-identical ids: all are the study's own and
    # pass the registry's strict load (identity is the listing + task + id).
    assert found["ie.mmlu.niv2-qa-11"].upstream == ("InstructionEval:instructions.json", "MMLU_General:NIV2/QA/11")
    registry, _ = load_registry_with_observed(sources=[SourceSpec("instructioneval", root)])
    assert {"ie.mmlu.alpaca-qa-4", "ie.mmlu.alpaca-qa-10"} <= set(registry.instructions)


def test_fixed_words_without_fixed_labels_are_skipped_saying_so(tmp_path: Path) -> None:
    root = study_set_checkout(tmp_path / "InstructionEval")
    listing = {"Hindu_Knowledge": ["FLAN/BC/1"]}
    (root / "instructions.json").write_text(json.dumps(listing), encoding="utf-8")
    source = (root / "configs/BBH/binary_classification/play_dialog_same_or_different.py").read_text(encoding="utf-8")
    _write(root / "configs/BBH/multiple_choice/hindu_knowledge.py", source.replace("different", "yes"))
    result = import_instructioneval(root)
    assert result.phrasings == []
    [skip] = result.skipped
    assert "bbl.hindu_knowledge has no fixed labels" in skip.reason


STRANGE_STORIES_CONFIG = """
    import os
    from configs.preprocessor import Preprocessor

    def load_data(input_dir, instruction, shot_count, eval_by_logits, tokenizer):
        input_dir = os.path.join(input_dir, "boolean")
        items = read(os.path.join(input_dir, "task.json"))
        return MadeUpStories(instruction, [], eval_by_logits, input_dir)

    class MadeUpStories(Preprocessor):
        def add_unobserved_instructions(self):
            self.instr2preprocessor["FLAN/BC/1"] = lambda item: self.made_up_bc(self.map_made_up(item))
            self.instr2preprocessor["BBL/Default/1"] = self.made_up_default
            self.instr2preprocessor["Alpaca/Default/1"] = self.made_up_listed

        def map_made_up(self, item):
            answer = "True" if item["answer"] == "yes" else "False"
            return {"story": item["question"], "answer": answer}

        def made_up_bc(self, item):
            input_text = "{story}\\nSynthetic: true or false?".format(story=item["story"])
            return {"input_text": input_text, "output_text": "{answer}".format(answer=item["answer"]), "label_space": ["True", "False"]}

        def made_up_default(self, item):
            input_text = self.description + " " + item["question"] + self.example_output_prefix
            return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}

        def made_up_listed(self, item):
            input_text = item["question"] + " Synthetic: " + ", ".join(item["options"])
            return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}
"""


def test_yes_no_templates_of_strange_stories_import_onto_its_boolean_subtask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The study ran strange_stories on its boolean subtask (load_data joins "boolean"): its
    True/False words become a verbaliser of that task's yes/no labels, and its default prompt
    reads the boolean subtask's task.json; a template that lists each document's options in
    their own order is skipped, saying why."""
    root = study_set_checkout(tmp_path / "InstructionEval")
    listing = {"Strange_Stories": ["FLAN/BC/1", "BBL/Default/1", "Alpaca/Default/1"]}
    (root / "instructions.json").write_text(json.dumps(listing), encoding="utf-8")
    _write(root / "configs/BBH/binary_classification/strange_stories.py", STRANGE_STORIES_CONFIG)
    boolean = {"description": "Made-up boolean.", "example_input_prefix": "\n", "example_output_prefix": "\nA:", "choice_prefix": ""}
    pooled = dict(boolean, description="Made-up pool.")
    monkeypatch.setattr(instructioneval, "_read_task_json", lambda: ({"strange_stories": pooled, "strange_stories/boolean": boolean}, {}))
    result = import_instructioneval(root)
    found = {e.id: e for e in result.phrasings}
    flan = found["ie.strange_stories.flan-bc-1"]
    assert flan.target == "bbl.strange_stories.boolean"
    assert flan.instruction.answer_choices == {"yes": "True", "no": "False"}
    doc = {
        "id": "boolean/0",
        "group": "boolean",
        "fields": {"input": "A story.\nQ: Is it?"},
        "choices": ["no", "yes"],
        "scores": [0.0, 1.0],
    }
    assert _render(flan, "bbl.strange_stories.boolean", doc) == ("A story.\nQ: Is it?\nSynthetic: true or false?", ["True", "False"])
    default = found["ie.strange_stories.bbl-default-1"]
    assert _render(default, "bbl.strange_stories.boolean", doc)[0] == "Made-up boolean. A story.\nQ: Is it?\nA:"
    [skip] = result.skipped
    assert skip.item == "Strange_Stories:Alpaca/Default/1"
    assert "own order" in skip.reason and "bbl.strange_stories.boolean shows its labels in one fixed order" in skip.reason


def test_a_config_that_reads_another_subtask_than_the_target_is_skipped(tmp_path: Path) -> None:
    root = study_set_checkout(tmp_path / "InstructionEval")
    (root / "instructions.json").write_text(json.dumps({"Strange_Stories": ["FLAN/BC/1"]}), encoding="utf-8")
    _write(root / "configs/BBH/binary_classification/strange_stories.py", STRANGE_STORIES_CONFIG.replace('"boolean"', '"multiple_choice"'))
    [skip] = import_instructioneval(root).skipped
    assert skip.reason == (
        "InstructionEval's load_data reads the documents of strange_stories/multiple_choice, "
        "but bbl.strange_stories.boolean holds only strange_stories/boolean"
    )


def test_data_folders_follow_load_data(tmp_path: Path) -> None:
    """Which subtask's documents, and which task.json its Preprocessor reads."""
    config = tmp_path / "config.py"
    _write(config, STRANGE_STORIES_CONFIG)
    assert read_data_folders(config) == ("boolean", "boolean")
    _write(
        config,
        """
        import os

        def load_data(input_dir, instruction, shot_count, eval_by_logits, tokenizer):
            for folder in os.listdir(input_dir):
                pass
            return MadeUpPreprocessor(instruction, [], eval_by_logits, os.path.join(input_dir, "first_part"))
        """,
    )
    assert read_data_folders(config) == ("", "first_part")
    _write(config, "def load_data(input_dir):\n    return MadeUpPreprocessor(1, 2, 3)\n")
    assert read_data_folders(config) == ("", None)
    _write(config, "import os\ndef load_data(input_dir):\n    input_dir = input_dir + '/x'\n")
    with pytest.raises(instructioneval.Problem, match="does not follow"):
        read_data_folders(config)
    _write(config, "class NoLoader:\n    pass\n")
    assert read_data_folders(config) == ("", "")


def _tar_gz(path: Path, files: dict[str, dict[str, Any]]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, spec in files.items():
            data = json.dumps(spec).encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_task_json_fields_are_read_as_instructioneval_reads_them(tmp_path: Path) -> None:
    """task_prefix wins over description; missing prefixes take InstructionEval's defaults;
    each folder's task.json is kept under its folder (made-up task.json files, real layout)."""
    root = "bigbench-1.0.0/bigbench/benchmark_tasks"
    archive = _tar_gz(
        tmp_path / "bigbench.tar.gz",
        {
            f"{root}/winowhy/task.json": {"description": "Made-up description.", "task_prefix": "Made-up prefix.", "examples": []},
            f"{root}/strategyqa/task.json": {"description": "Only a description.", "example_output_prefix": "\nA: "},
            f"{root}/strange_stories/task.json": {"description": "Top."},
            f"{root}/strange_stories/boolean/task.json": {"description": "Boolean subtask."},
            f"{root}/not_in_the_study/task.json": {"description": "Ignored."},
        },
    )
    fields, problems = instructioneval._task_json_from(archive)
    assert fields["winowhy"] == {
        "description": "Made-up prefix.",
        "example_input_prefix": "\n",
        "example_output_prefix": "",
        "choice_prefix": "",
    }
    assert fields["strategyqa"]["description"] == "Only a description."
    assert fields["strategyqa"]["example_output_prefix"] == "\nA: "
    assert fields["strange_stories"]["description"] == "Top."
    assert fields["strange_stories/boolean"]["description"] == "Boolean subtask."
    assert "not_in_the_study" not in fields and problems == {}


def test_default_prompts_read_task_json_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = study_set_checkout(tmp_path / "InstructionEval")
    (root / "instructions.json").write_text(json.dumps({"StrategyQA": ["BBL/Default/1"]}), encoding="utf-8")
    _write(
        root / "configs/BBH/binary_classification/strategy_qa.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpStrategy(Preprocessor):
            def add_unobserved_instructions(self):
                self.instr2preprocessor["BBL/Default/1"] = self.default_Classification

            def default_Classification(self, item):
                input_text = self.description + " " + self.example_input_prefix + item["question"] + self.example_output_prefix
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}
        """,
    )
    fields = {"description": "Made-up {task}.", "example_input_prefix": "\nQ: ", "example_output_prefix": "\nA:", "choice_prefix": ""}
    monkeypatch.setattr(instructioneval, "_read_task_json", lambda: ({"strategyqa": fields}, {}))
    [entry] = import_instructioneval(root).phrasings
    doc = {"id": "s0", "group": "", "fields": {"input": "Is it?"}, "choices": ["Yes", "No"], "scores": [1.0, 0.0]}
    assert _render(entry, "bbl.strategyqa", doc) == ("Made-up {task}. \nQ: Is it?\nA:", ["Yes", "No"])
    monkeypatch.setattr(instructioneval, "_read_task_json", lambda: ({}, {"": "which needs the BIG-bench sdist (absent)"}))
    [skip] = import_instructioneval(root).skipped
    assert skip.reason == "reads self.description from BIG-bench's task.json, which needs the BIG-bench sdist (absent)"


def test_flan_styles_joins_counters_slices_and_rewritten_documents_read_exactly(tmp_path: Path) -> None:
    """set_style and module-level mark lists (FLAN), ", ".join and enumerate with a last-item
    branch and a slice (P3), a document rewritten in place, popped, split and replaced."""
    root = tmp_path / "InstructionEval"
    root.mkdir()
    ids = ["FLAN/QA/1", "T0/QA/1", "T0/QA/2", "NIV2/QA/1"]
    (root / "instructions.json").write_text(json.dumps({"MMLU_General": ids}), encoding="utf-8")
    _write(
        root / "configs/preprocessor.py",
        """
        MARKS = [
            ["\\n - " for _ in range(26)],
            ["\\n(" + chr(x) + ") " for x in range(ord("a"), ord("z") + 1)],
        ]
        PROMPTS = ["", "Made-up OPTIONS:"]

        class Preprocessor:
            def __init__(self, instruction, examples, eval_by_logits, input_dir=None):
                self.instr2preprocessor = {
                    "FLAN/QA/1": self.flan_1,
                    "T0/QA/1": self.t0_join,
                    "T0/QA/2": lambda item: self.t0_listed(**item),
                    "NIV2/QA/1": self.rewritten,
                }
                self.add_unobserved_instructions()

            def set_style(self, style, option_style):
                self.style, idx = style
                self.item = MARKS[idx] if self.style == "text" else MARKS[1]
                self.option_prompt = PROMPTS[option_style]

            def flan_1(self, item):
                self.set_style(("text", 0), 1)
                options = item["options"]
                item_names = self.item[:len(options)]
                options_ = self.option_prompt
                for mark, option in zip(item_names, options):
                    options_ += mark + option
                if self.style == "letter":
                    options = item_names
                input_text = "{q}\\n{o}".format(q=item["question"], o=options_)
                return {"input_text": input_text, "output_text": item["answer"], "label_space": options}

            def t0_join(self, item):
                categories = ", ".join(item["options"])
                input_text = "Made-up: {c}\\n{q}".format(c=categories, q=item["question"])
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}

            def t0_listed(self, question, answer, options):
                options_ = ""
                for i, option in enumerate(options):
                    if i == len(options) - 1:
                        options_ += "or {}".format(option)
                    else:
                        options_ += ", {}".format(option)
                options_ = "\\"" + options_[2:] + "\\""
                input_text = "{q} Made-up list: {o}?".format(q=question, o=options_)
                return {"input_text": input_text, "output_text": answer, "label_space": options}

            def rewritten(self, item):
                head, tail = item.pop("question").split(" | ", maxsplit=1)
                item["question"] = tail.replace("two", "2")
                input_text = "{q} / {h}".format(q=item["question"], h=head)
                return {"input_text": input_text, "output_text": item["answer"], "label_space": item["options"]}
        """,
    )
    _write(
        root / "configs/MMLU/general.py",
        """
        from configs.preprocessor import Preprocessor

        class MadeUpMMLU(Preprocessor):
            def add_unobserved_instructions(self):
                pass
        """,
    )
    result = import_instructioneval(root)
    assert result.skipped == []
    found = {e.id: e for e in result.phrasings}
    doc = dict(MMLU_DOC, fields={"question": "part one | part two", "subject": "anatomy"})
    assert _render(found["ie.mmlu.flan-qa-1"], "mmlu.anatomy", doc) == (
        "part one | part two\nMade-up OPTIONS:\n - w\n - x\n - y\n - z",
        ["w", "x", "y", "z"],
    )
    assert found["ie.mmlu.flan-qa-1"].instruction.provenance.collections == ["flan-2021"]
    assert _render(found["ie.mmlu.t0-qa-1"], "mmlu.anatomy", doc)[0] == "Made-up: w, x, y, z\npart one | part two"
    listed = _render(found["ie.mmlu.t0-qa-2"], "mmlu.anatomy", doc)[0]
    assert listed == 'part one | part two Made-up list: "w, x, yor z"?'  # as the Python builds it
    assert _render(found["ie.mmlu.niv2-qa-1"], "mmlu.anatomy", doc)[0] == "part 2 / part one"


# --------------------------------------------------------------------------- documents with N options

FIXED_COUNT_CONFIG = """
    from configs.preprocessor import Preprocessor

    class MadeUpFixedCount(Preprocessor):
        def add_unobserved_instructions(self):
            self.instr2preprocessor["BBL/Unobserved/1"] = self.five_lettered
            self.instr2preprocessor["BBL/Unobserved/2"] = self.house_numbers

        def five_lettered(self, item):
            A, B, C, D, E = item["options"]
            input_text = "Synthetic five: {q} (A) {a} (B) {b} (C) {c} (D) {d} (E) {e}".format(q=item["question"], a=A, b=B, c=C, d=D, e=E)
            return {"input_text": input_text, "output_text": "A", "label_space": ["A", "B", "C", "D", "E"]}

        def house_numbers(self, item):
            input_text = "Synthetic house: {}. Say 1, 2, 3, 4 or 5.".format(item["question"])
            return {"input_text": input_text, "output_text": item["answer"], "label_space": ["1", "2", "3", "4", "5"]}
"""


def fixed_count_checkout(root: Path) -> Path:
    """A made-up checkout whose templates show exactly five options, or score "1".."5"."""
    study_set_checkout(root)
    listing = {
        "Novel_Concepts": ["BBL/Unobserved/1", "BBL/Unobserved/2"],
        "Logic_Grid_Puzzle": ["BBL/Unobserved/1", "BBL/Unobserved/2"],
        "Known_Unknowns": ["BBL/Unobserved/1"],
    }
    (root / "instructions.json").write_text(json.dumps(listing), encoding="utf-8")
    for stem in ("novel_concepts", "logic_grid_puzzle", "known_unknowns"):
        _write(root / f"configs/BBH/multiple_choice/{stem}.py", FIXED_COUNT_CONFIG)
    return root


def test_a_template_with_a_fixed_option_count_applies_to_the_documents_with_that_many(tmp_path: Path) -> None:
    """Where documents vary in option count, the template is scored on those with its count;
    where every document has another count, it is skipped; "1".."5" are the option texts of
    a logic grid puzzle's five-option documents."""
    result = import_instructioneval(fixed_count_checkout(tmp_path / "InstructionEval"))
    found = {e.id: e.instruction for e in result.phrasings}
    assert found["ie.novel_concepts.bbl-unobserved-1"].option_count == 5
    assert found["ie.novel_concepts.bbl-unobserved-1"].answer_choices == "letters"
    assert found["ie.logic_grid_puzzle.bbl-unobserved-1"].option_count == 5
    numbers = found["ie.logic_grid_puzzle.bbl-unobserved-2"]
    assert (numbers.option_count, numbers.answer_choices) == (5, "text")
    why = {s.item: s.reason for s in result.skipped}
    assert why == {
        "Known_Unknowns:BBL/Unobserved/1": "shows exactly 5 options, but every document of bbl.known_unknowns has 2 "
        "(InstructionEval's own code fails on them)",
        "Novel_Concepts:BBL/Unobserved/2": "scored on fixed words ['1', '2', '3', '4', '5'] whatever the document's options, "
        "but bbl.novel_concepts has no fixed labels (its options vary by document)",
    }
    five = {"id": "h5", "group": "", "fields": {"input": "Where?"}, "choices": ["1", "2", "3", "4", "5"], "scores": [0, 0, 1.0, 0, 0]}
    three = dict(five, id="h3", choices=["1", "2", "3"], scores=[0, 0, 1.0])
    assert numbers.applies_to(five) and not numbers.applies_to(three)
    entry = next(e for e in result.phrasings if e.id == "ie.logic_grid_puzzle.bbl-unobserved-2")
    assert _render(entry, "bbl.logic_grid_puzzle", five) == ("Synthetic house: Where?. Say 1, 2, 3, 4 or 5.", ["1", "2", "3", "4", "5"])


def test_the_option_count_joins_the_hash_only_where_set() -> None:
    from harness.registry import text_sha256
    from harness.schema import Instruction, Provenance

    plain = Instruction(id="x.a", text="{{ input }}", provenance=Provenance(status="unobserved", author="us"))
    pinned = plain.model_copy(update={"option_count": 5})
    # Phrasings without it keep the hash they had before the field existed.
    payload = '{"text":"{{ input }}","answer_choices":"text","target_delimiter":" ","until":null}'
    assert text_sha256(plain) == __import__("hashlib").sha256(payload.encode()).hexdigest()
    assert text_sha256(pinned) != text_sha256(plain)


def _novel_concepts_documents() -> list[dict[str, Any]]:
    docs = []
    for i, count in enumerate([5, 3, 5, 3, 5]):
        choices = [f"concept {i}.{k}" for k in range(count)]
        docs.append(
            {
                "id": f"novel_concepts/{i}",
                "group": "novel_concepts",
                "fields": {"input": f"What do set {i} share?"},
                "choices": choices,
                "scores": [1.0] + [0.0] * (count - 1),
            }
        )
    return docs


def test_a_run_scores_a_fixed_count_template_on_those_documents_and_says_so(cache: Path, tmp_path: Path) -> None:
    """`irh run` scores the five-option template on the 3 five-option documents only, the
    written phrasing on all 5; the report names the smaller set; `irh validate` renders it on
    those documents; a budgeted run, whose estimate needs the full grid, is refused."""
    from harness.data.catalog import store_documents
    from harness.results import iter_samples

    store_documents("bbl.novel_concepts", {"test": _novel_concepts_documents()}, "made up for this test")
    root = fixed_count_checkout(tmp_path / "InstructionEval")
    reports = tmp_path / "reports"
    common = ["--model", "irh-fake", "--tasks", "bbl.novel_concepts", "--observed", f"instructioneval={root}"]
    picked = ["--instructions", "ie.novel_concepts.bbl-unobserved-1,bbl.novel_concepts.w01", "--reports-dir", str(reports)]
    out = CliRunner().invoke(main, ["run", *common, *picked])
    assert out.exit_code == 0, out.output
    (run_dir,) = list(reports.iterdir())
    scored: dict[str, set[str]] = {}
    for row in iter_samples(run_dir):
        scored.setdefault(row.instruction_id, set()).add(row.doc_id)
    assert scored == {
        "ie.novel_concepts.bbl-unobserved-1": {"novel_concepts/0", "novel_concepts/2", "novel_concepts/4"},
        "bbl.novel_concepts.w01": {f"novel_concepts/{i}" for i in range(5)},
    }
    notes = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))["notes"]
    assert any("1 phrasing(s) scored on fewer than the 5 documents" in n and "ie.novel_concepts.bbl-unobserved-1 (n=3)" in n for n in notes)
    assert "ie.novel_concepts.bbl-unobserved-1 (n=3)" in (run_dir / "report.md").read_text(encoding="utf-8")
    valid = CliRunner().invoke(main, ["validate", "--observed", f"instructioneval={root}", "--docs", "5"])
    assert valid.exit_code == 0, valid.output
    budgeted = CliRunner().invoke(main, ["run", *common, *picked, "--budget", "0.5"])
    assert budgeted.exit_code == 1
    assert "ie.novel_concepts.bbl-unobserved-1 is scored only on documents with 5 options" in budgeted.output
    assert len(list(reports.iterdir())) == 1  # nothing half-written
