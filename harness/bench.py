"""`irh bench`: the same loglikelihood workload through lm-eval's hf backend and ours.

Each backend runs in its own subprocess (so its peak memory is its own), loads the model,
then scores one list of requests built from the registry and the cached documents: every
chosen phrasing on the same documents, rendered in the model's chat template, one request
per answer option, sent in the same calls as `irh run` makes (one per phrasing and chunk of
documents). The parent compares wall time, tokens/s, peak RSS, the tokens each
backend pushed through the transformer against the fewest possible (the prefix-trie size of
the inputs), and the per-request loglikelihoods and per-document predictions.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_TASKS = ("bbl.logical_deduction", "bbl.conceptual_combinations", "bbl.strange_stories")


def build_requests(
    tasks: list[str], phrasings: int, limit: int, seed: int, apply_chat: Any
) -> tuple[list[tuple[str, str]], list[tuple[str, str, str, int]]]:
    """(context, continuation) pairs, and for each a (task, phrasing, doc id, option index) key."""
    from harness.data.catalog import load_documents, select_documents
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
            docs_by_task[item.task.id] = select_documents(load_documents(item.task.data_name, item.task.split), limit, seed, item.task.id)
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


def worker(backend: str, config_path: Path, out_path: Path) -> None:
    """Run one backend on the workload and write its measurements (subprocess entry point)."""
    import lm_eval.models  # noqa: F401
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model

    import harness.backends.fast  # noqa: F401
    from harness.backends.fast import count_distinct_tokens

    config = json.loads(config_path.read_text())
    start = time.perf_counter()
    lm = get_model(backend).create_from_arg_string(config["model_args"], {"batch_size": config["batch_size"]})
    load_s = time.perf_counter() - start
    pairs, keys = build_requests(config["tasks"], config["phrasings"], config["limit"], config["seed"], lm.apply_chat_template)
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=0) for pair in pairs]
    encoded = [(tuple(c), tuple(t)) for c, t in (lm._encode_pair(a, b) for a, b in pairs)]
    start = time.perf_counter()
    results = []
    for lo, hi in call_spans(keys, config.get("chunk_size", 32)):
        results.extend(lm.loglikelihood(requests[lo:hi], disable_tqdm=True))
    wall = time.perf_counter() - start
    request_tokens = sum(len(c) + len(t) for c, t in encoded)
    forward = lm.work.forward_tokens if hasattr(lm, "work") else hf_forward_tokens(encoded, call_spans(keys, config.get("chunk_size", 32)))
    # hf projects every input position onto the vocabulary; ours only the needed ones.
    projected = lm.work.projected_positions if hasattr(lm, "work") else forward
    embedding = lm.model.get_output_embeddings().weight
    out = {
        "backend": backend,
        "load_s": load_s,
        "wall_s": wall,
        "requests": len(requests),
        "request_tokens": request_tokens,
        "forward_tokens": forward,
        "minimum_tokens": count_distinct_tokens([c + t[:-1] for c, t in encoded]),
        "projected_positions": projected,
        "minimum_projected": len({c + t[:j] for c, t in set(encoded) for j in range(len(t))}),
        "non_embedding_params": sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "lm_head" not in n),
        "vocab_params": embedding.numel(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loglikelihoods": [r[0] for r in results],
        "keys": keys,
    }
    out_path.write_text(json.dumps(out))


def _predictions(result: dict[str, Any]) -> dict[tuple[str, str, str], int]:
    best: dict[tuple[str, str, str], tuple[float, int]] = {}
    for (task, inst, doc, option), ll in zip(result["keys"], result["loglikelihoods"], strict=True):
        key = (task, inst, doc)
        if key not in best or ll > best[key][0]:
            best[key] = (ll, option)
    return {k: v[1] for k, v in best.items()}


def run_bench(config: dict[str, Any], backends: tuple[str, ...] = ("hf", "irh-fast")) -> dict[str, Any]:
    """Run the workload once per backend, each in a fresh process; returns the comparison."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        for backend in backends:
            out_path = Path(tmp) / f"{backend}.json"
            cmd = [sys.executable, "-m", "harness.bench", backend, str(config_path), str(out_path)]
            subprocess.run(cmd, check=True)
            results[backend] = json.loads(out_path.read_text())
    base, fast = results[backends[0]], results[backends[-1]]
    diffs = [abs(a - b) for a, b in zip(base["loglikelihoods"], fast["loglikelihoods"], strict=True)]
    pred_a, pred_b = _predictions(base), _predictions(fast)
    summary = {
        "config": config,
        "backends": {
            name: {k: v for k, v in r.items() if k not in ("loglikelihoods", "keys")}
            | {
                "tokens_per_s": r["request_tokens"] / r["wall_s"],
                # 2 FLOPs per weight per token through the transformer, plus the vocabulary
                # projection where it is computed (attention scores are not counted).
                "forward_gflop": 2 * (r["non_embedding_params"] * r["forward_tokens"] + r["vocab_params"] * r["projected_positions"]) / 1e9,
                "minimum_gflop": 2 * (r["non_embedding_params"] * r["minimum_tokens"] + r["vocab_params"] * r["minimum_projected"]) / 1e9,
            }
            for name, r in results.items()
        },
        "speedup": base["wall_s"] / fast["wall_s"],
        "max_abs_loglikelihood_diff": max(diffs) if diffs else 0.0,
        "documents": len(pred_a),
        "prediction_disagreements": sum(pred_a[k] != pred_b[k] for k in pred_a),
    }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    cfg = summary["config"]
    lines = [
        f"workload: {', '.join(cfg['tasks'])}; {cfg['phrasings']} phrasings x {cfg['limit']} documents; "
        f"{next(iter(summary['backends'].values()))['requests']} loglikelihood requests; {cfg['model_args']}",
        "",
        "| backend | wall s | tokens/s | peak RSS MiB | forward tokens | minimum tokens | forward GFLOP | minimum GFLOP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in summary["backends"].items():
        lines.append(
            f"| {name} | {r['wall_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['forward_tokens']} | "
            f"{r['minimum_tokens']} | {r['forward_gflop']:.1f} | {r['minimum_gflop']:.1f} |"
        )
    lines += [
        "",
        f"speedup: {summary['speedup']:.2f}x; max |loglikelihood difference|: {summary['max_abs_loglikelihood_diff']:.2e}; "
        f"documents whose prediction differs: {summary['prediction_disagreements']} of {summary['documents']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))


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
