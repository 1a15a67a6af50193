"""Observed-phrasing importers: synthetic files in each real format, and the real FLAN import.

Every template text in this file is made up for the tests; no prompt of another project is
copied here (the real FLAN test reads the installed lm-eval at run time).
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.importers import (
    ObservedSourceError,
    SourceSpec,
    load_registry_with_observed,
    parse_sources,
    run_importers,
)
from harness.importers.checks import check_phrasing, synthetic_document
from harness.importers.files import import_file
from harness.importers.flan import import_flan
from harness.importers.instructioneval import import_instructioneval
from harness.importers.promptbench import import_promptbench
from harness.importers.promptsource import import_promptsource
from harness.importers.safe_yaml import UnsupportedTag, load_plain_yaml
from harness.importers.templating import UnmappedPlaceholder, format_to_jinja, rename_variables
from harness.registry import Registry, load_registry
from harness.render import render_prompt
from harness.schema import ID_PATTERN

REPO = Path(__file__).resolve().parent.parent


def by_id(result_or_results: object) -> dict[str, object]:
    results = result_or_results if isinstance(result_or_results, list) else [result_or_results]
    return {e.id: e for r in results for e in r.phrasings}  # type: ignore[attr-defined]


def reasons(result: object) -> dict[str, int]:
    return result.reasons()  # type: ignore[attr-defined,no-any-return]


# --------------------------------------------------------------------------- templating


def test_rename_variables_touches_only_free_variables() -> None:
    text = "{{ sentence1 }} / {{ sentence1.strip() }} / {{ words | join(', ') }} / {{ x.sentence2 }}"
    out = rename_variables(text, {"sentence1": "premise", "words": "['a', 'b']", "x": "hypothesis"})
    assert out == "{{ premise }} / {{ premise.strip() }} / {{ ['a', 'b'] | join(', ') }} / {{ hypothesis.sentence2 }}"
    with pytest.raises(UnmappedPlaceholder) as err:
        rename_variables("{{ sentence1 }} {{ idx }}", {"sentence1": "premise"})
    assert err.value.names == ["idx"]


def test_format_to_jinja_maps_placeholders_and_escapes_literal_braces() -> None:
    out = format_to_jinja("Made-up {{literal}} braces, {content} about {task}.", {"content": "{{ question }}", "task": "{{ subject }}"})
    assert out.startswith("Made-up ")
    from harness.render import render_text

    assert render_text(out, {"question": "Q?", "subject": "S"}) == "Made-up {literal} braces, Q? about S."
    with pytest.raises(UnmappedPlaceholder):
        format_to_jinja("positional {} here", {})


def test_safe_yaml_constructs_no_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    data = load_plain_yaml(f'a: !!python/object/apply:builtins.open ["{marker}", "w"]\nb: !function utils.fn\nc: !Template {{x: 1}}\n')
    assert isinstance(data["a"], UnsupportedTag) and isinstance(data["b"], UnsupportedTag)
    assert data["c"] == {"x": 1}
    assert not marker.exists()


# --------------------------------------------------------------------------- FLAN (lm-eval)


def test_real_flan_import_from_installed_lm_eval_yields_valid_phrasings(registry: Registry) -> None:
    (result,) = run_importers([SourceSpec("flan", None)], dict(registry.tasks))
    assert result.origin.startswith("lm-eval ")
    rte = [e for e in result.phrasings if registry.applies(e, registry.tasks["nli.rte"])]
    assert rte, f"no FLAN phrasing for nli.rte; skipped: {result.reasons()}"
    for entry in result.phrasings:
        assert entry.instruction.provenance.source and entry.instruction.provenance.source.startswith("lm-eval ")
    observed = [e for e in result.phrasings if e.instruction.provenance.status == "observed"]
    assert observed and all({"flan-2021", "flan-2022"} <= set(e.instruction.provenance.collections) for e in observed)
    # The same validation as written phrasings: the whole registry loads with them, no problems.
    loaded = load_registry(REPO, strict=False, extra=result.phrasings)
    assert not loaded.problems, loaded.problems
    task = registry.tasks["nli.rte"]
    prompt = render_prompt(rte[0].instruction, task, synthetic_document(task))
    assert "[premise of a nli.rte document]" in prompt.user and len(prompt.options) == 2


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def _flan_tasks_dir(root: Path) -> Path:
    _write(
        root / "benchmarks/flan/flan_held_in.yaml",
        r"""
        group: flan_held_in
        task:
          - group: anli_r1_flan
            task:
              - task: anli_r1_prompt-0
                include: _held_in_template_yaml
                doc_to_text: "Synthetic A: {{premise}} => {{hypothesis}}?"
                doc_to_target: "{{[\"Sure\", \"Unclear\", \"Nah\"][label]}}"
          - group: anli_r2_flan
            task:
              - task: anli_r2_prompt-0
                doc_to_text: "Synthetic A: {{premise}} => {{hypothesis}}?"
                doc_to_target: "{{[\"Sure\", \"Unclear\", \"Nah\"][label]}}"
          - group: rte_flan
            task:
              - task: rte_prompt-0
                doc_to_text: "Synthetic R: {{sentence1}} / {{sentence2}}"
                doc_to_target: "{{['yep', 'nope'][label]}}"
              - task: rte_prompt-0
                doc_to_text: "Synthetic R2: {{sentence1}} / {{idx}}"
                doc_to_target: "{{['yep', 'nope'][label]}}"
              - task: rte_prompt-2
                doc_to_text: !function utils.make_text
                doc_to_target: "{{['yep', 'nope'][label]}}"
              - task: rte_prompt-3
                doc_to_text: "Synthetic R3: {{sentence1}} / {{sentence2}}"
                doc_to_target: "{{label}}"
          - group: boolq_flan
            task:
              - task: boolq_prompt-0
                doc_to_text: "Synthetic B: {{passage}} // {{question}}? no or yes"
                doc_to_target: "{{['no', 'yes'][label]}}"
          - group: arc_easy_flan
            task:
              - task: arc_easy_prompt-0
                doc_to_text: "Synthetic sci: {{question}}\nPICK ONE:\n* {{choices.text|join('\n* ')}}"
                doc_to_target: "{{choices.text[choices.label.index(answerKey)]}}"
              - task: arc_easy_prompt-1
                doc_to_text: "Synthetic sci letters: {{question}} {{choices.label|join(',')}}"
                doc_to_target: "{{choices.text[choices.label.index(answerKey)]}}"
              - task: arc_easy_prompt-2
                doc_to_text: "Synthetic sci key: {{question}} {{choices.text|join(', ')}}"
                doc_to_target: "{{answerKey}}"
          - group: arc_challenge_flan
            task:
              - task: arc_challenge_prompt-0
                doc_to_text: "Synthetic sci: {{question}}\nPICK ONE:\n* {{choices.text|join('\n* ')}}"
                doc_to_target: "{{choices.text[choices.label.index(answerKey)]}}"
          - group: piqa_flan
            task:
              - task: piqa_prompt-0
                doc_to_text: "Synthetic P: {{goal}}"
                doc_to_target: "{{[sol1, sol2][label]}}"
        """,
    )
    _write(
        root / "mmlu/flan_n_shot/loglikelihood/_mmlu_flan_loglikelihood_template_yaml",
        r"""
        output_type: multiple_choice
        doc_to_text: "Synthetic Q: {{question.strip()}} | {{choices[0]}} | {{choices[1]}} | {{choices[2]}} | {{choices[3]}}"
        doc_to_choice: ["(A)", "(B)", "(C)", "(D)"]
        doc_to_target: answer
        """,
    )
    _write(
        root / "mmlu/flan_cot_zeroshot/_mmlu_flan_cot_zeroshot_template_yaml",
        r"""
        output_type: generate_until
        doc_to_text: "Synthetic CoT: {{question}}"
        """,
    )
    return root


def test_flan_synthetic_mapping_skipping_and_counts(tmp_path: Path, registry: Registry) -> None:
    from harness.importers.checks import check_result, drop_repeats

    result = import_flan(_flan_tasks_dir(tmp_path / "tasks"), version="9.9.9")

    check_result(result, registry.tasks)
    drop_repeats([result], registry.tasks)
    entries = by_id(result)
    assert set(entries) == {"flan.anli.t00", "flan.rte.t00", "flan.boolq.t00", "flan.arc.t00", "flan.mmlu.n_shot-loglikelihood"}
    anli = entries["flan.anli.t00"].instruction  # type: ignore[attr-defined]
    assert anli.answer_choices == {"entailment": "Sure", "neutral": "Unclear", "contradiction": "Nah"}
    assert anli.provenance.source == "lm-eval 9.9.9:tasks/benchmarks/flan/flan_held_in.yaml#anli_r1_prompt-0"
    rte = entries["flan.rte.t00"]
    assert rte.instruction.text == "Synthetic R: {{premise}} / {{hypothesis}}"  # type: ignore[attr-defined]
    assert rte.instruction.answer_choices == {"entailment": "yep", "not_entailment": "nope"}  # type: ignore[attr-defined]
    assert (rte.target_kind, rte.target) == ("category", "nli-2way")  # type: ignore[attr-defined]
    mmlu = entries["flan.mmlu.n_shot-loglikelihood"].instruction  # type: ignore[attr-defined]
    assert mmlu.provenance.status == "unobserved" and mmlu.answer_choices == "letters"
    boolq = entries["flan.boolq.t00"]
    assert (boolq.target_kind, boolq.target) == ("task", "glue.boolq")  # type: ignore[attr-defined]
    assert boolq.instruction.answer_choices == {"no": "no", "yes": "yes"}  # type: ignore[attr-defined]
    # ARC: the options' texts, in our order, scored as they are; ARC-Challenge's copy is a repeat.
    arc = entries["flan.arc.t00"]
    assert (arc.target_kind, arc.target) == ("family", "arc")  # type: ignore[attr-defined]
    assert arc.instruction.answer_choices == "text"  # type: ignore[attr-defined]
    task = registry.tasks["arc.easy"]
    doc = {"id": "d", "group": "", "fields": {"question": "Which is warm?"}, "choices": ["ice", "sun", "snow"], "scores": [0.0, 1.0, 0.0]}
    prompt = render_prompt(arc.instruction, task, doc)  # type: ignore[attr-defined]
    assert prompt.user == "Synthetic sci: Which is warm?\nPICK ONE:\n* ice\n* sun\n* snow"
    assert prompt.options == ["ice", "sun", "snow"]
    why = reasons(result)
    assert why["same text as an earlier phrasing"] == 2
    assert why["uses ['idx'], which have no field in our tasks"] == 1
    assert why["uses YAML tags (e.g. !function) that are not imported"] == 1
    assert why["doc_to_target is not a list of answer words indexed by label"] == 1
    assert why["uses ['choices.label'], which have no field in our tasks"] == 1
    assert why["target is not the document's right option"] == 1
    assert why["no task in this registry for FLAN dataset 'piqa'"] == 1
    assert any(r.startswith("chain-of-thought") for r in why)
    counts = result.counts()
    assert (counts.imported, counts.observed, counts.unobserved, counts.skipped) == (5, 4, 1, 9)


# --------------------------------------------------------------------------- promptsource


def _template(uid: str, name: str, jinja: str, choices: str, original: str = "true", extra: str = "") -> str:
    return f"""
  {uid}: !Template
    answer_choices: {choices}
    id: {uid}
    jinja: {json.dumps(jinja)}
    metadata: !TemplateMetadata
      choices_in_prompt: true
      metrics:
      - Accuracy
      original_task: {original}
    name: {name}
    reference: made up for tests{extra}
