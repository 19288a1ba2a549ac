"""The data types of the seams: the records plugins return, the context each kind of factory gets,
and the interfaces of what factories build (augmenters, teachers, selectors, executors, report
sections).

Every record but ``Preset`` is a ``Component``: ``factory(options, context)`` builds the object the
run uses, from the typed ``options`` (its fields are the config keys) and the context record of its
kind (``AugmentationContext``, ``DatasetContext``, ``BackboneContext``, ``TaskContext``, ``RunContext``,
``TeacherContext``, ``RegulariserContext``, ``ExecutorContext``). Everything here is public through ``testbed``; the hooks
that return the records are in ``testbed.hookspecs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class NoOptions:
    """The strategy takes no options."""


@dataclass(frozen=True)
class Texts:
    """Texts with integer labels in ``range(len(label_names))`` (sentence classification), or, for token
    classification, texts whose words (split on whitespace) each have a tag: ``tags[i]`` is text i's
    int array, one label per word, and ``labels`` is -1 (a sentence has no label of its own)."""

    texts: list[str]
    labels: np.ndarray
    tags: list[np.ndarray] | None = None  # token classification: per-word labels of each text; None: sentence labels

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class DatasetSplits:
    """What a dataset plugin loads: train and test (+ dev, + extra unlabeled texts). Its rows choose
    the task: texts with ``tags`` are token classification (task ``token``), else sentence
    classification (``sentence``); ``task`` names another registered task for such rows."""

    label_names: list[str]
    train: Texts
    test: Texts
    dev: Texts | None = None
    unlabeled: list[str] = field(default_factory=list)
    task: str = ""  # a task name (testbed_tasks); "" = the default of its rows: "sentence", or "token" when train has tags


class Encoded(dict):
    """Model inputs (``model(**encoded)`` sees only the dict's items) and, beside them, what the task
    needs to read the model's outputs: ``words`` [B, T], for token tasks the index of the word each
    position's token starts (its first subword), -1 elsewhere (special tokens, padding, later
    subwords, words cut by truncation); None for sentence tasks."""

    def __init__(self, inputs: Mapping[str, Any], words: Any = None):
        super().__init__(inputs)
        self.words = words

    def to(self, device) -> Encoded:
        """Everything on ``device`` (tensors only; on the same device ``.to`` returns the same tensors)."""
        words = self.words.to(device) if self.words is not None else None
        return Encoded({key: value.to(device) for key, value in self.items()}, words=words)


class TextBatch:
    """The texts of one view; ``inputs`` tokenizes them for the student on first use."""

    def __init__(self, texts: list[str], tokenize: Callable[[list[str]], dict]):
        self.texts, self._tokenize, self._inputs = texts, tokenize, None

    @property
    def inputs(self) -> dict:
        if self._inputs is None:
            self._inputs = self._tokenize(self.texts)
        return self._inputs


class Sampler:
    """Endless shuffled passes over range(n), ``batch_size`` indices at a time (a batch may span two
    passes), one permutation of ``rng`` per pass. Its state resumes a run mid-pass."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order, self.pos = rng.permutation(n), 0

    def next(self) -> np.ndarray:
        out = []
        while len(out) < self.batch_size:
            if self.pos == self.n:
                self.order, self.pos = self.rng.permutation(self.n), 0
            take = self.order[self.pos : self.pos + self.batch_size - len(out)]
            out.extend(take)
            self.pos += len(take)
        return np.asarray(out)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order, self.pos = np.asarray(state["order"], dtype=np.int64), int(state["pos"])


# --------------------------------------------------------------------------- contexts: what factories get


