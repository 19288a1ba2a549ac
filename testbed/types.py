"""The data types of the seams: records that plugins return, what factories get (contexts), and
the interfaces of what they build (selectors, teachers, executors, report sections).

Everything here is public through ``testbed``; the hooks that return these are in ``testbed.hookspecs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class NoOptions:
    """The strategy takes no options."""


@dataclass(frozen=True)
class Texts:
    """Texts with integer labels in ``range(len(label_names))``."""

    texts: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class DatasetSplits:
    """What a dataset plugin loads: train and test (+ dev, + extra unlabeled texts)."""

    label_names: list[str]
    train: Texts
    test: Texts
    dev: Texts | None = None
    unlabeled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunContext:
    """Facts about the run that factories may need."""

    num_classes: int
    pool_size: int  # number of unlabeled texts; selectors index per-example state by position
    steps: int
    seed: int
    labeled: Texts | None = None  # the labeled set, for teachers that train before the run
    unlabeled_batch_size: int = 0  # unlabeled examples per step, to size warm-ups to the budget
    load_backbone: Callable[[str], tuple[Any, Any]] | None = None  # name/path/hub id -> (model, tokenizer)
    tokenize: Callable[[list[str]], dict] | None = None  # the student's tokenizer, padded to the batch

    def budget_momentum(self) -> float:
        """EMA momentum sized to this run: m = 1 - 1/τ with a time constant τ of 1% of the steps,
        at least 10. Published momenta (0.999, τ = 1000) assume ~10^5 steps; this rule gives
        0.999 back at USB's 102,400 iterations, and 0.9 at 500 steps, where 0.999 would leave
        61% of the initial value in the average at the end of the run."""
        return 1.0 - 1.0 / max(10.0, 0.01 * self.steps)


class TextBatch:
    """The texts of one view; ``inputs`` tokenizes them for the student on first use."""

    def __init__(self, texts: list[str], tokenize: Callable[[list[str]], dict]):
        self.texts, self._tokenize, self._inputs = texts, tokenize, None

    @property
    def inputs(self) -> dict:
        if self._inputs is None:
            self._inputs = self._tokenize(self.texts)
        return self._inputs


@dataclass
class Selection:
    """A selector's output: per-example ``targets`` [B, C] (probabilities; one-hot for hard
    labels) and ``weights`` [B] in [0, 1] (0 = not selected)."""

    targets: Any  # torch.Tensor
    weights: Any  # torch.Tensor


class BaseSelector:
    """Turns teacher probabilities into pseudo-targets and weights. Subclass and override
    ``select``; selectors with state across steps override the state methods so runs resume."""

    teacher_passes: int = 1  # K > 1: ``select`` gets [K, B, C] from K stochastic (dropout) teacher passes

    def select(self, probs, indices, step: int) -> Selection:
        """probs: [B, C] teacher probabilities; indices: [B] positions in the unlabeled pool."""
        raise NotImplementedError

    def stats(self) -> dict[str, float]:
        """Current thresholds and the like, recorded at every evaluation."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BaseTeacher:
    """Produces probabilities on the weak view. ``probs`` runs without gradient."""

    def probs(self, batch: TextBatch, stochastic: bool = False):
        """[B, C] probabilities for ``batch.texts`` (``batch.inputs`` holds the student's tokens).
        ``stochastic=True`` asks for dropout to be on (MC-dropout selectors)."""
        raise NotImplementedError

    def update(self, student, step: int) -> bool:
        """Called after every optimizer step (EMA teachers average here). Return True when the
        student's weights were replaced (re-initialised), so the loop resets the optimizer state."""
        return False


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Record:
    name: str
    summary: str
    options: type = NoOptions


@dataclass(frozen=True, kw_only=True)
class Augmentation(Record):
    """factory(options) -> augment(texts: list[str], seeds: np.ndarray) -> list[str].
    One seed per text: the view of a text depends only on the text, its seed and the options.
    Optional attributes of ``augment``: ``unchanged`` (count of texts returned as they were:
    empty, too short, nothing to change), ``fingerprint`` (a string that changes when data the
    options only name changes, e.g. a model directory; it joins the view-cache key), and a
    method ``fit(texts)``, called with the run's unlabeled pool before any view is made (e.g.
    tf-idf word statistics; read ``fingerprint`` after it).

    ``composite=True``: the factory is called as factory(options, context: AugmentationContext)
    and its options may hold other augmentations as ``AugmentationSpec`` fields, which the config
    checks like ``augmentation.strong`` itself (did-you-mean names, valid options, defaults filled
    in). Example, two augmentations in a row::

        @dataclass(frozen=True)
        class PairOptions:
            first: AugmentationSpec = "word_swap"
            then: AugmentationSpec = "token_mask"

        def pair(options, context):
            first, then = context.build(options.first), context.build(options.then)
            return lambda texts, seeds: then(first(texts, seeds), seeds + 1)

        Augmentation(name="pair", summary="two in a row", factory=pair, options=PairOptions, composite=True)
    """

    factory: Callable[..., Callable[[list[str], np.ndarray], list[str]]]
    composite: bool = False


