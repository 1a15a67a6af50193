"""`irh bench`: one workload through lm-eval's hf backend and irh-fast, each in its own process.

A workload is either registry tasks (``--tasks``: every chosen phrasing on the same cached
documents, in the model's chat template, sent in the calls `irh run` makes: one per phrasing
and chunk of documents), or any list of lm-eval task configs (``--workload FILE``: YAML task
configs, or a Python file exposing inline task dicts), run through lm-eval's
``simple_evaluate`` as a user would run them.

Each backend loads the model and runs the whole evaluation in a fresh process. The parent
compares: the token positions each backend ran against the fewest any exact scorer needs
(the prefix-trie size of all the inputs), the wall time of the loglikelihood phase and of the
whole evaluation (model load and task building, the fixed costs, reported apart), peak memory,
and every loglikelihood and prediction. The token ceiling is hf's tokens over the minimum; the
efficiency is the achieved loglikelihood-phase speedup over that ceiling.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_TASKS = ("commonsense.hellaswag", "commonsense.csqa", "arc.challenge")


def build_requests(
    tasks: list[str], phrasings: int, limit: int, seed: int, apply_chat: Any
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, int]]]:
    """(context, continuation) pairs, and for each a (task, phrasing, doc id, option index) key."""
    from harness.data.catalog import choose_documents, load_documents
    from harness.plan import build_plan, select_tasks
    from harness.registry import load_registry
    from harness.render import render_prompt
    from harness.view import chat_messages

    registry = load_registry()
    items = build_plan(registry, select_tasks(registry, tasks), max_instructions=phrasings, seed=seed)
    pairs: list[tuple[str, str]] = []
    keys: list[tuple[str, str, str, int]] = []
    docs_by_task: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if item.task.id not in docs_by_task:
            docs_by_task[item.task.id] = choose_documents(item.task, load_documents(item.task.data_name, item.task.split), limit, seed).docs
        for doc in docs_by_task[item.task.id]:
            prompt = render_prompt(item.entry.instruction, item.task, doc)
            context = apply_chat(chat_messages(prompt))
            for i, option in enumerate(prompt.options):
                pairs.append((context, option))  # chat mode: no delimiter before the option
                keys.append((item.task.id, item.entry.id, doc["id"], i))
    return pairs, keys


def call_spans(keys: list[tuple[str, str, str, int]], chunk_size: int) -> list[tuple[int, int]]:
    """Split the requests as `irh run` does: one lm-eval call per (task, phrasing) and chunk
    of ``chunk_size`` documents, so the benchmark shares no more than a real run can."""
    spans: list[tuple[int, int]] = []
    start = 0
    docs: list[str] = []
    for i, (task, inst, doc, _) in enumerate(keys):
        same_item = i > 0 and keys[i - 1][:2] == (task, inst)
        if not same_item or (doc not in docs and len(docs) == chunk_size):
            if i > start:
                spans.append((start, i))
            start, docs = i, []
        if doc not in docs:
            docs.append(doc)
    if len(keys) > start:
        spans.append((start, len(keys)))
    return spans


def hf_forward_tokens(encoded: list[tuple[tuple[int, ...], tuple[int, ...]]], spans: list[tuple[int, int]] | None = None) -> int:
    """Tokens lm-eval's hf backend runs: one sequence per request, except that requests of one
    call whose inputs (context + continuation minus its last token) coincide are run once."""
    total = 0
    for lo, hi in spans or [(0, len(encoded))]:
        total += sum(len(g) for g in {ctx + cont[:-1] for ctx, cont in encoded[lo:hi]})
    return total


def count_work(lm: Any, tasks: list[str], phrasings: int, limit: int, seed: int, chunk_size: int = 32) -> list[dict[str, Any]]:
    """The work a workload asks for, per task, without running the model: the tokens and
    GFLOP that lm-eval's hf backend spends, and the fewest any exact scorer must spend.

    ``ceiling`` is hf's GFLOP over the least any exact scorer can spend on the whole run: the
    speedup a scorer doing only that work would get at the hf backend's FLOP rate. It is well
    above 4 where documents have many multi-token options, and near 2 for two-option tasks
    with long prompts.
    """
    from harness.backends.fast import count_distinct_tokens

    non_embedding = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "lm_head" not in n)
    vocab = lm.model.get_output_embeddings().weight.numel()
    rows = []
    for task in tasks:
        pairs, keys = build_requests([task], phrasings, limit, seed, lm.apply_chat_template)
        encoded = [(tuple(c), tuple(t)) for c, t in (lm._encode_pair(a, b) for a, b in pairs)]
        spans = call_spans(keys, chunk_size)
        hf_tokens = hf_forward_tokens(encoded, spans)
        per_call = sum(count_distinct_tokens([c + t[:-1] for c, t in encoded[lo:hi]]) for lo, hi in spans)
        run_minimum = count_distinct_tokens([c + t[:-1] for c, t in encoded])
        projected = len({c + t[:j] for c, t in set(encoded) for j in range(len(t))})
        hf_gflop = 2 * (non_embedding + vocab) * hf_tokens / 1e9
        min_gflop = 2 * (non_embedding * run_minimum + vocab * projected) / 1e9
        rows.append(
            {
                "task": task,
                "requests": len(encoded),
                "documents": len({(k[0], k[2]) for k in keys}),
                "options_per_document": len(encoded) / max(1, len({c for c, _ in encoded})),
                "hf_tokens": hf_tokens,
                "minimum_tokens_per_call": per_call,
                "minimum_tokens_run": run_minimum,
                "hf_gflop": hf_gflop,
                "minimum_gflop": min_gflop,
                "ceiling": hf_gflop / min_gflop,
            }
        )
    return rows


def format_work(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | requests | options per document | hf tokens | minimum tokens | hf GFLOP | minimum GFLOP | ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['requests']} | {r['options_per_document']:.1f} | {r['hf_tokens']} | {r['minimum_tokens_run']} | "
            f"{r['hf_gflop']:.0f} | {r['minimum_gflop']:.0f} | {r['ceiling']:.2f}x |"
        )
    if len(rows) > 1:
        hf, low = sum(r["hf_gflop"] for r in rows), sum(r["minimum_gflop"] for r in rows)
        lines.append(
            f"| all | {sum(r['requests'] for r in rows)} | | {sum(r['hf_tokens'] for r in rows)} | "
            f"{sum(r['minimum_tokens_run'] for r in rows)} | {hf:.0f} | {low:.0f} | {hf / low:.2f}x |"
        )
    return "\n".join(lines)


class BenchError(ValueError):
    """A workload file that cannot be benchmarked; the message names the fix."""


#: ``SETTINGS`` a workload file may give: ``simple_evaluate``'s own arguments.
WORKLOAD_SETTINGS = ("apply_chat_template", "system_instruction", "fewshot_as_multiturn", "num_fewshot", "limit", "gen_kwargs")


def _load_python_workload(path: Path) -> dict[str, Any]:
    folder = str(path.parent.resolve())
    sys.path.insert(0, folder)  # so the file can import helpers beside it
    try:
        found = runpy.run_path(str(path))
    except Exception as exc:
        raise BenchError(f"{path}: loading it failed ({type(exc).__name__}: {exc})") from exc
    finally:
        sys.path.remove(folder)
    if "REGISTRY" in found:
        registry = found["REGISTRY"]
        if not isinstance(registry, dict) or not registry.get("tasks"):
            raise BenchError(f"{path}: REGISTRY must be a dict with 'tasks' (and optionally phrasings, limit, seed)")
        return {"registry": registry}
    tasks = found.get("TASKS")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict | str) for t in tasks):
        raise BenchError(f"{path}: define TASKS, a non-empty list of lm-eval task configs (dicts) or task names, or REGISTRY")
    settings = found.get("SETTINGS", {})
    if not isinstance(settings, dict):
        raise BenchError(f"{path}: SETTINGS must be a dict")
    return {"tasks": tasks, "settings": settings}


def _absolute_data_files(config: dict[str, Any], folder: Path) -> None:
    """``dataset_kwargs.data_files`` given relative to the YAML file, made absolute."""
    kwargs = config.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        return

    def fix(value: Any) -> Any:
        if isinstance(value, str) and not Path(value).is_absolute() and (folder / value).exists():
            return str(folder / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    kwargs["data_files"] = fix(kwargs["data_files"])


def load_workload(paths: list[Path]) -> dict[str, Any]:
    """The workload in ``paths``: ``{"tasks": [...], "settings": {...}}`` for lm-eval task
    configs, or ``{"registry": {...}}`` for registry tasks.

    A ``.yaml``/``.yml`` file is one lm-eval task (or group) config, read with lm-eval's own
    loader (``include:`` and ``!function`` work). A ``.py`` file defines ``TASKS`` (inline task
    dicts, as ``simple_evaluate`` takes them, or task names) and optionally ``SETTINGS``
    (``simple_evaluate`` arguments such as ``apply_chat_template``), or ``REGISTRY`` (registry
    task ids with phrasings, limit and seed).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    tasks: list[Any] = []
    settings: dict[str, Any] = {}
    registry = None
    for path in paths:
        if not path.is_file():
            raise BenchError(f"no workload file {path}")
        if path.suffix in (".yaml", ".yml"):
            try:
                config = load_yaml(path)
            except Exception as exc:
                raise BenchError(f"{path}: not an lm-eval task config ({type(exc).__name__}: {exc})") from exc
            if "task" not in config and "group" not in config:
                raise BenchError(f"{path}: an lm-eval task config needs a 'task' (or 'group') key")
            _absolute_data_files(config, path.parent)
            tasks.append(config)
        elif path.suffix == ".py":
            found = _load_python_workload(path)
            if "registry" in found:
                registry = found["registry"]
                continue
            tasks.extend(found["tasks"])
            for key, value in found["settings"].items():
                if key not in WORKLOAD_SETTINGS:
                    raise BenchError(f"{path}: SETTINGS key {key!r} is not one of {', '.join(WORKLOAD_SETTINGS)}")
                if key in settings and settings[key] != value:
                    raise BenchError(f"{path}: SETTINGS {key}={value!r} conflicts with {settings[key]!r} from another workload file")
                settings[key] = value
        else:
            raise BenchError(f"{path}: a workload file is an lm-eval task config (.yaml) or a Python file (.py)")
    if registry is not None:
        if tasks or len(paths) > 1:
            raise BenchError("a REGISTRY workload file stands alone; pass it as the only --workload")
        return {"registry": registry}
    return {"tasks": tasks, "settings": settings}


