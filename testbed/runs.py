"""Run directories: ``OUT/<run_id>/`` with config.json, metrics.jsonl, predictions.npz (test-set
probabilities of the last and best-on-validation checkpoints, test labels) and result.json.

A run is finished exactly when result.json exists; it is written atomically last, so an
interrupted run is never mistaken for a finished one, and a finished run is never redone
unless forced. A run that raised leaves error.json (an interrupt, e.g. Ctrl-C, or a write the disk
refused, leaves the run merely unfinished). A long run also keeps checkpoint.pt
(``train.checkpoint_every``): a run killed after one goes on from it, to the numbers of a run never
stopped, and the file goes when result.json is written. ``unfinished_runs`` lists what runs
without a result hold (``testbed unfinished``).

``execute`` is the one owner of a run directory, for ``testbed run`` and every grid cell alike:
it takes the run's lock, ``OUT/.locks/<run_id>.lock``, before it deletes or writes anything in
the directory, so no process touches a run that another live process is running.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import platform
import shutil
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from testbed import __version__
from testbed.atomic import atomic_write, atomic_write_json, atomic_write_npz
from testbed.config import RunConfig
from testbed.data import one_line
from testbed.errors import StorageError, TrainingError, UserError, is_storage_error
from testbed.loop import prepare, train
from testbed.resources import git_commit, refuse_shared_data
from testbed.results import dataset_name

# the commit of the code this process imported: a later commit (or edit) made while a grid's
# workers run must not be recorded as the code that produced their results
IMPORTED_COMMIT = git_commit()


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, None when it has none; a damaged one (not JSON, not a run's result) is a
    UserError with the fix, and never taken for a finished run."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too: garbage bytes
        problem = f"is not valid JSON ({one_line(exc)[:120]})"
    else:
        if isinstance(result, dict) and "test_accuracy" in result:
            return result
        problem = f"is not a run's result (JSON {one_line(json.dumps(result))[:40]}, no test_accuracy)"
    raise UserError(f"{path} {problem}; testbed writes it atomically, so something else changed it. Delete {run_dir} "
                    "to rerun the run, or pass --force.")


LOCKS_DIR = ".locks"


@contextlib.contextmanager
def run_lock(out_dir: str | Path, run_id: str, attempts: int = 5) -> Iterator[bool]:
    """Hold the lock of run ``run_id`` in ``out_dir``: yields True when this process got it,
    False when another live process holds it. It is an ``flock`` on ``OUT/.locks/<run_id>.lock``
    (outside the run directory, which a rerun deletes), so the kernel releases it when its
    holder dies, even by ``kill -9``: a dead process never blocks a run. A few short retries
    ride out a status probe (``is_locked``) that holds it for microseconds."""
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


def check_writable(out_dir: str | Path) -> None:
    """The runs directory takes a file (or, when it does not exist yet, the nearest existing directory
    above it can make it; nothing is created): a StorageError naming the fix otherwise (a read-only file
    system, a directory that is not ours, a full disk), before any run starts."""
    out = Path(out_dir).absolute()
    if not out.is_dir():
        parent = next((p for p in out.parents if p.is_dir()), None)
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
            code = errno.EROFS if read_only else errno.EACCES
            raise StorageError(out, OSError(code, os.strerror(code), str(parent)))
        return
    try:
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if is_storage_error(exc):
            raise StorageError(out, exc) from None
        raise


def unfinished_runs(out_dir: str | Path) -> list[dict]:
    """The run directories of ``out_dir`` without a result.json and what they hold: status (unfinished,
    failed, running), the last step evaluated (from metrics.jsonl), the size of the checkpoint and of
    the whole directory."""
    out = Path(out_dir)
    rows = []
    for config in sorted(out.glob("*/config.json")):
        run_dir = config.parent
        if run_dir.name.startswith(".") or (run_dir / "result.json").is_file():
            continue
        steps = []
        with contextlib.suppress(OSError, ValueError):
            steps = [json.loads(line).get("step") for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                     if line.strip()]
        checkpoint = run_dir / CHECKPOINT
        rows.append({"run_id": run_dir.name, "status": run_status(out, run_dir.name), "path": str(run_dir),
                     "last_evaluated_step": steps[-1] if steps else None,
                     "checkpoint_bytes": checkpoint.stat().st_size if checkpoint.is_file() else 0,
                     "bytes": sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())})
    return rows


def remove_unfinished(out_dir: str | Path, failed: bool = False) -> list[dict]:
    """Delete the unfinished runs of ``out_dir`` (and, with ``failed``, the failed ones), never a run a
    live process holds: each is taken under its lock. Returns the rows removed."""
    removed = []
    for row in unfinished_runs(out_dir):
        if row["status"] not in ("unfinished", *(("failed",) if failed else ())):
            continue
        with run_lock(out_dir, row["run_id"], attempts=1) as mine:
            if mine and not (Path(row["path"]) / "result.json").exists():
                shutil.rmtree(row["path"], ignore_errors=True)
                removed.append(row)
    return removed


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunHeldElsewhere(UserError):
    """Another live process (a grid cell, another ``testbed run``) holds the run's lock."""

    def __init__(self, out_dir: Path, run_id: str):
        self.holder = lock_holder(out_dir, run_id)  # "host pid started-at", or "" if not written yet
        host, pid, since = (self.holder.split() + ["?", "?", "?"])[:3]
        who = f"process {pid} on {host}, since {since}" if self.holder else "another process"
        super().__init__(f"Run {run_id} in {out_dir} is running in another process ({who}; lock file "
                         f"{Path(out_dir) / LOCKS_DIR / f'{run_id}.lock'}). Nothing was changed: wait for it to "
                         f"finish, or run it into another directory with --out.")


