"""Run configuration: TOML file + dotted ``key=value`` overrides + the method's preset.

Precedence: built-in defaults < preset (``method``) < TOML file < command-line overrides.
A seam (teacher, selector, distance, schedule, augmentation.weak/strong/labeled) is a table with a
``name`` and that strategy's options; when the user picks a different ``name`` than the
preset, the preset's options for that seam are dropped because they belong to another
strategy. Every key is checked: an unknown key is an error listing the valid keys nearby.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.data import VALIDATION_SIZE
from testbed.errors import UserError, did_you_mean
from testbed.types import AugmentationSpec, Record


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "trec"
    labels_per_class: int = 10  # labeled examples per class
    validation_per_class: int = 10  # held-out labeled examples per class for model selection
    unlabeled_limit: int = 0  # cap on the unlabeled pool (seeded sample); 0 = no cap
    test_limit: int = 0  # evaluate on a fixed stratified test sample of this size; 0 = all
    # token tasks (NER): the label budget in labeled sentences, a seeded sample of train (required there; 0 = unset,
    # and sentence tasks refuse it: their budget is labels_per_class)
    labeled_size: int = 0
    validation_size: int = VALIDATION_SIZE  # token tasks: validation sentences, a seeded sample of dev (else of train); 0 = none
    task: str = ""  # a task name (`testbed plugins`); "" = as the dataset's rows say: sentence, or token for words + tags
    # the dataset's name in result.json and reports; "" = its own (a path's directory or file stem; testbed.results.dataset_name)
    label: str = ""

    def __post_init__(self):
        for key in ("validation_per_class", "unlabeled_limit", "test_limit", "labeled_size", "validation_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"dataset.{key} must be 0 or more, got {getattr(self, key)}")
        if self.labels_per_class < 1:
            raise ValueError(f"dataset.labels_per_class must be at least 1, got {self.labels_per_class}")


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "minilm"  # a registered backbone, or any Hugging Face local path / hub id
    max_length: int = 128  # tokens; batches are padded to their longest text, not to this

    def __post_init__(self):
        if self.max_length < 2:
            raise ValueError(f"backbone.max_length must be at least 2, got {self.max_length}")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch_size: int = 16  # labeled examples per step
    unlabeled_ratio: int = 1  # unlabeled batch = unlabeled_ratio x batch_size (mu in FixMatch)
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear learning-rate warm-up, then constant
    eval_every: int = 100  # steps between evaluations (and always at the last step)
    eval_batch_size: int = 64
    threads: int = 0  # torch threads; 0 = torch's default. Not part of the run id.
    view_variants: int = 4  # K cached views per unlabeled text: its n-th draw uses variant n mod K; 0 = a fresh, uncached view per draw
    # steps between mid-run checkpoints (taken at evaluations, so a multiple of eval_every is exact); 0 = at the
    # first evaluation after every 10 minutes of training; -1 = never. Not part of the run id: it never changes numbers.
    checkpoint_every: int = 0
    device: str = "auto"  # auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps; the student and all run state live there
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype of the forward passes (fp16 with a GradScaler)
    # which model the run reports: auto = the teacher's model where the teacher offers one (Mean Teacher's EMA, as
    # the papers evaluate), else the student | student | teacher. Both are evaluated and recorded either way.
    evaluate: str = "auto"
    # which pseudo-labels count: "row", each row on its own (a text; a token of a token task); "example", a row's
    # weight becomes 0 unless every row of its example has weight > 0 (sentence-level selection in NER self-training)
    selection: str = "row"

    def __post_init__(self):
        for key in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("unlabeled_ratio", "warmup_steps", "threads", "weight_decay", "view_variants"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be 0 or more, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if self.checkpoint_every < -1:
            raise ValueError(f"train.checkpoint_every must be -1 (never), 0 (every ~10 minutes) or a number of steps, got {self.checkpoint_every}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.evaluate not in EVALUATED:
            raise ValueError(f"train.evaluate must be one of {', '.join(EVALUATED)}, got {self.evaluate!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"train.selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
PRECISIONS = ("fp32", "bf16", "fp16")
EVALUATED = ("auto", "student", "teacher")
SELECTIONS = ("row", "example")


CORE_SECTIONS = {"dataset": DatasetConfig, "backbone": BackboneConfig, "train": TrainConfig}
# config path -> plugin kind, for every section whose ``name`` picks a plugin record
CHOICES = {
    "dataset": "dataset",
    "backbone": "backbone",
    "augmentation.weak": "augmentation",
    "augmentation.strong": "augmentation",
    "augmentation.labeled": "augmentation",  # the labeled batch's own augmentation (a token task's keeps each word's tag)
    "teacher": "teacher",
    "selector": "selector",
    "distance": "distance",
    "schedule": "schedule",
    "tsa": "schedule",  # training-signal annealing: η(t); labeled examples with p(correct) > η leave the loss
    "regulariser": "regulariser",  # batch-level loss terms added to the objective
}
DEFAULTS: dict[str, Any] = {
    "method": "supervised",
    "seed": 0,
    "augmentation": {"weak": {"name": "identity"}, "strong": {"name": "identity"}, "labeled": {"name": "identity"}},
    "teacher": {"name": "self"},
    "selector": {"name": "none"},
    "distance": {"name": "ce"},
    "schedule": {"name": "constant"},
    "tsa": {"name": "constant", "weight": 1.0},  # η = 1: no labeled example is ever masked
    "regulariser": {"name": "none"},
}
# how a run runs, not what it computes (gradient checkpointing recomputes activations: same numbers, tested)
NOT_IN_RUN_ID = {("train", "threads"), ("train", "checkpoint_every"), ("backbone", "gradient_checkpointing")}
# keys added after runs existed: at these values they leave the hash as it was, so those runs keep their ids
IN_RUN_ID_UNLESS = {("train", "device"): "auto", ("train", "precision"): "fp32", ("train", "evaluate"): "auto",
                    ("backbone", "lora"): {"r": 0, "alpha": 16.0, "dropout": 0.05, "target_modules": ""},
                    ("regulariser", "name"): "none",  # a section the drop empties goes too
                    ("selector", "per_class"): "count",  # topk's rule before CBST's "proportion" was added
                    ("dataset", "labeled_size"): 0, ("dataset", "validation_size"): VALIDATION_SIZE, ("dataset", "task"): "",
                    ("train", "selection"): "row",  # added with token tasks
                    ("augmentation", "labeled"): {"name": "identity"},  # added with NER augmentations of the labeled batch
                    ("dataset", "test_fraction"): 0.0,  # the files dataset's split of one labelled file
                    ("dataset", "label"): ""}  # the dataset's name in reports
# Those every resolved config has: a run whose config.json lacks one was written before it existed and
# ran as its default, which reports fill in (selector.per_class and backbone.lora come with some choices only)
EVERY_RUN_HAS = {key: value for key, value in IN_RUN_ID_UNLESS.items() if key not in {("selector", "per_class"), ("backbone", "lora")}}


@dataclass(frozen=True)
class Choice:
    """The strategy picked for one seam and its typed options."""

    name: str
    record: Record
    options: Any


@dataclass(frozen=True)
class RunConfig:
    method: str
    seed: int
    dataset: DatasetConfig
    backbone: BackboneConfig
    train: TrainConfig
    choices: dict[str, Choice]  # keyed like CHOICES
    resolved: dict  # the whole config as plain data; saved as config.json

    @property
    def run_id(self) -> str:
        return run_id(self.resolved)


def run_id(resolved: dict) -> str:
    """Hash of the resolved config, so the same config always maps to the same run."""
    data = json.loads(json.dumps(resolved))
    for section, key in NOT_IN_RUN_ID:
        data.get(section, {}).pop(key, None)
    for (section, key), value in IN_RUN_ID_UNLESS.items():
        if data.get(section, {}).get(key) == value:
            data[section].pop(key)
            if not data[section]:
                data.pop(section)
    train = data.get("train", {})
    if str(train.get("device", "")).startswith("cuda:"):  # which GPU of a machine is placement (a grid spreads cells over
        train["device"] = "cuda"  # --devices), not what the run computes: cuda:N hashes as cuda
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- reading


def load_toml(path: str | Path, what: str = "Config file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} not found. Pass an existing .toml file or only key=value overrides.")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 (byte at position {exc.start}). Save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{what} {str(path)!r} is not valid TOML: {exc}. Fix the line it names.") from None


def parse_value(text: str, key: str = "") -> Any:
    """``0.95`` -> float, ``true`` -> bool, ``[1, 2]`` -> list, anything else -> the string. For a
    name-valued ``key`` (``method``, ``*.name``, a seam such as ``distance``) a bare word stays a
    string, even one TOML reads as a number or boolean: ``distance.name=nan`` names a plugin ``nan``."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if is_name_key(key) and not isinstance(value, (str, dict, list)):
        return text
    return value


