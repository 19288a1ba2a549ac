"""``testbed new-plugin NAME --kind KIND``: a plugin package to start from, for one seam.

It writes ``testbed-NAME/`` (or ``--dir``) with

- ``pyproject.toml``: the module under the entry-point group ``testbed`` (as testbed's own pyproject
  declares its built-ins), so that ``pip install -e`` makes ``testbed`` find it;
- ``testbed_NAME.py``: an options dataclass (its fields are the config keys) and a factory following
  the seam's interface (``testbed.types``, the examples in ``testbed.hookspecs``), importing only
  ``from testbed import ...``; a strategy that runs as written, to be edited;
- ``README.md``, and ``tests/test_NAME.py``: the strategy through ``testbed.config.resolve``, its
  factory on hand-built inputs and a tiny end-to-end run (``testbed.run``). Installed, the test finds
  the plugin by its entry point; not installed, it loads the module file as ``--plugins-dir`` does.

The plugin's name in ``testbed plugins`` is its module, ``testbed_NAME``, by either route.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from testbed.errors import UserError

KINDS = ("distance", "selector", "augmentation", "teacher", "schedule", "regulariser", "dataset", "backbone", "preset")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- per kind: the module, how a run uses it, its unit test


@dataclass(frozen=True)
class Kind:
    record: str  # the record class of testbed
    hook: str  # the collection hook
    summary: str  # the strategy's one-line summary
    keys: str  # how a config picks it, for the README and the printed next commands
    imports: str  # the module's imports
    body: str  # options, factory and what it builds
    build: str  # the record's constructor arguments after name and summary
    use: dict  # dotted config keys that pick (and exercise) the strategy in a run
    check: dict  # options to resolve in the config test, each with the value it should take
    choice: str  # its key in RunConfig.choices ("" for a preset)
    unit: str  # the test of the factory on hand-built inputs
    unit_imports: str = ""  # what it imports beside pytest
    unit_names: tuple[str, ...] = ()  # what it imports from testbed


KIND_TEMPLATES: dict[str, Kind] = {
    "distance": Kind(
        record="Distance", hook="testbed_distances",
        summary="L1 between the student's probabilities and the targets, beyond a margin",
        keys="distance.name=$name distance.margin=0.05",
        imports="import torch\nfrom testbed import Distance, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    margin: float = 0.0  # config key distance.margin: probability gaps up to it cost nothing

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if self.margin < 0:
            raise ValueError(f"distance.margin must be 0 or more, got {self.margin}")


def build_$name(options: ${Camel}Options, context):
    """factory(options, RunContext) -> distance(student_logits [B, C], targets [B, C]) -> [B]: one value per
    example (the loop weighs them by the selector's weights). Targets are probabilities, one-hot for hard labels."""

    def distance(student_logits, targets):
        gap = (student_logits.float().softmax(-1) - targets).abs()
        return torch.relu(gap - options.margin).sum(-1)

    return distance
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "distance.name": "$name", "distance.margin": 0.05, "selector.threshold": 0.0},
        check={"distance.margin": 0.05}, choice="distance",
        unit='''
def test_the_distance_on_hand_built_tensors(registry):
    record = registry.get("distance", "$name")
    distance = record.factory(record.options(), RunContext(num_classes=3, pool_size=2, steps=10, seed=0))
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert distance(logits, logits.softmax(-1)).tolist() == pytest.approx([0.0, 0.0])  # targets = predictions
    one_hot = torch.eye(3)[[2, 0]]
    expected = (logits.softmax(-1) - one_hot).abs().sum(-1)
    assert distance(logits, one_hot).shape == (2,) and distance(logits, one_hot).tolist() == pytest.approx(expected.tolist())
    wide = record.factory(record.options(margin=1.0), RunContext(num_classes=3, pool_size=2, steps=10, seed=0))
    assert wide(logits, one_hot).tolist() == [0.0, 0.0]  # no gap exceeds 1
''',
        unit_imports="import torch", unit_names=("RunContext",),
    ),
    "selector": Kind(
        record="Selector", hook="testbed_selectors",
        summary="hard pseudo-labels where the teacher's confidence reaches a threshold",
        keys="selector.name=$name selector.threshold=0.9",
        imports="import torch\nfrom testbed import BaseSelector, Selection, Selector, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    threshold: float = 0.9  # config key selector.threshold: the confidence a pseudo-label needs

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"selector.threshold must be in [0, 1], got {self.threshold}")