AugmentationSpec = Annotated[Any, "testbed.augmentation_spec"]
"""Type of an option that names another augmentation: ``"eda"`` or ``{"name": "eda", "p_rd": 0.2}``
(``list[AugmentationSpec]`` for several). After config resolution it is the canonical table."""


@dataclass(frozen=True)
class AugmentationContext:
    """What a composite augmentation's factory gets."""

    build: Callable[[Any], Callable[[list[str], np.ndarray], list[str]]]  # spec -> augment callable
    options: Callable[[Any], Any]  # spec -> its typed options dataclass, defaults filled in


@dataclass(frozen=True, kw_only=True)
class Distance(Record):
    """factory(options) -> distance(student_logits [B, C], targets [B, C]) -> [B], per example."""

    factory: Callable[[Any], Callable[[Any, Any], Any]]


@dataclass(frozen=True, kw_only=True)
class Selector(Record):
    """factory(options, context: RunContext) -> BaseSelector."""

    factory: Callable[[Any, RunContext], BaseSelector]


@dataclass(frozen=True, kw_only=True)
class Teacher(Record):
    """factory(options, context: RunContext, student) -> BaseTeacher."""

    factory: Callable[[Any, RunContext, Any], BaseTeacher]


@dataclass(frozen=True, kw_only=True)
class Schedule(Record):
    """factory(options, context: RunContext) -> weight(step: int) -> float, the λ(t) of the
    consistency loss (0 skips the unlabeled batch)."""

    factory: Callable[[Any, RunContext], Callable[[int], float]]


@dataclass(frozen=True, kw_only=True)
class Dataset(Record):
    """factory(options) -> DatasetSplits. Raise UserError for missing or malformed data."""

    factory: Callable[[Any], DatasetSplits]


@dataclass(frozen=True, kw_only=True)
class Backbone(Record):
    """factory(options, num_labels) -> (model, tokenizer): a Hugging Face-style sequence
    classifier (``model(**inputs).logits``) and a tokenizer callable on a list of texts."""

    factory: Callable[[Any, int], tuple[Any, Any]]


@dataclass(frozen=True, kw_only=True)
class Executor(Record):
    """factory(options, context: ExecutorContext) -> BaseExecutor: where the cells of a grid run
    (a local process pool, a dask cluster, ...). Selected with ``testbed grid --executor NAME``."""

    factory: Callable[[Any, "ExecutorContext"], "BaseExecutor"]


@dataclass(frozen=True)
class ExecutorContext:
    """What ``testbed grid`` asks of an executor."""

    workers: int  # parallel cells wanted (--workers)
    cores: int  # CPU cores of this machine, for executors that size threads per worker


class BaseExecutor:
    """Runs ``fn(task)`` for every task, in parallel, in processes that can import ``testbed``.
    ``fn`` is a module-level function and tasks and results are picklable. Used as a context
    manager: ``__exit__`` stops the workers (cancelling what has not started)."""

    #: torch threads for each cell; None = the grid's choice, max(1, cores // workers)
    threads_per_task: int | None = None

    def map_unordered(self, fn: Callable[[Any], Any], tasks: list) -> Iterable[tuple[Any, Any]]:
        """Yield ``(task, fn(task))`` as each finishes; ``(task, exception)`` when the
        infrastructure (not ``fn``) failed, e.g. a worker process died."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True, kw_only=True)
class Preset(Record):
    """A named method: nested config settings over the seams, e.g.
    ``{"selector": {"name": "threshold", "threshold": 0.95}}``. Data, not code."""

    settings: Mapping[str, Any]


@dataclass(frozen=True)
class ReportFigure:
    """A matplotlib figure of a report section, saved as ``<name>.png`` beside index.html."""

    name: str  # file stem: letters, digits, - and _ ; unique within the report
    figure: Any  # matplotlib.figure.Figure (the report closes it)
    caption: str = ""


@dataclass(frozen=True)
class ReportSection:
    """One section of ``testbed report``: a title and blocks in order, each a Markdown string,
    a pandas DataFrame (rendered as a table) or a ReportFigure. ``order`` places it among the
    built-in sections (leaderboard 10, comparisons 20, ... provenance 100)."""

    name: str
    title: str
    blocks: tuple = ()
    order: int = 90


@dataclass(frozen=True)
class ReportContext:
    """What a report-section hook gets beside the results table."""

    runs_dirs: tuple[Path, ...]
    out_dir: Path  # the report directory
    baseline: str  # the baseline method or cell label of the paired comparisons
    cell_keys: tuple[str, ...]  # config keys that name a cell (the "method"), seed excluded
    metrics: Callable[[str], list[dict]]  # run_id -> its metrics.jsonl records
