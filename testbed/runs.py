"""Run directories: ``OUT/<run_id>/`` with config.json, metrics.jsonl and result.json.

A run is finished exactly when result.json exists; it is written atomically last, so an
interrupted run is never mistaken for a finished one, and a finished run is never redone
unless forced. User errors surface in ``prepare`` before the directory is created.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

from testbed import __version__
from testbed.config import RunConfig
from testbed.loop import prepare, train


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_result(run_dir: Path) -> dict | None:
    path = run_dir / "result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def execute(cfg: RunConfig, registry, out_dir: str | Path, force: bool = False, progress: bool = True) -> tuple[Path, dict, bool]:
    """Run ``cfg`` into ``out_dir/<run_id>``. Returns (run_dir, result, ran); ``ran`` is False
    when a finished result already existed and was returned as it is."""
    run_dir = Path(out_dir) / cfg.run_id
    existing = read_result(run_dir)
    if existing is not None and not force:
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
    except BaseException as exc:
        atomic_write_json(run_dir / "error.json", {"error": f"{type(exc).__name__}: {exc}",
                                                   "traceback": traceback.format_exc(), "at": _now()})
        raise
    result = {"run_id": cfg.run_id, "method": cfg.method, "dataset": cfg.dataset.name, "seed": cfg.seed,
              **outcome, "started_at": started_at, "finished_at": _now(), "testbed_version": __version__,
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "torch_threads": _torch_threads()}}
    atomic_write_json(run_dir / "result.json", result)
    registry.hook.testbed_run_finished(run_dir=run_dir, result=result)
    return run_dir, result, True


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