class ${Camel}Selector(BaseSelector):
    """Weight 1 where max_c p_c >= threshold, else 0; one-hot targets. A selector with state across steps
    (class-wise thresholds, EMAs) keeps it here and returns it from state_dict / takes it in load_state_dict,
    so that a run resumed from a checkpoint ends with the numbers of one never stopped."""

    def __init__(self, options: ${Camel}Options, context):  # context: RunContext (num_classes, pool_size, steps, device, ...)
        self.threshold = options.threshold
        self.num_classes = context.num_classes

    def select(self, probs, indices, step):  # probs [B, C] teacher probabilities; indices [B] positions in the unlabeled pool
        confidence, predicted = probs.max(-1)
        weights = (confidence >= self.threshold).float()
        targets = torch.nn.functional.one_hot(predicted, self.num_classes).to(probs.dtype)
        return Selection(targets=targets, weights=weights)

    def stats(self):  # recorded in metrics.jsonl at every evaluation as selector/<key>
        return {"threshold": self.threshold}


def build_$name(options: ${Camel}Options, context):
    """factory(options, RunContext) -> BaseSelector."""
    return ${Camel}Selector(options, context)
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "selector.name": "$name", "selector.threshold": 0.0},
        check={"selector.threshold": 0.5}, choice="selector",
        unit='''
def test_the_selector_on_hand_built_probabilities(registry):
    record = registry.get("selector", "$name")
    selector = record.factory(record.options(threshold=0.9), RunContext(num_classes=2, pool_size=2, steps=10, seed=0))
    selection = selector.select(torch.tensor([[0.95, 0.05], [0.4, 0.6]]), torch.tensor([0, 1]), step=0)
    assert selection.weights.tolist() == [1.0, 0.0]  # only the first is confident enough
    assert selection.targets.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert selector.stats() == {"threshold": 0.9}
''',
        unit_imports="import torch", unit_names=("RunContext",),
    ),
    "augmentation": Kind(
        record="Augmentation", hook="testbed_augmentations",
        summary="drops each word with probability p (keeps one at least)",
        keys="augmentation.strong.name=$name augmentation.strong.p=0.2",
        imports="import random\nfrom testbed import Augmentation, Augmenter, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    p: float = 0.1  # config key augmentation.strong.p (or augmentation.weak.p): the probability of dropping a word

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p}")


