"""Experiment trackers on the run events: MLflow and TensorBoard. Off unless asked for:

    TESTBED_TRACKERS=mlflow,tensorboard testbed run ...      (or `testbed grid --trackers ...`)

Each run is logged with its resolved config (flattened, as params / hparams) and every
evaluation record as metrics at its step, and the final results when it finishes; a run that
raises is marked FAILED in MLflow (KILLED when interrupted) and gets an "error" text in TensorBoard.

- mlflow: a run named by the run id in the experiment ``$TESTBED_MLFLOW_EXPERIMENT`` (default
  "testbed") of the store ``$TESTBED_MLFLOW_URI``, else ``$MLFLOW_TRACKING_URI``, else a local
  file store ``OUT/mlruns`` beside the run directories (``mlflow ui --backend-store-uri OUT/mlruns``).
- tensorboard: event files in ``<run_dir>/tensorboard``, or ``$TESTBED_TENSORBOARD_DIR/<run_id>``
  (``tensorboard --logdir OUT``).

The packages are imported only when a tracker is on: ``pip install 'testbed[trackers]'``.
A tracker that fails while logging warns and lets the run go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import warnings
from pathlib import Path

from testbed import UserError, flatten, hookimpl

ENV = "TESTBED_TRACKERS"
BUILTIN = ("mlflow", "tensorboard")
_open: dict[tuple[str, str], object] = {}  # (tracker, run_dir) -> its open run
_lock = threading.Lock()
_warned: set[str] = set()


def enabled() -> set[str]:
    names = {n.strip().lower() for n in os.environ.get(ENV, "").split(",") if n.strip()}
    for name in names - set(BUILTIN):
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"{ENV} names {name!r}, which is not a built-in tracker ({', '.join(BUILTIN)}); "
                          "the built-in trackers ignore it", stacklevel=2)
    return names & set(BUILTIN)


def numeric(record: dict) -> dict[str, float]:
    """The numbers of a metrics record or result (None, strings and nested values left out)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not (isinstance(v, float) and v != v) and k != "step"}


def _guard(tracker: str, what: str):
    """A failing tracker warns; the run goes on."""
    @contextlib.contextmanager
    def guard():
        try:
            yield
        except Exception as exc:
            warnings.warn(f"tracker {tracker} could not {what}: {type(exc).__name__}: {exc}", stacklevel=3)
    return guard()


# --------------------------------------------------------------------------- MLflow


def _mlflow_uri(run_dir: Path) -> str:
    uri = os.environ.get("TESTBED_MLFLOW_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or (run_dir.parent.resolve() / "mlruns").as_uri()


class MlflowRun:
    def __init__(self, run_dir: Path, config: dict):
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(f"{ENV} includes mlflow, but mlflow is not installed: pip install 'testbed[trackers]'.") from None
        uri = _mlflow_uri(run_dir)
        if uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("TESTBED_MLFLOW_EXPERIMENT", "testbed")
        with _store_lock(uri):  # grid workers start runs at the same moment: create the experiment once
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                     tags={"testbed.run_id": run_dir.name, "testbed.run_dir": str(run_dir.resolve())})
        self.run_id = run.info.run_id
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(flatten(config).items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def finish(self, result: dict) -> None:
        final = {f"final.{k}": v for k, v in numeric(result).items()}
        self.log(final, int(result.get("steps") or 0))
        self.client.set_terminated(self.run_id, status="FINISHED")

    def fail(self, error: str, interrupted: bool) -> None:
        self.client.set_tag(self.run_id, "testbed.error", error[:5000])  # MLflow caps tag values
        self.client.set_terminated(self.run_id, status="KILLED" if interrupted else "FAILED")


@contextlib.contextmanager
def _store_lock(uri: str):
    if not uri.startswith("file:"):
        yield
        return
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    root = Path(url2pathname(urlparse(uri).path))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".testbed.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- TensorBoard


class TensorboardRun:
    def __init__(self, run_dir: Path, config: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(f"{ENV} includes tensorboard, but tensorboard is not installed: pip install 'testbed[trackers]'.") from None
        base = os.environ.get("TESTBED_TENSORBOARD_DIR")
        self.logdir = Path(base) / run_dir.name if base else run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.logdir))
        self.config = flatten(config)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, result: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = {f"final/{k}": v for k, v in numeric(result).items()}
        params = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in self.config.items()}
        for summary in hparams(params, final):  # the HParams dashboard, in this run's own event file
            self.writer.file_writer.add_summary(summary)
        self.log(final, int(result.get("steps") or 0))
        self.writer.close()

    def fail(self, error: str, interrupted: bool) -> None:
        self.writer.add_text("error", ("interrupted: " if interrupted else "failed: ") + error, 0)
        self.writer.close()


TRACKERS = {"mlflow": MlflowRun, "tensorboard": TensorboardRun}


# --------------------------------------------------------------------------- the event hooks


@hookimpl
def testbed_run_started(run_dir, config):
    for name in sorted(enabled()):
        key = (name, str(run_dir))
        with _lock:
            _open.pop(key, None)
        tracker = TRACKERS[name](Path(run_dir), config)  # a missing package is the user's to fix: UserError
        with _lock:
            _open[key] = tracker


@hookimpl
def testbed_evaluation(run_dir, record):
    for (name, where), tracker in list(_open.items()):
        if where == str(run_dir):
            with _guard(name, "log metrics"):
                tracker.log(numeric(record), int(record.get("step", 0)))


def _close(run_dir) -> list[tuple[str, object]]:
    with _lock:
        return [(name, _open.pop((name, where))) for (name, where) in list(_open) if where == str(run_dir)]


@hookimpl
def testbed_run_finished(run_dir, result):
    for name, tracker in _close(run_dir):
        with _guard(name, "finish the run"):
            tracker.finish(result)


@hookimpl
def testbed_run_failed(run_dir, error, interrupted):
    for name, tracker in _close(run_dir):
        with _guard(name, "mark the run failed"):
            tracker.fail(error, interrupted)
