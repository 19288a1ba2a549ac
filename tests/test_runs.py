"""The one owner of a run directory, ``testbed.runs.execute`` (for `testbed run` and grid cells):
a run another live process holds is refused with nothing touched, leftovers of an interrupted or
failed attempt are cleaned, error.json is written once, and each status is decided before work."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import testbed.atomic
import testbed.runs
from conftest import EXPLODING_DISTANCE, FAST, read_jsonl
from testbed import hookimpl
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.grid import Task, run_cell
from testbed.plugins import load_plugins
from testbed.runs import RunFailedBefore, RunHeldElsewhere, execute, run_status

SUPERVISED = [*FAST, "method=supervised", "train.steps=2", "train.eval_every=2"]

# a process in the middle of a run: it holds the run's lock and has written part of the directory
HOLDER = """
import sys
from pathlib import Path
from testbed.runs import run_lock

out, run_id = sys.argv[1], sys.argv[2]
with run_lock(out, run_id) as mine:
    assert mine
    run_dir = Path(out) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"step": 3}\\n')
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


@contextlib.contextmanager
def held_by_another_process(out: Path, run_id: str):
    """Yields the pid of a live process that holds the run's lock, as a grid cell running it does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), run_id], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n", holder.stderr.read()
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def snapshot(run_dir: Path) -> dict:
    """Each file's content, inode and modification time: what "touched nothing" compares."""
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(run_dir.iterdir())}


def config(registry, *args: str):
    return resolve(parse_overrides([*SUPERVISED, *args]), registry)


# --------------------------------------------------------------------------- held by another process


def test_execute_refuses_a_run_another_process_holds_and_touches_nothing(tmp_path, registry, monkeypatch):
    cfg = config(registry)
    out = tmp_path / "runs"
    with held_by_another_process(out, cfg.run_id) as pid:
        before = snapshot(out / cfg.run_id)
        for force in (False, True):  # not even --force deletes a run that is running
            with pytest.raises(RunHeldElsewhere) as caught:
                execute(cfg, registry, out, force=force, progress=False)
            message = str(caught.value)
            assert f"Run {cfg.run_id} in {out} is running in another process (process {pid} on {socket.gethostname()}, since " in message
            assert "wait for it to finish, or run it into another directory with --out" in message
            assert caught.value.holder.split()[:2] == [socket.gethostname(), str(pid)]
            assert snapshot(out / cfg.run_id) == before


def test_testbed_run_on_a_run_another_process_holds_says_who_and_touches_nothing(tmp_path, registry):
    """The bug this guards: `testbed run` deleted the directory of a grid cell that was running."""
    cfg = config(registry)
    out = tmp_path / "runs"
    args = ["run", *SUPERVISED, "--out", str(out), "--quiet"]
    with held_by_another_process(out, cfg.run_id) as pid:
        before = snapshot(out / cfg.run_id)
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code == 1, refused.output
        errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and f"process {pid} on {socket.gethostname()}" in errors[0], refused.output
        assert "wait for it to finish" in errors[0] and "--out" in errors[0] and "Traceback" not in refused.output
        assert snapshot(out / cfg.run_id) == before
    # its holder gone (as if killed midway), the run is unfinished and reruns from a clean directory
    assert run_status(out, cfg.run_id) == "unfinished"
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 0 and ": finished" in ran.output, ran.output
    assert [m["step"] for m in read_jsonl(out / cfg.run_id / "metrics.jsonl")] == [2]


# --------------------------------------------------------------------------- leftovers, failures, interrupts


def test_leftovers_of_an_unfinished_or_failed_attempt_are_cleaned(registry, tmp_path):
    cfg = config(registry)
    stale = tmp_path / "runs" / cfg.run_id
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"step": 999}\n')
    (stale / "leftover.txt").write_text("from an interrupted run")
    (stale / "error.json").write_text('{"error": "RuntimeError: an earlier attempt"}')
    run_dir, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert ran and run_dir == stale
    assert sorted(p.name for p in stale.iterdir()) == ["config.json", "metrics.jsonl", "predictions.npz", "result.json"]
    assert [m["step"] for m in read_jsonl(stale / "metrics.jsonl")] == [2]
    assert json.loads((stale / "result.json").read_text()) == json.loads(json.dumps(result))
    assert run_status(tmp_path / "runs", cfg.run_id) == "done"


BOOM = "TrainingError: distance 'explode' raised RuntimeError: boom in the distance at step 1."


@pytest.fixture
def exploding(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "explode.py").write_text(EXPLODING_DISTANCE)
    return plugins


def test_a_crashing_run_leaves_error_json_and_no_result(tmp_path, exploding):
    reg = load_plugins(plugins_dirs=[exploding])
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "distance=explode"]), reg)
    with pytest.raises(UserError, match="distance 'explode' raised RuntimeError: boom in the distance at step 1") as info:
        execute(cfg, reg, tmp_path / "runs", progress=False)
    assert isinstance(info.value.__cause__, RuntimeError)  # the plugin's own exception, with its traceback
    run_dir = tmp_path / "runs" / cfg.run_id
    assert not (run_dir / "result.json").exists()
    error = json.loads((run_dir / "error.json").read_text())
    assert error["error"].startswith(BOOM) and "RuntimeError: boom in the distance" in error["traceback"]
    assert "cell" not in error and run_status(tmp_path / "runs", cfg.run_id) == "failed"