def build_$name(options: ${Camel}Options, context):
    """factory(options, AugmentationContext) -> Augmenter: augmenter(texts, seeds) -> views, one seed per text.
    A text's view must depend only on the text, its seed and the options: views are cached on disk by them.
    (context.build(spec) builds another augmentation, for one made of others.)"""

    def augment(texts, seeds):
        views = []
        for text, seed in zip(texts, seeds, strict=True):
            rng = random.Random(int(seed))
            words = text.split()
            kept = [word for word in words if rng.random() >= options.p]
            views.append(" ".join(kept or words[:1]))
        return views

    return Augmenter(augment)
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "augmentation.strong.name": "$name", "augmentation.strong.p": 0.3, "selector.threshold": 0.0},
        check={"augmentation.strong.p": 0.3}, choice="augmentation.strong",
        unit='''
def test_the_augmentation_is_a_function_of_text_seed_and_options(registry):
    record = registry.get("augmentation", "$name")
    texts = ["the quick brown fox jumps over the lazy dog", "one"]
    augment = record.factory(record.options(p=0.5), None)  # this augmentation builds no other: no context needed
    views = augment(texts, np.array([1, 2]))
    assert views == augment(texts, np.array([1, 2])) and len(views) == 2  # same seeds, same views
    assert set(views[0].split()) <= set(texts[0].split()) and views[1] == "one"
    assert record.factory(record.options(p=0.0), None)(texts, np.array([1, 2])) == texts
    assert record.factory(record.options(p=1.0), None)(texts, np.array([1, 2])) == ["the", "one"]
''',
        unit_imports="import numpy as np", unit_names=(),
    ),
    "teacher": Kind(
        record="Teacher", hook="testbed_teachers",
        summary="the student in eval mode, its logits divided by a temperature",
        keys="teacher.name=$name teacher.temperature=0.5",
        imports="import torch\nfrom testbed import BaseTeacher, Teacher, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    temperature: float = 1.0  # config key teacher.temperature: softmax(logits / T); T < 1 sharpens

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if self.temperature <= 0:
            raise ValueError(f"teacher.temperature must be positive, got {self.temperature}")


class ${Camel}Teacher(BaseTeacher):
    """Probabilities on the weak view from the student itself, without gradient. A teacher that learns or
    draws something during the run (an EMA, a snapshot) updates it in update(student, step, training) and
    returns it from state_dict / takes it in load_state_dict, for checkpoints."""

    def __init__(self, options: ${Camel}Options, context):  # context: TeacherContext (the run's facts and the student)
        self.student, self.temperature = context.student, options.temperature

    @torch.no_grad()
    def probs(self, batch, stochastic=False):  # batch.inputs: the student's tokens -> [B, C] probabilities
        training = self.student.training
        self.student.train(stochastic)  # dropout only when a selector asks for stochastic passes (MC dropout)
        try:
            return (self.student(**batch.inputs).logits.float() / self.temperature).softmax(-1)
        finally:
            self.student.train(training)


def build_$name(options: ${Camel}Options, context):
    """factory(options, TeacherContext) -> BaseTeacher."""
    return ${Camel}Teacher(options, context)
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "teacher.name": "$name", "teacher.temperature": 0.5, "selector.threshold": 0.0},
        check={"teacher.temperature": 0.5}, choice="teacher",
        unit='''
class Toy(torch.nn.Module):
    """A student as the teacher sees it: model(**inputs).logits."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features):
        return SimpleNamespace(logits=self.linear(features))


def test_the_teacher_on_a_toy_student(registry):
    record = registry.get("teacher", "$name")
    torch.manual_seed(0)
    student, features = Toy(), torch.randn(2, 4)
    batch = TextBatch(["a", "b"], lambda texts: {"features": features})
    context = TeacherContext(num_classes=3, pool_size=2, steps=10, seed=0, student=student)
    probs = record.factory(record.options(), context).probs(batch)
    assert probs.shape == (2, 3) and probs.sum(-1).tolist() == pytest.approx([1.0, 1.0]) and not probs.requires_grad
    sharp = record.factory(record.options(temperature=0.5), context).probs(batch)
    assert (sharp.max(-1).values > probs.max(-1).values).all() and student.training  # sharper; the student's mode restored
''',
        unit_imports="from types import SimpleNamespace\nimport torch", unit_names=("TeacherContext", "TextBatch"),
    ),
    "schedule": Kind(
        record="Schedule", hook="testbed_schedules",
        summary="λ = 0 for the first `start` fraction of the run, then `weight`",
        keys="schedule.name=$name schedule.start=0.2",
        imports="from testbed import Schedule, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    weight: float = 1.0  # config key schedule.weight: λ after the start
    start: float = 0.2  # config key schedule.start: the fraction of train.steps with λ = 0 (no unlabeled batch)

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if not 0 <= self.start <= 1:
            raise ValueError(f"schedule.start must be in [0, 1], got {self.start}")


def build_$name(options: ${Camel}Options, context):
    """factory(options, RunContext) -> λ(step) -> float, the weight of the consistency loss at a step
    (0 skips the unlabeled batch). context.steps is the run's train.steps."""
    first = round(options.start * context.steps)
    return lambda step: options.weight if step >= first else 0.0
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "schedule.name": "$name", "schedule.start": 0.5, "selector.threshold": 0.0},
        check={"schedule.start": 0.5}, choice="schedule",
        unit='''
def test_the_schedule_against_its_formula(registry):
    record = registry.get("schedule", "$name")
    weight = record.factory(record.options(weight=2.0, start=0.5), RunContext(num_classes=2, pool_size=2, steps=10, seed=0))
    assert [weight(step) for step in range(10)] == [0.0] * 5 + [2.0] * 5
''',
        unit_imports="", unit_names=("RunContext",),
    ),
    "regulariser": Kind(
        record="Regulariser", hook="testbed_regularisers",
        summary="the student's entropy on the labeled batch, times a weight",
        keys="regulariser.name=$name regulariser.weight=0.1",
        imports="from testbed import BaseRegulariser, Regulariser, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    weight: float = 0.1  # config key regulariser.weight: the term's factor in the loss

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if self.weight < 0:
            raise ValueError(f"regulariser.weight must be 0 or more, got {self.weight}")


class ${Camel}Regulariser(BaseRegulariser):
    """loss += weight · mean entropy of the student on the labeled batch (a batch-level term). A term with
    parameters of its own returns them from parameters(); with state across steps, from state_dict."""

    def __init__(self, options: ${Camel}Options, context):  # RegulariserContext: run facts, student, tokenizer, selector
        self.weight, self.entropy = options.weight, 0.0

    def loss(self, batch):  # RegularisationBatch -> a scalar tensor, already weighted (None adds nothing)
        logits = batch.labeled_logits.float()
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
        self.entropy = float(entropy.detach())
        return self.weight * entropy

    def stats(self):  # recorded at every evaluation as regulariser/<key>
        return {"entropy": self.entropy}


def build_$name(options: ${Camel}Options, context):
    """factory(options, RegulariserContext) -> BaseRegulariser."""
    return ${Camel}Regulariser(options, context)
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "regulariser.name": "$name", "regulariser.weight": 0.1},
        check={"regulariser.weight": 0.2}, choice="regulariser",
        unit='''
def test_the_regulariser_on_hand_built_logits(registry):
    record = registry.get("regulariser", "$name")
    regulariser = record.factory(record.options(weight=0.5), None)  # this one reads nothing of its context
    logits = torch.zeros(4, 3, requires_grad=True)  # uniform: entropy log 3
    batch = RegularisationBatch(step=0, labeled_logits=logits, labels=torch.zeros(4, dtype=torch.long), selector=None)
    loss = regulariser.loss(batch)
    assert loss.item() == pytest.approx(0.5 * math.log(3))
    loss.backward()
    assert logits.grad is not None and regulariser.stats()["entropy"] == pytest.approx(math.log(3))
''',
        unit_imports="import math\nimport torch", unit_names=("RegularisationBatch",),
    ),
    "dataset": Kind(
        record="Dataset", hook="testbed_datasets",
        summary="a toy two-class dataset of generated sentences (replace with your data)",
        keys="dataset.name=$name",
        imports="import numpy as np\nfrom testbed import Dataset, DatasetSplits, Texts, hookimpl",
        body='''
WORDS = {"sport": ["match", "goal", "team", "coach", "league", "score"],
         "science": ["atom", "theory", "cell", "experiment", "physics", "lab"]}


@dataclass(frozen=True)
class ${Camel}Options:
    per_class: int = 40  # config key dataset.per_class: training texts per class (test: a quarter of it)

    def __post_init__(self):  # a ValueError here is reported as a config error naming the section
        if self.per_class < 4:
            raise ValueError(f"dataset.per_class must be at least 4, got {self.per_class}")


def build_$name(options: ${Camel}Options, context):
    """factory(options, DatasetContext) -> DatasetSplits: class names, train and test (optionally dev and
    extra unlabeled texts). Replace the toy sentences with your data: files under context.data_dir (the
    data directory, $$TESTBED_DATA) or a path option, read with testbed.load_dataset_dir or
    testbed.read_rows; raise testbed.UserError for missing or malformed data."""
    rng = np.random.default_rng(0)
    names = list(WORDS)

    def texts(count: int, offset: int) -> Texts:
        labels = np.arange(2 * count) % 2
        sentences = [f"text {offset + i}: " + " ".join(rng.choice(WORDS[names[label]], 4)) for i, label in enumerate(labels)]
        return Texts(sentences, labels)

    return DatasetSplits(label_names=names, train=texts(options.per_class, 0), test=texts(max(2, options.per_class // 4), 10_000))
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "dataset.name": "$name", "selector.threshold": 0.0},
        check={"dataset.per_class": 20}, choice="dataset",
        unit='''
def test_the_dataset_loads(registry):
    record = registry.get("dataset", "$name")
    splits = record.factory(record.options(per_class=8), DatasetContext())
    assert splits.label_names == ["sport", "science"] and len(splits.train) == 16 and len(splits.test) == 4
    assert set(splits.train.labels.tolist()) == {0, 1} and len(set(splits.train.texts)) == 16  # distinct texts
''',
        unit_imports="", unit_names=("DatasetContext",),
    ),
    "backbone": Kind(
        record="Backbone", hook="testbed_backbones",
        summary="another backbone (default tiny) with its input embeddings frozen if asked",
        keys="backbone.name=$name backbone.base=tiny",
        imports="from testbed import Backbone, hookimpl",
        body='''
@dataclass(frozen=True)
class ${Camel}Options:
    base: str = "tiny"  # config key backbone.base: the backbone this one starts from (a name, local path or hub id)
    freeze_embeddings: bool = False  # config key backbone.freeze_embeddings: leave the input embeddings untrained


def build_$name(options: ${Camel}Options, context):
    """factory(options, BackboneContext) -> (model, tokenizer): a Hugging Face-style sequence classifier
    with context.num_labels outputs (model(**inputs).logits) and a tokenizer callable on a list of texts.
    context.load_backbone(name) builds any other backbone (with its default options) through the run's plugins."""
    model, tokenizer = context.load_backbone(options.base)
    if options.freeze_embeddings:
        for parameter in model.get_input_embeddings().parameters():
            parameter.requires_grad_(False)  # the loop trains only parameters that require gradients
    return model, tokenizer
''',
        build="factory=build_$name, options=${Camel}Options",
        use={"method": "fixmatch", "backbone.name": "$name", "backbone.freeze_embeddings": True, "selector.threshold": 0.0},
        check={"backbone.freeze_embeddings": True}, choice="backbone",
        unit='''
class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2)

    def get_input_embeddings(self):
        return self.embeddings