def is_name_key(key: str) -> bool:
    """Keys whose value names a preset or a plugin: ``method``, ``<seam>`` and ``<seam>.name``."""
    return key == "method" or key in CHOICES or (key.endswith(".name") and key[: -len(".name")] in CHOICES)


def parse_overrides(overrides: list[str]) -> dict:
    nested: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"Override {item!r} is not key=value. Example: selector.threshold=0.9")
        set_dotted(nested, key.strip(), parse_value(value.strip(), key.strip()))
    return nested


def set_dotted(nested: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = nested
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if isinstance(child, str):  # "augmentation.strong=eda" then "augmentation.strong.p=..."
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise UserError(f"Config key {'.'.join(parts[: i + 1])!r} is a value, so {key!r} cannot be set below it.")
        node = child
    leaf = parts[-1]
    if isinstance(node.get(leaf), dict) and isinstance(value, str):
        node[leaf]["name"] = value  # "x.p=0.2 x=eda": the name joins the options already given
    else:
        node[leaf] = value


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def get_dotted(nested: dict, path: str) -> Any:
    node: Any = nested
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def normalize_choices(layer: dict) -> dict:
    """Allow ``selector = "none"`` as shorthand for ``selector = {name = "none"}``."""
    layer = copy.deepcopy(layer)
    for path in CHOICES:
        value = get_dotted(layer, path)
        if isinstance(value, str):
            parent, _, leaf = path.rpartition(".")
            (get_dotted(layer, parent) if parent else layer)[leaf] = {"name": value}
    return layer


def _quote_hint(value: Any) -> str:
    """For a name that TOML read as a number or boolean (``name = nan`` in a file): how to write it."""
    if isinstance(value, (bool, int, float)):
        return f" In a TOML file, quote a name that reads as a number or boolean: name = \"{str(value).lower()}\"."
    return ""


# --------------------------------------------------------------------------- resolving


def resolve(user: dict, registry) -> RunConfig:
    """Merge defaults, the preset named by ``method`` and the user's settings, then check
    and type every key against the core sections and the chosen plugins' options."""
    user = normalize_choices(user)
    method = user.get("method", DEFAULTS["method"])
    if not isinstance(method, str):
        raise UserError(f"Config key 'method' must be a preset name, got {method!r}.{_quote_hint(method)}")
    for path in CHOICES:  # a name TOML read as a number (name = nan) must fail here: nan != nan would drop it below
        name = get_dotted(user, f"{path}.name")
        if name is not None and not isinstance(name, str):
            raise UserError(f"Config key '{path}.name' must name a {CHOICES[path]}, got {name!r}.{_quote_hint(name)}")
    preset = normalize_choices(dict(registry.get("preset", method).settings))
    layers = [normalize_choices(DEFAULTS), preset, user]
    adapt_views_to_task(layers, registry)
    drop_replaced_options(layers)
    merged = merge(merge(layers[0], preset), user)
    _reject_unknown_sections(merged)
    _route_shorthands(merged, registry)

    seed = merged.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"Config key 'seed' must be an integer, got {seed!r}.")
    resolved: dict[str, Any] = {"method": method, "seed": seed}
    choices: dict[str, Choice] = {}
    core: dict[str, Any] = {}
    for section, cls in CORE_SECTIONS.items():
        values = dict(merged.get(section) or {})
        opts_record = None
        if section in CHOICES:
            opts_record = registry.get(CHOICES[section], values.get("name", cls.name))
        core[section], options = build_section(section, cls, values, opts_record)
        resolved[section] = dataclasses.asdict(core[section])
        if opts_record is not None:
            resolved[section].update(dataclasses.asdict(options))
            choices[section] = Choice(core[section].name, opts_record, options)
    for path, kind in CHOICES.items():
        if path in CORE_SECTIONS:
            continue
        values = dict(get_dotted(merged, path) or {})
        name = values.get("name")
        if not isinstance(name, str):
            raise UserError(f"Config key '{path}.name' must name a {kind}, got {name!r}.{_quote_hint(name)} "
                            f"{did_you_mean('', registry.names(kind), kind + 's')}")
        record = registry.get(kind, name)
        _, options = build_section(path, None, values, record)
        options = _resolve_nested_specs(options, registry, path)
        choices[path] = Choice(name, record, options)
        parent, _, leaf = path.rpartition(".")
        target = resolved.setdefault(parent, {}) if parent else resolved
        target[leaf] = {"name": name, **dataclasses.asdict(options)}
    return RunConfig(method=method, seed=seed, dataset=core["dataset"], backbone=core["backbone"],
                     train=core["train"], choices=choices, resolved=resolved)


