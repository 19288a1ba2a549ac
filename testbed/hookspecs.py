"""Every hook a plugin can implement, and the records and interfaces they use.

A plugin is a module (or object) with functions decorated ``@hookimpl``. Collection
hooks return records: frozen dataclasses with a ``name``, a one-line ``summary``,
an ``options`` dataclass (its fields become config keys) and a factory that builds
the object the training loop calls. Two plugins returning the same name for the
same kind is an error that names both. Event hooks are broadcast to every plugin.

A complete plugin (a new distance, usable as ``distance.name=hinge``)::

    from dataclasses import dataclass
    import torch
    from testbed import hookimpl, Distance

    @dataclass(frozen=True)
    class HingeOptions:
        margin: float = 0.1

    def hinge(options):
        def distance(student_logits, targets):  # [B, C], [B, C] -> [B]
            p = student_logits.softmax(-1)
            return torch.relu((targets - p).abs() - options.margin).sum(-1)
        return distance

    @hookimpl
    def testbed_distances():
        return [Distance(name="hinge", summary="L1 beyond a margin", factory=hinge, options=HingeOptions)]
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pluggy

from testbed.types import (
    Augmentation,
    Backbone,
    Dataset,
    Distance,
    Executor,
    Preset,
    Record,
    ReportContext,
    ReportSection,
    Schedule,
    Selector,
    Teacher,
)

hookspec = pluggy.HookspecMarker("testbed")
hookimpl = pluggy.HookimplMarker("testbed")


# --------------------------------------------------------------------------- collection hooks


@hookspec
def testbed_augmentations() -> Iterable[Augmentation]:
    """Text augmentations for ``augmentation.weak`` / ``augmentation.strong``.
    Example: ``return [Augmentation(name="upper", summary="upper-cases", factory=lambda o: lambda t, s: [x.upper() for x in t])]``"""


@hookspec
def testbed_distances() -> Iterable[Distance]:
    """Consistency distances for ``distance.name``. Example: see the module docstring."""


@hookspec
def testbed_selectors() -> Iterable[Selector]:
    """Pseudo-label selectors for ``selector.name``.
    Example: ``return [Selector(name="all", summary="keep all", factory=lambda o, ctx: AllSelector())]``"""


@hookspec
def testbed_teachers() -> Iterable[Teacher]:
    """Teachers for ``teacher.name``.
    Example: ``return [Teacher(name="ema", summary="EMA", factory=EmaTeacher, options=EmaOptions)]``"""


@hookspec
def testbed_schedules() -> Iterable[Schedule]:
    """λ(t) schedules for ``schedule.name``.
    Example: ``return [Schedule(name="linear", summary="ramp", factory=lambda o, ctx: lambda t: min(1, t / ctx.steps))]``"""


@hookspec
def testbed_datasets() -> Iterable[Dataset]:
    """Datasets for ``dataset.name``.
    Example: ``return [Dataset(name="mine", summary="my corpus", factory=load_mine, options=MineOptions)]``"""


@hookspec
def testbed_backbones() -> Iterable[Backbone]:
    """Model backbones for ``backbone.name`` (any other name is tried as a local path or hub id).
    Example: ``return [Backbone(name="distil", summary="DistilBERT", factory=load_distil)]``"""


@hookspec
def testbed_presets() -> Iterable[Preset]:
    """Named methods for ``method``.
    Example: ``return [Preset(name="pi", summary="Π-model", settings={"selector": {"name": "none"}, "distance": {"name": "l2"}})]``"""


@hookspec
def testbed_executors() -> Iterable[Executor]:
    """Where grid cells run, for ``testbed grid --executor NAME`` (built-ins: serial, local, dask).
    Example: ``return [Executor(name="threads", summary="a thread pool", factory=ThreadExecutor, options=ThreadOptions)]``"""


# --------------------------------------------------------------------------- event hooks


@hookspec
def testbed_run_started(run_dir: Path, config: dict) -> None:
    """A run is about to train. Example: a tracker opens a run and logs ``config``."""


@hookspec
def testbed_evaluation(run_dir: Path, record: dict) -> None:
    """An evaluation finished; ``record`` is the line written to metrics.jsonl.
    Example: ``tracker.log_metrics(record, step=record["step"])``"""


@hookspec
def testbed_run_finished(run_dir: Path, result: dict) -> None:
    """A run finished and result.json is written. Example: a tracker closes its run."""


@hookspec
def testbed_run_failed(run_dir: Path, error: str, interrupted: bool) -> None:
    """A run stopped without a result: training raised ``error`` (also in error.json), or it was
    interrupted (Ctrl-C; it stays unfinished and reruns). Example: a tracker marks its run
    FAILED or KILLED instead of leaving it running."""


@hookspec
def testbed_report_sections(results: Any, context: ReportContext) -> Iterable[ReportSection]:
    """Extra sections for ``testbed report``; ``results`` is the runs table (a pandas DataFrame, one
    row per run, ``testbed.results.load_results`` columns plus ``cell``, ``group``, ``runs_dir``).
    Example: ``return [ReportSection(name="mine", title="Mean mask rate", blocks=(results.groupby("cell").mask_rate.mean().to_frame(),))]``"""


# kind -> (collection hook name, record class); the order is the display order.
KINDS: dict[str, tuple[str, type[Record]]] = {
    "augmentation": ("testbed_augmentations", Augmentation),
    "distance": ("testbed_distances", Distance),
    "selector": ("testbed_selectors", Selector),
    "teacher": ("testbed_teachers", Teacher),
    "schedule": ("testbed_schedules", Schedule),
    "dataset": ("testbed_datasets", Dataset),
    "backbone": ("testbed_backbones", Backbone),
    "preset": ("testbed_presets", Preset),
    "executor": ("testbed_executors", Executor),
}