def test_the_backbone_wraps_another_and_freezes_its_embeddings(registry):
    record = registry.get("backbone", "$name")
    asked = []
    context = BackboneContext(num_labels=2, load_backbone=lambda name: (asked.append(name), (Toy(), "tokenizer"))[1])
    model, tokenizer = record.factory(record.options(base="other", freeze_embeddings=True), context)
    assert asked == ["other"] and tokenizer == "tokenizer"
    assert not model.embeddings.weight.requires_grad and model.head.weight.requires_grad
''',
        unit_imports="import torch", unit_names=("BackboneContext",),
    ),
    "preset": Kind(
        record="Preset", hook="testbed_presets",
        summary="FixMatch with sharpened soft targets, KL, τ = 0.9 and a linear ramp",
        keys="method=$name",
        imports="from testbed import Preset, hookimpl",
        body='''
# a method is data: the choice and options of each seam; any of them can still be overridden,
# e.g. method=$name selector.threshold=0.8
SETTINGS = {
    "augmentation": {"weak": {"name": "identity"}, "strong": {"name": "drop_swap"}},
    "teacher": {"name": "self"},
    "selector": {"name": "threshold", "threshold": 0.9, "soft": True, "temperature": 0.5},
    "distance": {"name": "kl"},
    "schedule": {"name": "linear", "weight": 1.0, "ramp": 0.2},
}
''',
        build="settings=SETTINGS",
        use={"method": "$name", "selector.threshold": 0.0},
        check={"selector.threshold": 0.8}, choice="",
        unit='''
