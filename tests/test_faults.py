"""Faults, each caused for real: a full disk (a file-size limit, RLIMIT_FSIZE, in a child process) while
writing results and while filling a cache; a read-only runs or cache directory; damaged cache
shards, checkpoints and result.json; a plugin that raises inside the loop, a distance that returns
NaN, a loss that diverges; SIGKILL at many points of a grid, then the grid resumed; a hub that
cannot be reached. What each must give: one clear line saying what, where and the fix, no file
left half-written where a reader would take it as valid, and nothing already computed lost."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FAST, TIME_FIELDS, read_jsonl
from testbed.cli import main
from testbed.runs import CHECKPOINT, run_status

TIMES = {"wall_seconds", "train_seconds", "eval_seconds", "augment_seconds", "started_at", "finished_at", "machine"}
SHORT = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "train.steps=2", "train.eval_every=2"]
# a fixmatch run whose strong views (drop_swap) fill the view cache: AG News' long texts, 32 unlabeled texts a step
VIEWS = [*(o for o in FAST if not o.startswith("dataset.name")), "dataset.name=ag_news", "method=fixmatch",
         "augmentation.strong=drop_swap", "train.unlabeled_ratio=4"]

# The child process: `testbed` with, from the environment, a file-size limit (a full disk, for real:
# writes past it fail with EFBIG), a SIGKILL of itself when it fsyncs a file whose name holds KILL_AT
# (the moment a file is written, before it is renamed into place), and a log of every socket connect.
CHILD = r"""
import os, resource, signal, socket, sys
if os.environ.get("FSIZE"):
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FSIZE"]),) * 2)
if os.environ.get("KILL_AT"):
    fsync = os.fsync
    def killing_fsync(fd):
        if os.environ["KILL_AT"] in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            os.kill(os.getpid(), signal.SIGKILL)
        return fsync(fd)
    os.fsync = killing_fsync
if os.environ.get("CONNECT_LOG"):
    connect = socket.socket.connect
    def logged_connect(self, address):
        with open(os.environ["CONNECT_LOG"], "a") as log:
            log.write(f"{address}\n")
        return connect(self, address)
    socket.socket.connect = logged_connect
from testbed.cli import main
sys.exit(main(prog_name="testbed"))
"""


def run_child(*args: str, env: dict | None = None, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], env=environment, capture_output=True, text=True,
                          timeout=timeout, **popen)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def untimed(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMES}


def files_of(out: Path) -> dict[str, tuple]:
    """Every file under ``out`` (locks aside): content and modification time."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file() and ".locks" not in p.parts}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp"))


