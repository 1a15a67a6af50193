"""Helpers the workload files share: documents from the irh cache as inline lm-eval task dicts.

A workload file of your own needs none of this: any list of lm-eval task configs works.
"""

from __future__ import annotations

from typing import Any

LETTERS = "ABCDEFGHIJ"


def _documents(task: str, group: str | None, limit: int, seed: int = 1234) -> list[dict[str, Any]]:
    from harness.data.catalog import load_documents, select_documents

    docs = load_documents(task, "test")
    if group is not None:
        docs = [d for d in docs if d.get("group") == group]
    return select_documents(docs, limit, seed, f"{task}/{group}")


def bigbench_rows(task: str, group: str | None, limit: int) -> list[dict[str, Any]]:
    """Rows with the question, its options and the index of the best one."""
    rows = []
    for doc in _documents(task, group, limit):
        scores = doc["scores"]
        question = doc["fields"]["input"]
        if doc["fields"].get("context"):
            question = f"{doc['fields']['context']}\n{question}"
        rows.append({"doc_id": doc["id"], "question": question, "options": list(doc["choices"]), "gold": scores.index(max(scores))})
    return rows


def mmlu_rows(subject: str, limit: int) -> list[dict[str, Any]]:
    rows = []
    for doc in _documents(f"mmlu.{subject}", None, limit):
        rows.append(
            {"doc_id": doc["id"], "question": doc["fields"]["question"], "options": list(doc["choices"]), "gold": doc["scores"].index(1.0)}
        )
    return rows


def listed_prompt(instruction: str, row: dict[str, Any], lettered: bool = False) -> str:
    """The instruction, the question and its options one per line, then "Answer:"."""
    lines = [instruction, "", row["question"]]
    for i, option in enumerate(row["options"]):
        lines.append(f"{LETTERS[i]}. {option}" if lettered else f"- {option}")
    lines.append("Answer:")
    return "\n".join(lines)


def task_dict(name: str, rows: list[dict[str, Any]], delimiter: str = " ", choices: str = "options") -> dict[str, Any]:
    """An inline lm-eval multiple-choice task over rows held in memory (``custom_dataset``)."""
    from harness.backends.lm_eval import _Rows

    return {
        "task": name,
        "custom_dataset": _Rows(rows),
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": choices,
        "doc_to_target": "gold",
        "target_delimiter": delimiter,
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc"}],
        "metadata": {"version": 1},
    }