def test_the_preset_names_registered_strategies(registry):
    preset = registry.get("preset", "$name")
    for seam, setting in preset.settings.items():
        for spec in (setting.values() if seam == "augmentation" else [setting]):
            kind = "augmentation" if seam == "augmentation" else seam
            assert spec["name"] in registry.names(kind), (seam, spec)
''',
        unit_imports="", unit_names=(),
    ),
}


MODULE = '''"""testbed plugin: the $kind '$name', $summary.

Use it as `$keys`.
`testbed plugins` lists it. It imports only `from testbed import ...`, as every plugin does: the
seam's interface is in testbed/types.py, the hooks and their examples in testbed/hookspecs.py.
"""

$imports
$gap
$body

@hookimpl
def $hook():
    return [$record(name="$name", $build,
            $indent summary="$summary")]
'''

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "testbed plugin: the $kind '$name'"
readme = "README.md"
requires-python = ">=3.11"
dependencies = []  # testbed itself, installed in the same environment

# testbed loads every module of this entry-point group, as it does its own built-ins
[project.entry-points.testbed]
$module = "$module"

[tool.setuptools]
py-modules = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 130
'''

README = '''# $dist

A testbed plugin: the $kind `$name`, $summary.

```sh
pip install --no-deps -e $dir           # testbed finds it through the entry point `testbed`
testbed plugins                          # lists $module and the $kind $name
testbed run $keys backbone.name=tiny dataset.name=trec train.steps=30
```

Without installing, load the module file: `testbed --plugins-dir $dir run ...` (not both: the
$kind would be registered twice). From Python: `testbed.run(...)` with the same keys, plus
`plugins_dirs=["$dir"]` when not installed.

- `$module.py`: the options dataclass (its fields are the config keys) and the factory: edit here.
- `tests/test_$name.py`: the config through `testbed.config.resolve`, the factory on hand-built
  inputs, and a tiny end-to-end run: `python -m pytest $dir`.
'''

