"""Run directories: ``OUT/<run_id>/`` with config.json, metrics.jsonl, predictions.npz (test-set
probabilities of the last and best-on-validation checkpoints, test labels) and result.json.

A run is finished exactly when result.json exists; it is written atomically last, so an
interrupted run is never mistaken for a finished one, and a finished run is never redone
unless forced. User errors surface in ``prepare`` before the directory is created. A run
that raised leaves error.json (an interrupt, e.g. Ctrl-C, leaves the run merely unfinished).
Processes that share ``OUT`` (grid workers, two ``testbed grid`` commands) take the run's
lock, ``OUT/.locks/<run_id>.lock``, before running it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import platform
import shutil
import socket
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from testbed import __version__
from testbed.config import RunConfig
from testbed.errors import UserError
from testbed.loop import prepare, train
from testbed.resources import git_commit, refuse_shared_data

# the commit of the code this process imported: a later commit (or edit) made while a grid's
# workers run must not be recorded as the code that produced their results
IMPORTED_COMMIT = git_commit()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(handle)`` into a temporary file beside ``path``, fsync, rename into place: readers
    see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_npz(path: Path, arrays: dict) -> None:
    """``numpy.savez_compressed``, atomically; None values are left out."""
    import numpy as np

    atomic_write(path, lambda handle: np.savez_compressed(handle, **{k: v for k, v in arrays.items() if v is not None}))


def read_result(run_dir: Path) -> dict | None:
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); testbed writes it atomically, so something else changed "
                        f"it. Delete {run_dir} to rerun the run, or pass --force.") from None


LOCKS_DIR = ".locks"


@contextlib.contextmanager
def run_lock(out_dir: str | Path, run_id: str, attempts: int = 5) -> Iterator[bool]:
    """Hold the lock of run ``run_id`` in ``out_dir``: yields True when this process got it,
    False when another live process holds it. It is an ``flock`` on ``OUT/.locks/<run_id>.lock``
    (outside the run directory, which a rerun deletes), so the kernel releases it when its
    holder dies, even by ``kill -9``: a dead process never blocks a run. A few short retries
    ride out a status probe (``run_status``) that holds it for microseconds."""
    path = Path(out_dir) / LOCKS_DIR / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    yield False
                    return
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()} {_now()}\n".encode())
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(out_dir: str | Path, run_id: str) -> str:
    """"host pid started-at" of the process running ``run_id``, as it wrote in the lock file."""
    path = Path(out_dir) / LOCKS_DIR / f"{run_id}.lock"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def is_locked(out_dir: str | Path, run_id: str) -> bool:
    """True when a live process holds the run's lock (probes it without waiting)."""
    path = Path(out_dir) / LOCKS_DIR / f"{run_id}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def run_status(out_dir: str | Path, run_id: str, probe_lock: bool = True) -> str:
    """``done`` (result.json), ``damaged`` (a result.json that is not valid JSON), ``running``
    (locked by a live process; only with ``probe_lock``), ``failed`` (error.json), ``unfinished``
    (interrupted: a directory without either) or ``new``."""
    run_dir = Path(out_dir) / run_id
    if (run_dir / "result.json").is_file():
        try:
            read_result(run_dir)
        except UserError:
            return "damaged"
        return "done"
    if probe_lock and is_locked(out_dir, run_id):
        return "running"
    if (run_dir / "error.json").is_file():
        return "failed"
    return "unfinished" if run_dir.exists() else "new"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def execute(cfg: RunConfig, registry, out_dir: str | Path, force: bool = False, progress: bool = True) -> tuple[Path, dict, bool]:
    """Run ``cfg`` into ``out_dir/<run_id>``. Returns (run_dir, result, ran); ``ran`` is False
    when a finished result already existed and was returned as it is."""
    refuse_shared_data(out_dir, "The runs directory", "Pass --out somewhere else, e.g. runs.")
    run_dir = Path(out_dir) / cfg.run_id
    existing = None if force else read_result(run_dir)
    if existing is not None:
        return run_dir, existing, False
    parts = prepare(cfg, registry)  # user errors stop here, before anything is written

    if run_dir.exists():  # an unfinished or forced rerun starts from a clean directory
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", cfg.resolved)
    started_at = _now()
    registry.hook.testbed_run_started(run_dir=run_dir, config=cfg.resolved)

    metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")

    def on_evaluation(record: dict) -> None:
        metrics.write(json.dumps(record, sort_keys=True) + "\n")
        metrics.flush()
        os.fsync(metrics.fileno())
        registry.hook.testbed_evaluation(run_dir=run_dir, record=record)

    try:
        with metrics:
            outcome = train(cfg, parts, on_evaluation=on_evaluation, progress=progress)
    except BaseException as exc:  # an interrupt (KeyboardInterrupt) leaves the run unfinished, not failed
        interrupted = not isinstance(exc, Exception)
        error = f"{type(exc).__name__}: {exc}"
        if not interrupted:
            atomic_write_json(run_dir / "error.json", {"error": error, "traceback": traceback.format_exc(), "at": _now()})
        try:
            registry.hook.testbed_run_failed(run_dir=run_dir, error=error, interrupted=interrupted)
        except Exception as hook_error:  # noqa: BLE001 - the run's own error is the one to raise
            warnings.warn(f"a testbed_run_failed hook raised {type(hook_error).__name__}: {hook_error}", stacklevel=2)
        raise
    atomic_write_npz(run_dir / "predictions.npz", outcome.pop("predictions"))  # test probabilities, for reports
    result = {"run_id": cfg.run_id, "method": cfg.method, "dataset": cfg.dataset.name, "seed": cfg.seed,
              **outcome, "started_at": started_at, "finished_at": _now(), "testbed_version": __version__, "git_commit": IMPORTED_COMMIT,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "torch_threads": _torch_threads()}}
    atomic_write_json(run_dir / "result.json", result)
    registry.hook.testbed_run_finished(run_dir=run_dir, result=result)
    return run_dir, result, True


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