@pytest.fixture(scope="module")
def finished_dir(tmp_path_factory) -> Path:
    """A runs directory holding one finished run (supervised, 2 steps)."""
    out = tmp_path_factory.mktemp("finished") / "runs"
    result = CliRunner().invoke(main, ["run", *SHORT, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def runs(finished_dir, tmp_path) -> Path:
    """A copy of ``finished_dir`` for a test to fault in."""
    out = tmp_path / "runs"
    shutil.copytree(finished_dir, out, copy_function=shutil.copy2)
    return out


# --------------------------------------------------------------------------- a full disk, a read-only directory


@pytest.mark.slow  # a child process (a file-size limit, a fresh environment): torch's import alone takes seconds
def test_a_full_disk_while_writing_results(runs, tmp_path):
    """predictions.npz (500 test texts) is over the 8 KB file-size limit, everything before it under."""
    before = files_of(runs)
    args = ["run", *SHORT, "dataset.test_limit=500", "--out", str(runs), "--quiet"]
    full = run_child(*args, env={"FSIZE": "8000", "TESTBED_CACHE": str(tmp_path / "cache")})
    assert full.returncode == 1, full.stdout + full.stderr
    (error,) = error_lines(full.stderr)
    assert "predictions.npz: File too large (EFBIG)" in error and "raise the limit or write elsewhere" in error, error
    assert "Traceback" not in full.stderr
    (run_dir,) = (p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and f"{p.name}/result.json" not in before)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl"]  # no half-written file, no tmp
    assert run_status(runs, run_dir.name) == "unfinished"  # not failed: with room again, it just runs
    assert {k: v for k, v in files_of(runs).items() if k in before} == before  # the finished run, untouched
    again = CliRunner().invoke(main, args, env={"TESTBED_CACHE": str(tmp_path / "cache")})
    assert again.exit_code == 0 and "finished" in again.output, again.output
    assert (run_dir / "result.json").is_file()


@pytest.mark.slow  # a child process (a file-size limit, a fresh environment): torch's import alone takes seconds
def test_a_full_disk_while_filling_the_view_cache_costs_the_cache_not_the_run(runs, tmp_path):
    """Each view shard (~18 KB) is over the 10 KB limit; the run's own files are under it."""
    cache = tmp_path / "cache"
    args = ["run", *VIEWS, "--out", str(runs), "--quiet"]
    full = run_child(*args, env={"FSIZE": "10000", "TESTBED_CACHE": str(cache)})
    assert full.returncode == 0, full.stdout + full.stderr
    warned = [line for line in full.stderr.splitlines() if line.startswith("Warning:")]
    assert warned and all("Could not write the cache entry" in w and "File too large (EFBIG)" in w and "The run goes on" in w
                          for w in warned), full.stderr
    assert "Traceback" not in full.stderr and not list(cache.rglob("shard-*.npz")) and not leftovers(cache)
    with_room = CliRunner().invoke(main, ["run", *VIEWS, "--out", str(tmp_path / "with_room"), "--quiet"],
                                   env={"TESTBED_CACHE": str(tmp_path / "cache_with_room")})
    assert with_room.exit_code == 0, with_room.output
    (made,) = (tmp_path / "with_room").glob("*/result.json")
    assert untimed(json.loads((runs / made.parent.name / "result.json").read_text())) == untimed(json.loads(made.read_text()))


@contextlib.contextmanager
def read_only(directory: Path):
    """``directory`` read-only for this process: a read-only bind mount as root (root ignores modes),
    else mode 555."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    made = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {made.stderr.decode().strip()}")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_runs_directory(runs, tmp_path, monkeypatch):
    before = files_of(runs)
    (finished,) = runs.glob("*/result.json")
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    with read_only(runs):
        new = CliRunner().invoke(main, ["run", *SHORT, "seed=1", "--out", str(runs), "--quiet"])
        done = CliRunner().invoke(main, ["run", *SHORT, "--out", str(runs), "--quiet"])
        grid = CliRunner().invoke(main, ["grid", *SHORT, "seed=0,1", "--executor", "serial", "--out", str(runs), "--quiet"])
    assert new.exit_code == 1 and isinstance(new.exception, SystemExit), new.output
    (error,) = error_lines(new.output)
    assert f"Could not write {runs}: Read-only file system (EROFS). The file system is read-only: pass --out" in error
    assert done.exit_code == 0 and "already finished" in done.output, done.output  # reading a finished run needs no write
    assert grid.exit_code == 1 and len(error_lines(grid.output)) == 1 and "Read-only file system" in grid.output, grid.output
    assert "Traceback" not in new.output + grid.output
    assert files_of(runs) == before and finished.is_file()


def test_a_read_only_cache_directory_costs_the_cache_not_the_run(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("TESTBED_CACHE", str(cache))
    with read_only(cache):
        result = CliRunner().invoke(main, ["run", *VIEWS, "train.steps=3", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Warning: Could not write the cache entry" in result.output and "Read-only file system (EROFS)" in result.output


# --------------------------------------------------------------------------- damaged caches, checkpoints, results


def damage(paths: list[Path]) -> None:
    """The first file cut in half (as by a full disk or a kill), the others garbage."""
    first, *others = paths
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    for path in others:
        path.write_bytes(os.urandom(path.stat().st_size))


@pytest.mark.parametrize("kind, args", [
    ("views", VIEWS),
    ("features", [*(o for o in FAST if not o.startswith("backbone.")), "backbone.name=frozen", "backbone.encoder=tiny",
                  "backbone.max_length=32", "train.lr=1e-2"]),
], ids=["view cache", "frozen features"])
def test_damaged_cache_shards_are_never_used_and_are_recomputed(tmp_path, monkeypatch, kind, args):
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))
    first = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "first"), "--quiet"])
    assert first.exit_code == 0, first.output
    shards = sorted((tmp_path / "cache" / kind).rglob("shard-*.npz"))
    assert shards, f"the run wrote no {kind} shards"
    damage(shards)
    again = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "again"), "--quiet"])
    assert again.exit_code == 0, again.output
    skipped = [line for line in again.output.splitlines() if line.startswith("Warning: Skipping unreadable cache shard")]
    assert len(skipped) == len(shards) and "Traceback" not in again.output, again.output
    assert not any(path.exists() for path in shards)  # removed: never read again
    (a,), (b,) = (tmp_path / "first").glob("*/result.json"), (tmp_path / "again").glob("*/result.json")
    assert untimed(json.loads(a.read_text())) == untimed(json.loads(b.read_text()))
    third = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "third"), "--quiet"])
    assert third.exit_code == 0 and "Warning" not in third.output, third.output  # the recomputed shards are whole


INTERRUPT_AT_STEP_6 = """
from testbed import hookimpl

@hookimpl
def testbed_evaluation(run_dir, record):
    if record["step"] == 6:
        raise KeyboardInterrupt
"""


def test_a_truncated_checkpoint_is_reported_and_the_run_starts_over(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "interrupt.py").write_text(INTERRUPT_AT_STEP_6)
    args = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "method=fixmatch", "train.steps=9",
            "train.eval_every=3", "train.checkpoint_every=3", "--out", str(tmp_path / "runs"), "--quiet"]
    stopped = CliRunner().invoke(main, ["--plugins-dir", str(plugins), "run", *args])
    assert stopped.exit_code != 0
    (checkpoint,) = (tmp_path / "runs").glob(f"*/{CHECKPOINT}")
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # as by a full disk or a kill
    resumed = CliRunner().invoke(main, ["run", *args])
    assert resumed.exit_code == 0, resumed.output
    (warning,) = [line for line in resumed.output.splitlines() if line.startswith("Warning:")]
    assert f"Ignoring the checkpoint {checkpoint}" in warning and "the run starts again from step 0" in warning
    never = CliRunner().invoke(main, ["run", *args[:-3], "--out", str(tmp_path / "never"), "--quiet"])
    assert never.exit_code == 0, never.output
    (a,), (b,) = (tmp_path / "runs").glob("*/result.json"), (tmp_path / "never").glob("*/result.json")
    assert untimed(json.loads(a.read_text())) == untimed(json.loads(b.read_text()))
    assert [r["step"] for r in read_jsonl(a.parent / "metrics.jsonl")] == [3, 6, 9]


def test_what_unfinished_runs_hold_is_listed_and_removed_on_request(runs, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "interrupt.py").write_text(INTERRUPT_AT_STEP_6)
    args = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "method=fixmatch", "train.steps=9",
            "train.eval_every=3", "train.checkpoint_every=3", "--out", str(runs), "--quiet"]
    assert CliRunner().invoke(main, ["--plugins-dir", str(plugins), "run", *args]).exit_code != 0
    (checkpoint,) = runs.glob(f"*/{CHECKPOINT}")
    size = checkpoint.stat().st_size
    listed = CliRunner().invoke(main, ["unfinished", str(runs), "--json"])
    (row,) = json.loads(listed.output)
    assert row["run_id"] == checkpoint.parent.name and row["status"] == "unfinished" and row["last_evaluated_step"] == 6
    assert row["checkpoint_bytes"] == size and row["bytes"] > size
    table = CliRunner().invoke(main, ["unfinished", str(runs)])
    assert "1 run(s) without a result hold" in table.output and f"testbed unfinished {runs} --remove" in table.output
    results = CliRunner().invoke(main, ["results", str(runs)])
    assert results.exit_code == 0 and "1 run(s) without a result hold" in results.output and "in checkpoints" in results.output
    finished = files_of(runs / next(p.parent.name for p in runs.glob("*/result.json")))
    removed = CliRunner().invoke(main, ["unfinished", str(runs), "--remove"])
    assert removed.exit_code == 0 and "Removed 1 run(s)" in removed.output and not checkpoint.parent.exists()
    assert files_of(runs / next(p.parent.name for p in runs.glob("*/result.json"))) == finished  # finished runs stay
    assert "No unfinished runs" in CliRunner().invoke(main, ["unfinished", str(runs)]).output


@pytest.mark.parametrize("damaged", [b'{"test_accuracy": 0.', os.urandom(64) + b"\xff", b"[]"],
                         ids=["truncated", "garbage", "not a result"])
def test_a_damaged_result_json_is_reported_never_used_and_left_as_it_is(runs, damaged):
    (path,) = runs.glob("*/result.json")
    path.write_bytes(damaged)
    args = ["run", *SHORT, "--out", str(runs), "--quiet"]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and isinstance(again.exception, SystemExit), again.output
    (error,) = error_lines(again.output)
    assert f"{path} is not" in error and f"Delete {path.parent} to rerun the run, or pass --force" in error
    assert path.read_bytes() == damaged and run_status(runs, path.parent.name) == "damaged"
    listed = CliRunner().invoke(main, ["grid", *SHORT, "seed=0", "--dry-run", "--out", str(runs)])
    assert f"{path.parent.name}  damaged" in listed.output, listed.output
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0 and json.loads(path.read_text())["run_id"] == path.parent.name, forced.output


# --------------------------------------------------------------------------- a plugin that raises, NaN, divergence

FAULTY = '''
import torch
from testbed import Distance, hookimpl

def step_counter():
    calls = {"n": 0}
    def third():
        calls["n"] += 1
        return calls["n"] == 3
    return third

def raising(options, context):
    third = step_counter()
    def distance(logits, targets):
        if third():
            raise RuntimeError("boom at its third call")
        return (logits.softmax(-1) - targets).abs().sum(-1)
    return distance

def nan_distance(options, context):
    third = step_counter()
    def distance(logits, targets):
        gap = (logits.softmax(-1) - targets).abs().sum(-1)
        return gap * float("nan") if third() else gap
    return distance

@hookimpl
def testbed_distances():
    return [Distance(name="raising", summary="raises at its third call", factory=raising),
            Distance(name="nan_distance", summary="NaN at its third call", factory=nan_distance)]
'''
LOOP = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "method=fixmatch", "selector.threshold=0",
        "train.steps=4", "train.eval_every=2"]  # threshold 0: every step has an unlabeled batch and a distance


@pytest.fixture
def faulty(tmp_path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "faulty.py").write_text(FAULTY)
    return plugins


@pytest.mark.parametrize("args, message", [
    (["distance.name=raising"], "distance 'raising' raised RuntimeError: boom at its third call at step 3. The fault is in "
                                "the plugin's code ("),
    (["distance.name=nan_distance"], "distance 'nan_distance' returned NaN at step 3 (its mean over the batch)"),
    (["train.lr=1e30"], "the student's outputs are not finite at step 2: training diverged (train.lr = 1e+30"),
], ids=["raises", "NaN", "diverges"])
def test_a_fault_inside_the_loop_names_the_seam_and_the_step(faulty, tmp_path, args, message):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["--plugins-dir", str(faulty), "run", *LOOP, *args, "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (error,) = error_lines(result.output)
    (error_file,) = out.glob("*/error.json")
    assert message in error and error.endswith(f"Traceback: {error_file}."), error
    recorded = json.loads(error_file.read_text())
    assert recorded["error"].startswith(f"TrainingError: {message}") and "Traceback (most recent call last)" in recorded["traceback"]
    assert not list(out.glob("*/result.json")) and run_status(out, error_file.parent.name) == "failed"


def test_in_a_grid_the_faulty_cells_fail_and_the_others_finish(faulty, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["--plugins-dir", str(faulty), "grid", *LOOP, "distance.name=l1,raising,nan_distance",
                                       "--executor", "serial", "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "3 cells: 1 ran, 0 already done, 2 failed" in result.output
    assert "(distance.name=raising) failed: TrainingError: distance 'raising' raised RuntimeError" in result.output
    assert "(distance.name=nan_distance) failed: TrainingError: distance 'nan_distance' returned NaN at step 3" in result.output
    assert len(list(out.glob("*/result.json"))) == 1 and len(list(out.glob("*/error.json"))) == 2
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- SIGKILL anywhere in a grid, then resume

KILL_GRID = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "method=fixmatch",
             "augmentation.strong=drop_swap", "train.steps=24", "train.eval_every=3", "train.checkpoint_every=3", "seed=0,1"]


def kill_at_random(grid: list[str], env: dict, out: Path, rng: random.Random) -> int:
    """Start the grid, and kill -9 it a random moment (0.1-0.6 s) after its next evaluation: in training or
    in an evaluation. Returns its exit status."""
    evaluations = lambda: sum(len(read_jsonl(p)) for p in out.glob("*/metrics.jsonl"))  # noqa: E731
    before = evaluations()
    child = subprocess.Popen([sys.executable, "-c", CHILD, *grid], env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline and evaluations() <= before:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.1, 0.6))
    child.send_signal(signal.SIGKILL)
    return child.wait()


@pytest.mark.slow
def test_sigkill_anywhere_in_a_grid_then_resume_gives_the_numbers_of_an_uninterrupted_grid(tmp_path, monkeypatch):
    """The grid is killed (kill -9) again and again: as it writes a view-cache shard, metrics.jsonl (an
    evaluation), a checkpoint and result.json, and at random moments of training and evaluation; each
    time it has done a little more. Resumed, every cell ends done with exactly the numbers of a grid
    never stopped, and nothing of the killed attempts is left in the run directories."""
    out, cache = tmp_path / "runs", tmp_path / "cache"
    grid = ["grid", *KILL_GRID, "--executor", "serial", "--out", str(out), "--quiet"]
    rng, kills, said = random.Random(15), [], ""
    for target in ["shard-", None, "metrics.jsonl", CHECKPOINT, None, "result.json"]:
        env = {"TESTBED_CACHE": str(cache), **({"KILL_AT": target} if target else {})}
        if target:  # killed by itself as it writes that file (after writing it whole, before renaming it into place)
            done = run_child(*grid, env=env, timeout=120)
            kills.append((target, done.returncode))
            said += done.stderr
        else:
            kills.append(("random", kill_at_random(grid, env, out, rng)))
    assert all(code == -signal.SIGKILL for _, code in kills), kills  # killed every time, never finished
    assert "resuming from step" in said  # some attempts went on from a checkpoint of a killed one

    monkeypatch.setenv("TESTBED_CACHE", str(cache))
    resumed = CliRunner().invoke(main, grid)
    assert resumed.exit_code == 0 and "2 cells:" in resumed.output and "0 failed" in resumed.output, resumed.output
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "never_cache"))
    never = CliRunner().invoke(main, [*grid[:-3], "--out", str(tmp_path / "never"), "--quiet"])
    assert never.exit_code == 0, never.output
    drop = lambda path: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in read_jsonl(path)]  # noqa: E731
    for result in (tmp_path / "never").glob("*/result.json"):
        run_dir = out / result.parent.name
        assert untimed(json.loads((run_dir / "result.json").read_text())) == untimed(json.loads(result.read_text()))
        assert drop(run_dir / "metrics.jsonl") == drop(result.parent / "metrics.jsonl")
        with np.load(run_dir / "predictions.npz") as a, np.load(result.parent / "predictions.npz") as b:
            assert all(np.array_equal(a[k], b[k]) for k in b.files)
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl", "predictions.npz", "result.json"]
    assert len(list(out.glob("*/result.json"))) == 2


# --------------------------------------------------------------------------- no surprise network


@pytest.mark.slow  # a child process (a file-size limit, a fresh environment): torch's import alone takes seconds
def test_a_run_on_local_models_and_data_never_connects_when_the_hub_is_unreachable(tmp_path):
    """HF_HUB_OFFLINE unset and the hub at a port nobody listens on: a run on the tiny backbone and a
    local CSV makes no connection at all (a connect would be logged), and ends as fast as offline."""
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"example {c} number {i} with some words,{'pos' if c else 'neg'}" for c in (0, 1) for i in range(20)]
    (data / "all.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    log = tmp_path / "connects.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", CONNECT_LOG=str(log), TESTBED_CACHE=str(tmp_path / "cache"))
    args = [*(o for o in FAST if not o.startswith("dataset.")), f"dataset.name={data / 'all.csv'}", "dataset.test_fraction=0.25",
            "dataset.labels_per_class=5", "dataset.validation_per_class=2"]
    started = time.monotonic()
    local = subprocess.run([sys.executable, "-c", CHILD, "run", *args, "--out", str(tmp_path / "runs"), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    assert local.returncode == 0, local.stdout + local.stderr
    assert not log.exists(), log.read_text()  # not one connect, to the hub or anywhere
    assert seconds < 120, f"a local run took {seconds:.0f} s"

    started = time.monotonic()
    hub = subprocess.run([sys.executable, "-c", CHILD, "run", "backbone.name=some-org/no-such-model", "dataset.name=trec",
                          "dataset.test_limit=10", "--out", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                         timeout=300)
    seconds = time.monotonic() - started
    (error,) = error_lines(hub.stderr)
    assert hub.returncode == 1 and "Backbone 'some-org/no-such-model' is not a local directory and not in the Hugging Face " \
                                   "cache" in error and "the hub at http://127.0.0.1:9 cannot be reached" in error, hub.stderr
    assert log.read_text().splitlines() == ["('127.0.0.1', 9)"]  # one attempt, refused at once: no retries
    assert seconds < 60, f"failing took {seconds:.0f} s"
