"""Data-parallel runs: one run's chunks of work spread over several processes (ranks).

``irh run --processes N`` keeps the run folder's lock in the launching process, which starts N
ranks (``python -m harness.parallel``). Each rank joins a torch.distributed group (gloo: CPU
tensors, any machine), loads the model once, checks with the others that every rank loaded
the same model (an ``all_gather`` of the model's identity), scores every N-th chunk of the
run's remaining work, and appends its rows to its own shard, ``shards/rank-<r>.jsonl``,
flushed after every chunk. Chunks are cut exactly as one process cuts them
(:func:`harness.runner.plan_workload`), so every lm-eval call is one a one-process run makes.

When the ranks end, the launcher merges the shards into samples.jsonl in one-process order
(plan order, then document order) and removes them. A merge skips rows already in
samples.jsonl, so a crash during a merge, or a rank killed mid-run, loses and repeats nothing:
the next ``--resume``, with any number of processes, merges what the shards hold first
(:func:`merge_shards`, also called by the one-process runner) and scores only the rest.

One failed rank stops the run: the launcher sends the others SIGTERM (their flushed chunks
are kept), records ``failed`` (``interrupted`` for SIGTERM or Ctrl-C) with the rank's own
error, and ``irh run --resume`` completes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.backends.lm_eval import ServerUnavailable
from harness.plan import RunItem
from harness.results import (
    RunError,
    RunLock,
    RunManifest,
    SampleRow,
    SampleWriter,
    iter_sample_file,
    iter_samples,
    plan_order,
    put_in_plan_order,
    read_manifest,
    utc_now,
    write_manifest,
)
from harness.work import raise_interrupt, writing_run

#: Where the ranks of a data-parallel run write; empty (absent) outside one.
SHARDS = "shards"
#: Written by rank 0 once every rank has loaded the same model: what run.json records.
MODEL_FILE = "model.json"
#: Seconds a rank waits for the others in a collective (the model identity check comes after
#: every rank has loaded its model, so this bounds the spread of load times).
DIST_TIMEOUT_S = int(os.environ.get("IRH_DIST_TIMEOUT", "1800"))
#: How often the launcher looks at its ranks and updates the progress bar.
POLL_S = 0.2


#: A rank's exit status when the model server stopped answering (EX_TEMPFAIL): the run is
#: interrupted, not failed, and --resume completes it once the server is back.
SERVER_GONE = 75


class RankFailed(RuntimeError):
    """A rank of a data-parallel run ended with an error or was killed."""


def shard_path(run_dir: Path, rank: int) -> Path:
    """A rank's own shard of rows."""
    return run_dir / SHARDS / f"rank-{rank:05d}.jsonl"


def _error_path(run_dir: Path, rank: int) -> Path:
    return run_dir / SHARDS / f"rank-{rank:05d}.error"


