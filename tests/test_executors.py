"""The executors (testbed_executors): built-ins, a third-party one, the local pool's workers, a dead worker, dask."""

# dask runs on a running scheduler (a LocalCluster bound to loopback).

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from conftest import FAST
from testbed import ExecutorContext
from testbed.cli import main

BASE = [a for a in FAST if not a.startswith("train.threads")] + ["train.steps=2", "train.eval_every=2",
                                                                    "dataset.unlabeled_limit=100", "dataset.test_limit=30"]


def pid_and_threads(task):
    return os.getpid(), os.environ.get("OMP_NUM_THREADS"), task


def die(task):
    os._exit(3)  # a worker killed under the grid, e.g. by the OOM killer


def test_builtin_executors_are_listed(registry):
    assert {"serial", "local", "dask"} <= set(registry.names("executor"))
    listing = CliRunner().invoke(main, ["plugins", "--json"])
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["executors"]["provides"] == {"executor": ["serial", "local", "dask"]}


def test_local_pool_runs_tasks_in_worker_processes_with_a_share_of_the_cores(registry):
    record = registry.get("executor", "local")
    with record.factory(record.options(), ExecutorContext(workers=2, cores=4)) as pool:
        assert pool.threads_per_task == 2
        outcomes = list(pool.map_unordered(pid_and_threads, list(range(6))))
    assert sorted(task for task, _ in outcomes) == list(range(6))
    pids = {result[0] for _, result in outcomes}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert {result[1] for _, result in outcomes} == {"2"}  # set by the initializer, before any torch import
    assert all(result[2] == task for task, result in outcomes)


def test_a_dead_worker_is_reported_not_raised(registry):
    record = registry.get("executor", "local")
    with record.factory(record.options(), ExecutorContext(workers=1, cores=2)) as pool:
        outcomes = list(pool.map_unordered(die, ["a", "b"]))
    assert sorted(task for task, _ in outcomes) == ["a", "b"]
    assert all(isinstance(outcome, Exception) for _, outcome in outcomes)


THREADS_EXECUTOR = '''
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from testbed import BaseExecutor, Executor, hookimpl

@dataclass(frozen=True)
class ThreadOptions:
    log: str = ""

class ThreadExecutor(BaseExecutor):
    def __init__(self, options, context):
        with open(options.log, "a") as handle:
            handle.write(f"workers={context.workers}\\n")
        self.pool = ThreadPoolExecutor(context.workers)
        self.threads_per_task = 1

    def map_unordered(self, fn, tasks):
        futures = {self.pool.submit(fn, task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self):
        self.pool.shutdown()

@hookimpl
def testbed_executors():
    return [Executor(name="threads", summary="a thread pool", factory=ThreadExecutor, options=ThreadOptions)]
'''


def test_a_third_party_executor_from_a_plugins_directory(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "threads.py").write_text(THREADS_EXECUTOR)
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["--plugins-dir", str(plugins), "grid", "method=fixmatch", *BASE,
                                       "distance.name=l1,kl", "--executor", "threads", "-X", f"log={tmp_path / 'log'}",
                                       "--workers", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 ran" in result.output
    assert (tmp_path / "log").read_text() == "workers=1\n"
    assert len(list(out.glob("*/result.json"))) == 2


@pytest.mark.slow
def test_dask_executor_on_a_running_scheduler(tmp_path):
    from dask.distributed import LocalCluster

    out = tmp_path / "runs"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        result = CliRunner().invoke(main, ["grid", "method=fixmatch", *BASE, "train.threads=1", "distance.name=l1,kl",
                                           "--executor", "dask", "-X", f"scheduler={cluster.scheduler_address}",
                                           "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 ran" in result.output
    results = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert len(results) == 2 and {r["machine"]["torch_threads"] for r in results} == {1}


def test_unreachable_scheduler_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["grid", "method=fixmatch", *BASE, "distance.name=l1,kl", "--executor", "dask",
                                       "-X", "scheduler=tcp://127.0.0.1:9", "-X", "timeout=1",
                                       "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Could not reach the dask scheduler at 'tcp://127.0.0.1:9'" in errors[0], result.output
    assert "Traceback" not in result.output