class RunFailedBefore(UserError):
    """The run failed earlier (error.json) and ``retry_failed`` is off."""

    def __init__(self, run_dir: Path):
        super().__init__(f"Run {run_dir.name} failed earlier: see {run_dir / 'error.json'}. "
                         "`testbed grid --retry-failed` or `testbed run` reruns it.")


class RunOutcome(NamedTuple):
    run_dir: Path
    result: dict
    ran: bool  # False: the run had finished before, and ``result`` is its result.json


def execute(cfg: RunConfig, registry, out_dir: str | Path, force: bool = False, progress: bool = True, *,
            retry_failed: bool = True, cell: str | None = None) -> RunOutcome:
    """Run ``cfg`` into ``out_dir/<run_id>`` unless it has finished there (or ``force``).

    Raises RunHeldElsewhere when another live process runs it, RunFailedBefore when it failed
    earlier and not ``retry_failed``, a UserError naming the fix for a damaged result.json, and
    whatever the run raised (after writing error.json, unless it was interrupted); in all of
    these cases but the last it has touched nothing. ``cell`` names the grid cell the run is:
    it goes into error.json, and a cell's failure in ``prepare`` is recorded like any other,
    where ``testbed run`` reports it before writing anything (and so does a forced rerun of a
    finished run, which stays as it was). A runs directory that takes no file (read-only, full) is a
    StorageError before any work; a write the disk refuses later leaves the run unfinished, not failed.
    A failure inside the loop is a TrainingError naming the seam, the plugin and the step."""
    refuse_shared_data(out_dir, "The runs directory", "Pass --out somewhere else, e.g. runs.")
    out = Path(out_dir)
    run_dir = out / cfg.run_id
    # without the lock first: a finished, failed or held run costs neither a lock file nor a prepare
    existing = _settled(out, cfg.run_id, force, retry_failed, probe_lock=True)
    if existing is not None:
        return RunOutcome(run_dir, existing, False)
    check_writable(out)  # a full or read-only runs directory: one clear error before any work
    # `testbed run`, and a forced rerun of a finished run: user errors stop here, before anything is written (a
    # rerun that cannot start keeps the finished run)
    parts = prepare(cfg, registry) if cell is None or (force and (run_dir / "result.json").is_file()) else None

    with run_lock(out, cfg.run_id) as mine:
        if not mine:
            raise RunHeldElsewhere(out, cfg.run_id)
        existing = _settled(out, cfg.run_id, force, retry_failed, probe_lock=False)  # it may have finished meanwhile
        if existing is not None:
            return RunOutcome(run_dir, existing, False)
        resume = None if force or (run_dir / "error.json").is_file() else read_checkpoint(run_dir, cfg.run_id)
        if resume is not None:  # killed after a checkpoint: go on from it, with the metrics recorded up to it
            for leftover in run_dir.glob(".*.tmp"):  # a file the killed attempt was writing (never read: not renamed)
                leftover.unlink(missing_ok=True)
            _keep_metrics_until(run_dir / "metrics.jsonl", resume["loop"]["step"])
            sys.stderr.write(f"{cfg.run_id}: resuming from step {resume['loop']['step']} ({run_dir / CHECKPOINT})\n")
        else:
            if run_dir.exists():  # an interrupted or failed attempt, or a forced rerun: its files must not mix with this one's
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            atomic_write_json(run_dir / "config.json", cfg.resolved)
        result = _run(cfg, registry, parts, run_dir, progress, cell, resume)
    registry.hook.testbed_run_finished(run_dir=run_dir, result=result)
    return RunOutcome(run_dir, result, True)