def resolve_augmentation(spec: Any, registry, where: str) -> tuple[Record, Any, dict]:
    """An augmentation spec (a name or a table with ``name`` and options) -> (record, typed options,
    canonical table with every option). Nested ``AugmentationSpec`` options are resolved the same way."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"Config key {where!r} must be an augmentation name or a table with 'name' and its options, "
                        f"got {spec!r}. Example: {{name = \"word_swap\", p = 0.2}}.")
    try:
        record = registry.get("augmentation", spec["name"])
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    _, options = build_section(where, None, spec, record)
    options = _resolve_nested_specs(options, registry, where)
    return record, options, {"name": record.name, **dataclasses.asdict(options)}


def _resolve_nested_specs(options: Any, registry, where: str) -> Any:
    """Options fields typed ``AugmentationSpec`` (or a list of them) hold canonical spec tables afterwards."""
    if options is None:
        return options
    hints = typing.get_type_hints(type(options), include_extras=True)
    changes = {}
    for f in dataclasses.fields(options):
        hint, value = hints[f.name], getattr(options, f.name)
        if hint == AugmentationSpec:
            changes[f.name] = resolve_augmentation(value, registry, f"{where}.{f.name}")[2]
        elif typing.get_origin(hint) in (list, tuple) and typing.get_args(hint)[:1] == (AugmentationSpec,):
            changes[f.name] = typing.get_origin(hint)(
                resolve_augmentation(item, registry, f"{where}.{f.name}[{i}]")[2] for i, item in enumerate(value))
    return dataclasses.replace(options, **changes) if changes else options


def declared_task(merged: dict, registry) -> str:
    """The task a config's dataset runs, as far as it is known before the data is read: ``dataset.task``,
    else the registered dataset's declared ``task`` ("" when neither says: the rows will decide)."""
    dataset = merged.get("dataset") if isinstance(merged.get("dataset"), dict) else {}
    if isinstance(dataset.get("task"), str) and dataset["task"]:
        return dataset["task"]
    entry = registry.records.get("dataset", {}).get(dataset.get("name", DatasetConfig.name))
    return getattr(entry[0], "task", "") if entry else ""


