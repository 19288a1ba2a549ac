"""The Python API, for notebooks and scripts: ``testbed.run``, ``testbed.grid``, ``testbed.report`` and
``testbed.load_results``, the four CLI commands of the same names with the same config keys, the same
resolution (``testbed.config.resolve``, ``testbed.grid.expand``, ``testbed.runs.execute``,
``testbed.report.render_report``) and the same ``UserError`` for what a user can fix.

    >>> import testbed
    >>> result = testbed.run(method="fixmatch", **{"selector.threshold": 0.9, "backbone.name": "tiny"}, out="runs")
    >>> result["test_accuracy"], result.run_dir
    >>> summary = testbed.grid(method=["supervised", "fixmatch"], seeds=3, out="runs/first", **{"backbone.name": "tiny"})
    >>> report = testbed.report("runs/first")      # shows itself inline in Jupyter; report.path, report.markdown
    >>> testbed.load_results("runs/first")         # a pandas DataFrame, one row per run

Config keys are given as keyword arguments (``method="fixmatch"``), as dotted keys through a dict
(``**{"selector.threshold": 0.9}``) or as nested dicts (``selector={"name": "threshold", "threshold": 0.9}``);
``config`` may also be a TOML file, a dict, or a list of ``key=value`` strings as on the command line.
Keyword values are Python values, taken as they are: ``train.lr=1e-3`` is the float, ``dataset.name="1e3"``
the string.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.config import load_toml, merge, parse_overrides, resolve, set_dotted
from testbed.errors import UserError
from testbed.grid import (
    GridReport,
    check_grid,
    expand,
    load_grid,
    parse_devices,
    parse_grid,
    run_grid,
    save_grid_file,
    set_axis,
    set_base,
    show,
    status_table,
    worker_count,
)
from testbed.report import STYLE, render_report
from testbed.results import load_results

__all__ = ["GridSummary", "Report", "RunResult", "grid", "load_results", "report", "run"]

PathLike = str | Path


# --------------------------------------------------------------------------- config from Python values


def nested(mapping: Mapping, where: str = "config") -> dict:
    """A config given with dotted keys, nested dicts or both, as the nested dict ``resolve`` takes:
    ``{"selector.threshold": 0.9, "selector": {"name": "threshold"}}`` -> ``{"selector": {"name": "threshold",
    "threshold": 0.9}}``. A name given after options joins them, as on the command line (``set_dotted``)."""
    out: dict = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key.strip(" ."):
            raise UserError(f"{where}: config key {key!r} must be a dotted name such as 'selector.threshold'.")
        if isinstance(value, Mapping):
            layer: dict = {}
            set_dotted(layer, key, nested(value, where))
            out = merge(out, layer)
        else:
            set_dotted(out, key, value)
    return out


def user_config(config: Any = None, overrides: Mapping | None = None) -> dict:
    """``config`` (None, a TOML file, a dict, or ``key=value`` strings) with ``overrides`` on top: the
    user layer of ``resolve``, merged as the CLI merges a file and its command line."""
    if config is None:
        user: dict = {}
    elif isinstance(config, (str, Path)):
        user = load_toml(config)
    elif isinstance(config, Mapping):
        user = nested(config)
    elif isinstance(config, (list, tuple)) and all(isinstance(item, str) for item in config):
        user = parse_overrides(list(config))
    else:
        raise UserError(f"config must be a TOML file, a dict or a list of key=value strings, got {type(config).__name__}.")
    return merge(user, nested(overrides or {}, "keyword arguments"))


def _paths(value: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


def _registry(plugins_dirs, strict: bool | None):
    from testbed.plugins import load_plugins

    return load_plugins(_paths(plugins_dirs), strict=strict)


# --------------------------------------------------------------------------- run


class RunResult(dict):
    """result.json of the run as a dict, with ``run_dir`` (its directory), ``ran`` (False: it had
    finished before, and this is its saved result) and ``config`` (the resolved config, config.json)."""

    def __init__(self, result: dict, run_dir: Path, ran: bool, config: dict):
        super().__init__(result)
        self.run_dir, self.ran, self.config = Path(run_dir), ran, config


def run(config: Any = None, out: PathLike = "runs", *, force: bool = False, progress: bool = True,
        plugins_dirs: PathLike | Iterable[PathLike] = (), strict: bool | None = None, **overrides: Any) -> RunResult:
    """Train one run into ``out/<run_id>/``, as ``testbed run [CONFIG] [key=value ...] --out OUT``:
    ``config`` is a TOML file, a dict or ``key=value`` strings; keyword arguments are config keys (dotted
    ones through ``**{"selector.threshold": 0.9}``) applied on top. A finished run is not rerun unless
    ``force``. Returns its result.json as a ``RunResult`` (a dict with ``run_dir``, ``ran``, ``config``)."""
    from testbed.runs import execute

    registry = _registry(plugins_dirs, strict)
    cfg = resolve(user_config(config, overrides), registry)
    run_dir, result, ran = execute(cfg, registry, out, force=force, progress=progress)
    return RunResult(result, run_dir, ran, cfg.resolved)


# --------------------------------------------------------------------------- grid


@dataclass
class GridSummary:
    """What a grid call did: cell counts by outcome and the runs directory (``results()`` reads it)."""

    out: Path
    cells: int
    done: int  # finished: by this call, or before it
    ran: int  # trained by this call
    failed: int  # failed (now, or before and skipped without retry_failed), or lost with a dead worker
    skipped: int  # running in another process
    dry_run: bool = False
    statuses: dict[str, int] = field(default_factory=dict)  # dry run: cells per status (done, new, failed, ...)
    lines: list[str] = field(default_factory=list, repr=False)  # dry run: one line per cell, as `testbed grid --dry-run` prints
    report: GridReport | None = field(default=None, repr=False)  # the executor's account (None for a dry run)

    @property
    def complete(self) -> bool:
        """Every cell finished (never true for a dry run that found cells still to run)."""
        return self.done == self.cells

    def results(self, all_columns: bool = False):
        """``load_results(out)``: one row per run of the runs directory."""
        return load_results(self.out, all_columns=all_columns)

    def __str__(self) -> str:
        if self.dry_run:
            return "\n".join([*self.lines, f"{self.cells} cells, " + ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
                              + f" (in {self.out}); dry run: nothing ran"])
        return f"{self.report.summary()} (in {self.out})" if self.report else f"{self.cells} cells (in {self.out})"


def grid(grid_file_or_dict: PathLike | Mapping | None = None, out: PathLike = "runs", workers: int | None = None, *,
         devices: str | Iterable[str | int] | None = None, executor: str = "local", executor_options: Mapping | None = None,
         dry_run: bool = False, force: bool = False, retry_failed: bool = False, trackers: str | Iterable[str] | None = None,
         progress: bool = True, plugins_dirs: PathLike | Iterable[PathLike] = (), strict: bool | None = None,
         **axes: Any) -> GridSummary:
    """Run every unfinished cell of a grid, as ``testbed grid [GRID.toml] [key=v1,v2 ...] [key=value ...]``.

    ``grid_file_or_dict`` is a grid file or a dict of the same shape (``base``, ``axes``, ``zip``,
    ``exclude``, ``include``, ``seeds``; dotted or nested keys). Keyword arguments add to it: a list or
    tuple makes (or replaces) an axis, any other value sets the base config (``method=["supervised",
    "fixmatch"]``, ``**{"train.steps": 30}``; a list-valued option as one value: ``[[...]]``, or ``base``);
    ``seeds=3`` is seeds 0, 1, 2, as in a grid file. Every cell is resolved and checked before anything
    runs. Returns a ``GridSummary``; failed cells are counted there, not raised (as the CLI exits 1)."""
    if isinstance(grid_file_or_dict, (str, Path)):
        spec = load_grid(grid_file_or_dict)
    elif isinstance(grid_file_or_dict, Mapping):
        data = dict(grid_file_or_dict)
        if isinstance(data.get("base"), Mapping):
            data["base"] = nested(data["base"], "grid base")
        spec = parse_grid(data, source="grid dict")
    elif grid_file_or_dict is None:
        spec = load_grid(None)
    else:
        raise UserError(f"grid_file_or_dict must be a grid file or a dict, got {type(grid_file_or_dict).__name__}.")
    for key, value in axes.items():
        if key == "seeds" and isinstance(value, int) and not isinstance(value, bool):
            value = list(range(value))
        if isinstance(value, (list, tuple)):
            set_axis(spec, key, list(value))
        else:
            set_base(spec, key, value)
    check_grid(spec)

    devices = parse_devices(devices if isinstance(devices, str) else ",".join(map(str, devices))) if devices is not None else ()
    workers = worker_count(workers, devices)
    registry = _registry(plugins_dirs, strict)
    cells = expand(spec, registry, devices)  # every cell resolved and checked before anything runs
    out = Path(out)
    if dry_run:
        lines, counts = status_table(cells, out)
        return GridSummary(out=out, cells=len(cells), done=counts.get("done", 0), ran=0, failed=counts.get("failed", 0),
                           skipped=counts.get("running", 0), dry_run=True, statuses=counts, lines=lines)
    if isinstance(grid_file_or_dict, (str, Path)):
        save_grid_file(grid_file_or_dict, [f"{key}={show(value)}" for key, value in axes.items()], out)
    if trackers is not None and not isinstance(trackers, str):
        trackers = ",".join(trackers)
    result = run_grid(cells, registry, out, executor=executor, workers=workers, executor_options=dict(executor_options or {}),
                      force=force, retry_failed=retry_failed, plugins_dirs=_paths(plugins_dirs), strict=bool(strict),
                      progress=progress, echo=None if progress else print,
                      env={"TESTBED_TRACKERS": trackers} if trackers is not None else None, devices=devices)
    return GridSummary(out=out, cells=result.cells, done=len(result.ran) + len(result.done_before), ran=len(result.ran),
                       failed=len(result.failed) + len(result.failed_before) + len(result.lost), skipped=len(result.elsewhere),
                       report=result)


# --------------------------------------------------------------------------- report


NOTEBOOK_SCOPE = "testbed-report"


def _scoped_style() -> str:
    """The report page's style for a fragment inside a notebook: every rule under ``.testbed-report`` (twice, to
    outweigh a notebook's own rules for tables and headings, e.g. JupyterLab's striped rows in a dark theme);
    the page's ``body`` rule becomes the fragment's own: dark text on white, whatever the notebook's theme."""
    scope = f".{NOTEBOOK_SCOPE}.{NOTEBOOK_SCOPE}"
    rules = []
    for rule in STYLE.replace("\n", "").split("}"):
        if not rule.strip():
            continue
        selectors, declarations = rule.split("{", 1)
        if selectors.strip() == "body":
            rules.append(f"{scope}{{{declarations};background:#fff;margin:0;padding:0.2em 1em}}")
        else:
            rules.append(",".join(f"{scope} {s.strip()}" for s in selectors.split(",")) + "{" + declarations + "}")
    rules.append(f"{scope} tbody tr:nth-child(n){{background:#fff}}")  # outweighs JupyterLab's `tbody tr:nth-child(odd)` stripes
    rules.append(",".join(f"{scope} {tag}" for tag in ("h1", "h2", "p", "td", "th", "figcaption", "summary", "pre", "code")) + "{color:#222}")
    return "".join(rules)