class ShardWriter:
    """Appends one rank's rows to its shard, flushed (fsync) after every chunk."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab")
        # A torn last line (a kill mid-write) is cut off so appends start on a fresh line.
        size = self._fh.tell()
        if size:
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                self._fh.truncate(data.rfind(b"\n") + 1)
                self._fh.seek(0, os.SEEK_END)

    def write(self, rows: list[SampleRow]) -> None:
        # One write call, as SampleWriter: a signal cannot land between two rows of a chunk.
        self._fh.write("".join(row.model_dump_json() + "\n" for row in rows).encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_shards(run_dir: Path, manifest: RunManifest, lock: RunLock) -> int:
    """Append the rows the ranks' shards hold to samples.jsonl, in one-process order, and remove
    the shards; returns how many rows were added. The caller holds the folder's lock.

    Rows already in samples.jsonl (a merge cut short) are skipped, so merging twice adds nothing.
    """
    folder = run_dir / SHARDS
    if not folder.is_dir():
        return 0
    done = {row.key for row in iter_samples(run_dir)}
    fresh: dict[tuple[str, str, str], SampleRow] = {}
    for path in sorted(folder.glob("rank-*.jsonl")):
        for row in iter_sample_file(path):
            if row.key not in done:
                fresh.setdefault(row.key, row)
    key = plan_order(manifest)
    rows = sorted(fresh.values(), key=lambda r: key(r.task, r.instruction_id, r.doc_id))
    if rows:
        with SampleWriter(run_dir, lock=lock) as writer:
            writer.write(rows)
    # Only once the rows are safely in samples.jsonl.
    shutil.rmtree(folder)
    return len(rows)


def worker_command(run_dir: Path, rank: int, world_size: int, port: int) -> list[str]:
    """The command line that starts one rank (tests replace it to kill a rank on purpose)."""
    return [sys.executable, "-m", "harness.parallel", str(run_dir), f"--rank={rank}", f"--world-size={world_size}", f"--port={port}"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The launcher's pid, given to the ranks it starts: a rank whose launcher is gone stops.
LAUNCHER_ENV = "IRH_LAUNCHER_PID"


def die_with_launcher() -> None:
    """Ask Linux to send this rank SIGTERM (an interrupt: its flushed rows are kept) when the
    process that started it dies, even by kill -9; and stop at once if it is already gone.
    Without this a killed launcher leaves its ranks scoring on, unlocked, to the end."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(launcher):  # it died before the request was made
        raise KeyboardInterrupt