def test_a_failing_grid_cell_writes_error_json_once_with_the_traceback(tmp_path, exploding, monkeypatch):
    writes = []
    atomic_write = testbed.atomic.atomic_write  # every write of a run goes through it
    monkeypatch.setattr(testbed.atomic, "atomic_write", lambda path, write: (writes.append(path.name), atomic_write(path, write)))
    user = parse_overrides([*FAST, "method=fixmatch", "distance.name=explode"])
    cfg = resolve(user, load_plugins(plugins_dirs=[exploding]))
    out = tmp_path / "runs"
    outcome = run_cell(Task(index=1, run_id=cfg.run_id, user=user, out_dir=str(out), label="distance.name=explode",
                            plugins_dirs=(str(exploding),)))
    assert outcome["status"] == "failed" and outcome["error"].startswith(BOOM)
    assert writes == ["config.json", "error.json"]
    error = json.loads((out / cfg.run_id / "error.json").read_text())
    assert error["cell"] == "distance.name=explode" and error["error"].startswith(BOOM)
    assert "Traceback" in error["traceback"] and "boom in the distance" in error["traceback"]


def test_a_failure_in_prepare_writes_nothing_for_testbed_run_and_is_recorded_for_a_grid_cell(tmp_path, registry):
    cfg = config(registry, "dataset.labels_per_class=5000")
    with pytest.raises(UserError, match="dataset 'trec': class"):
        execute(cfg, registry, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="dataset 'trec': class"):
        execute(cfg, registry, tmp_path / "grid", progress=False, cell="dataset.labels_per_class=5000")
    run_dir = tmp_path / "grid" / cfg.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "error.json"]
    assert json.loads((run_dir / "config.json").read_text()) == cfg.resolved
    error = json.loads((run_dir / "error.json").read_text())
    assert error["cell"] == "dataset.labels_per_class=5000" and error["error"].startswith("UserError: dataset 'trec': class")


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def testbed_run_started(self, run_dir, config):
        self.events.append(("started",))

    @hookimpl
    def testbed_run_failed(self, run_dir, error, interrupted):
        self.events.append(("failed", error, interrupted))


def test_an_interrupted_run_stays_unfinished_not_failed(tmp_path, monkeypatch):
    reg = load_plugins()
    recorder = Recorder()
    reg.pm.register(recorder)

    def interrupted(cfg, parts, on_evaluation, progress, **checkpoints):
        on_evaluation({"step": 1})
        raise KeyboardInterrupt("Ctrl-C")

    monkeypatch.setattr(testbed.runs, "train", interrupted)
    cfg = config(reg)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, reg, tmp_path / "runs", progress=False)
    run_dir = tmp_path / "runs" / cfg.run_id
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl"]
    assert run_status(tmp_path / "runs", cfg.run_id) == "unfinished"
    assert recorder.events == [("started",), ("failed", "KeyboardInterrupt: Ctrl-C", True)]


# --------------------------------------------------------------------------- what is decided before any work


@pytest.fixture
def no_prepare(monkeypatch):
    """A run that is settled (finished, damaged, failed before) is decided without preparing it."""
    def prepare(cfg, registry):
        raise AssertionError("prepared a run that needed no work")

    monkeypatch.setattr(testbed.runs, "prepare", prepare)


def earlier_attempt(tmp_path, cfg, name: str, content: str) -> tuple[Path, dict]:
    """The run directory of ``cfg`` holding one file an earlier attempt left, and a snapshot of it."""
    run_dir = tmp_path / "runs" / cfg.run_id
    run_dir.mkdir(parents=True)
    (run_dir / name).write_text(content)
    return run_dir, snapshot(run_dir)


def test_a_finished_run_is_returned_as_it_is(tmp_path, registry, no_prepare):
    cfg = config(registry)
    run_dir, before = earlier_attempt(tmp_path, cfg, "result.json", '{"test_accuracy": 0.5}')
    assert execute(cfg, registry, tmp_path / "runs", progress=False) == (run_dir, {"test_accuracy": 0.5}, False)
    assert snapshot(run_dir) == before and not (tmp_path / "runs" / ".locks").exists()


def test_a_damaged_result_is_reported_with_the_fix_and_left_as_it_is(tmp_path, registry, no_prepare):
    cfg = config(registry)
    run_dir, before = earlier_attempt(tmp_path, cfg, "result.json", '{"test_accuracy": ')
    with pytest.raises(UserError, match=f"result.json is not valid JSON .* Delete {run_dir} to rerun the run, or pass --force"):
        execute(cfg, registry, tmp_path / "runs", progress=False)
    assert snapshot(run_dir) == before and run_status(tmp_path / "runs", cfg.run_id) == "damaged"


def test_a_run_that_failed_before_is_skipped_unless_retried(tmp_path, registry, no_prepare):
    cfg = config(registry)
    run_dir, before = earlier_attempt(tmp_path, cfg, "error.json", '{"error": "RuntimeError: boom"}')
    with pytest.raises(RunFailedBefore, match=f"Run {cfg.run_id} failed earlier: see {run_dir / 'error.json'}"):
        execute(cfg, registry, tmp_path / "runs", progress=False, retry_failed=False)
    assert snapshot(run_dir) == before and run_status(tmp_path / "runs", cfg.run_id) == "failed"
    with pytest.raises(AssertionError, match="prepared a run"):  # retried (the default): it is prepared
        execute(cfg, registry, tmp_path / "runs", progress=False)