TEST = '''"""The $kind '$name': its config keys through testbed.config.resolve, the factory on hand-built
inputs, and a tiny end-to-end run (a 1-layer random BERT, a few steps). Installed (pip install -e),
testbed finds the plugin through its entry point; otherwise this loads the module file, as --plugins-dir does."""

$header

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = any(ep.value == "$module" for ep in importlib.metadata.entry_points(group="testbed"))
PLUGINS_DIRS = [] if INSTALLED else [ROOT]

# a run of a few seconds: a 1-layer, 32-wide random BERT, 4 steps of 4 texts, a small two-class dataset
TINY = $tiny
# what picks the $kind '$name' in a run
USE = $use


@pytest.fixture(scope="module")
def registry():
    return load_plugins(PLUGINS_DIRS, strict=True)


@pytest.fixture
def data_dir(tmp_path):
    """Two classes, 20 training and 5 test texts each, as testbed reads a data directory."""
    words = {0: "match goal team coach league score", 1: "atom theory cell experiment physics lab"}
    for split, count in (("train", 20), ("test", 5)):
        rows = [{"text": f"{split} {i}: {words[label]}", "label": label} for i in range(count) for label in (0, 1)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\\n" for row in rows), encoding="utf-8")
    (tmp_path / "labels.json").write_text(json.dumps(["sport", "science"]), encoding="utf-8")
    return tmp_path


def test_the_plugin_is_registered(registry):
    provides = {plugin.name: plugin.provides for plugin in registry.plugins}
    assert "$name" in provides["$module"]["$kind"]


def test_its_config_keys_resolve(registry):
    checked = $check
    words = [f"{key}={json.dumps(value)}" for key, value in {**USE, **checked}.items()]  # as on the command line
    cfg = resolve(parse_overrides(words), registry)
    assert $resolved
    for key, value in checked.items():
        *path, leaf = key.split(".")
        assert getattr(cfg.choices[".".join(path)].options, leaf) == value
    with pytest.raises(UserError, match="Unknown config key"):  # a misspelt option stops the config, with the valid keys
        resolve(parse_overrides([*words, "$misspelt=1"]), registry)


$unit

def test_a_tiny_run(registry, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path / "cache"))  # augmentation views and the like stay in the test
    result = testbed.run(out=tmp_path / "runs", progress=False, plugins_dirs=PLUGINS_DIRS, strict=True,
                         **{$data**TINY, **USE})
    assert result.ran and 0 <= result["test_accuracy"] <= 1 and result["steps"] == TINY["train.steps"]
    assert json.loads((result.run_dir / "config.json").read_text())$picked == "$name"
'''