class _Recorder:
    """Wraps a model's ``loglikelihood``: times each call (wall and CPU) and keeps its
    requests; with ``dry``, answers zeros without running the model (work counts only)."""

    def __init__(self, lm: Any, dry: bool = False) -> None:
        self.lm, self.dry = lm, dry
        self.inner = lm.loglikelihood
        self.calls: list[list[Any]] = []
        self.results: list[tuple[float, bool]] = []
        self.wall_s = self.cpu_s = 0.0
        lm.loglikelihood = self

    def __call__(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        self.calls.append(list(requests))
        if self.dry:
            return [(0.0, False)] * len(requests)
        wall, cpu = time.perf_counter(), time.process_time()
        out = list(self.inner(requests, disable_tqdm=True))
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += time.process_time() - cpu
        self.results.extend(out)
        return out


def _task_manager_for(tasks: list[Any]) -> Any:
    from lm_eval.tasks import TaskManager

    # Inline dicts need no index of lm-eval's own tasks (~7 s); names and includes do.
    plain = all(isinstance(t, dict) and "include" not in t and "group" not in t for t in tasks)
    return TaskManager(include_defaults=not plain)


def worker(backend: str, config_path: Path, out_path: Path) -> None:
    """Run one backend on the workload and write its measurements (subprocess entry point)."""
    started = time.perf_counter()
    import lm_eval.models  # noqa: F401
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import harness.backends.fast  # noqa: F401
    from harness.backends.fast import count_distinct_tokens, encode_pair

    config = json.loads(config_path.read_text())
    imports_s = time.perf_counter() - started
    start = time.perf_counter()
    lm = get_model(backend).create_from_arg_string(config["model_args"], {"batch_size": config["batch_size"]})
    load_s = time.perf_counter() - start
    recorder = _Recorder(lm, dry=config.get("dry", False))
    start = time.perf_counter()
    if "registry" in config:
        reg = config["registry"]
        pairs, keys = build_requests(reg["tasks"], reg["phrasings"], reg["limit"], reg["seed"], lm.apply_chat_template)
        requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]
        build_s = time.perf_counter() - start
        for lo, hi in call_spans(keys, config.get("chunk_size", 32)):
            lm.loglikelihood(requests[lo:hi], disable_tqdm=True)
        whole_s = load_s + time.perf_counter() - start
        key_list = [list(k) for k in keys]
    else:
        from lm_eval.evaluator import simple_evaluate

        workload = load_workload([Path(p) for p in config["paths"]])
        settings = dict(workload["settings"])
        if config.get("limit") is not None:
            settings["limit"] = config["limit"]
        build_s = time.perf_counter() - start
        simple_evaluate(model=lm, tasks=workload["tasks"], task_manager=_task_manager_for(workload["tasks"]), log_samples=False, **settings)
        whole_s = load_s + time.perf_counter() - start
        key_list = [[req.task_name, req.doc_id, req.idx] for call in recorder.calls for req in call]
    # Counting (after the clock): the token ids every request asks for, per call.
    encoded: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    spans: list[tuple[int, int]] = []
    for call in recorder.calls:
        lo = len(encoded)
        encoded.extend(encode_pair(lm, *req.args) for req in call)
        spans.append((lo, len(encoded)))
    hf_tokens = hf_forward_tokens(encoded, spans)
    work = getattr(lm, "work", None)
    out = {
        "backend": backend,
        "threads": torch.get_num_threads(),
        "imports_s": imports_s,
        "load_s": load_s,
        "build_s": build_s,
        "ll_s": recorder.wall_s,
        "ll_cpu_s": recorder.cpu_s,
        "whole_s": whole_s,
        "fixed_s": whole_s - recorder.wall_s,
        "calls": len(recorder.calls),
        "requests": len(encoded),
        "request_tokens": sum(len(c) + len(t) for c, t in encoded),
        "hf_tokens": hf_tokens,
        # hf runs every distinct input of a call; irh-fast counts what it runs.
        "forward_tokens": work.forward_tokens if work else hf_tokens,
        "padded_positions": work.padded_positions if work else None,
        "forward_passes": work.forward_passes if work else None,
        "minimum_tokens": count_distinct_tokens([c + t[:-1] for c, t in encoded]),
        # hf projects every input position onto the vocabulary; irh-fast only the needed ones.
        "projected_positions": work.projected_positions if work else hf_tokens,
        "minimum_projected": len({c + t[:j] for c, t in set(encoded) for j in range(len(t))}),
        "non_embedding_params": sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "lm_head" not in n),
        "vocab_params": lm.model.get_output_embeddings().weight.numel(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loglikelihoods": [r[0] for r in recorder.results],
        "keys": key_list,
    }
    out_path.write_text(json.dumps(out))