"""


def _sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"promptsource-0.2.3/promptsource/templates/{rel}/templates.yaml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_promptsource_synthetic_sdist(tmp_path: Path, registry: Registry) -> None:
    marker = tmp_path / "constructed"
    cb = "dataset: super_glue\nsubset: cb\ntemplates:" + "".join(
        [
            _template(
                "t1",
                "synthetic can",
                "Synth: {{premise}} then {{hypothesis}}? Yep, Perhaps or Nope? ||| "
                "{% if label != -1 %}{{ answer_choices[label] }}{% endif %}",
                "Yep ||| Nope ||| Perhaps",
            ),
            _template(
                "t2", "not original", "Synth other: {{premise}} ||| {{answer_choices[label]}}", "Yep ||| Nope ||| Perhaps", original="false"
            ),
            _template("t3", "odd target", "Synth odd: {{premise}} {{hypothesis}} ||| {{label}}", "Yep ||| Nope ||| Perhaps"),
            _template("t4", "unknown field", "Synth idx: {{premise}} {{idx}} ||| {{answer_choices[label]}}", "Yep ||| Nope ||| Perhaps"),
            _template(
                "t5",
                "evil",
                "Synth evil: {{premise}} {{hypothesis}} ||| {{answer_choices[label]}}",
                "Yep ||| Nope ||| Perhaps",
                extra=f'\n    payload: !!python/object/apply:builtins.open ["{marker}", "w"]',
            ),
        ]
    )
    anli = (
        "dataset: anli\ntemplates:"
        + _template(
            "a1",
            "same text",
            "Synth: {{premise}} then {{hypothesis}}? Yep, Perhaps or Nope? ||| {{answer_choices[label]}}",
            "Yep ||| Perhaps ||| Nope",
        )
        + _template(
            "a2", "hidden words", "Synth hidden: {{premise}} so {{hypothesis}}? ||| {{answer_choices[label]}}", "Yep ||| Perhaps ||| Nope"
        )
    )
    glue_rte = "dataset: glue\nsubset: rte\ntemplates:" + _template(
        "r1",
        "inline choices",
        "Synth pair: {{sentence1}} | {{sentence2}} -- {{answer_choices[0]}} or {{answer_choices[1]}}?\n||| {{answer_choices[label]}}",
        "Yes indeed ||| Not at all",
    )
    imdb = "dataset: imdb\ntemplates:" + _template("i1", "review", "Synth review {{text}} ||| {{answer_choices[label]}}", "bad ||| good")
    archive = _sdist(tmp_path / "promptsource-0.2.3.tar.gz", {"super_glue/cb": cb, "anli": anli, "glue/rte": glue_rte, "imdb": imdb})

    from harness.importers.checks import check_result, drop_repeats

    result = check_result(import_promptsource(archive), registry.tasks)
    drop_repeats([result], registry.tasks)
    assert not marker.exists()
    entries = by_id(result)
    # The anli copy comes first (DATASETS order) and maps its own label order to ours.
    assert set(entries) == {"ps.anli.same-text", "ps.glue-rte.inline-choices"}
    anli_entry = entries["ps.anli.same-text"].instruction  # type: ignore[attr-defined]
    assert anli_entry.answer_choices == {"entailment": "Yep", "neutral": "Perhaps", "contradiction": "Nope"}
    assert anli_entry.provenance.collections == ["p3-promptsource"]
    assert anli_entry.provenance.source == "promptsource 0.2.3:promptsource/templates/anli/templates.yaml#same text"
    rte = entries["ps.glue-rte.inline-choices"].instruction  # type: ignore[attr-defined]
    task = registry.tasks["nli.rte"]
    rendered = render_prompt(rte, task, synthetic_document(task))
    assert rendered.user.endswith("-- Yes indeed or Not at all?")
    assert rendered.options == ["Yes indeed", "Not at all"]
    why = reasons(result)
    assert why["not an original-task template (original_task is false)"] == 1
    assert why["target is not answer_choices[label]; no verbaliser can be derived"] == 1
    assert why["uses ['idx'], which have no field in our tasks"] == 1
    assert why["unsupported YAML tag (not constructed)"] == 1
    assert why["dataset has no task in this registry"] == 1
    # The registry refuses a verbaliser whose words the prompt never shows.
    assert why["answer words never appear in the prompt (a verbaliser's words must be shown)"] == 1
    # The CB copy of the shared text: its words in CB's label order are the same verbaliser.
    assert why["same text as an earlier phrasing"] == 1
    assert result.counts().imported == 2 and result.counts().skipped == 7


def _choice_sdist(path: Path) -> Path:
    """A made-up sdist with COPA-, ARC- and CommonsenseQA-like templates (all texts invented here)."""
    q = json.dumps  # per-document answer choices are quoted strings in promptsource's files
    copa = "dataset: super_glue\nsubset: copa\ntemplates:" + "".join(
        [
            _template(
                "c1",
                "synthetic pick",
                "Synth cue: {{ premise }} -- the {{ question }}?\n* {{ choice1 }}\n* {{ choice2 }} ||| "
                "{% if label != -1 %}{{ answer_choices[label] }}{% endif %}",
                q("{{choice1}} ||| {{choice2}}"),
            ),
            _template(
                "c2",
                "synthetic inline",
                'Synth which: "{{ answer_choices[0] }}" vs "{{ answer_choices[1] }}" after {{ premise }} ||| {{ answer_choices[label] }}',
                q("{{ choice1 }} ||| {{ choice2 }}"),
            ),
            _template(
                "c3",
                "synthetic digits",
                "Synth number: {{premise}} 1) {{choice1}} 2) {{choice2}} ||| {{answer_choices[label]}}",
                q("1 ||| 2"),
            ),
            _template(
                "c4",
                "synthetic swapped",
                "Synth swap: {{premise}} {{choice2}} or {{choice1}} ||| {{answer_choices[1 - label]}}",
                q("{{choice2}} ||| {{choice1}}"),
            ),
            _template(
                "c5",
                "synthetic effect only",
                '{% if question == "effect" %}Synth then: {{premise}} ||| {{answer_choices[label]}}{% endif %}',
                q("{{choice1}} ||| {{choice2}}"),
            ),
            _template(
                "c6",
                "synthetic random",
                '{{ ["Synth one:", "Synth two:"] | choice }} {{premise}} ||| {{answer_choices[label]}}',
                q("{{choice1}} ||| {{choice2}}"),
            ),
        ]
    )
    arc_target = "{{answer_choices[choices.label.index(answerKey)]}}"
    arc = "dataset: ai2_arc\nsubset: ARC-Easy\ntemplates:" + "".join(
        [
            _template(
                "a1",
                "synthetic list",
                "Synth quiz: {{question}}\nCandidates: {{ choices['text'] | join('; ') }} |||\n" + arc_target,
                q('{{choices.text | join("|||")}}'),
            ),
            _template(
                "a2",
                "synthetic four",
                "Synth: one of these 4 options answers {{question}}\n- {{answer_choices | join('\\n- ')}} ||| " + arc_target,
                q('{{choices.text | join("|||")}}'),
            ),
            _template("a3", "synthetic keys", "Synth keys: {{question}} ||| {{answerKey}}", q('{{choices.label | join("|||")}}')),
            _template(
                "a4", "synthetic two", "Synth first two: {{question}} ||| {{answer_choices[0]}}", q('{{choices.text[:2] | join("|||")}}')
            ),
        ]
    )
    challenge = arc.replace("subset: ARC-Easy", "subset: ARC-Challenge")
    csqa = "dataset: commonsense_qa\ntemplates:" + _template(
        "q1",
        "synthetic guarded",
        '{% if answerKey != "" %}\nSynth common: {{question}} |||\n{{ answer_choices[choices.label.index(answerKey)] }}\n{% endif %}',
        q("{{choices.text | join('|||')}}"),
    )
    files = {"super_glue/copa": copa, "ai2_arc/ARC-Easy": arc, "ai2_arc/ARC-Challenge": challenge, "commonsense_qa": csqa}
    return _sdist(path, files)


def test_promptsource_multiple_choice_templates_checked_on_stand_in_rows(tmp_path: Path, registry: Registry) -> None:
    from harness.importers.checks import check_result, drop_repeats

    result = check_result(import_promptsource(_choice_sdist(tmp_path / "promptsource-0.2.3.tar.gz")), registry.tasks)
    drop_repeats([result], registry.tasks)
    entries = by_id(result)
    assert set(entries) == {
        "ps.super_glue-copa.synthetic-pick",
        "ps.super_glue-copa.synthetic-inline",
        "ps.ai2_arc-arc-easy.synthetic-list",
        "ps.ai2_arc-arc-easy.synthetic-four",
        "ps.commonsense_qa.synthetic-guarded",
    }
    for entry in entries.values():
        assert entry.instruction.answer_choices == "text"  # type: ignore[attr-defined]
        assert entry.instruction.provenance.collections == ["p3-promptsource"]  # type: ignore[attr-defined]

    copa_task = registry.tasks["commonsense.copa"]
    copa_doc = {
        "id": "validation/0",
        "group": "effect",
        "fields": {"premise": "The glass fell.", "question": "effect"},
        "choices": ["It broke.", "It sang."],
        "scores": [1.0, 0.0],
    }
    pick = entries["ps.super_glue-copa.synthetic-pick"]
    assert (pick.target_kind, pick.target) == ("task", "commonsense.copa")  # type: ignore[attr-defined]
    assert "choices[0]" in pick.instruction.text and "choice1" not in pick.instruction.text  # type: ignore[attr-defined]
    rendered = render_prompt(pick.instruction, copa_task, copa_doc)  # type: ignore[attr-defined]
    assert rendered.user == "Synth cue: The glass fell. -- the effect?\n* It broke.\n* It sang."
    assert rendered.options == ["It broke.", "It sang."]
    inline = render_prompt(entries["ps.super_glue-copa.synthetic-inline"].instruction, copa_task, copa_doc)  # type: ignore[attr-defined]
    assert inline.user == 'Synth which: "It broke." vs "It sang." after The glass fell.'

    arc_task = registry.tasks["arc.challenge"]
    arc_doc = {"id": "x", "group": "", "fields": {"question": "What melts?"}, "choices": ["rock", "ice", "sand"], "scores": [0.0, 1.0, 0.0]}
    listing = entries["ps.ai2_arc-arc-easy.synthetic-list"]
    assert (listing.target_kind, listing.target) == ("family", "arc")  # type: ignore[attr-defined]
    rendered = render_prompt(listing.instruction, arc_task, arc_doc)  # type: ignore[attr-defined]
    assert rendered.user == "Synth quiz: What melts?\nCandidates: rock; ice; sand"
    assert rendered.options == ["rock", "ice", "sand"]
    four = entries["ps.ai2_arc-arc-easy.synthetic-four"].instruction  # type: ignore[attr-defined]
    assert four.option_count == 4 and entries["ps.ai2_arc-arc-easy.synthetic-list"].instruction.option_count is None  # type: ignore[attr-defined]
    csqa_doc = {"id": "y", "group": "", "fields": {"question": "Where is sand?"}, "choices": list("abcde"), "scores": [1.0, 0, 0, 0, 0]}
    guarded = entries["ps.commonsense_qa.synthetic-guarded"].instruction  # type: ignore[attr-defined]
    assert render_prompt(guarded, registry.tasks["commonsense.csqa"], csqa_doc).user.strip() == "Synth common: Where is sand?"

    why = reasons(result)
    assert why["answer choices are letters or numbers, not the option texts"] == 3  # COPA digits, ARC keys (x2)
    assert why["answer choices are the document's options in another order than ours"] == 1
    assert why["answer choices are a subset of the document's options"] == 2
    assert why["renders no prompt for some documents (the template covers only part of the data)"] == 1
    assert why["picks its wording or option order at random per document (promptsource's choice filter)"] == 1
    assert why["same text as an earlier phrasing"] == 2  # ARC-Challenge's copies of the two kept ones


def test_promptsource_observed_multiple_choice_seen_per_model_family(tmp_path: Path) -> None:
    from harness.plan import build_plan, held_out_tasks_for, seen_collections_for

    archive = _choice_sdist(tmp_path / "promptsource-0.2.3.tar.gz")
    registry, _ = load_registry_with_observed(sources=[SourceSpec("promptsource", archive)])

    def seen(model: str, task_id: str, pattern: str) -> bool:
        items = build_plan(
            registry,
            [registry.task(task_id)],
            instruction_patterns=[pattern],
            seen_collections=seen_collections_for(model),
            held_out_tasks=held_out_tasks_for(model),
        )
        assert items
        return all(item.seen for item in items)

    for model in ("google/flan-t5-base", "bigscience/T0pp"):
        assert seen(model, "arc.easy", "ps.ai2_arc-*")
    assert seen("google/flan-t5-base", "commonsense.copa", "ps.super_glue-copa.*")
    # COPA is one of T0's held-out evaluation sets: P3 carries its templates, T0 never trained on them.
    items = build_plan(
        registry,
        [registry.task("commonsense.copa")],
        instruction_patterns=["ps.super_glue-copa.*"],
        seen_collections=seen_collections_for("bigscience/T0pp"),
        held_out_tasks=held_out_tasks_for("bigscience/T0pp"),
    )
    assert items and not any(item.seen for item in items)


# --------------------------------------------------------------------------- PromptBench


def test_promptbench_synthetic_wheel_is_parsed_not_run(tmp_path: Path, registry: Registry) -> None:
    marker = tmp_path / "executed"
    source = textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("ran")
        TASK_ORIENTED_PROMPTS = {{
            'rte': [
                "Synthetic pair check, reply entailment or not_entailment.\\nInput:{{content}}\\nReply:",
                "Synthetic prompt without the document.",
            ],
            'mmlu': ["Synthetic {{task}} quiz, pick A-D.\\nInput:{{content}}\\nReply:"],
            'sst2': ["Synthetic mood: {{content}}"],
            'mnli': ["Synthetic three-way {{content}} in {{}}"],
        }}
    """)
    wheel = tmp_path / "promptbench-0.0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("promptbench/prompts/task_oriented.py", source)
    from harness.importers.checks import check_result

    result = check_result(import_promptbench(wheel), registry.tasks)
    assert not marker.exists()
    entries = by_id(result)
    assert set(entries) == {"pb.rte.task00", "pb.mmlu.task00"}
    rte = entries["pb.rte.task00"].instruction  # type: ignore[attr-defined]
    assert rte.provenance.status == "unobserved" and rte.provenance.author == "PromptBench authors (Zhu et al. 2023)"
    assert rte.provenance.source == "promptbench 0.0.4:promptbench/prompts/task_oriented.py#rte[0]"
    assert "{{ premise }}" in rte.text and "{{ hypothesis }}" in rte.text
    mmlu = entries["pb.mmlu.task00"].instruction  # type: ignore[attr-defined]
    assert mmlu.answer_choices == "letters" and "{{ subject }}" in mmlu.text
    why = reasons(result)
    assert why["no {content} placeholder: the document would not be shown"] == 1
    assert why["dataset has no task in this registry"] == 1
    assert why["uses ['{}'], which have no field in our tasks"] == 1
    assert why["file not found in the wheel"] == 1