def _settled(out: Path, run_id: str, force: bool, retry_failed: bool, probe_lock: bool) -> dict | None:
    """The result of a run that needs no work (finished, not forced), None for one to run now;
    raises for one that must not run now. ``probe_lock`` is off while this process holds the lock."""
    run_dir = out / run_id
    existing = None if force else read_result(run_dir)  # a damaged result.json: UserError with the fix
    if existing is not None:
        return existing
    if probe_lock and is_locked(out, run_id):
        raise RunHeldElsewhere(out, run_id)
    if not (force or retry_failed) and (run_dir / "error.json").is_file():
        raise RunFailedBefore(run_dir)
    return None


def _run(cfg: RunConfig, registry, parts, run_dir: Path, progress: bool, cell: str | None, resume: dict | None = None) -> dict:
    """Prepare (unless done), train and write metrics, checkpoints, predictions and result.json into
    ``run_dir``, which holds config.json (and, with ``resume``, what the run wrote up to its
    checkpoint). A failure writes error.json, here and nowhere else."""
    notified = False  # testbed_run_failed pairs with a testbed_run_started that returned
    try:
        if parts is None:
            parts = prepare(cfg, registry)
        started_at = resume["started_at"] if resume else _now()
        registry.hook.testbed_run_started(run_dir=run_dir, config=cfg.resolved)
        notified = True
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics:
            def on_evaluation(record: dict) -> None:
                try:
                    metrics.write(json.dumps(record, sort_keys=True) + "\n")
                    metrics.flush()
                    os.fsync(metrics.fileno())
                except OSError as exc:
                    raise (StorageError(run_dir / "metrics.jsonl", exc) if is_storage_error(exc) else exc) from exc
                registry.hook.testbed_evaluation(run_dir=run_dir, record=record)

            def checkpoint(state: dict) -> None:
                write_checkpoint(run_dir, cfg.run_id, started_at, state)

            trained = train(cfg, parts, on_evaluation=on_evaluation, progress=progress, checkpoint=checkpoint,
                            resume=resume["loop"] if resume else None)
        atomic_write_npz(run_dir / "predictions.npz", trained.predictions)  # test probabilities, for reports
        result = {"run_id": cfg.run_id, "method": cfg.method, "dataset": dataset_name(cfg.resolved), "seed": cfg.seed,
                  **trained.result, "started_at": started_at, "finished_at": _now(), "testbed_version": __version__, "git_commit": IMPORTED_COMMIT,
                  "machine": {"python": platform.python_version(), "platform": platform.platform(),
                              "cpus": os.cpu_count(), "torch_threads": _torch_threads()}}
        atomic_write_json(run_dir / "result.json", result)
        (run_dir / CHECKPOINT).unlink(missing_ok=True)  # finished: nothing to resume
    except BaseException as exc:  # an interrupt (KeyboardInterrupt) leaves the run unfinished, not failed
        # so does a write the disk refused (full, read-only): nothing is wrong with the run, which goes on from its
        # last checkpoint once there is room (and error.json could not be written anyway)
        interrupted = not isinstance(exc, Exception) or is_storage_error(exc)
        failure = training_failure(exc, cfg, registry) if not interrupted else None  # a plugin raised, a loss went NaN
        error = f"{type(failure or exc).__name__}: {failure or exc}"
        if not interrupted:
            try:
                atomic_write_json(run_dir / "error.json", {"error": error, "traceback": traceback.format_exc(), "at": _now(),
                                                           **({"cell": cell} if cell is not None else {})})
            except OSError as write_error:
                warnings.warn(f"Could not write {run_dir / 'error.json'}: {write_error}", stacklevel=2)
            else:
                if failure is not None and cell is None:
                    failure.error_file = run_dir / "error.json"  # `testbed run` names it; a grid prints it beside the cell
        if notified:
            try:
                registry.hook.testbed_run_failed(run_dir=run_dir, error=error, interrupted=interrupted)
            except Exception as hook_error:
                warnings.warn(f"a testbed_run_failed hook raised {type(hook_error).__name__}: {hook_error}", stacklevel=2)
        if failure is not None:
            raise failure from exc
        raise
    return result