CONFTEST = '''import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub: the tiny backbone needs nothing online
'''

# the tiny run of the generated test: FAST settings of testbed's own tests, smaller still
TINY_RUN = {"backbone.name": "tiny", "backbone.layers": 1, "backbone.hidden": 32, "backbone.heads": 2, "backbone.intermediate": 64,
            "backbone.max_length": 32, "dataset.labels_per_class": 4, "dataset.validation_per_class": 2,
            "dataset.unlabeled_limit": 20, "dataset.test_limit": 10, "train.steps": 4, "train.batch_size": 4,
            "train.eval_every": 2, "train.threads": 1}


# --------------------------------------------------------------------------- writing


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or name


def check_name(name: str, kind: str, registry) -> None:
    """A name that can be a module, a function, an entry point and a config value, and is not taken."""
    if kind not in KINDS:
        raise UserError(f"Unknown kind {kind!r}: one of {', '.join(KINDS)}.")
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        hint = re.sub(r"\W", "_", name).strip("_")
        raise UserError(f"Plugin name {name!r} must be a Python identifier (letters, digits and _, a letter first)"
                        + (f", e.g. {hint!r}." if hint and NAME.fullmatch(hint) and not keyword.iskeyword(hint) else "."))
    if name in registry.names(kind):
        provider = registry.records[kind][name][1]
        raise UserError(f"A {kind} named {name!r} already exists (from plugin {provider!r}); choose another name.")
    module = f"testbed_{name}"
    taken = {plugin.name: plugin.source for plugin in registry.plugins}
    if module in taken:
        raise UserError(f"A plugin {module!r} is already loaded ({taken[module]}); choose another name, or uninstall it first.")


@dataclass(frozen=True)
class Scaffold:
    directory: Path
    files: dict[str, str]  # relative path -> what it is
    module: str
    keys: str  # the config that picks the strategy, as key=value words
    example: str  # a short run with it: its keys, the tiny backbone and TREC where it does not replace them


def render(name: str, kind: str, directory: Path) -> tuple[dict[str, str], Kind]:
    """The files of the package, relative path -> text."""
    spec = KIND_TEMPLATES[kind]
    module, dist = f"testbed_{name}", f"testbed-{name.replace('_', '-')}"

    def fill(text: str, **extra: str) -> str:
        return Template(text).substitute(name=name, Camel=camel(name), kind=kind, module=module, dist=dist, dir=str(directory),
                                         summary=spec.summary, keys=Template(spec.keys).substitute(name=name), **extra)

    use = {key: (Template(value).substitute(name=name) if isinstance(value, str) else value) for key, value in spec.use.items()}
    tiny = {key: value for key, value in TINY_RUN.items()
            if not (kind == "backbone" and key.startswith("backbone.") and key not in ("backbone.max_length",))}
    picked = {"": '["method"]', "augmentation.strong": '["augmentation"]["strong"]["name"]'}.get(
        spec.choice, "".join(f'["{part}"]' for part in spec.choice.split(".")) + '["name"]')
    resolved = ('cfg.method == "$name"' if kind == "preset" else f'cfg.choices["{spec.choice}"].name == "$name"')
    misspelt = {"preset": "selector.treshold", "augmentation": "augmentation.strong.pp"}.get(kind, f"{spec.choice}.no_such_option")
    module_imports = _imports([*([] if kind == "preset" else ["from dataclasses import dataclass"]), *spec.imports.splitlines()])
    module_text = fill(MODULE, imports=module_imports, body=fill(spec.body.strip("\n")) + "\n", hook=spec.hook, record=spec.record,
                       build=fill(spec.build), indent=" " * len(spec.record),
                       gap="\n" if spec.body.lstrip().startswith(("@", "def ", "class ")) else "")
    names = ", ".join(sorted({"UserError", *spec.unit_names}))
    test_imports = ["import importlib.metadata", "import json", "from pathlib import Path", "import pytest", "import testbed",
                    f"from testbed import {names}", "from testbed.config import parse_overrides, resolve",
                    "from testbed.plugins import load_plugins", *spec.unit_imports.splitlines()]
    test_text = fill(TEST, tiny=_literal(tiny), use=_literal(use), check=_literal(spec.check), resolved=fill(resolved),
                     misspelt=misspelt, picked=picked, unit=fill(spec.unit.strip("\n")) + "\n", header=_imports(test_imports),
                     data='"dataset.name": "files", "dataset.path": str(data_dir), ' if kind != "dataset" else "")
    files = {"pyproject.toml": fill(PYPROJECT), f"{module}.py": module_text, "README.md": fill(README),
             "tests/conftest.py": CONFTEST, f"tests/test_{name}.py": test_text}
    return files, spec


