"""Models behind OpenAI-compatible servers: a real `transformers serve` on localhost, serving the
tiny test model, started and stopped by the tests themselves.

- `local-chat-completions`: multiple-choice tasks are scored by generation and answer parsing
  (rows marked `scoring: generated`; an unparseable answer is wrong and has no prediction);
- `local-completions` on a server that ignores `echo`/`logprobs` (transformers serve does):
  refused with a message that says why and what to use instead;
- the server going down mid-run: status `interrupted`, a clear message, and `--resume` completes
  the run once it is back;
- loglikelihoods through `local-completions` equal the hf backend's (within 1e-3) where the
  server returns prompt logprobs (a minimal completions server over the same model, below).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.answers import parse_choice
from harness.cli import main
from harness.results import iter_samples, read_manifest

pytest.importorskip("fastapi", reason="needs transformers[serving]")
pytest.importorskip("uvicorn", reason="needs transformers[serving]")
pytest.importorskip("tenacity", reason="needs lm-eval[api]")

PLAN = ["--tasks", "bbl.strategyqa", "--limit", "3", "--max-instructions", "2", "--chunk-size", "1", "--no-report"]
ROWS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`transformers serve MODEL` on 127.0.0.1:port, as a child process of the test."""

    def __init__(self, model: Path, port: int) -> None:
        self.model, self.port = model, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", str(self.model)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):  # up to ~2 minutes on a loaded 2-core machine
            if self.proc.poll() is not None:
                pytest.fail(f"transformers serve exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail("transformers serve did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture()
def server(tiny_model: Path) -> Iterator[Server]:
    running = Server(tiny_model, _free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    return result.exit_code, result.output


def _chat_spec(server: Server) -> str:
    return f"local-chat-completions:model={server.model},base_url=http://127.0.0.1:{server.port}/v1/chat/completions,max_retries=1"


def test_chat_endpoint_scores_multiple_choice_by_generation(cache: Path, tmp_path: Path, server: Server) -> None:
    code, out = _run("--model", _chat_spec(server), *PLAN, "--reports-dir", str(tmp_path / "r"))
    assert code == 0, out
    (run_dir,) = list((tmp_path / "r").iterdir())
    manifest = read_manifest(run_dir)
    assert manifest.status == "complete" and manifest.chat_template_applied
    rows = list(iter_samples(run_dir))
    assert len(rows) == ROWS
    for row in rows:
        assert row.scoring == "generated" and row.loglikelihoods is None and row.generation is not None
        assert row.prediction == parse_choice(row.generation, row.options)
        if row.prediction is None:
            assert not row.correct  # unparseable: counted wrong
        assert json.loads(row.prompt)[-1]["role"] == "user"  # the messages the server got
    unparsed = sum(row.prediction is None for row in rows)
    assert f"{unparsed} of {ROWS} generated answers" in out
    # The report says how these answers were scored, per task.
    from harness.report.tables import write_report

    report = write_report(run_dir, html=False)["report.md"].read_text()
    assert "scored by generation and answer parsing" in report and f"{unparsed} named no option" in report.replace("\\", "")


def test_completions_endpoint_without_prompt_logprobs_says_so(cache: Path, tmp_path: Path, server: Server) -> None:
    spec = (
        f"local-completions:model={server.model},base_url=http://127.0.0.1:{server.port}/v1/completions,"
        f"tokenizer={server.model},tokenized_requests=False,max_retries=1"
    )
    code, out = _run("--model", spec, *PLAN, "--reports-dir", str(tmp_path / "r"))
    assert code == 1
    assert "returned no prompt logprobs" in out and "local-chat-completions" in out
    assert len(out.strip().splitlines()[-1]) > 0


def test_server_down_mid_run_is_interrupted_and_resume_completes(
    cache: Path, tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.results import SampleWriter

    original = SampleWriter.write
    writes = {"n": 0}

    def write_then_stop_the_server(self: SampleWriter, rows: list[Any]) -> None:
        original(self, rows)
        writes["n"] += 1
        if writes["n"] == 2:
            server.stop()

    with monkeypatch.context() as patch:
        patch.setattr(SampleWriter, "write", write_then_stop_the_server)
        code, out = _run("--model", _chat_spec(server), *PLAN, "--reports-dir", str(tmp_path / "r"))
    assert code == 1
    (run_dir,) = list((tmp_path / "r").iterdir())
    assert f"the model server at http://127.0.0.1:{server.port}/v1/chat/completions stopped answering" in out
    assert f"irh run --resume {run_dir}" in out
    manifest = read_manifest(run_dir)
    assert manifest.status == "interrupted" and "stopped answering" in (manifest.error or "")
    assert len(list(iter_samples(run_dir))) == 2

    server.start()
    code, out = _run("--resume", str(run_dir), "--no-report")
    assert code == 0, out
    rows = list(iter_samples(run_dir))
    assert len(rows) == ROWS and len({row.key for row in rows}) == ROWS
    assert read_manifest(run_dir).status == "complete"


# --------------------------------------------------------------------------- prompt logprobs


class _LogprobHandler(BaseHTTPRequestHandler):
    """`/v1/completions` with `echo` + `logprobs`, as vLLM answers it: every prompt token's
    logprob (None for the first), its top-1 alternative, and one generated token."""

    model: Any = None

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        import torch

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
        choices = []
        for index, ids in enumerate(prompts):
            with torch.no_grad():
                logits = self.model(torch.tensor([ids])).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            token_lps: list[float | None] = [None]
            tops: list[dict[str, float] | None] = [None]
            for pos in range(1, len(ids) + 1):
                row = logprobs[pos - 1]
                best = int(row.argmax())
                token_lps.append(float(row[ids[pos]]) if pos < len(ids) else float(row[best]))
                tops.append({str(best): float(row[best])})
            choices.append({"index": index, "text": "", "logprobs": {"token_logprobs": token_lps, "top_logprobs": tops}})
        data = json.dumps({"object": "text_completion", "choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_completions_loglikelihoods_equal_the_hf_backend(cache: Path, tmp_path: Path, tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    _LogprobHandler.model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LogprobHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/completions"
        spec = f"local-completions:model={tiny_model},base_url={url},tokenizer={tiny_model},max_retries=1"
        code, out = _run("--model", spec, *PLAN, "--reports-dir", str(tmp_path / "api"))
        assert code == 0, out
    finally:
        httpd.shutdown()
        httpd.server_close()
    code, out = _run("--model", f"hf:pretrained={tiny_model},dtype=float32", *PLAN, "--reports-dir", str(tmp_path / "hf"))
    assert code == 0, out
    (api_dir,) = list((tmp_path / "api").iterdir())
    (hf_dir,) = list((tmp_path / "hf").iterdir())
    api_rows = {row.key: row for row in iter_samples(api_dir)}
    hf_rows = {row.key: row for row in iter_samples(hf_dir)}
    assert api_rows.keys() == hf_rows.keys() and len(api_rows) == ROWS
    for key, row in api_rows.items():
        assert row.scoring == "loglikelihood"
        assert row.prompt == hf_rows[key].prompt
        assert row.loglikelihoods is not None and hf_rows[key].loglikelihoods is not None
        assert max(abs(a - b) for a, b in zip(row.loglikelihoods, hf_rows[key].loglikelihoods, strict=True)) < 1e-3