# --------------------------------------------------------------------------- InstructionEval


# The importer's behaviour on a synthetic checkout and on the real one: tests/test_instructioneval.py


def test_instructioneval_needs_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_instructioneval(tmp_path)


# --------------------------------------------------------------------------- plain files


ROWS = [
    {
        "id": "mine.rte.01",
        "category": "nli-2way",
        "text": "Synthetic row: {{ premise }} // {{ hypothesis }} ok or not ok?",
        "answer_choices": {"entailment": "ok", "not_entailment": "not ok"},
        "status": "observed",
        "collections": ["flan-2022"],
        "source": "my notes p. 1",
    },
    {
        "id": "mine.mmlu.01",
        "family": "mmlu",
        "text": "Synthetic quiz on {{ subject }}: {{ question }}\n{{ choices | join(' / ') }}",
        "answer_choices": "text",
        "status": "unobserved",
        "author": "a tester",
    },
    {
        "id": "mine.rte.02",
        "category": "nli-2way",
        "text": "Synthetic row: {{ premise }} // {{ hypothesis }} ok or not ok??",
        "answer_choices": {"entailment": "ok", "not_entailment": "not ok"},
        "status": "unobserved",
        "author": "a tester",
    },
    {"id": "mine.bad.fields", "task": "nli.rte", "text": "Synthetic {{ passage }}", "status": "unobserved", "author": "a tester"},
    {
        "id": "mine.bad.verbaliser",
        "task": "nli.rte",
        "text": "Synthetic verbaliser {{ premise }}",
        "answer_choices": {"yes": "y", "no": "n"},
        "status": "unobserved",
        "author": "a tester",
    },
    {"id": "mine.bad.observed", "task": "nli.rte", "text": "Synthetic observed {{ premise }}", "status": "observed", "source": "x"},
    {"id": "Bad Id", "task": "nli.rte", "text": "Synthetic id {{ premise }}", "status": "unobserved", "author": "a tester"},
    {"id": "mine.bad.target", "text": "Synthetic target {{ premise }}", "status": "unobserved", "author": "a tester"},
    {"id": "mine.bad.column", "task": "nli.rte", "text": "Synthetic column", "status": "unobserved", "author": "t", "colour": "red"},
    {"id": "mine.bad.task", "task": "nli.nope", "text": "Synthetic task {{ premise }}", "status": "unobserved", "author": "t"},
]