def _predictions(result: dict[str, Any]) -> dict[tuple[Any, ...], Any]:
    """Per document (the key without its last field, the option), the option scored highest."""
    best: dict[tuple[Any, ...], tuple[float, Any]] = {}
    for key, ll in zip(result["keys"], result["loglikelihoods"], strict=True):
        doc, option = tuple(key[:-1]), key[-1]
        if doc not in best or ll > best[doc][0]:
            best[doc] = (ll, option)
    return {k: v[1] for k, v in best.items()}


def _run_worker(backend: str, config_path: Path, out_path: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "harness.bench", "worker", backend, str(config_path), str(out_path)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no message"]
        raise BenchError(f"the {backend} run failed: {tail[0]}")
    result = json.loads(out_path.read_text())
    result["process_s"] = time.perf_counter() - start
    return result


def run_bench(config: dict[str, Any], backends: tuple[str, ...] = ("hf", "irh-fast")) -> dict[str, Any]:
    """Run the workload once per backend, each in a fresh process; returns the comparison.

    ``config``: ``model_args``, ``batch_size``, and either ``registry`` (tasks, phrasings,
    limit, seed; plus ``chunk_size``) or ``paths`` (workload files; optional ``limit``, lm-eval's
    documents per task). With ``dry``, only the work is counted (no model forward passes).
    """
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        for backend in backends:
            results[backend] = _run_worker(backend, config_path, Path(tmp) / f"{backend}.json")
    base, fast = results[backends[0]], results[backends[-1]]
    if base["keys"] != fast["keys"]:
        raise BenchError("the backends were sent different requests; the workload is not deterministic")
    summary: dict[str, Any] = {
        "config": config,
        "backends": {name: _backend_summary(r) for name, r in results.items()},
        "hf_tokens": base["hf_tokens"],
        "fast_tokens": fast["forward_tokens"],
        "minimum_tokens": base["minimum_tokens"],
        "ceiling": base["hf_tokens"] / max(1, base["minimum_tokens"]),
        "documents": len({tuple(key[:-1]) for key in base["keys"]}),
    }
    if not config.get("dry"):
        diffs = [abs(a - b) for a, b in zip(base["loglikelihoods"], fast["loglikelihoods"], strict=True)]
        pred_a, pred_b = _predictions(base), _predictions(fast)
        summary |= {
            "speedup": base["ll_s"] / fast["ll_s"] if fast["ll_s"] else float("nan"),
            "whole_speedup": base["whole_s"] / fast["whole_s"],
            "max_abs_loglikelihood_diff": max(diffs) if diffs else 0.0,
            "prediction_disagreements": sum(pred_a[k] != pred_b[k] for k in pred_a),
        }
        summary["efficiency"] = summary["speedup"] / summary["ceiling"]
    return summary


def _backend_summary(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in r.items() if k not in ("loglikelihoods", "keys")}
    out["tokens_per_s"] = r["request_tokens"] / r["ll_s"] if r["ll_s"] else None
    # 2 FLOPs per weight per token through the transformer, plus the vocabulary projection
    # where it is computed (attention scores are not counted).
    out["forward_gflop"] = 2 * (r["non_embedding_params"] * r["forward_tokens"] + r["vocab_params"] * r["projected_positions"]) / 1e9
    out["minimum_gflop"] = 2 * (r["non_embedding_params"] * r["minimum_tokens"] + r["vocab_params"] * r["minimum_projected"]) / 1e9
    return out


def workload_label(config: dict[str, Any]) -> str:
    if "registry" in config:
        reg = config["registry"]
        return f"{', '.join(reg['tasks'])}; {reg['phrasings']} phrasings x {reg['limit']} documents"
    return ", ".join(Path(p).name for p in config["paths"]) + (f" (limit {config['limit']})" if config.get("limit") else "")


def format_summary(summary: dict[str, Any]) -> str:
    cfg = summary["config"]
    first = next(iter(summary["backends"].values()))
    lines = [
        f"workload: {workload_label(cfg)}; {first['requests']} loglikelihood requests in {first['calls']} calls; "
        f"{summary['documents']} documents; {cfg['model_args']}",
        f"token positions: hf {summary['hf_tokens']:,}, "
        + ("" if cfg.get("dry") else f"irh-fast {summary['fast_tokens']:,}, ")
        + f"prefix-trie minimum {summary['minimum_tokens']:,}; token ceiling {summary['ceiling']:.2f}x",
    ]
    if cfg.get("dry"):
        return "\n".join(lines)
    lines += [
        "",
        "| backend | loglikelihood s | CPU s | whole s | fixed s | model load s | peak RSS MiB | forward tokens | padded | passes "
        "| forward GFLOP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["backends"].items():
        padded = "" if r["padded_positions"] is None else f"{r['padded_positions']:,}"
        passes = "" if r["forward_passes"] is None else str(r["forward_passes"])
        lines.append(
            f"| {name} | {r['ll_s']:.1f} | {r['ll_cpu_s']:.1f} | {r['whole_s']:.1f} | {r['fixed_s']:.1f} | {r['load_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['forward_tokens']:,} | {padded} | {passes} | {r['forward_gflop']:.1f} |"
        )
    lines += [
        "",
        f"loglikelihood phase: {summary['speedup']:.2f}x, efficiency {summary['efficiency']:.0%} of the token ceiling; "
        f"whole evaluation: {summary['whole_speedup']:.2f}x; max |loglikelihood difference|: {summary['max_abs_loglikelihood_diff']:.2e}; "
        f"documents whose prediction differs: {summary['prediction_disagreements']} of {summary['documents']}",
    ]
    return "\n".join(lines)


def format_table(summaries: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per workload (name, summary), as the README's table."""
    lines = [
        "| workload | requests | hf tokens | irh-fast tokens | trie minimum | ceiling | loglikelihood s hf / irh-fast | speedup | "
        "efficiency | whole s hf / irh-fast | fixed s hf / irh-fast (model load) | max \\|Δ loglik\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summaries:
        hf, fast = s["backends"]["hf"], s["backends"]["irh-fast"]
        lines.append(
            f"| {name} | {hf['requests']:,} | {s['hf_tokens']:,} | {s['fast_tokens']:,} | {s['minimum_tokens']:,} | {s['ceiling']:.2f}x | "
            f"{hf['ll_s']:.1f} / {fast['ll_s']:.1f} | {s['speedup']:.2f}x | **{s['efficiency']:.0%}** | "
            f"{hf['whole_s']:.1f} / {fast['whole_s']:.1f} | "
            f"{hf['fixed_s']:.1f} / {fast['fixed_s']:.1f} ({hf['load_s']:.1f} / {fast['load_s']:.1f}) | "
            f"{s['max_abs_loglikelihood_diff']:.1e} |"
        )
    return "\n".join(lines)


def _main(argv: list[str]) -> None:
    if argv[:1] == ["worker"]:
        worker(argv[1], Path(argv[2]), Path(argv[3]))
    elif argv[:1] == ["table"]:
        # python -m harness.bench table NAME=SUMMARY.json ...: the workloads' Markdown table
        pairs = [arg.split("=", 1) for arg in argv[1:]]
        print(format_table([(name, json.loads(Path(path).read_text())) for name, path in pairs]))
    else:
        raise SystemExit("usage: python -m harness.bench worker BACKEND CONFIG OUT | table NAME=SUMMARY.json ...")


def run_processes_bench(
    tasks: list[str], phrasings: int, limit: int, seed: int, processes: int, model: str = "default", dtype: str | None = None
) -> dict[str, Any]:
    """Time one `irh run` plan with 1 process and with ``processes`` processes, and compare rows.

    Each run is a separate `irh run --processes P` subprocess on the same plan (tasks, a seeded
    subset of phrasings, a seeded subsample of documents), so the times are what a user sees,
    model loading and the merge of the ranks' shards included.
    """
    import os
    import shutil

    from harness.results import iter_samples

    results: dict[str, Any] = {"tasks": tasks, "phrasings": phrasings, "limit": limit, "runs": {}}
    rows: dict[int, list[Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="irh-bench-processes-"))
    try:
        for count in (1, processes):
            cmd = [sys.executable, "-m", "harness.cli", "run", "--model", model, "--tasks", ",".join(tasks)]
            cmd += ["--max-instructions", str(phrasings), "--limit", str(limit), "--seed", str(seed), "--processes", str(count)]
            cmd += ["--no-report", "--reports-dir", str(work / f"p{count}")]
            if dtype:
                cmd += ["--dtype", dtype]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            (run_dir,) = list((work / f"p{count}").iterdir())
            rows[count] = list(iter_samples(run_dir))
            results["runs"][str(count)] = {"processes": count, "seconds": round(seconds, 2), "rows": len(rows[count])}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, many = rows[1], rows[processes]
    results["same_rows_in_order"] = [r.key for r in one] == [r.key for r in many]
    pairs = zip(one, many, strict=False)
    deltas = [abs(a - b) for r, s in pairs for a, b in zip(r.loglikelihoods or [], s.loglikelihoods or [], strict=False)]
    results["max_abs_loglik_diff"] = max(deltas, default=0.0)
    results["predictions_differ"] = sum(r.prediction != s.prediction for r, s in zip(one, many, strict=False))
    results["speedup"] = round(results["runs"]["1"]["seconds"] / results["runs"][str(processes)]["seconds"], 3)
    return results


def format_processes(result: dict[str, Any]) -> str:
    """The processes comparison as a Markdown table."""
    lines = ["| processes | rows | wall s | speedup |", "|---:|---:|---:|---:|"]
    base = result["runs"]["1"]["seconds"]
    for run in result["runs"].values():
        lines.append(f"| {run['processes']} | {run['rows']} | {run['seconds']:.1f} | {base / run['seconds']:.2f}x |")
    lines.append(
        f"same rows in the same order: {result['same_rows_in_order']}; max |Δ loglik| {result['max_abs_loglik_diff']:.2g}; "
        f"predictions that differ: {result['predictions_differ']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    _main(sys.argv[1:])
