"""Ablation grids: a TOML file (plus Hydra-style command-line axes) expands to cells, each a
run config that is resolved and checked before anything runs; the cells then run through an
executor plugin (``serial``, ``local`` process pool, ``dask``) into ``OUT/<run_id>/``.

A grid file::

    seeds = [0, 1]              # the innermost axis, "seed" (top-level keys come before the tables)
    zip = [["a", "b"]]          # axes a and b vary together instead of crossing
    exclude = [{"distance.name" = "kl", "selector.name" = ["flexmatch", "uncertainty"]}]
    include = [{"distance.name" = "ce", "selector.name" = "threshold"}]  # extra cells (x seeds)

    [base]                      # a run config, as for `testbed run`
    method = "fixmatch"
    backbone.name = "tiny"

    [axes]                      # dotted keys -> values; the cells are the cartesian product
    "distance.name" = ["l1", "l2", "kl"]
    "selector.name" = ["threshold", "flexmatch", "uncertainty"]
    "augmentation.strong" = ["identity", "drop_swap", {name = "drop_swap", p_delete = 0.3}]

The run id of a cell is the hash of its resolved config, so a cell that is already finished in
``OUT`` (by this grid, another grid or ``testbed run``) is never run again. A cell runs through
``testbed.runs.execute``, which holds the run's lock while it runs, so two grids (or a grid and
``testbed run``) on one directory never run the same cell at once.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import UserError, did_you_mean

GRID_KEYS = ("base", "axes", "zip", "exclude", "include", "seeds")
SEED = "seed"
# environment variables a worker gets from the process that started the grid
FORWARDED_ENV_PREFIXES = ("TESTBED_", "MLFLOW_", "HF_")


# --------------------------------------------------------------------------- the grid


@dataclass
class Grid:
    """A parsed grid: ``base`` (nested run config), ``axes`` (dotted key -> values, in order,
    ``seed`` last), ``zip`` groups of axis keys, ``exclude`` / ``include`` entries (flat dicts)."""

    base: dict = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    zip: list[list[str]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    source: str = "command line"


@dataclass(frozen=True)
class Cell:
    index: int  # 1-based position in the expanded grid
    values: dict  # axis key -> this cell's value (what varies), including the seed
    user: dict  # the cell's whole user config (base + values), nested, as `testbed run` takes it
    run_id: str

    def describe(self) -> str:
        return " ".join(f"{key}={show(value)}" for key, value in self.values.items()) or "(the base config)"


def show(value: Any) -> str:
    """A value the way it is written on the command line: strings bare, the rest as TOML-ish JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={show(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def load_grid(path: str | Path | None, overrides: Iterable[str] = ()) -> Grid:
    """Read a grid file (or none) and apply command-line ``key=v1,v2`` axes / ``key=value`` settings."""
    from testbed.config import load_toml

    if path is None:
        grid = Grid()
    else:
        data = load_toml(path, "Grid file")  # UserError for a missing or malformed file
        if not data:  # an empty file would silently be one run of every default (supervised, MiniLM, every step)
            raise UserError(f"Grid file {str(path)!r} is empty. Give it [axes] (dotted keys with lists of values) and, if "
                            "needed, [base] and seeds; e.g. benchmarks/ablation_tiny.toml. For one run, use `testbed run`.")
        grid = parse_grid(data, source=str(path))
    apply_overrides(grid, list(overrides))
    check_grid(grid)
    return grid


def parse_grid(data: dict, source: str = "grid") -> Grid:
    for key in data:
        if key not in GRID_KEYS:
            hint = did_you_mean(key, GRID_KEYS, "grid keys")
            raise UserError(f"{source}: unknown grid key {key!r}. {hint} Run config keys go under [base].")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise UserError(f"{source}: 'base' must be a table (a run config), got {base!r}.")
    axes_table = data.get("axes", {})
    if not isinstance(axes_table, dict):
        raise UserError(f"{source}: 'axes' must be a table of dotted keys -> lists, got {axes_table!r}.")
    axes: dict[str, list] = {}
    _flatten_axes(axes_table, "", axes, source)

    groups: list[list[str]] = []
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise UserError(f"{source}: 'zip' must be a list of groups, e.g. zip = [[\"a\", \"b\"]], got {zips!r}.")
    for number, group in enumerate(zips, 1):
        if isinstance(group, dict):  # [[zip]] tables: the group's axes with their values
            values: dict[str, list] = {}
            _flatten_axes(group, "", values, source)
            for key in values:
                if key in axes:
                    raise UserError(f"{source}: zip group {number} repeats axis {key!r}, which is also in [axes].")
            axes.update(values)
            groups.append(list(values))
        elif isinstance(group, list) and all(isinstance(k, str) for k in group):
            groups.append(list(group))
        else:
            raise UserError(f"{source}: zip group {number} must be a list of axis names or a table of axes, got {group!r}.")

    if "seeds" in data:
        seeds = data["seeds"]
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = list(range(seeds))
        if SEED in axes:
            raise UserError(f"{source}: give the seeds once, either as 'seeds' or as the axis 'seed'.")
        axes[SEED] = seeds
    if SEED in axes:  # the innermost axis: a cell's seeds are neighbours
        axes[SEED] = axes.pop(SEED)

    exclude = _entries(data.get("exclude", []), "exclude", source, set(axes))
    include = _entries(data.get("include", []), "include", source, None)
    return Grid(base=base, axes=axes, zip=groups, exclude=exclude, include=include, source=source)


def _flatten_axes(node: dict, prefix: str, out: dict[str, list], source: str = "grid") -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten_axes(value, dotted + ".", out, source)
        elif dotted in out:  # "distance.name" = [...] and distance.name = [...] (or [axes.distance]): one would be lost
            raise UserError(f"{source}: axis {dotted!r} is given twice ({show(out[dotted])} and {show(value)}). "
                            "Give each axis once, with all its values in one list.")
        elif isinstance(value, list):
            out[dotted] = value
        else:
            raise UserError(f"Axis {dotted!r} must be a list of values, got {value!r}. "
                            f"Example: \"{dotted}\" = [{json.dumps(value)}, ...]")


def _entries(value: Any, what: str, source: str, axes: set[str] | None) -> list[dict]:
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise UserError(f"{source}: '{what}' must be a list of tables, e.g. {what} = [{{\"distance.name\" = \"kl\"}}], got {value!r}.")
    entries = []
    for entry in value:
        flat: dict[str, Any] = {}
        _flatten_entry(entry, "", flat, axes)
        entries.append(flat)
    return entries


def _flatten_entry(node: dict, prefix: str, out: dict, axes: set[str] | None) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not (axes and dotted in axes):
            _flatten_entry(value, dotted + ".", out, axes)
        else:
            out[dotted] = value


def split_values(text: str) -> list[str] | None:
    """Split ``a,b,c`` at commas outside brackets, braces and quotes; None when there is no
    such comma (``[1,2]`` and ``"a,b"`` are one value)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            if char == quote and text[i - 1] != "\\":
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if not parts:
        return None
    return [*parts, text[start:]]


def apply_overrides(grid: Grid, overrides: list[str]) -> None:
    """``key=v1,v2`` makes (or replaces) an axis; ``key=value`` sets the base value and, when
    ``key`` was an axis, fixes it to that value."""
    from testbed.config import parse_value

    for item in overrides:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise UserError(f"Override {item!r} is not key=value or key=v1,v2. Example: distance.name=l1,l2,kl")
        pieces = split_values(text)
        if pieces is not None:
            if any(not p.strip() for p in pieces):
                raise UserError(f"Axis {key!r} from the command line has an empty value in {text!r}.")
            set_axis(grid, key, [parse_value(p.strip(), key) for p in pieces])
        else:
            set_base(grid, key, parse_value(text, key))


def set_axis(grid: Grid, key: str, values: list) -> None:
    """Make (or replace) the axis ``key`` (``seeds`` means ``seed``, the innermost axis) with ``values``."""
    if key == "seeds":
        key = SEED
    _check_not_zipped(grid, key, "replace it from the command line")
    grid.axes[key] = list(values)
    if SEED in grid.axes:
        grid.axes[SEED] = grid.axes.pop(SEED)


def set_base(grid: Grid, key: str, value: Any) -> None:
    """Set the dotted ``key`` of the base config to ``value``; an axis ``key`` is fixed to it."""
    from testbed.config import set_dotted

    if key == "seeds":
        key = SEED
    if key in grid.axes:
        _check_not_zipped(grid, key, "fix it to one value")
        del grid.axes[key]
        grid.exclude = [{k: v for k, v in e.items() if k != key} for e in grid.exclude]
    set_dotted(grid.base, key, value)


def _check_not_zipped(grid: Grid, key: str, what: str) -> None:
    for group in grid.zip:
        if key in group:
            raise UserError(f"Axis {key!r} is zipped with {[k for k in group if k != key]} in {grid.source}; "
                            f"cannot {what}. Edit the grid file instead.")


def check_grid(grid: Grid) -> None:
    src = grid.source
    for key, values in grid.axes.items():
        if not values:
            raise UserError(f"{src}: axis {key!r} is empty. Give it at least one value, or remove it.")
        if key == SEED and not all(isinstance(s, int) and not isinstance(s, bool) for s in values):
            raise UserError(f"{src}: seeds must be integers, got {values!r}.")
    seen: dict[str, int] = {}
    for number, group in enumerate(grid.zip, 1):
        for key in group:
            if key not in grid.axes:
                raise UserError(f"{src}: zip group {number} names {key!r}, which is not an axis. "
                                f"{did_you_mean(key, grid.axes, 'axes')}")
            if key in seen:
                raise UserError(f"{src}: axis {key!r} is in zip groups {seen[key]} and {number}; an axis can be in one group only.")
            seen[key] = number
        lengths = {key: len(grid.axes[key]) for key in group}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise UserError(f"{src}: zip group {number} has axes of unequal length ({sizes} values); "
                            "axes that vary together need the same number of values.")
    for number, entry in enumerate(grid.exclude, 1):
        if not entry:
            raise UserError(f"{src}: exclude entry {number} is empty; it would exclude every cell.")
        for key, value in entry.items():
            if key not in grid.axes:
                raise UserError(f"{src}: exclude entry {number} names {key!r}, which is not an axis. "
                                f"{did_you_mean(key, grid.axes, 'axes')}")
            for v in _any_of(value, grid.axes[key]):
                if v not in grid.axes[key]:
                    raise UserError(f"{src}: exclude entry {number}: {key}={show(v)} is not a value of that axis "
                                    f"({', '.join(show(a) for a in grid.axes[key])}).")
    for number, entry in enumerate(grid.include, 1):
        if not entry:
            raise UserError(f"{src}: include entry {number} is empty.")


def _any_of(value: Any, axis_values: list) -> list:
    """An exclude value is one axis value, or a list of them (unless the list is itself a value)."""
    return value if isinstance(value, list) and value not in axis_values else [value]


# --------------------------------------------------------------------------- expansion


def combinations(grid: Grid) -> list[dict[str, Any]]:
    """Axis values of every cell, in order: the product (zip groups as one axis), minus
    excludes, plus includes (each with every seed unless it gives one)."""
    zipped = {key: group for group in grid.zip for key in group}
    factors, done = [], set()
    for key in grid.axes:
        if key in done:
            continue
        group = zipped.get(key, [key])
        done.update(group)
        n = len(grid.axes[group[0]])
        factors.append([{k: grid.axes[k][i] for k in group} for i in range(n)])
    combos = [dict(kv for part in product for kv in part.items()) for product in itertools.product(*factors)]
    combos = [c for c in combos if not any(_matches(c, e, grid.axes) for e in grid.exclude)]
    for entry in grid.include:
        if SEED in entry or SEED not in grid.axes:
            combos.append(dict(entry))
        else:
            combos.extend({**entry, SEED: seed} for seed in grid.axes[SEED])
    return combos


def _matches(combo: dict, entry: dict, axes: dict) -> bool:
    return all(combo.get(key) in _any_of(value, axes[key]) for key, value in entry.items())


def cell_config(base: dict, values: dict) -> dict:
    """Base + the cell's values. As between a preset and `testbed run`'s settings, a value that
    picks another strategy for a seam drops the options of the strategy the base named there;
    options the base gives for a seam without naming a strategy apply to whichever is picked."""
    from testbed.config import drop_replaced_options, merge, normalize_choices, set_dotted

    layer: dict = {}
    for key, value in values.items():
        set_dotted(layer, key, copy.deepcopy(value))
    base, layer = normalize_choices(base), normalize_choices(layer)
    drop_replaced_options([base, layer])
    return merge(base, layer)


def parse_devices(text: str) -> tuple[str, ...]:
    """``--devices 0,1,2,3`` -> cuda:0 ... cuda:3; device names (``cuda:1``, ``cpu``, ``mps``) are taken
    as they are. One kind of device, each once: a worker holds one of them for its whole life."""
    from testbed.config import DEVICE_PATTERN

    devices = tuple(f"cuda:{d}" if d.isdigit() else d for d in (piece.strip() for piece in text.split(",")))
    for device in devices:
        if device == "auto" or not DEVICE_PATTERN.fullmatch(device):
            raise UserError(f"--devices takes CUDA device numbers (0,1,2,3) or device names (cuda:0, cpu, mps), got {device!r}.")
    if len(set(devices)) < len(devices):
        raise UserError(f"--devices names a device twice ({text}): one cell runs on a device at a time.")
    if len({device_kind(d) for d in devices}) > 1:
        raise UserError(f"--devices mixes kinds of device ({text}); give one kind, e.g. 0,1,2,3.")
    return devices


def worker_count(workers: int | None, devices: tuple[str, ...]) -> int:
    """The grid's workers: ``workers``, else one per device, else 1; never more than the devices."""
    if devices and workers is not None and workers > len(devices):
        raise UserError(f"--workers {workers} with {len(devices)} devices: one cell runs on a device at a time, "
                        f"so at most {len(devices)} workers.")
    return workers or len(devices) or 1


def device_kind(device: str) -> str:
    """``cuda:3`` -> ``cuda``: what a cell's run id sees of its device (the index is placement)."""
    return device.partition(":")[0]


def expand(grid: Grid, registry, devices: tuple[str, ...] = ()) -> list[Cell]:
    """Every cell, resolved and checked through ``testbed.config.resolve``; the first bad
    cell stops everything with a UserError naming it. Cells with the same run id are one.
    With ``devices``, a cell that leaves train.device unset (or ``auto``) runs on their kind
    (``cuda``): each worker then puts it on the device it holds."""
    from testbed.config import resolve, set_dotted

    combos = combinations(grid)
    cells: list[Cell] = []
    seen: set[str] = set()
    for number, values in enumerate(combos, 1):
        user = cell_config(grid.base, values)
        if devices and (user.get("train") or {}).get("device", "auto") == "auto":
            set_dotted(user, "train.device", device_kind(devices[0]))
        try:
            cfg = resolve(user, registry)
        except UserError as exc:
            raise UserError(_cell_error(number, len(combos), values, str(exc))) from None
        if cfg.run_id in seen:
            continue
        seen.add(cfg.run_id)
        cells.append(Cell(index=len(cells) + 1, values=values, user=user, run_id=cfg.run_id))
    return cells


def _cell_error(number: int, total: int, values: dict, message: str) -> str:
    desc = " ".join(f"{k}={show(v)}" for k, v in values.items()) or "the base config"
    where = f"grid cell {number} of {total} ({desc})"
    if message.startswith("Unknown config key"):
        for key in values:
            parts = key.split(".")
            if any(f"'{'.'.join(parts[:i])}'" in message for i in range(len(parts), 0, -1)):
                return f"Axis {key!r}: {message} (in {where})"
    return f"In {where}: {message}"


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Task:
    """One cell as sent to a worker: everything it needs, picklable."""

    index: int
    run_id: str
    user: dict
    out_dir: str
    label: str
    plugins_dirs: tuple[str, ...] = ()
    strict: bool = False
    threads: int = 0  # torch threads, unless the cell sets train.threads; 0 = torch's default
    force: bool = False
    retry_failed: bool = False
    env: dict = field(default_factory=dict)
    devices: tuple[str, ...] = ()  # --devices: a cell on their kind runs on the one this worker holds


_REGISTRIES: dict = {}


def _worker_registry(plugins_dirs: tuple[str, ...], strict: bool):
    """One registry per worker process and plugin set, loaded on its first cell."""
    import warnings

    from testbed.plugins import load_plugins

    key = (plugins_dirs, strict, os.environ.get("TESTBED_PLUGINS_DIR", ""))
    if key not in _REGISTRIES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the grid's own process already warned
            _REGISTRIES[key] = load_plugins(plugins_dirs, strict=strict)
    return _REGISTRIES[key]


def run_cell(task: Task) -> dict:
    """Run one cell in a worker process. Never raises for a failing cell: returns its status,
    ``ran`` | ``done`` (finished before) | ``failed`` (now; error.json written) |
    ``failed-before`` | ``elsewhere`` (another live process holds its lock)."""
    saved = {key: os.environ.get(key) for key in [*task.env, "TOKENIZERS_PARALLELISM"]}
    os.environ.update(task.env)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _run_cell(task)
    finally:  # the serial executor runs cells in the grid's own process
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_cell(task: Task) -> dict:
    """The cell through ``testbed.runs.execute``, which owns its directory (lock, cleanup,
    error.json); its outcome mapped onto the grid's statuses."""
    started = time.perf_counter()
    from testbed.config import resolve, set_dotted
    from testbed.runs import RunFailedBefore, RunHeldElsewhere, execute

    outcome = {"index": task.index, "run_id": task.run_id, "pid": os.getpid()}
    try:
        registry = _worker_registry(task.plugins_dirs, task.strict)
        outcome["setup_seconds"] = time.perf_counter() - started  # imports and plugins: a new worker's first cell
        user = copy.deepcopy(task.user)
        if task.threads and not (user.get("train") or {}).get("threads"):
            set_dotted(user, "train.threads", task.threads)  # not part of the run id
        if task.devices and (user.get("train") or {}).get("device") == device_kind(task.devices[0]):
            outcome["device"] = claim_device(task.devices)
            set_dotted(user, "train.device", outcome["device"])  # cuda:N hashes as cuda: the run id stays
        cfg = resolve(user, registry)
        if cfg.run_id != task.run_id:
            raise UserError(f"this worker resolves the cell to run id {cfg.run_id}, not {task.run_id}: "
                            "its testbed or plugins differ from those of the process that started the grid")
        _, result, ran = execute(cfg, registry, task.out_dir, force=task.force, progress=False,
                                 retry_failed=task.retry_failed, cell=task.label)
    except RunHeldElsewhere as exc:
        return {**outcome, "status": "elsewhere", "holder": exc.holder}
    except RunFailedBefore:
        return {**outcome, "status": "failed-before"}
    except Exception as exc:
        return {**outcome, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - started}
    if not ran:
        return {**outcome, "status": "done"}
    return {**outcome, "status": "ran", "seconds": time.perf_counter() - started,
            **{k: result.get(k) for k in ("test_accuracy", "train_seconds", "wall_seconds")}}


_CLAIMED: dict = {}  # this process's device: {"key": (lock directory, device), "fd": the held lock}


def device_locks_dir() -> Path:
    """Where workers on this machine lock their devices; machine-local, shared by every grid of this user."""
    return Path(os.environ.get("TESTBED_DEVICE_LOCKS") or Path(tempfile.gettempdir()) / f"testbed-devices-{os.getuid()}")


def claim_device(devices: tuple[str, ...], poll: float = 0.5) -> str:
    """The device of ``devices`` this worker process runs its cells on: the first whose lock is free,
    kept for the process's life (one CUDA context per worker; the kernel drops the ``flock`` when the
    worker dies). So a device runs one cell at a time, also across grids sharing this machine; with
    every device held, it waits."""
    root = device_locks_dir()
    held = _CLAIMED.get("key")
    if held is not None and held[0] == root and held[1] in devices:
        return held[1]
    release_device()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for device in devices:
            fd = os.open(root / f"{device.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _CLAIMED.update(key=(root, device), fd=fd)
            return device
        time.sleep(poll)


def release_device() -> None:
    """Give this process's device back (closing the file drops its lock)."""
    if "fd" in _CLAIMED:
        os.close(_CLAIMED.pop("fd"))
    _CLAIMED.pop("key", None)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class GridReport:
    cells: int = 0
    ran: list[str] = field(default_factory=list)  # run ids trained by this invocation
    done_before: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run id, error), this invocation
    failed_before: list[str] = field(default_factory=list)  # skipped: failed earlier (no --retry-failed)
    elsewhere: list[str] = field(default_factory=list)  # skipped: another live process runs them
    lost: list[tuple[str, str]] = field(default_factory=list)  # the executor lost them (a worker died)
    seconds: float = 0.0
    outcomes: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.ran)} ran", f"{len(self.done_before)} already done", f"{len(self.failed)} failed"]
        if self.failed_before:
            parts.append(f"{len(self.failed_before)} failed earlier (skipped; --retry-failed reruns them)")
        if self.elsewhere:
            parts.append(f"{len(self.elsewhere)} running elsewhere (skipped)")
        if self.lost:
            parts.append(f"{len(self.lost)} lost to a dead worker (rerun the grid to resume them)")
        return f"{self.cells} cells: " + ", ".join(parts) + f" in {self.seconds:.0f} s"

    @property
    def complete(self) -> bool:
        return not (self.failed or self.failed_before or self.lost)