def _expected_file_result(result: object) -> None:
    assert set(by_id(result)) == {"mine.rte.01", "mine.mmlu.01"}
    why = reasons(result)
    assert why["near-duplicate of an earlier phrasing (similarity >= 0.95)"] == 1
    assert why["placeholder(s) ['passage'] are not fields of nli.rte"] == 1
    assert any(r.startswith("verbaliser keys ['no', 'yes']") for r in why)
    assert any(r.startswith("invalid provenance") and "collections" in r for r in why)
    assert any(r.startswith("invalid id") for r in why)
    assert why["give exactly one of task, family or category"] == 1
    assert why["unknown column(s) ['colour']"] == 1
    assert why["no task matches task 'nli.nope'"] == 1
    assert result.counts().skipped == 8  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".yaml"])
def test_plain_files_map_validate_and_skip(tmp_path: Path, registry: Registry, suffix: str) -> None:
    import csv

    import yaml

    path = tmp_path / f"phrasings{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    elif suffix == ".yaml":
        path.write_text(yaml.safe_dump({"phrasings": ROWS}, sort_keys=False), encoding="utf-8")
    else:
        columns = ["id", "task", "family", "category", "text", "answer_choices", "status", "collections", "source", "author", "colour"]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in ROWS:
                cells = {k: (json.dumps(v) if isinstance(v, dict) else ",".join(v) if isinstance(v, list) else v) for k, v in row.items()}
                writer.writerow(cells)
    (result,) = run_importers([SourceSpec("file", path)], dict(registry.tasks))
    _expected_file_result(result)
    entry = by_id(result)["mine.rte.01"]
    assert entry.instruction.provenance.collections == ["flan-2022"]  # type: ignore[attr-defined]