@dataclass(frozen=True)
class RunContext:
    """Facts about the run, for the factories of selectors, distances and schedules."""

    num_classes: int
    pool_size: int  # number of unlabeled rows (texts; words of a token task); selectors index per-row state by position
    steps: int
    seed: int
    labeled: Texts | None = None  # the labeled set, for teachers that train before the run
    unlabeled_batch_size: int = 0  # unlabeled examples per step, to size warm-ups to the budget
    load_backbone: Callable[[str], tuple[Any, Any]] | None = None  # name/path/hub id -> (model, tokenizer), the run's registry
    tokenize: Callable[[list[str]], dict] | None = None  # the student's tokenizer, padded to the batch
    device: str = "cpu"  # where the student lives (train.device resolved): state tensors and own models go there too
    label_names: tuple[str, ...] = ()  # the dataset's class names, in label order (prompted teachers read them)
    # the run's BaseTask; None = sentence classification. Token tasks: a row is a word, pool_size counts the pool's
    # words and selectors' indices are word positions in the pool (see BaseTask)
    task: Any = None

    def budget_momentum(self) -> float:
        """EMA momentum sized to this run: m = 1 - 1/τ with a time constant τ of 1% of the steps,
        at least 10. Published momenta (0.999, τ = 1000) assume ~10^5 steps; this rule gives
        0.999 back at USB's 102,400 iterations, and 0.9 at 500 steps, where 0.999 would leave
        61% of the initial value in the average at the end of the run."""
        return 1.0 - 1.0 / max(10.0, 0.01 * self.steps)


@dataclass(frozen=True)
class TeacherContext(RunContext):
    """What a teacher's factory gets: the run's facts and the student it teaches."""

    student: Any = None  # the model being trained (torch.nn.Module); EMA and snapshot teachers copy it


@dataclass(frozen=True)
class RegulariserContext(RunContext):
    """What a regulariser's factory gets: the run's facts, the student the loss terms train and its
    tokenizer (an auxiliary task on the shared encoder tokenizes and runs it itself), and the run's
    selector (a term that reads a selector's state checks it here, before the run)."""

    student: Any = None  # the model being trained (torch.nn.Module)
    tokenizer: Any = None  # the student's Hugging Face tokenizer (mask token, special tokens)
    selector: Any = None  # the run's BaseSelector, built before the regulariser


@dataclass(frozen=True)
class DatasetContext:
    """What a dataset's factory gets."""

    data_dir: Path | None = None  # the local data directory ($TESTBED_DATA, or ../shared/data beside the checkout)
    seed: int = 0  # the run's seed: for a dataset that draws its own split (a test set split off one file)
    # False: read only what is local, never download (`testbed datasets` lists without fetching every benchmark)
    download: bool = True


@dataclass(frozen=True)
class BackboneContext:
    """What a backbone's factory gets."""

    num_labels: int
    # any backbone name, local path or hub id -> (model, tokenizer), through the run's own registry
    # (so a backbone that wraps another, e.g. a frozen encoder, sees plugins from --plugins-dir too)
    load_backbone: Callable[[str], tuple[Any, Any]]
    # the model head the task needs (BaseTask.head): "sequence", logits [B, C] per text (a sequence classifier);
    # "token", logits [B, T, C] per token (a token classifier, e.g. AutoModelForTokenClassification)
    head: str = "sequence"


@dataclass(frozen=True)
class TaskContext:
    """What a task's factory gets."""

    label_names: tuple[str, ...]  # the dataset's classes (tags of a token task), in label order
    pool_texts: tuple[str, ...] | list[str] = ()  # the run's unlabeled pool: a token task numbers its words


@dataclass(frozen=True)
class AugmentationContext:
    """What an augmentation's factory gets: augmentations made of others build them here."""

    build: Callable[[Any], Callable[[list[str], np.ndarray], list[str]]]  # spec -> augmenter
    options: Callable[[Any], Any]  # spec -> its typed options dataclass, defaults filled in


@dataclass(frozen=True)
class ExecutorContext:
    """What ``testbed grid`` asks of an executor."""

    workers: int  # parallel cells wanted (--workers)
    cores: int  # CPU cores of this machine, for executors that size threads per worker


# --------------------------------------------------------------------------- what factories build