def worker_env(world_size: int, registry_root: str | None) -> dict[str, str]:
    """The ranks' environment: the cores shared out among them, the run's registry, the
    launcher's pid (:func:`die_with_launcher`)."""
    env = dict(os.environ)
    env[LAUNCHER_ENV] = str(os.getpid())
    threads = str(max(1, (os.cpu_count() or 1) // world_size))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if registry_root:
        env["IRH_REGISTRY"] = registry_root
    return env


def execute_parallel(
    run_dir: Path,
    manifest: RunManifest,
    items: list[RunItem],
    *,
    processes: int,
    progress: Any = None,
    lock: RunLock | None = None,
    model_info: dict[str, Any] | None = None,
) -> RunManifest:
    """Score every missing row of the run with ``processes`` ranks; keeps the status true.

    Args:
        run_dir: the run folder (its manifest already written).
        manifest: its manifest.
        items: its plan, rebuilt from the registry.
        processes: how many ranks to start (fewer when there are fewer chunks left).
        progress: called with (rows done, rows planned) as the ranks flush.
        lock: the folder's lock, when the caller holds it already.
        model_info: extra entries for run.json's model record (e.g. where seen flags came from).

    Raises:
        RankFailed: a rank ended with an error or was killed (status ``failed``).
        KeyboardInterrupt: Ctrl-C, SIGTERM, or a rank stopped by one (status ``interrupted``).
    """
    with writing_run(run_dir, lock) as held:
        return _execute_parallel(run_dir, manifest, items, processes, progress, held, model_info or {})


def _apply_model_file(run_dir: Path, manifest: RunManifest, model_info: dict[str, Any]) -> RunManifest:
    """The manifest with the model as rank 0 loaded it, once it has (else unchanged)."""
    path = run_dir / SHARDS / MODEL_FILE
    if not path.exists():
        return manifest
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return manifest.model_copy(
        update={
            "model": {**loaded["info"], **model_info},
            "chat_template_applied": loaded["chat"],
            "placement_applied": loaded["placement"],
        }
    )


def _count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return total


def _describe_exit(run_dir: Path, rank: int, proc: subprocess.Popen[bytes]) -> str:
    code = proc.returncode
    if code is not None and code < 0:
        return f"rank {rank} (pid {proc.pid}) was killed by {signal.Signals(-code).name}"
    try:
        error = _error_path(run_dir, rank).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        error = ""
    return f"rank {rank} failed: {error}" if error else f"rank {rank} (pid {proc.pid}) exited with status {code}"


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every rank still running, then wait for them (SIGKILL after a grace period)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _execute_parallel(
    run_dir: Path,
    manifest: RunManifest,
    items: list[RunItem],
    processes: int,
    progress: Any,
    lock: RunLock,
    model_info: dict[str, Any],
) -> RunManifest:
    from harness.work import plan_workload

    owns_status = manifest.status == "running"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        merge_shards(run_dir, manifest, lock)
        work = plan_workload(run_dir, manifest, items)
        if progress:
            progress(work.finished, work.total)
        if work.finished == work.total:
            manifest = manifest.model_copy(update={"status": "complete", "finished": manifest.finished or utc_now()})
            write_manifest(run_dir, manifest)
            return manifest
        manifest = manifest.model_copy(update={"status": "running", "error": None})
        write_manifest(run_dir, manifest)
        owns_status = True
        world = max(1, min(processes, len(work.chunks)))
        (run_dir / SHARDS).mkdir(exist_ok=True)
        port = _free_port()
        env = worker_env(world, manifest.registry_path)
        procs = [
            subprocess.Popen(worker_command(run_dir, rank, world, port), env={**env, "LOCAL_RANK": str(rank)}) for rank in range(world)
        ]
        shards = [shard_path(run_dir, rank) for rank in range(world)]
        failure: str | None = None
        interrupted = server_gone = False
        model_seen = False
        flushed = 0
        while any(proc.poll() is None for proc in procs):
            time.sleep(POLL_S)
            if not model_seen and (run_dir / SHARDS / MODEL_FILE).exists():
                # Record the model as soon as the ranks agree on it: a kill -9 of this
                # process then leaves run.json naming the model the rows came from.
                manifest = _apply_model_file(run_dir, manifest, model_info)
                write_manifest(run_dir, manifest)
                model_seen = True
            rows = _count_lines(shards)
            if rows != flushed:
                lock.beat(rows - flushed)
                flushed = rows
                if progress:
                    progress(work.finished + rows, work.total)
            stopped = [(rank, proc) for rank, proc in enumerate(procs) if proc.poll() not in (None, 0)]
            if stopped:
                rank, proc = stopped[0]
                interrupted = proc.returncode in (-signal.SIGTERM, -signal.SIGINT, 130)
                server_gone = proc.returncode == SERVER_GONE
                failure = _describe_exit(run_dir, rank, proc)
                _stop(procs)
                break
        manifest = _apply_model_file(run_dir, manifest, model_info)
        merge_shards(run_dir, manifest, lock)
        if interrupted:
            raise KeyboardInterrupt
        if server_gone:
            raise ServerUnavailable((failure or "").partition(" failed: ")[2] or "the model server stopped answering")
        if failure:
            raise RankFailed(failure)
        work = plan_workload(run_dir, manifest, items)
        if progress:
            progress(work.finished, work.total)
        if work.finished != work.total:
            raise RankFailed(f"the ranks ended with {work.total - work.finished} of {work.total} rows missing")
        put_in_plan_order(run_dir)
    except KeyboardInterrupt:
        _stop(procs)
        if owns_status:
            _finish_rows(run_dir, manifest, lock, model_info, "interrupted", None)
        raise
    except ServerUnavailable as exc:
        if owns_status:
            _finish_rows(run_dir, manifest, lock, model_info, "interrupted", str(exc))
        raise
    except BaseException as exc:
        _stop(procs)
        if owns_status:
            _finish_rows(run_dir, manifest, lock, model_info, "failed", f"{type(exc).__name__}: {exc}")
        raise
    manifest = manifest.model_copy(update={"status": "complete", "finished": utc_now()})
    write_manifest(run_dir, manifest)
    return manifest


def _finish_rows(run_dir: Path, manifest: RunManifest, lock: RunLock, model_info: dict[str, Any], status: str, error: str | None) -> None:
    """Keep every row the ranks flushed (merged into samples.jsonl), then record the status."""
    manifest = _apply_model_file(run_dir, manifest, model_info)
    try:
        merge_shards(run_dir, manifest, lock)
    finally:
        write_manifest(run_dir, manifest.model_copy(update={"status": status, "error": error}))


# --------------------------------------------------------------------------- one rank


def _score_share(run_dir: Path, rank: int, world_size: int) -> None:
    """Load the model, agree with the other ranks that it is the same everywhere, and score
    every ``world_size``-th remaining chunk from ``rank`` on into this rank's shard."""
    import torch.distributed as dist

    from harness.backends.models import ModelSpec, load_model
    from harness.run_registry import registry_for_run
    from harness.work import MODEL_IDENTITY, chat_placement, check_same_model, items_from_manifest, plan_workload, score_chunk

    manifest = read_manifest(run_dir)
    items = items_from_manifest(registry_for_run(manifest), manifest)
    mine = plan_workload(run_dir, manifest, items).chunks[rank::world_size]
    args = dict(manifest.model["args"])
    if str(args.get("device", "")).startswith("cuda"):
        # One GPU per rank on each machine (LOCAL_RANK, set by irh, torchrun and accelerate).
        args["device"] = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    model = load_model(ModelSpec(manifest.model["backend"], args, manifest.model["name"]))
    check_same_model(manifest.model, model.info)
    chat, placement = chat_placement(manifest, model)
    identity = {**{key: model.info.get(key) for key in MODEL_IDENTITY}, "chat": chat}
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, identity)
    if any(other != identity for other in everyone):
        raise RunError(f"the ranks loaded different models ({everyone}); give every machine the same model files")
    if rank == 0:
        from harness.data.cache import atomic_write_bytes

        (run_dir / SHARDS).mkdir(exist_ok=True)
        record = {"info": model.info, "chat": chat, "placement": placement}
        atomic_write_bytes(run_dir / SHARDS / MODEL_FILE, json.dumps(record).encode("utf-8"))
    with ShardWriter(shard_path(run_dir, rank)) as writer:
        for chunk in mine:
            writer.write(score_chunk(model, chunk, placement=placement, chat=chat, seed=manifest.seed))


def run_rank(run_dir: Path, rank: int, world_size: int, port: int) -> None:
    """One rank started by ``execute_parallel`` (which holds the folder and merges the shards).

    Raises:
        RunError: the ranks loaded different models, or the model differs from the run's.
    """
    from datetime import timedelta

    import torch.distributed as dist

    init = f"tcp://127.0.0.1:{port}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size, timeout=timedelta(seconds=DIST_TIMEOUT_S))
    try:
        _score_share(run_dir, rank, world_size)
    finally:
        dist.destroy_process_group()


def run_launched(run_dir: Path) -> str:
    """One rank started by a launcher (``torchrun``, ``accelerate launch``; any number of
    machines sharing the run folder's file system): rank 0 holds the folder, merges what the
    shards hold, and records the outcome; every rank scores its share. Returns the status.

    Raises:
        RunError: the folder cannot be completed (another writer, a different model, ...).
        RankFailed: some rank failed (the run is marked ``failed``; resume it).
    """
    from datetime import timedelta

    import torch.distributed as dist

    # Ranks finish at different times, and the last collective waits for the slowest.
    timeout = timedelta(seconds=int(os.environ.get("IRH_DIST_TIMEOUT", str(24 * 3600))))
    dist.init_process_group("gloo", init_method="env://", timeout=timeout)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    lock: RunLock | None = None
    try:
        ready: list[Any] = ["ok"]
        if rank == 0:
            try:
                lock = RunLock(run_dir)
                manifest = read_manifest(run_dir)
                merge_shards(run_dir, manifest, lock)
                write_manifest(run_dir, manifest.model_copy(update={"status": "running", "error": None}))
            except Exception as exc:
                ready = [f"{type(exc).__name__}: {exc}"]
        dist.broadcast_object_list(ready, src=0)
        if ready[0] != "ok":
            raise RunError(f"rank 0 could not take {run_dir}: {ready[0]}")
        outcome = "ok"
        try:
            _score_share(run_dir, rank, world_size)
        except Exception as exc:
            outcome = f"rank {rank} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        outcomes: list[Any] = [None] * world_size
        try:
            dist.all_gather_object(outcomes, outcome)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a rank died: the collective breaks
            outcomes = [f"a rank stopped answering ({type(exc).__name__}: {exc})"]
        failures = [o for o in outcomes if o != "ok"]
        if rank != 0:
            if outcome != "ok":
                raise RankFailed(outcome)
            return "done"
        assert lock is not None
        return _close_launched(run_dir, lock, failures)
    except KeyboardInterrupt:
        if lock is not None:
            _finish_rows(run_dir, read_manifest(run_dir), lock, {}, "interrupted", None)
        raise
    finally:
        if lock is not None:
            lock.release()
        dist.destroy_process_group()


def _close_launched(run_dir: Path, lock: RunLock, failures: list[str]) -> str:
    """Rank 0 of a launched run: merge the shards and record how the run ended."""
    from harness.run_registry import registry_for_run
    from harness.work import items_from_manifest, plan_workload

    manifest = _apply_model_file(run_dir, read_manifest(run_dir), {})
    if failures:
        _finish_rows(run_dir, manifest, lock, {}, "failed", "; ".join(failures))
        raise RankFailed("; ".join(failures))
    merge_shards(run_dir, manifest, lock)
    work = plan_workload(run_dir, manifest, items_from_manifest(registry_for_run(manifest), manifest))
    if work.finished != work.total:
        error = f"the ranks ended with {work.total - work.finished} of {work.total} rows missing"
        write_manifest(run_dir, manifest.model_copy(update={"status": "failed", "error": error}))
        raise RankFailed(error)
    put_in_plan_order(run_dir)
    write_manifest(run_dir, manifest.model_copy(update={"status": "complete", "error": None, "finished": utc_now()}))
    return "complete"


def main(argv: list[str] | None = None) -> None:
    """``python -m harness.parallel RUN_DIR --rank R --world-size N --port P``: one rank."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(
        prog="python -m harness.parallel",
        description="Complete a run folder data-parallel. Under torchrun or accelerate launch (one or several machines "
        "sharing the folder): `torchrun --nproc-per-node N -m harness.parallel RUN_DIR`. `irh run --processes N` "
        "starts ranks itself with --rank/--world-size/--port.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rank", type=int, default=None, help="Set by `irh run --processes` (default: the launcher's RANK).")
    parser.add_argument("--world-size", type=int, default=None)
    parser.add_argument("--port", type=int, default=None, help="TCP port of rank 0's store on 127.0.0.1 (default: the launcher's env://).")
    args = parser.parse_args(argv)
    if args.port is None:
        _launched_main(args.run_dir)
        return
    logging.basicConfig(level=logging.WARNING, format=f"rank {args.rank} %(levelname)s %(name)s: %(message)s")
    for name in ("lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        die_with_launcher()
        run_rank(args.run_dir, args.rank, args.world_size, args.port)
    except KeyboardInterrupt:
        sys.exit(130)
    except ServerUnavailable as exc:
        (args.run_dir / SHARDS).mkdir(exist_ok=True)
        _error_path(args.run_dir, args.rank).write_text(f"{' '.join(str(exc).split())}\n", encoding="utf-8")
        sys.exit(SERVER_GONE)
    except Exception as exc:
        # One line for the launcher to show; the traceback stays on this rank's stderr.
        (args.run_dir / SHARDS).mkdir(exist_ok=True)
        _error_path(args.run_dir, args.rank).write_text(f"{type(exc).__name__}: {' '.join(str(exc).split())}\n", encoding="utf-8")
        raise


def _launched_main(run_dir: Path) -> None:
    import logging

    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.WARNING, format=f"rank {rank} %(levelname)s %(name)s: %(message)s")
    for name in ("lm-eval", "lm_eval", "transformers", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        status = run_launched(run_dir)
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted; rows so far are kept. Resume with `irh run --resume {run_dir}`", file=sys.stderr)
        sys.exit(130)
    except (RunError, RankFailed) as exc:
        print(f"rank {rank}: {exc}. Rows so far are kept; `irh run --resume {run_dir}` (any --processes) completes it", file=sys.stderr)
        sys.exit(1)
    if status == "complete":
        print(f"run complete: {run_dir} (write the report with `irh report {run_dir}`)", file=sys.stderr)


if __name__ == "__main__":
    main()