def run_grid(cells: list[Cell], registry, out_dir: str | Path, *, executor: str = "local", workers: int = 1,
             executor_options: dict | None = None, force: bool = False, retry_failed: bool = False,
             plugins_dirs: Iterable[str | Path] = (), strict: bool = False, progress: bool = True,
             echo: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
             devices: tuple[str, ...] = ()) -> GridReport:
    """Run every cell that is not finished yet through the executor plugin ``executor``.
    Workers get this process's TESTBED_*, MLFLOW_* and HF_* environment variables, and ``env``.
    With ``devices`` (cells expanded with them), each worker holds one device and runs its cells there."""
    from testbed.resources import refuse_shared_data

    refuse_shared_data(out_dir, "The runs directory", "Pass --out somewhere else, e.g. runs.")
    from tqdm.auto import tqdm

    from testbed.config import build_section
    from testbed.runs import run_status
    from testbed.types import ExecutorContext

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    report = GridReport(cells=len(cells))
    record = registry.get("executor", executor)
    _, options = build_section("executor", None, dict(executor_options or {}), record)

    todo = []
    for cell in cells:
        status = "new" if force else run_status(out, cell.run_id, probe_lock=False)
        if status == "done":
            report.done_before.append(cell.run_id)
        elif status == "failed" and not retry_failed:
            report.failed_before.append(cell.run_id)
        else:
            todo.append(cell)
    if not todo:
        report.seconds = time.perf_counter() - started
        return report

    from testbed.runs import check_writable

    check_writable(out)  # a read-only or full runs directory: one error, not one per cell
    env = {**_forwarded_env(), **(env or {})}
    dirs = tuple(str(Path(d).resolve()) for d in plugins_dirs)
    cores = available_cores()
    context = ExecutorContext(workers=workers, cores=cores)
    bar = tqdm(total=len(todo), desc="grid", unit="cell", disable=not progress, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
    say = echo or (lambda line: tqdm.write(line))
    counts = {"done": 0, "failed": 0, "skipped": 0}
    try:
        with record.factory(options, context) as pool:
            out.mkdir(parents=True, exist_ok=True)
            threads = pool.threads_per_task
            if threads is None:
                threads = max(1, cores // max(1, workers))
            tasks = [Task(index=c.index, run_id=c.run_id, user=c.user, out_dir=str(out), label=c.describe(),
                          plugins_dirs=dirs, strict=strict, threads=threads, force=force,
                          retry_failed=retry_failed, env=env, devices=tuple(devices)) for c in todo]
            bar.set_postfix_str(_postfix(counts, len(todo)))
            for task, outcome in pool.map_unordered(run_cell, tasks):
                if isinstance(outcome, BaseException):
                    report.lost.append((task.run_id, f"{type(outcome).__name__}: {outcome}"))
                    say(f"cell {task.index} ({task.label}) lost: {type(outcome).__name__}: {outcome}")
                    counts["failed"] += 1
                else:
                    report.outcomes.append(outcome)
                    status = outcome["status"]
                    if status == "ran":
                        report.ran.append(task.run_id)
                        counts["done"] += 1
                    elif status == "done":
                        report.done_before.append(task.run_id)
                        counts["done"] += 1
                    elif status == "failed":
                        report.failed.append((task.run_id, outcome["error"]))
                        counts["failed"] += 1
                        error_file = out / task.run_id / "error.json"  # none where the run was left untouched (damaged)
                        say(f"cell {task.index} ({task.label}) failed: {outcome['error']}"
                            + (f" -> {error_file}" if error_file.is_file() else ""))
                    elif status == "failed-before":
                        report.failed_before.append(task.run_id)
                        counts["skipped"] += 1
                    else:
                        report.elsewhere.append(task.run_id)
                        counts["skipped"] += 1
                        say(f"cell {task.index} ({task.label}) is running elsewhere ({outcome.get('holder') or 'another process'}); skipped")
                bar.set_postfix_str(_postfix(counts, len(todo)), refresh=False)
                bar.update(1)
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _postfix(counts: dict, total: int) -> str:
    remaining = total - sum(counts.values())
    text = f"done={counts['done']} failed={counts['failed']} remaining={remaining}"
    return text + (f" skipped={counts['skipped']}" if counts["skipped"] else "")


def _forwarded_env() -> dict[str, str]:
    """TESTBED_* (trackers, data directory, plugins directory), MLFLOW_* and HF_* variables of
    this process, for workers that do not inherit its environment (a dask cluster)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    if env.get("TESTBED_PLUGINS_DIR"):
        env["TESTBED_PLUGINS_DIR"] = os.pathsep.join(str(Path(p).resolve()) for p in env["TESTBED_PLUGINS_DIR"].split(os.pathsep) if p)
    if env.get("TESTBED_DATA"):
        env["TESTBED_DATA"] = str(Path(env["TESTBED_DATA"]).resolve())
    return env


def status_table(cells: list[Cell], out_dir: str | Path) -> tuple[list[str], dict[str, int]]:
    """Lines ``cell  run_id  status  values`` and the count of each status, for --dry-run."""
    from testbed.runs import run_status

    lines, counts = [], {}
    width = len(str(len(cells)))
    for cell in cells:
        status = run_status(out_dir, cell.run_id)
        counts[status] = counts.get(status, 0) + 1
        lines.append(f"{cell.index:>{width}}  {cell.run_id}  {status:<10}  {cell.describe()}")
    return lines, counts


def save_grid_file(path: str | Path, overrides: list[str], out_dir: str | Path) -> Path:
    """Copy the grid file (and the command line's overrides, as a comment) into the runs
    directory, so that a report of these runs can show what produced them. One copy per
    distinct file and overrides: rerunning the same grid writes nothing new."""
    from testbed.resources import refuse_shared_data

    refuse_shared_data(out_dir, "The runs directory", "Pass --out somewhere else, e.g. runs.")
    from testbed.atomic import atomic_write_text

    path = Path(path)
    header = f"# copied by `testbed grid {path.name}{''.join(' ' + o for o in overrides)}` for provenance\n"
    text = header + path.read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    target = Path(out_dir) / f"{path.stem}-{digest}.toml"
    if not target.exists():
        atomic_write_text(target, text)
    return target