STDLIB = {"dataclasses", "importlib", "json", "math", "os", "pathlib", "random", "types"}


def _imports(lines: list[str]) -> str:
    """Import lines sorted as isort sorts them: the standard library, then the rest (testbed among them: a
    third-party package to the plugin), ``import x`` before ``from x import y``."""
    module = lambda line: line.split()[1]  # noqa: E731
    order = lambda line: (line.startswith("from"), module(line))  # noqa: E731
    stdlib = sorted((line for line in lines if module(line).split(".")[0] in STDLIB), key=order)
    rest = sorted((line for line in lines if module(line).split(".")[0] not in STDLIB), key=order)
    return "\n\n".join(block for block in ("\n".join(stdlib), "\n".join(rest)) if block)


def _literal(mapping: dict) -> str:
    """A dict as Python source, one key a line when long."""
    show = lambda value: json.dumps(value) if isinstance(value, str) else repr(value)  # noqa: E731
    items = [f"{show(key)}: {show(value)}" for key, value in mapping.items()]
    one_line = "{" + ", ".join(items) + "}"
    if len(one_line) <= 100:
        return one_line
    return "{\n" + "".join(f"    {item},\n" for item in items) + "}"


def write_plugin(name: str, kind: str, directory: str | Path | None, registry) -> Scaffold:
    """Check the name and write the package into ``directory`` (default ``testbed-NAME``), which must not exist."""
    from testbed.resources import refuse_shared_data

    check_name(name, kind, registry)
    directory = Path(directory) if directory is not None else Path(f"testbed-{name.replace('_', '-')}")
    refuse_shared_data(directory, "The plugin directory", "Pass --dir somewhere else.")
    if directory.exists():
        raise UserError(f"{directory} already exists; pass --dir with a new directory, or remove it first.")
    files, spec = render(name, kind, directory)
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    described = {"pyproject.toml": f"the package, with the entry point testbed: testbed_{name}",
                 f"testbed_{name}.py": f"{camel(name)}Options and the factory of the {kind} {name!r}: edit here" if kind != "preset"
                 else f"the settings of the method {name!r}: edit here",
                 "README.md": "how to install, use and test it",
                 "tests/conftest.py": "HF_HUB_OFFLINE=1 for the tests",
                 f"tests/test_{name}.py": "its config through testbed.config.resolve, the factory, a tiny end-to-end run"}
    keys = Template(spec.keys).substitute(name=name)
    example = " ".join([keys, *(default for default in ("backbone.name=tiny", "dataset.name=trec", "train.steps=30")
                                if default.split("=")[0] + "=" not in keys)])
    return Scaffold(directory=directory, files=described, module=f"testbed_{name}", keys=keys, example=example)


def pip_install_command(directory: Path) -> list[str]:
    """``pip install --no-deps -e DIR`` with this interpreter; without build isolation when setuptools is
    here already (an isolated build would fetch setuptools from the index, which an offline machine lacks)."""
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") is not None else []
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "-e", str(directory)]


def install(directory: Path) -> list[str]:
    """Install the package editable; a UserError with pip's last lines when it fails."""
    command = pip_install_command(directory)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise UserError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}\nThe package is written; install it "
                        f"yourself, or use it without installing: testbed --plugins-dir {directory} ...")
    return command