def adapt_views_to_task(layers: list[dict], registry) -> None:
    """A task whose views must keep every word in place (token classification: each word keeps its
    tag) replaces a preset's weak or strong augmentation that does not by its ``aligned_view``
    (``word_mask`` for ``token``), so presets run unchanged on such datasets. Only the preset's layer
    changes: an augmentation the user names stays, and is refused by the run if it cannot serve."""
    _, preset, _ = layers
    entry = registry.records.get("task", {}).get(declared_task(merge(merge(layers[0], preset), layers[2]), registry))
    aligned = getattr(entry[0], "aligned_view", None) if entry else None
    if aligned is None:
        return
    for role in ("weak", "strong"):
        spec = get_dotted(preset, f"augmentation.{role}")
        augmentation = registry.records.get("augmentation", {}).get(spec.get("name")) if isinstance(spec, dict) else None
        if augmentation is not None and not augmentation[0].keeps_words:
            preset["augmentation"][role] = copy.deepcopy(aligned) if isinstance(aligned, dict) else {"name": aligned}


def drop_replaced_options(layers: list[dict]) -> None:
    """Options set for a strategy apply only while it stays chosen: when a later layer (preset
    over defaults, user over preset, grid cell over grid base) names another strategy for a
    seam, earlier options for it go. Options given before any name apply to whichever is picked."""
    for path in CHOICES:
        name, specs = None, []
        for layer in layers:
            spec = get_dotted(layer, path)
            if isinstance(spec, dict):
                name = spec.get("name", name)
                specs.append((spec, name))
        for spec, chosen in specs:
            if chosen is not None and chosen is not name and chosen != name:  # "is": a nan name stays for resolve to refuse
                spec.clear()