def test_file_of_unknown_type_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "phrasings.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown phrasing file type"):
        import_file(path)
    with pytest.raises(ObservedSourceError, match=r"file=.*phrasings\.txt"):
        run_importers([SourceSpec("file", path)], {})


# --------------------------------------------------------------------------- integration


def test_parse_sources() -> None:
    specs = parse_sources("flan, promptsource,file=/x/a.jsonl,flan")
    assert specs == [SourceSpec("flan", None), SourceSpec("promptsource", None), SourceSpec("file", Path("/x/a.jsonl"))]
    with pytest.raises(ObservedSourceError, match="unknown observed source"):
        parse_sources("flna")
    with pytest.raises(ObservedSourceError, match="needs a path"):
        parse_sources("instructioneval")


def test_imported_phrasings_join_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    registry, results = load_registry_with_observed(REPO, parse_sources(f"file={path}"))
    entry = registry.instruction("mine.rte.01")
    assert entry.instruction.provenance.status == "observed"
    assert registry.applies(entry, registry.tasks["nli.hans"])
    assert results[0].counts().imported == 1
    assert check_phrasing(entry, registry.tasks) is None
    assert all(e.id.count(".") >= 1 for e in results[0].phrasings)


def test_ids_are_readable_and_valid(registry: Registry) -> None:
    import re

    (result,) = run_importers([SourceSpec("flan", None)], dict(registry.tasks))
    assert all(re.match(ID_PATTERN, e.id) for e in result.phrasings)
    assert "flan.rte.t03" in by_id(result)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_import_list_validate_list_and_run(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n", encoding="utf-8")
    code, out = run_cli("import", "list", f"file={path}", "--skipped")
    assert code == 0, out
    assert "imported 2 (1 observed, 1 unobserved)" in out and "near-duplicate" in out and "mine.rte.02" in out
    code, out = run_cli("validate", "--docs", "2", "--observed", f"file={path}")
    assert code == 0, out
    code, out = run_cli("list", "instructions", "--task", "nli.rte", "--observed", f"file={path}", "--json")
    assert code == 0, out
    rows = json.loads(out[out.index("[") :])
    assert {"mine.rte.01"} <= {r["id"] for r in rows}
    code, out = run_cli(
        "run",
        "--model",
        "irh-fake",
        "--tasks",
        "nli.rte",
        "--limit",
        "2",
        "--instructions",
        "mine.*",
        "--seen",
        "flan-2022",
        "--reports-dir",
        str(tmp_path / "reports"),
        "--no-report",
        "--observed",
        f"file={path}",
    )
    assert code == 0, out
    from harness.results import read_manifest

    (run_dir,) = list((tmp_path / "reports").iterdir())
    manifest = read_manifest(run_dir)
    assert set(manifest.instructions) == {"mine.rte.01"}
    assert manifest.instructions["mine.rte.01"].seen is True
    code, out = run_cli("validate", "--observed", "nosuch")
    assert code == 1 and "unknown observed source" in out


def test_tasks_held_out_of_a_familys_tuning_count_as_unseen(tmp_path: Path) -> None:
    from harness.importers import SourceSpec, load_registry_with_observed
    from harness.plan import build_plan, held_out_tasks_for, seen_collections_for

    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS[:1]) + "\n", encoding="utf-8")
    registry, _ = load_registry_with_observed(sources=[SourceSpec("file", path)])
    rte = [registry.task("nli.rte")]
    # T0 saw P3's templates but not its NLI datasets (held out for zero-shot evaluation).
    assert seen_collections_for("bigscience/T0pp") == ["p3-promptsource"]
    assert held_out_tasks_for("bigscience/T0pp") == ["nli.*", "commonsense.copa", "commonsense.hellaswag", "commonsense.winogrande"]
    assert held_out_tasks_for("bigscience/T0pp", override=["flan-2022"]) == []
    assert held_out_tasks_for("google/flan-t5-large") == []

    def seen(**kwargs: object) -> bool:
        (item,) = build_plan(registry, rte, instruction_patterns=["mine.rte.01"], **kwargs)  # type: ignore[arg-type]
        return item.seen

    assert seen(seen_collections=["flan-2022"]) is True
    assert seen(seen_collections=["flan-2022"], held_out_tasks=["nli.*"]) is False
    assert seen(seen_collections=["flan-2022"], held_out_tasks=["mmlu.*"]) is True


