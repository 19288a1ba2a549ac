"""Where the cells of a grid run: ``testbed grid --executor serial | local | dask``.

``local`` is a process pool on this machine (spawned processes: torch and fork do not mix);
``dask`` runs on a dask.distributed cluster, a LocalCluster on 127.0.0.1 by default or any
running scheduler (``-X scheduler=tcp://HOST:8786``, e.g. one started by dask-jobqueue on SLURM
or PBS). Every worker writes into the same output directory, so it must be on a shared file
system; a cell's lock keeps two workers from running the same cell.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from testbed import BaseExecutor, Executor, UserError, hookimpl


class SerialExecutor(BaseExecutor):
    """Cells one after another in this process: no pool to start, and pdb works."""

    def __init__(self, options, context):
        self.threads_per_task = max(1, context.cores)

    def map_unordered(self, fn, tasks):
        for task in tasks:
            yield task, fn(task)


@dataclass(frozen=True)
class LocalOptions:
    start_method: str = "spawn"  # "spawn" or "forkserver"; never "fork" once torch is imported

    def __post_init__(self):
        if self.start_method not in ("spawn", "forkserver"):
            raise ValueError(f"executor option start_method must be 'spawn' or 'forkserver', got {self.start_method!r}")


def _init_worker(threads: int) -> None:
    """Before torch is imported in the worker: its thread pools get this worker's share of the cores."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True, name="orphan-watch").start()


def _exit_when_orphaned(parent: int, every: float = 0.5) -> None:
    """A worker whose grid process died (``kill PID``, OOM killer) stops too: left running, it
    would hold its cell's lock, so the resumed grid would skip that cell as running elsewhere."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)  # the cell stays unfinished; the resumed grid reruns it from a clean directory


class LocalExecutor(BaseExecutor):
    """A pool of ``--workers`` processes; each cell gets max(1, cores // workers) torch threads."""

    def __init__(self, options: LocalOptions, context):
        self.threads_per_task = max(1, context.cores // context.workers)
        self.pool = ProcessPoolExecutor(max_workers=context.workers, mp_context=multiprocessing.get_context(options.start_method),
                                        initializer=_init_worker, initargs=(self.threads_per_task,))

    def map_unordered(self, fn, tasks):
        futures = {self.pool.submit(fn, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:
                yield futures[future], exc

    def close(self, wait: bool = True):
        self.pool.shutdown(wait=wait, cancel_futures=True)

    def __exit__(self, exc_type, *exc):
        self.close(wait=exc_type is None)  # on Ctrl-C, do not wait for the running cells


@dataclass(frozen=True)
class DaskOptions:
    scheduler: str = ""  # address of a running scheduler (-X scheduler=ADDRESS); "" = a LocalCluster on 127.0.0.1
    dashboard: bool = False  # LocalCluster only: serve the dashboard on 127.0.0.1:8787 (needs bokeh)
    timeout: float = 30.0  # seconds to wait for the scheduler
    # GPUs each cell needs: submitted with dask's resources={"GPU": n}, so it runs only on workers started with
    # `--resources GPU=1` (dask-jobqueue: worker_extra_args=["--resources", "GPU=1"]); a LocalCluster's workers get one cell's worth each
    gpus_per_cell: float = 0.0

    def __post_init__(self):
        if self.gpus_per_cell < 0:
            raise ValueError(f"executor option gpus_per_cell must be 0 or more, got {self.gpus_per_cell}")


class DaskExecutor(BaseExecutor):
    """dask.distributed: a LocalCluster of ``--workers`` single-threaded processes bound to
    127.0.0.1, or the cluster of ``-X scheduler=ADDRESS``, whose workers must have testbed installed."""

    def __init__(self, options: DaskOptions, context):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UserError("The dask executor needs dask.distributed: pip install 'testbed[dask]'.") from None
        self.cluster = None
        self.resources = {"GPU": options.gpus_per_cell} if options.gpus_per_cell else None
        if options.scheduler:
            try:
                self.client = Client(options.scheduler, timeout=options.timeout)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"Could not reach the dask scheduler at {options.scheduler!r}: {exc}. "
                                "Check the address (tcp://HOST:PORT) and that the scheduler is running.") from None
            self.threads_per_task = 0  # the cluster's machines are not ours to count: train.threads or torch's default
        else:
            self.cluster = LocalCluster(n_workers=context.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:8787" if options.dashboard else None,
                                        silence_logs=logging.ERROR, resources=self.resources)  # one cell's worth a worker
            self.client = Client(self.cluster, timeout=options.timeout)
            self.threads_per_task = max(1, context.cores // context.workers)

    def map_unordered(self, fn, tasks):
        from dask.distributed import as_completed as dask_completed

        futures = {self.client.submit(fn, task, pure=False, resources=self.resources): task for task in tasks}
        for future in dask_completed(list(futures)):
            try:
                yield futures[future], future.result()
            except Exception as exc:
                yield futures[future], exc

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@hookimpl
def testbed_executors():
    return [
        Executor(name="serial", summary="one cell after another in this process (debugging)", factory=SerialExecutor),
        Executor(name="local", summary="a process pool on this machine, --workers processes", factory=LocalExecutor,
                 options=LocalOptions),
        Executor(name="dask", summary="dask.distributed: a LocalCluster on 127.0.0.1, or -X scheduler=ADDRESS",
                 factory=DaskExecutor, options=DaskOptions),
    ]
