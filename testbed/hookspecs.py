"""Every hook a plugin can implement. The records they return and the contexts and interfaces
those use are in ``testbed.types``; import all of them from ``testbed``.

A plugin is a module (or object) with functions decorated ``@hookimpl``. Collection hooks return
records: frozen dataclasses with a ``name``, a one-line ``summary``, an ``options`` dataclass (its
fields become config keys) and ``factory(options, context)``, which builds the object the run
uses. Two plugins returning the same name for the same kind is an error that names both. Event
hooks are broadcast to every plugin.

A complete plugin (a new distance, usable as ``distance.name=hinge``)::

    from dataclasses import dataclass
    import torch
    from testbed import hookimpl, Distance

    @dataclass(frozen=True)
    class HingeOptions:
        margin: float = 0.1

    def hinge(options, context):  # every factory: (options, context); a distance's context is the RunContext
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
    Regulariser,
    ReportContext,
    ReportSection,
    Schedule,
    Selector,
    Task,
    Teacher,
)

hookspec = pluggy.HookspecMarker("testbed")
hookimpl = pluggy.HookimplMarker("testbed")


# --------------------------------------------------------------------------- collection hooks


@hookspec
def testbed_augmentations() -> Iterable[Augmentation]:
    """Text augmentations for ``augmentation.weak`` / ``augmentation.strong`` / ``augmentation.labeled`` (the labeled
    batch; tag-aware augmenters, ``Augmenter(tagged=...)``, rewrite a token task's tags with its words). Example::

        @hookimpl
        def testbed_augmentations():
            upper = lambda options, context: Augmenter(lambda texts, seeds: [t.upper() for t in texts])
            return [Augmentation(name="upper", summary="upper-cases every text", factory=upper)]
    """


@hookspec
def testbed_distances() -> Iterable[Distance]:
    """Consistency distances for ``distance.name``. Example::

        @hookimpl
        def testbed_distances():
            def largest_gap(options, context):  # student logits [B, C], targets [B, C] -> [B]
                return lambda logits, targets: (logits.softmax(-1) - targets).abs().amax(-1)
            return [Distance(name="largest_gap", summary="largest probability gap", factory=largest_gap)]
    """


@hookspec
def testbed_selectors() -> Iterable[Selector]:
    """Pseudo-label selectors for ``selector.name``. Example::

        class KeepSoft(BaseSelector):
            def select(self, probs, indices, step):
                return Selection(targets=probs, weights=torch.ones(len(probs)))

        @hookimpl
        def testbed_selectors():
            return [Selector(name="keep_soft", summary="every soft target, weight 1", factory=lambda options, context: KeepSoft())]
    """


@hookspec
def testbed_teachers() -> Iterable[Teacher]:
    """Teachers for ``teacher.name``. Example::

        class Initial(BaseTeacher):  # the student as it was before training
            def __init__(self, options, context):
                self.model = copy.deepcopy(context.student).eval()

            @torch.no_grad()
            def probs(self, batch, stochastic=False):
                return self.model(**batch.inputs).logits.softmax(-1)

        @hookimpl
        def testbed_teachers():
            return [Teacher(name="initial", summary="the untrained student", factory=Initial)]
    """


@hookspec
def testbed_schedules() -> Iterable[Schedule]:
    """λ(t) schedules for ``schedule.name`` (and TSA thresholds η(t) for ``tsa.name``). Example::

        @hookimpl
        def testbed_schedules():
            late = lambda options, context: lambda step: float(step > context.steps // 2)
            return [Schedule(name="second_half", summary="λ = 1 in the second half of the run", factory=late)]
    """


@hookspec
def testbed_regularisers() -> Iterable[Regulariser]:
    """Batch-level loss terms for ``regulariser.name``: loss += regulariser.loss(batch), the batch a
    ``RegularisationBatch`` (the student's logits, the labels, the selection, the selector). Example::

        class Confident(BaseRegulariser):  # entropy of the student on the labeled batch, times 0.1
            def loss(self, batch):
                p = batch.labeled_logits.softmax(-1)
                return 0.1 * -(p * p.clamp_min(1e-12).log()).sum(-1).mean()

        @hookimpl
        def testbed_regularisers():
            return [Regulariser(name="confident", summary="labeled-batch entropy, weight 0.1",
                                factory=lambda options, context: Confident())]
    """


@hookspec
def testbed_datasets() -> Iterable[Dataset]:
    """Datasets for ``dataset.name``. Example::

        @hookimpl
        def testbed_datasets():
            def colours(options, context):
                words = Texts(["red", "navy", "orange", "teal", "scarlet", "blue"], np.array([0, 1, 0, 1, 0, 1]))
                return DatasetSplits(label_names=["warm", "cool"], train=words, test=words)
            return [Dataset(name="colours", summary="six colour words", factory=colours)]
    """


@hookspec
def testbed_tasks() -> Iterable[Task]:
    """Tasks: kinds of example (built-ins: ``sentence``, ``token``). The dataset's rows choose one;
    ``dataset.task=NAME`` picks another for the same kind of rows. Example::

        class Balanced(BaseTask):  # sentence classification, also scored by balanced accuracy
            metrics = ("accuracy", "macro_f1", "balanced_accuracy")

            def score(self, probs, examples, tokenizer, max_length):
                scores = super().score(probs, examples, tokenizer, max_length)
                labels = np.asarray(examples.labels)
                hits = probs.argmax(-1) == labels
                scores["balanced_accuracy"] = float(np.mean([hits[labels == c].mean() for c in np.unique(labels)]))
                return scores

        @hookimpl
        def testbed_tasks():
            return [Task(name="balanced", summary="sentence classification, balanced accuracy too", factory=Balanced)]
    """


@hookspec
def testbed_backbones() -> Iterable[Backbone]:
    """Model backbones for ``backbone.name`` (a record's ``shorthand`` may claim other names, e.g.
    local paths and hub ids). Example::

        @hookimpl
        def testbed_backbones():
            small = lambda options, context: context.load_backbone("tiny")  # any other backbone, by name
            return [Backbone(name="small", summary="the tiny test backbone under another name", factory=small)]
    """


@hookspec
def testbed_presets() -> Iterable[Preset]:
    """Named methods for ``method``. Example::

        @hookimpl
        def testbed_presets():
            return [Preset(name="pi_model", summary="Π-model: every target, squared error",
                           settings={"selector": {"name": "none"}, "distance": {"name": "l2"}})]
    """


@hookspec
def testbed_executors() -> Iterable[Executor]:
    """Where grid cells run, for ``testbed grid --executor NAME`` (built-ins: serial, local, dask). Example::

        class Inline(BaseExecutor):
            def __init__(self, options, context):
                self.workers = context.workers

            def map_unordered(self, fn, tasks):
                print(f"running {len(tasks)} cells one by one")
                for task in tasks:
                    yield task, fn(task)

        @hookimpl
        def testbed_executors():
            return [Executor(name="inline", summary="one cell after another, here", factory=Inline)]
    """


# --------------------------------------------------------------------------- event hooks


@hookspec
def testbed_run_started(run_dir: Path, config: dict) -> None:
    """A run is about to train (a tracker opens a run and logs ``config``). Example::

        @hookimpl
        def testbed_run_started(run_dir, config):
            print(f"training {config['method']} into {run_dir}")
    """


@hookspec
def testbed_evaluation(run_dir: Path, record: dict) -> None:
    """An evaluation finished; ``record`` is the line written to metrics.jsonl. Example::

        @hookimpl
        def testbed_evaluation(run_dir, record):
            print(f"step {record['step']}: test accuracy {record['test_accuracy']:.3f}")
    """


@hookspec
def testbed_run_finished(run_dir: Path, result: dict) -> None:
    """A run finished and result.json is written (a tracker closes its run). Example::

        @hookimpl
        def testbed_run_finished(run_dir, result):
            print(f"{run_dir.name}: test accuracy {result['test_accuracy']:.3f}")
    """


@hookspec
def testbed_run_failed(run_dir: Path, error: str, interrupted: bool) -> None:
    """A run stopped without a result: training raised ``error`` (also in error.json), or it was
    interrupted (Ctrl-C; it stays unfinished and reruns); a tracker marks its run FAILED or KILLED
    instead of leaving it running. Example::

        @hookimpl
        def testbed_run_failed(run_dir, error, interrupted):
            print(f"{run_dir.name} {'was interrupted' if interrupted else 'failed'}: {error}")
    """


@hookspec
def testbed_report_sections(results: Any, context: ReportContext) -> Iterable[ReportSection]:
    """Sections of ``testbed report`` (the built-in ones come through this hook too, from
    plugins/report_sections.py); ``results`` is the runs table (a pandas DataFrame, one row per run,
    ``load_results`` columns plus ``cell``, ``group``, ``runs_dir`` and ``set``: ``runs``, or ``compare`` for
    the runs of ``--compare-to``). Example::

        @hookimpl
        def testbed_report_sections(results, context):
            rates = results.groupby("cell")["mask_rate"].mean().to_frame()
            return [ReportSection(name="mean_mask", title="Mean mask rate", blocks=(rates,), order=95)]
    """


# kind -> (collection hook name, record class); the order is the display order.
KINDS: dict[str, tuple[str, type[Record]]] = {
    "augmentation": ("testbed_augmentations", Augmentation),
    "distance": ("testbed_distances", Distance),
    "selector": ("testbed_selectors", Selector),
    "teacher": ("testbed_teachers", Teacher),
    "schedule": ("testbed_schedules", Schedule),
    "regulariser": ("testbed_regularisers", Regulariser),
    "dataset": ("testbed_datasets", Dataset),
    "task": ("testbed_tasks", Task),
    "backbone": ("testbed_backbones", Backbone),
    "preset": ("testbed_presets", Preset),
    "executor": ("testbed_executors", Executor),
}