class Augmenter:
    """What an augmentation's factory returns: ``augmenter(texts, seeds) -> views``, one seed per
    text; a text's view depends only on the text, its seed and the options. Wrap a function
    (``Augmenter(fn)``) or subclass and override ``augment``. It counts ``seen`` texts and
    ``unchanged`` views (equal to their text: too short, nothing to change).

    Tagged examples (``augmentation.labeled`` of a token task: words joined by single spaces, an int
    tag per word): ``augmenter.tagged(texts, tags, seeds) -> (views, tags)``. An augmenter that keeps
    words returns its views with the tags as they were; one that rewrites tags with the words passes
    ``tagged=fn`` (``fn(texts, tags, seeds) -> (views, tags)``) or overrides ``augment_tagged``, and
    may read the run's labeled set in ``fit_labeled`` (mention replacement's dictionary). Example, a
    tagged-only augmentation that reverses the words of sentences without entities::

        def reverse(texts, tags, seeds):
            plain = [not t.any() for t in tags]  # tag 0 = O here
            return [" ".join(x.split()[::-1]) if ok else x for x, ok in zip(texts, plain)], tags

        Augmenter(tagged=reverse, needs_tags=True)
    """

    #: changes when data the options only name changes (a model directory, a word list): it joins the view-cache key
    fingerprint: str = ""
    #: True when views are always the texts themselves (identity): no cache, no change statistics
    passthrough: bool = False
    #: True when every view keeps each word (whitespace-separated) in its place: a word is replaced by one word
    #: or kept, never deleted, inserted, moved, split or merged, so each word's tag still applies (token tasks)
    keeps_words: bool = False
    #: True when it works only on tagged examples (it reads the gold tags: entity mentions, O words, segments):
    #: never a view of unlabeled texts, only ``augmentation.labeled`` of a token task
    needs_tags: bool = False

    def __init__(self, fn: Callable[[list[str], np.ndarray], list[str]] | None = None, fingerprint: str = "",
                 passthrough: bool = False, keeps_words: bool = False,
                 tagged: Callable[[list[str], list[np.ndarray], np.ndarray], tuple[list[str], list[np.ndarray]]] | None = None,
                 needs_tags: bool = False):
        self.fn, self.tagged_fn, self.seen, self.unchanged = fn, tagged, 0, 0
        self.fingerprint = fingerprint or type(self).fingerprint
        self.passthrough = passthrough or type(self).passthrough
        self.keeps_words = keeps_words or self.passthrough or type(self).keeps_words
        self.needs_tags = needs_tags or type(self).needs_tags

    @property
    def tag_aware(self) -> bool:
        """True when it rewrites the tags with the words (``tagged=`` given or ``augment_tagged`` overridden), so
        it may move, insert or delete words of a token task's labeled examples."""
        return self.tagged_fn is not None or type(self).augment_tagged is not Augmenter.augment_tagged

    @property
    def serves_tags(self) -> bool:
        """True when ``tagged`` works: its views keep every word in place, or it rewrites the tags."""
        return self.keeps_words or self.tag_aware

    def augment(self, texts: list[str], seeds: np.ndarray) -> list[str]:
        if self.fn is None:
            from testbed.errors import UserError

            raise UserError(f"{type(self).__name__} needs gold tags (it augments tagged examples only); use it as "
                            "augmentation.labeled of a token task, not as a view of plain texts.")
        return self.fn(texts, seeds)

    def augment_tagged(self, texts: list[str], tags: list[np.ndarray], seeds: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
        """Views of tagged examples and each view's tags, one per word. Default: ``tagged`` when given,
        else ``augment`` with the tags unchanged (only for an augmenter that keeps words)."""
        if self.tagged_fn is not None:
            return self.tagged_fn(texts, tags, seeds)
        if not self.keeps_words:
            raise ValueError(f"{type(self).__name__} neither keeps every word in place nor rewrites tags: it cannot augment "
                             "tagged examples (check Augmenter.serves_tags first)")
        return self.augment(texts, seeds), list(tags)

    def fit(self, texts: list[str]) -> None:
        """Called with the run's unlabeled pool before any view is made (e.g. tf-idf statistics);
        a fitted augmenter sets ``fingerprint`` from what it learned."""

    def fit_labeled(self, texts: list[str], tags: list[np.ndarray], label_names: tuple[str, ...]) -> None:
        """Called once with the run's labeled set before ``augmentation.labeled`` augments a tagged batch
        (a token task): texts, each word's tag id, the tag names (mention replacement's dictionary)."""

    def __call__(self, texts, seeds) -> list[str]:
        texts = list(texts)
        seeds = np.asarray(seeds)
        if len(seeds) != len(texts):
            raise ValueError(f"augment() got {len(texts)} texts and {len(seeds)} seeds; pass one seed per text")
        out = self.augment(texts, seeds) if texts else []
        self.seen += len(texts)
        self.unchanged += sum(1 for a, b in zip(out, texts) if a == b)
        return out

    def tagged(self, texts, tags, seeds) -> tuple[list[str], list[np.ndarray]]:
        """``augment_tagged`` checked and counted, as ``__call__`` is for ``augment``: (views, their tags)."""
        texts, seeds = list(texts), np.asarray(seeds)
        tags = [np.asarray(t, dtype=np.int64) for t in tags]
        if not len(texts) == len(tags) == len(seeds):
            raise ValueError(f"tagged() got {len(texts)} texts, {len(tags)} tag arrays and {len(seeds)} seeds; pass one of each per text")
        if not texts:
            return [], []
        views, new = self.augment_tagged(texts, tags, seeds)
        new = [np.asarray(t, dtype=np.int64) for t in new]
        if len(views) != len(texts) or len(new) != len(texts):
            raise ValueError(f"augment_tagged() returned {len(views)} views and {len(new)} tag arrays for {len(texts)} texts")
        self.seen += len(texts)
        self.unchanged += sum(1 for a, b in zip(views, texts) if a == b)
        return list(views), new


@dataclass
class Selection:
    """A selector's output: per-example ``targets`` [B, C] (probabilities; one-hot for hard
    labels), ``weights`` [B] in [0, 1] (0 = not selected), and the teacher ``probs`` [B, C] they
    came from (the mean of several passes for selectors that ask for more than one)."""

    targets: Any  # torch.Tensor
    weights: Any  # torch.Tensor
    probs: Any = None  # torch.Tensor; filled in by BaseSelector.choose


class BaseTeacher:
    """Produces probabilities on the weak view. ``probs`` runs without gradient."""

    #: True when ``probs`` never changes during the run (a separate model, trained or prompted before it):
    #: the run then records the teacher's own test accuracy beside the student's
    fixed: bool = False

    def probs(self, batch: TextBatch, stochastic: bool = False):
        """[B, C] probabilities for ``batch.texts`` (``batch.inputs`` holds the student's tokens).
        ``stochastic=True`` asks for dropout to be on (MC-dropout selectors)."""
        raise NotImplementedError

    def update(self, student, step: int, training: Training) -> None:
        """Called after every optimizer step: EMA teachers average here; a teacher that
        re-initialises the student calls ``training.restart()``."""

    def evaluation_model(self):
        """The model the method's paper evaluates instead of the student, or None (the student is it).
        Mean Teacher's EMA teacher returns its averaged model: the papers report it. The model takes
        the student's tokens (``model(**inputs).logits``) and has ``train``/``eval``. With
        ``train.evaluate = "auto"`` the run reports this model's metrics as its headline and the
        student's beside them (``student_*`` and ``teacher_*`` keys)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What the teacher has learned or drawn since its factory built it (tensors, numbers,
        lists), for mid-run checkpoints; what the factory rebuilds identically need not be here."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BaseSelector:
    """Turns teacher probabilities into pseudo-targets and weights. Subclass and override
    ``select``; selectors with state across steps override the state methods."""

    def select(self, probs, indices, step: int) -> Selection:
        """probs: [B, C] teacher probabilities; indices: [B] positions in the unlabeled pool."""
        raise NotImplementedError

    def choose(self, teacher: BaseTeacher, batch: TextBatch, indices, step: int) -> Selection:
        """Ask the teacher and select: what the loop calls. Override to ask the teacher otherwise
        (e.g. several stochastic passes for MC-dropout uncertainty)."""
        probs = teacher.probs(batch)
        selection = self.select(probs, indices, step)
        selection.probs = probs
        return selection

    def stats(self) -> dict[str, float]:
        """Current thresholds and the like, recorded at every evaluation."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything ``select`` has learned across steps (tensors, numbers), for mid-run checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class RegularisationBatch:
    """What a regulariser sees at one training step. The unlabeled fields are None at a step without
    an unlabeled batch (λ(step) = 0, or no pool)."""

    step: int
    labeled_logits: Any  # torch.Tensor [B, C]: the student on the labeled batch (fp32, with gradient)
    labels: Any  # torch.Tensor [B]: their labels
    selector: BaseSelector  # the run's selector, with its state (e.g. FreeMatch's EMAs)
    unlabeled_logits: Any = None  # torch.Tensor [U, C]: the student on the strong view (fp32, with gradient)
    weak_texts: list[str] | None = None  # the weak view of the unlabeled batch, the texts the teacher saw
    selection: Selection | None = None  # the selector's targets, weights and teacher probs for that batch (no gradient)


class BaseRegulariser:
    """A batch-level loss term added to the objective: loss += Σ regulariser.loss(batch). Subclass
    and override ``loss``; a regulariser with trainable parameters of its own (an auxiliary head)
    returns them from ``parameters`` and the loop optimizes them beside the student."""

    def loss(self, batch: RegularisationBatch):
        """The term to add, a scalar tensor already multiplied by the regulariser's weight; None
        adds nothing this step (e.g. a term on the unlabeled batch at a step without one)."""
        raise NotImplementedError

    def parameters(self) -> list:
        """Trainable tensors of the regulariser's own (not the student's); the loop adds them to
        the optimizer as a second parameter group."""
        return []

    def stats(self) -> dict[str, float]:
        """Numbers recorded at every evaluation as ``regulariser/<key>``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything the regulariser has learned or drawn (its parameters, random state), for mid-run checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BaseTask:
    """What the dataset's kind of example decides, so the loop never has to: how texts are encoded
    for the model, which model head the backbone builds (``head``), how the model's outputs become
    *rows* [N, C], the rows' labels, and how predictions are scored. Teachers' probabilities,
    selectors, distances, the supervised loss and the pseudo-label tallies all work on rows.

    This class is sentence classification (task ``sentence``): a row is an example, the outputs
    [B, C] are the rows, scores are accuracy and macro-F1. A token task (``token``, plugins/tasks.py)
    makes a row of each word: the outputs [B, T, C] at the words' first subwords, in order. Subclass
    and override what differs; the factory is the class, ``factory(options, TaskContext)``.
    """

    #: the model head the backbone builds (BackboneContext.head): "sequence" ([B, C]) or "token" ([B, T, C])
    head: str = "sequence"
    #: the validation metric "best on validation" maximises: the record's ``val_<primary>``
    primary: str = "accuracy"
    #: the scalar metrics ``score`` returns; each is recorded as ``val_<name>`` and ``test_<name>``
    metrics: tuple[str, ...] = ("accuracy", "macro_f1")

    def __init__(self, options: Any = None, context: TaskContext | None = None):
        self.options, self.context = options, context
        self.label_names = tuple(context.label_names) if context is not None else ()

    def encode(self, tokenizer, texts: list[str], max_length: int) -> dict:
        """Model inputs for ``texts`` (an ``Encoded`` when the task reads more than the model takes),
        padded to the longest text of the batch."""
        from testbed.model import tokenize

        return tokenize(tokenizer, texts, max_length)

    def rows(self, outputs, inputs):
        """Rows [N, C] of the model's outputs on ``inputs`` (logits or probabilities, any trailing C)."""
        return outputs

    def batch_rows(self, outputs, batch: TextBatch):
        """``rows`` of outputs on a TextBatch (a teacher's probabilities); reads ``batch.inputs`` only
        when it needs them (a teacher with its own tokenizer leaves the student's untokenized)."""
        return outputs

    def labels(self, examples: Texts, indices: np.ndarray, inputs) -> np.ndarray:
        """The labels [N] of the rows of ``examples`` at ``indices``, encoded as ``inputs``."""
        return examples.labels[indices]

    def unlabeled_rows(self, indices: np.ndarray, weak: TextBatch, strong: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        """For pool examples ``indices`` and their weak and strong views: (each row's position in the
        pool [N], the position in the batch of the example it belongs to [N]). A task whose rows
        depend on the encoding makes the two views give the same rows, in the same order, here."""
        return np.asarray(indices), np.arange(len(indices))

    def predict(self, model, tokenizer, texts: list[str], max_length: int, batch_size: int, precision: str = "fp32") -> np.ndarray:
        """Probabilities of the rows of ``texts`` [N, C], in eval mode, on the model's device."""
        from testbed.model import predict

        return predict(model, tokenizer, texts, max_length, batch_size, precision)

    def gold(self, examples: Texts, tokenizer, max_length: int) -> np.ndarray:
        """The labels [N] of the rows ``predict`` gives for ``examples``."""
        return np.asarray(examples.labels)

    def score(self, probs: np.ndarray, examples: Texts, tokenizer, max_length: int) -> dict[str, Any]:
        """Scores of ``probs`` (rows, as ``predict`` gives them) against ``examples``: every name of
        ``metrics`` with a float, and optionally details that are not numbers (a table by class), which
        go to result.json only."""
        from testbed.model import accuracy_and_macro_f1

        accuracy, macro_f1 = accuracy_and_macro_f1(probs, np.asarray(examples.labels), len(self.label_names))
        return {"accuracy": accuracy, "macro_f1": macro_f1}


class Training:
    """The optimizer side of the run, as a teacher's ``update`` sees it."""

    def __init__(self, optimizer, lr_schedule):
        self.optimizer, self.lr_schedule = optimizer, lr_schedule

    def restart(self) -> None:
        """The student's weights were replaced (re-initialised): its optimizer moments no longer apply,
        and the learning-rate schedule starts again (a new student gets the warm-up the first one got)."""
        self.optimizer.state.clear()
        self.lr_schedule.last_epoch = -1
        self.lr_schedule.step()  # lr = base · schedule(0), as right after the optimizer was built


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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class Record:
    """A named entry of a collection hook."""

    name: str
    summary: str


@dataclass(frozen=True, kw_only=True)
class Component(Record):
    """A record whose ``factory(options, context)`` builds what the run uses. ``shorthand``, when
    given, claims names that are not registered: ``shorthand(name)`` returns the options that make
    the name mean this record (``backbone.name=bert-base-uncased`` -> the Hugging Face backbone with
    ``model="bert-base-uncased"``), or None."""

    options: type = NoOptions
    factory: Callable[[Any, Any], Any]
    shorthand: Callable[[str], dict | None] | None = None


@dataclass(frozen=True, kw_only=True)
class Augmentation(Component):
    """factory(options, AugmentationContext) -> Augmenter. ``keeps_words``: its views keep each word
    in its place with its default options (what token tasks need; the built augmenter's own
    ``Augmenter.keeps_words`` decides for given options). Options may hold other augmentations as
    ``AugmentationSpec`` fields, checked like ``augmentation.strong`` itself (did-you-mean names,
    valid options, defaults filled in). Example, two augmentations in a row::

        @dataclass(frozen=True)
        class PairOptions:
            first: AugmentationSpec = "word_swap"
            then: AugmentationSpec = "token_mask"

        def pair(options, context):
            first, then = context.build(options.first), context.build(options.then)
            return Augmenter(lambda texts, seeds: then(first(texts, seeds), seeds + 1))

        Augmentation(name="pair", summary="two in a row", factory=pair, options=PairOptions)

    ``tagged``: with its default options its augmenter rewrites the tags with the words
    (``Augmenter.tag_aware``), so it serves ``augmentation.labeled`` of a token task even though it
    moves, inserts or deletes words; ``needs_tags``: it works on tagged examples only (never a weak or
    strong view). Both are listed in errors; the built augmenter's own flags decide.
    """

    keeps_words: bool = False
    tagged: bool = False
    needs_tags: bool = False


AugmentationSpec = Annotated[Any, "testbed.augmentation_spec"]
"""Type of an option that names another augmentation: ``"eda"`` or ``{"name": "eda", "p_rd": 0.2}``
(``list[AugmentationSpec]`` for several). After config resolution it is the canonical table."""


@dataclass(frozen=True, kw_only=True)
class Distance(Component):
    """factory(options, RunContext) -> distance(student_logits [B, C], targets [B, C]) -> [B], per example."""


@dataclass(frozen=True, kw_only=True)
class Selector(Component):
    """factory(options, RunContext) -> BaseSelector."""


@dataclass(frozen=True, kw_only=True)
class Teacher(Component):
    """factory(options, TeacherContext) -> BaseTeacher."""


@dataclass(frozen=True, kw_only=True)
class Schedule(Component):
    """factory(options, RunContext) -> weight(step: int) -> float, the λ(t) of the consistency
    loss (0 skips the unlabeled batch)."""


@dataclass(frozen=True, kw_only=True)
class Regulariser(Component):
    """factory(options, RegulariserContext) -> BaseRegulariser: a batch-level loss term added to the
    objective (FreeMatch's fairness term, entropy minimisation, an auxiliary task on the encoder)."""


@dataclass(frozen=True, kw_only=True)
class Dataset(Component):
    """factory(options, DatasetContext) -> DatasetSplits. Raise UserError for missing or malformed data.
    ``task``: the task its rows choose, when known without loading them (e.g. ``token`` for a NER
    set), so a config can adapt before the data is read (a preset's views, see ``Task.aligned_view``)."""

    task: str = ""


@dataclass(frozen=True, kw_only=True)
class Task(Component):
    """factory(options, TaskContext) -> BaseTask: a kind of example (sentence or token classification).
    The dataset's rows choose it: ``reads`` is the kind of rows it takes, ``"text"`` (a text and a
    label) or ``"tokens"`` (words and a tag per word). ``aligned_view``: None when any augmentation
    will do; else views must keep every word in place (``Augmenter.keeps_words``), and this
    augmentation spec replaces a preset's weak or strong view that does not."""

    reads: str = "text"
    aligned_view: Any = None


@dataclass(frozen=True, kw_only=True)
class Backbone(Component):
    """factory(options, BackboneContext) -> (model, tokenizer): a Hugging Face-style sequence
    classifier (``model(**inputs).logits``) and a tokenizer callable on a list of texts."""


@dataclass(frozen=True, kw_only=True)
class Executor(Component):
    """factory(options, ExecutorContext) -> BaseExecutor: where the cells of a grid run (a local
    process pool, a dask cluster, ...). Selected with ``testbed grid --executor NAME``."""


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
class ReportDetails:
    """A collapsed block of a report section: ``summary`` always shown, ``text`` (preformatted,
    e.g. JSON) on a click."""

    summary: str
    text: str
    language: str = "json"  # the Markdown fence's language: json, toml, text


@dataclass(frozen=True)
class ReportSection:
    """One section of ``testbed report``: a title and blocks in order, each a Markdown string, a
    pandas DataFrame (rendered as a table), a ReportFigure or a ReportDetails. Sections are sorted
    by ``order``, then ``name``; the built-in ones: runs 5, leaderboard 10, comparisons 20, across
    datasets 30, ablation 40, dynamics 50, calibration 60, cost 70, published references 80,
    provenance 100."""

    name: str
    title: str
    blocks: tuple = ()
    order: int = 90


@dataclass(frozen=True)
class ReportContext:
    """What a report-section hook gets beside the results table. The report reads every run once and
    decides grouping, order and colors once, here, so that every section (built-in or not) agrees.

    A *group* is a dataset and label budget ("trec · 10 labels/class", the ``group`` column); a
    *cell* is what is compared within a group (the ``cell`` column). Runs, metrics and predictions
    are keyed by run id (a run found in several runs directories is counted once)."""

    runs_dirs: tuple[Path, ...]
    out_dir: Path  # the report directory
    baseline: str  # the baseline method or cell label of the paired comparisons
    cell_keys: tuple[str, ...]  # config keys that name a cell (the "method"), seed excluded
    metrics: Callable[[str], list[dict]]  # run_id -> its metrics.jsonl records ([] without); read once
    predictions: Callable[[str], Mapping[str, np.ndarray] | None] = lambda run_id: None  # run_id -> predictions.npz arrays; read once
    groups: tuple[str, ...] = ()  # groups with finished runs, by dataset name, then label budget
    cells: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # group -> its cells, best mean test accuracy (last; entity F1: primary) first
    baseline_cells: Mapping[str, str] = field(default_factory=dict)  # group -> its baseline cell; absent: no baseline runs there
    class_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # group -> label names (result.json), () if unknown
    colors: Mapping[str, str] = field(default_factory=dict)  # cell -> matplotlib color, the same in every plot
    leaderboard: tuple[Mapping[str, Any], ...] = ()  # per group, cell, checkpoint, metric: seeds, mean, std, CI (summary.csv)
    comparisons: tuple[Mapping[str, Any], ...] = ()  # paired tests of every cell against its group's baseline (comparisons.csv)
    duplicates: tuple[Mapping[str, Any], ...] = ()  # runs found in several runs directories: run, counted from, also in
    # group -> the metric its cells are ordered, ranked and compared on (result.json's test_<metric>): "accuracy", or
    # "entity_f1" for a token task with IOB2 tags (NER; task "token"); absent: "accuracy"
    primary: Mapping[str, str] = field(default_factory=dict)

    def primary_metric(self, group: str) -> str:
        """The metric ``group`` is ranked and compared on: ``accuracy`` or ``entity_f1`` (token tasks)."""
        return self.primary.get(group, "accuracy")

    def primary_columns(self, group: str) -> tuple[str, str]:
        """The results table's columns of ``group``'s metric: (last checkpoint, best on validation)."""
        metric = self.primary_metric(group)
        return f"test_{metric}", f"test_{metric}_best_val"

    def findings(self, checkpoint: str = "last") -> list[str]:
        """What the report found, a line per group: the leading cell on the group's primary metric at
        ``checkpoint`` and the cells the paired tests call better or worse than the baseline (Holm-
        corrected), or that none differs. ``testbed report`` prints them; the report opens with them."""
        lines = []
        for group in self.groups:
            metric = self.primary_metric(group)
            rows = [r for r in self.leaderboard if r["group"] == group and r["checkpoint"] == checkpoint and r["metric"] == metric]
            if not rows:
                continue
            best = max(rows, key=lambda r: r["mean"])
            name = "entity F1" if metric == "entity_f1" else metric.replace("_", " ")
            line = f"{group}: {best['cell']} leads, {name} {best['mean']:.4f} over {best['n_seeds']} seeds"
            tested = [r for r in self.comparisons if r["group"] == group and r["checkpoint"] == checkpoint]
            if tested:
                base = tested[0]["baseline"]
                said = {v: ", ".join(f"{r['cell']} {100 * r['mean_diff']:+.1f}" for r in tested if r["verdict"] == v)
                        for v in ("better", "worse")}
                found = [f"{v} than {base}: {said[v]} points" for v in ("better", "worse") if said[v]]
                line += "; " + ("; ".join(found) if found else f"none detectably differs from {base}") + " (paired tests, Holm)"
            lines.append(line + ".")
        means = {g: {r["cell"]: r["mean"] for r in self.leaderboard if r["group"] == g and r["checkpoint"] == checkpoint
                     and r["metric"] == self.primary_metric(g)} for g in self.groups}
        common = [c for c in next(iter(means.values()), {}) if all(c in m for m in means.values())]
        if len(means) >= 2 and len(common) >= 2:  # each cell's rank within each group (1 = best; ties share), averaged
            rank = {c: sum(1 + sum(m[o] > m[c] for o in common) + (sum(m[o] == m[c] for o in common) - 1) / 2
                           for m in means.values()) / len(means) for c in common}
            ranked = ", ".join(f"{c} {rank[c]:.2f}" for c in sorted(common, key=lambda c: (rank[c], c)))
            lines.append(f"Across the {len(means)} groups, mean rank (1 = best): {ranked}.")
        return lines

    def class_name(self, group: str, index: int) -> str:
        """The name of class ``index`` in ``group``, else "class <index>"."""
        names = self.class_names.get(group, ())
        return str(names[index]) if 0 <= index < len(names) else f"class {index}"