def test_resume_keeps_seen_per_task_when_one_phrasing_spans_a_held_out_task(cache: Path, tmp_path: Path) -> None:
    """One family phrasing covers two MMLU subjects; with one subject held out, the other's
    rows stay seen, at the start and on resume."""
    from harness.backends.models import parse_model_spec
    from harness.importers import SourceSpec, load_registry_with_observed
    from harness.plan import build_plan
    from harness.results import read_manifest
    from harness.runner import items_from_manifest, start_run

    row = {**ROWS[1], "status": "observed", "collections": ["flan-2022"], "source": "my notes p. 2"}
    del row["author"]
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    registry, _ = load_registry_with_observed(sources=[SourceSpec("file", path)])
    tasks = [registry.task("mmlu.abstract_algebra"), registry.task("mmlu.high_school_biology")]
    held_out = ["mmlu.abstract_*"]
    items = build_plan(registry, tasks, instruction_patterns=["mine.mmlu.01"], seen_collections=["flan-2022"], held_out_tasks=held_out)
    assert {item.task.id: item.seen for item in items} == {"mmlu.abstract_algebra": False, "mmlu.high_school_biology": True}
    run_dir, _ = start_run(
        registry,
        items,
        parse_model_spec("irh-fake"),
        reports_dir=tmp_path / "r",
        placement="user",
        seed=1,
        limit=2,
        chunk_size=2,
        seen_collections=["flan-2022"],
        held_out_tasks=held_out,
    )
    manifest = read_manifest(run_dir)
    assert manifest.instructions["mine.mmlu.01"].seen is True and manifest.held_out_tasks == held_out
    assert {item.task.id: item.seen for item in items_from_manifest(registry, manifest)} == {item.task.id: item.seen for item in items}