def _reject_unknown_sections(merged: dict) -> None:
    valid = {"method", "seed", *CORE_SECTIONS, "augmentation", *CHOICES}
    for key in merged:
        if key not in valid:
            raise UserError(f"Unknown config key {key!r}. {did_you_mean(key, {k for k in valid if not k.startswith('augmentation.')}, 'top-level keys')}")
    aug = merged.get("augmentation")
    roles = [path.partition(".")[2] for path in CHOICES if path.startswith("augmentation.")]
    if not isinstance(aug, dict):
        raise UserError(f"Config key 'augmentation' must be a table with {', '.join(map(repr, roles))}.")
    for key in aug:
        if key not in roles:
            raise UserError(f"Unknown config key 'augmentation.{key}'. {did_you_mean(key, roles, 'keys of augmentation')}")
    for path in CHOICES:
        value = get_dotted(merged, path)
        if value is not None and not isinstance(value, dict):
            raise UserError(f"Config key {path!r} must be a name or a table with 'name', got {value!r}.")


def _route_shorthands(merged: dict, registry) -> None:
    """Names that are not registered but that a record claims (its ``shorthand``): for the dataset
    and backbone sections, ``dataset.name=path/to/file.csv`` may mean the dataset whose shorthand
    takes paths, ``backbone.name=bert-base-uncased`` the backbone whose shorthand takes hub ids.
    A name close to a registered one is a typo, not a hub id, unless it is an existing path."""
    for section, default in (("dataset", DatasetConfig.name), ("backbone", BackboneConfig.name)):
        values = merged.setdefault(section, {})
        name = values.get("name", default)
        registered = registry.records[section]
        if not isinstance(name, str) or name in registered:
            continue
        claims = [(record, options) for record, _ in registered.values() if record.shorthand
                  for options in [record.shorthand(name)] if options is not None]
        if not claims:
            continue
        close = difflib.get_close_matches(name, list(registered), n=1, cutoff=0.8)
        if close and not Path(name).exists():
            record = claims[0][0]
            keys = " ".join(f"{section}.{key}={value}" for key, value in claims[0][1].items())
            raise UserError(f"Unknown {section} {name!r}. Did you mean {close[0]!r}? To mean {name!r} as the "
                            f"{record.name} {section} does, use {section}.name={record.name} {keys}.")
        if len(claims) > 1:
            owners = ", ".join(repr(record.name) for record, _ in claims)
            raise UserError(f"The {section} name {name!r} is claimed by several {section}s ({owners}); "
                            f"set {section}.name to one of them and give its options.")
        record, options = claims[0]
        values.update(name=record.name, **options)


def build_section(section: str, core_cls: type | None, values: dict, record: Record | None):
    """Split ``values`` into the core dataclass and the plugin's options; check names and types."""
    core_fields = {f.name: f for f in dataclasses.fields(core_cls)} if core_cls else {"name": None}
    opt_fields = {f.name: f for f in dataclasses.fields(record.options)} if record else {}
    clash = set(core_fields) & set(opt_fields)
    if clash:
        raise UserError(f"Plugin option(s) {sorted(clash)} of {section} {record.name!r} clash with core keys; the plugin must rename them.")
    valid = {**core_fields, **opt_fields}
    for key in values:
        if key not in valid:
            owner = f"{section} {record.name!r}" if record else section
            keys = [f"{section}.{k}" for k in valid]
            raise UserError(f"Unknown config key '{section}.{key}' (for {owner}). {did_you_mean(f'{section}.{key}', keys, 'keys')}")
    core_values = {k: v for k, v in values.items() if k in core_fields}
    opt_values = {k: v for k, v in values.items() if k in opt_fields}
    core = _instantiate(core_cls, core_values, section) if core_cls else None
    options = _instantiate(record.options, opt_values, section) if record else None
    return core, options


def _instantiate(cls: type, values: dict, section: str):
    hints = typing.get_type_hints(cls)
    typed = {}
    for key, value in values.items():
        typed[key] = _coerce(value, hints[key], f"{section}.{key}")
    try:
        return cls(**typed)
    except (TypeError, ValueError) as exc:  # __post_init__ checks in option dataclasses
        raise UserError(f"Invalid value in section {section!r}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except UserError:
                continue
        raise UserError(f"Config key {key!r} must be {hint}, got {value!r}.")
    if hint is type(None):
        if value is None:
            return None
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is str and isinstance(value, str):
        return value
    elif hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    elif hint in (int, bool) and type(value) is hint:
        return value
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        (inner, *_) = typing.get_args(hint) or (Any,)
        items = [v if inner is Any else _coerce(v, inner, key) for v in value]
        return origin(items)
    elif hint is Any:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise UserError(f"Config key {key!r} must be {name}, got {value!r}.")