def training_failure(exc: BaseException, cfg: RunConfig, registry) -> TrainingError | None:
    """What went wrong inside the training loop, said as the user can act on it: the seam and plugin
    whose code raised (the innermost frame of a chosen plugin, or a plugin's hook) and the step; or, for
    a loss that went NaN or infinite, what produced it (the distance, the selector's targets, the
    regulariser, or the student's logits: training diverged). None when the exception did not come from
    the loop, is already a user's error, or came from the testbed's own code (a bug keeps its traceback)."""
    from testbed.config import CHOICES, Choice
    from testbed.loop import NonFiniteLoss

    if isinstance(exc, UserError) or not isinstance(exc, Exception):
        return None
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    loop = next((frame for frame in frames if frame.f_code is train.__code__), None)
    if loop is None:
        return None
    step = loop.f_locals.get("step")
    if isinstance(exc, NonFiniteLoss):
        return TrainingError(_non_finite(exc, cfg, loop.f_locals, step))
    seams = list(cfg.choices.items())
    parts = loop.f_locals.get("parts")
    if parts is not None and getattr(parts, "task_name", None) and parts.task_name in registry.records.get("task", {}):
        seams.append(("task", Choice(parts.task_name, registry.get("task", parts.task_name), None)))
    for frame in reversed(frames):  # the innermost frame that is a chosen plugin's code
        module, qualname = frame.f_globals.get("__name__", ""), getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
        mine = [(path, choice) for path, choice in seams if getattr(choice.record.factory, "__module__", None) == module]
        if not mine:
            plugin = registry.pm.get_name(sys.modules[module]) if module in sys.modules else None
            if plugin is not None and not module.startswith("testbed."):  # a plugin's hook (an event), not a seam
                return TrainingError(f"plugin {plugin!r} raised {type(exc).__name__}: {one_line(exc)} at step {step} "
                                     f"(in {qualname}, {frame.f_code.co_filename}:{frame.f_lineno}).")
            continue
        exact = [(path, choice) for path, choice in mine
                 if qualname.startswith(getattr(choice.record.factory, "__qualname__", "\0") + ".")]
        path, choice = (exact or mine)[0]
        kind = CHOICES.get(path, path)
        where = "" if path == kind else f" ({path})"
        return TrainingError(f"{kind} {choice.name!r}{where} raised {type(exc).__name__}: {one_line(exc)} at step {step}. "
                             f"The fault is in the plugin's code ({frame.f_code.co_filename}:{frame.f_lineno}); choose another "
                             f"{kind} or fix it.")
    return None


