"""`irh-lm-eval`: lm-eval's own CLI with irh-fast registered, end to end on the tiny Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent

TASK_YAML = """\
task: irh_tiny_yes_no
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: ["yes", "no"]
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1
"""


def test_pyproject_declares_the_irh_lm_eval_script() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["irh-lm-eval"].partition(":")
    from importlib import import_module

    assert callable(getattr(import_module(module), attr))


def test_irh_lm_eval_runs_lm_eval_cli_with_irh_fast(tiny_model: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "docs.jsonl"
    questions = ["Is the sky blue?", "Answer yes or no.", "Is the answer A?"]
    data.write_text("".join(json.dumps({"question": q, "label": i % 2}) + "\n" for i, q in enumerate(questions)))
    (tasks / "yes_no.yaml").write_text(TASK_YAML.format(data=data))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "ds"),
    }
    args = [
        "--model",
        "irh-fast",
        "--model_args",
        f"pretrained={tiny_model},dtype=float32",
        "--device",
        "cpu",
        "--tasks",
        "irh_tiny_yes_no",
        "--include_path",
        str(tasks),
        "--batch_size",
        "2",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    # A fresh interpreter, as the console script gets: nothing of harness imported beforehand.
    code = "import sys; from harness.backends.lm_eval import lm_eval_cli; lm_eval_cli(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results_files = list(out.rglob("results_*.json"))
    assert len(results_files) == 1
    results: dict[str, Any] = json.loads(results_files[0].read_text())
    assert results["config"]["model"] == "irh-fast"
    assert 0.0 <= results["results"]["irh_tiny_yes_no"]["acc,none"] <= 1.0
    samples = [json.loads(line) for f in out.rglob("samples_irh_tiny_yes_no_*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(s["doc"]["question"] for s in samples) == sorted(questions)
    assert all(len(s["resps"]) == 2 for s in samples)  # both options scored


def test_irh_fast_with_a_gguf_file_loads_the_cached_converted_copy(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model

    import harness.backends.fast  # noqa: F401
    import harness.backends.gguf as gguf_module

    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes(b"GGUF not really")
    asked: list[Path] = []

    def converted(gguf: Path, progress: Any = None, name: str | None = None) -> Path:
        asked.append(gguf)
        return tiny_model

    monkeypatch.setattr(gguf_module, "converted_gguf_dir", converted)
    lm = get_model("irh-fast").create_from_arg_string(
        f"pretrained={folder},gguf_file=tiny.gguf,dtype=float32,device=cpu", {"batch_size": 2}
    )
    assert asked == [folder / "tiny.gguf"]
    assert Path(lm.model.name_or_path) == tiny_model


def test_converted_gguf_dir_reuses_any_copy_of_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.gguf import converted_gguf_dir
    from harness.data.cache import sha256_file

    monkeypatch.setenv("IRH_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"GGUF bytes")
    # The copy `irh run` made under the default model's name: reused, not converted again
    # (converting this fake file would fail).
    copy = tmp_path / "cache" / "models" / f"SmolLM2-135M-Instruct-{sha256_file(gguf)[:12]}"
    copy.mkdir(parents=True)
    (copy / "config.json").write_text("{}")
    assert converted_gguf_dir(gguf) == copy