class Report:
    """A rendered report: ``path`` (index.html), ``dir``, ``markdown`` (index.md), ``html`` (the page),
    ``leaderboard`` and ``comparisons`` (summary.csv and comparisons.csv as DataFrames). In Jupyter it
    shows itself inline: the page's body with its plots embedded as data: URIs (so the notebook shows
    them wherever it is opened or exported, whatever its directory) and its styles scoped to it."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def markdown(self) -> str:
        return (self.dir / "index.md").read_text(encoding="utf-8")

    @property
    def html(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def leaderboard(self):
        import pandas as pd

        return pd.read_csv(self.dir / "summary.csv")

    @property
    def comparisons(self):
        import pandas as pd

        return pd.read_csv(self.dir / "comparisons.csv")

    def _repr_html_(self) -> str:
        page = self.html
        body = page.split("<body>", 1)[-1].rsplit("</body>", 1)[0]

        def embed(match: re.Match) -> str:
            image = self.dir / match.group(1)
            if not image.is_file():
                return match.group(0)
            return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode("ascii")}"'

        body = re.sub(r'src="([A-Za-z0-9_-]+\.png)"', embed, body)
        return f'<div class="{NOTEBOOK_SCOPE}"><style>{_scoped_style()}</style>{body}</div>'

    def __repr__(self) -> str:
        return f"Report({str(self.path)!r})"


def _warnings_only(line: str) -> None:
    """What render_report says, less its closing line (the Report shows itself): a plugin section that failed."""
    if line.startswith("Warning"):
        print(line)


def report(runs_dirs: PathLike | Iterable[PathLike] = "runs", out: PathLike | None = None, baseline: str | None = None, *,
           compare_to: PathLike | Iterable[PathLike] = (), group_by: str | Iterable[str] = (), title: str | None = None,
           plugins_dirs: PathLike | Iterable[PathLike] = (), strict: bool | None = None) -> Report:
    """Render the comparison report of ``runs_dirs`` (one directory or several) into ``out``, as
    ``testbed report RUNS_DIR... -o OUT [--baseline B] [--compare-to DIR]... [--group-by KEY]...``.
    ``out`` defaults to ``reports/<runs dir names>`` (``-vs-<compare_to names>``); ``baseline`` to
    ``supervised``. Returns a ``Report``, which displays inline in Jupyter."""
    dirs, compared = _paths(runs_dirs), _paths(compare_to)
    if not dirs:
        raise UserError("report() needs at least one runs directory.")
    if out is None:
        out = Path("reports") / ("-".join(d.name for d in dirs) + ("-vs-" + "-".join(d.name for d in compared) if compared else ""))
    group_by = [group_by] if isinstance(group_by, str) else list(group_by)
    path = render_report(dirs, out, baseline=baseline or "supervised", group_by=group_by, registry=_registry(plugins_dirs, strict),
                         title=title, echo=_warnings_only, compare_to=compared)
    return Report(path)