def _non_finite(exc, cfg: RunConfig, names: dict, step) -> str:
    """The message for a loss term that went NaN or infinite, from the loop's variables at that step."""
    import torch

    finite = lambda tensor: tensor is None or bool(torch.isfinite(tensor).all())  # noqa: E731
    value = "NaN" if exc.value != exc.value else str(exc.value)
    choices = cfg.choices
    diverged = (f"the student's outputs are not finite at step {step}: training diverged (train.lr = {cfg.train.lr:g}, "
                f"train.precision = {cfg.train.precision}). Lower train.lr or add train.warmup_steps"
                + (", or use train.precision=fp32." if cfg.train.precision != "fp32" else "."))
    if exc.term == "supervised":
        return diverged if not finite(names.get("logits")) else (
            f"the supervised loss is {value} at step {step} (tsa {choices['tsa'].name!r}). Lower train.lr, or check the tsa schedule.")
    if exc.term == "regulariser":
        return (f"regulariser {choices['regulariser'].name!r} returned {value} at step {step}. Lower its weight, or choose "
                "another regulariser.")
    if not finite(names.get("student_logits")) or not finite(names.get("logits")):
        return diverged
    if not (finite(names.get("targets")) and finite(names.get("weights"))):
        return (f"selector {choices['selector'].name!r} (teacher {choices['teacher'].name!r}) returned non-finite targets or "
                f"weights at step {step}. Check the teacher's probabilities and the selector's options.")
    weight = names.get("weight")
    if isinstance(weight, float) and weight != weight:
        return f"schedule {choices['schedule'].name!r} returned NaN at step {step}. Fix the schedule or choose another."
    return (f"distance {choices['distance'].name!r} returned {value} at step {step} (its mean over the batch). Fix the "
            "distance, or choose another (distance.name).")


CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def write_checkpoint(run_dir: Path, run_id: str, started_at: str, state: dict) -> None:
    """The loop's state after an evaluation, atomically: a kill while writing leaves the previous one."""
    import torch

    checkpoint = {"format": CHECKPOINT_FORMAT, "run_id": run_id, "started_at": started_at, "loop": state}
    atomic_write(run_dir / CHECKPOINT, lambda handle: torch.save(checkpoint, handle))


def read_checkpoint(run_dir: Path, run_id: str) -> dict | None:
    """The run's checkpoint, or None when it has none; a damaged or foreign one is never used: it is
    reported and the run starts again from step 0."""
    import torch

    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        # tensors and plain data only: loading runs no code; on the CPU first, the loop puts each piece where it lives
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        if checkpoint["format"] != CHECKPOINT_FORMAT or checkpoint["run_id"] != run_id:
            raise ValueError(f"format {checkpoint['format']} of run {checkpoint['run_id']}, expected format "
                             f"{CHECKPOINT_FORMAT} of run {run_id}")
        int(checkpoint["loop"]["step"])
    except Exception as exc:  # truncated, garbage, another version: all mean "start over"
        warnings.warn(f"Ignoring the checkpoint {path} ({type(exc).__name__}: {str(exc)[:200]}); the run starts again "
                      "from step 0.", stacklevel=2)
        return None
    return checkpoint


def _keep_metrics_until(path: Path, step: int) -> None:
    """metrics.jsonl as it was at the checkpoint: the evaluations after it are run again."""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        # a line cut short (a kill, a full disk) has no step and goes
        kept = [line for line in lines if (at := _step_of(line)) is not None and at <= step]
        atomic_write(path, lambda handle: handle.write("".join(f"{line}\n" for line in kept).encode("utf-8")))


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
