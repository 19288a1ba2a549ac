"""Ablation grids: the grid file and command-line axes, validation before anything runs, resume,
failed cells, locks, kill -9 midway then resume, the dask executor, and `testbed results`."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import EXPLODING_DISTANCE, FAST
from testbed.cli import main
from testbed.config import resolve, run_id
from testbed.grid import cell_config, combinations, expand, load_grid, parse_grid, split_values
from testbed.results import load_results
from testbed.runs import LOCKS_DIR

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = ROOT / "benchmarks" / "ablation_tiny.toml"
MINILM_GRID = ROOT / "benchmarks" / "ablation_minilm.toml"
TESTBED = str(Path(sys.executable).with_name("testbed"))  # the console script of this environment
# FAST as base settings on the command line, fewer steps; train.threads is left to the grid
BASE = [a for a in FAST if not a.startswith("train.threads")] + ["train.steps=2", "train.eval_every=2",
                                                                    "dataset.unlabeled_limit=100", "dataset.test_limit=30"]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def grid_cli(*args, out: Path):
    return CliRunner().invoke(main, ["grid", *map(str, args), "--out", str(out), "--quiet"])


def results_in(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in out.glob("*/result.json")}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# --------------------------------------------------------------------------- the grid file


def test_the_tiny_ablation_expands_to_54_distinct_cells(registry):
    cells = expand(load_grid(TINY_GRID), registry)
    assert len(cells) == 54 == len({c.run_id for c in cells})
    assert [c.values["seed"] for c in cells[:4]] == [0, 1, 0, 1]  # seeds are the innermost axis
    assert list(cells[0].values) == ["distance.name", "selector.name", "augmentation.strong", "seed"]
    assert {c.values["distance.name"] for c in cells} == {"l1", "l2", "kl"}
    assert {c.values["selector.name"] for c in cells} == {"threshold", "flexmatch", "uncertainty"}
    for cell in cells:  # each cell is exactly `testbed run` with the same settings
        cfg = resolve(cell.user, registry)
        assert cfg.run_id == cell.run_id and cfg.method == "fixmatch" and cfg.train.steps == 2
    strong = {json.dumps(resolve(c.user, registry).resolved["augmentation"]["strong"], sort_keys=True) for c in cells}
    assert len(strong) == 3


def test_the_minilm_ablation_is_valid(registry):
    cells = expand(load_grid(MINILM_GRID), registry)
    assert len(cells) == 3 * 3 * 3 * 5
    cfg = resolve(cells[0].user, registry)
    assert cfg.backbone.name == "minilm" and cfg.dataset.name == "ag_news"


def test_the_readme_grid_is_valid(registry, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A first grid"):]
    text = section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml\n") + 8)]
    grid = load_grid(write(tmp_path / "my_grid.toml", text))
    cells = expand(grid, registry)
    assert len(cells) == (3 * 2 * 2 - 2 + 1) * 2  # product with the zip, minus kl x uncertainty, plus the include
    assert {resolve(c.user, registry).resolved["selector"]["threshold"] for c in cells if c.values.get("selector.name") == "uncertainty"} == {0.7}


def test_zip_exclude_include_and_seeds(registry):
    grid = parse_grid({
        "base": {"method": "fixmatch"},
        "axes": {"distance": {"name": ["l1", "l2", "kl"]}, "selector.name": ["threshold", "flexmatch"],
                 "selector.threshold": [0.5, 0.9]},
        "zip": [["selector.name", "selector.threshold"]],
        "exclude": [{"distance.name": "kl", "selector.name": ["flexmatch"]}],
        "include": [{"distance.name": "ce", "selector.name": "none"}],
        "seeds": 2,
    })
    combos = combinations(grid)
    assert len(combos) == (3 * 2 - 1) * 2 + 2
    assert {"distance.name": "l1", "selector.name": "flexmatch", "selector.threshold": 0.9, "seed": 1} in combos
    assert not [c for c in combos if c.get("distance.name") == "kl" and c["selector.name"] == "flexmatch"]
    assert [c for c in combos if c["distance.name"] == "ce"] == [
        {"distance.name": "ce", "selector.name": "none", "seed": 0}, {"distance.name": "ce", "selector.name": "none", "seed": 1}]
    cells = expand(grid, registry)
    assert len(cells) == len(combos)
    cfg = resolve(cells[0].user, registry)
    assert cfg.resolved["selector"] == {"name": "threshold", "threshold": 0.5, "soft": False, "temperature": 1.0}


def test_zip_tables_and_duplicate_cells_are_merged(registry):
    grid = parse_grid({"base": {"method": "fixmatch"}, "zip": [{"selector.name": ["threshold", "threshold"],
                                                               "selector.threshold": [0.95, 0.95]}]})
    assert len(combinations(grid)) == 2
    assert len(expand(grid, registry)) == 1  # the same resolved config is one cell (one run id)


def test_a_strategy_picked_by_an_axis_drops_the_options_the_base_gave_another():
    base = {"selector": {"name": "threshold", "threshold": 0.7}, "distance": {"temperature": 2.0}}
    assert cell_config(base, {"selector.name": "flexmatch"})["selector"] == {"name": "flexmatch"}
    assert cell_config(base, {"selector.name": "threshold"})["selector"] == {"name": "threshold", "threshold": 0.7}
    # options without a name in the base apply to whatever the axis picks
    assert cell_config(base, {"distance.name": "kl"})["distance"] == {"name": "kl", "temperature": 2.0}


@pytest.mark.parametrize("text, parts", [
    ("l1,l2,kl", ["l1", "l2", "kl"]),
    ("0,1", ["0", "1"]),
    ("[1,2]", None),
    ("[1,2],[3]", ["[1,2]", "[3]"]),
    ('"a,b"', None),
    ('"a,b",c', ['"a,b"', "c"]),
    ("{name='drop_swap', p_delete=0.3},identity", ["{name='drop_swap', p_delete=0.3}", "identity"]),
    ("plain", None),
])
def test_command_line_values_split_at_top_level_commas(text, parts):
    assert split_values(text) == parts


def test_command_line_axes_and_base_values(tmp_path):
    grid_file = write(tmp_path / "g.toml", """
        seeds = [0, 1, 2]
        [base]
        method = "fixmatch"
        [axes]
        "distance.name" = ["l1", "l2"]
        "selector.threshold" = [0.5, 0.9]
    """)
    grid = load_grid(grid_file, ["distance.name=kl,ce", "seed=5,6", "selector.threshold=0.8", "train.steps=3",
                                 "selector.soft=true", "augmentation.strong={name='drop_swap', p_delete=0.3},identity"])
    assert grid.axes == {"distance.name": ["kl", "ce"],
                         "augmentation.strong": [{"name": "drop_swap", "p_delete": 0.3}, "identity"], "seed": [5, 6]}
    assert grid.base == {"method": "fixmatch", "selector": {"threshold": 0.8, "soft": True}, "train": {"steps": 3}}
    assert load_grid(None, ["x.y=[1,2]"]).base == {"x": {"y": [1, 2]}}  # TOML list syntax stays one value
    assert load_grid(None, ['x.y="a,b"']).base == {"x": {"y": "a,b"}}


# --------------------------------------------------------------------------- bad input


BAD = {
    "malformed.toml": ("[axes\n", "is not valid TOML"),
    "unknown_key.toml": ('method = "fixmatch"\n', "unknown grid key 'method'"),
    "typo_axis.toml": ('[base]\nmethod = "fixmatch"\n[axes]\n"selector.treshold" = [0.5, 0.9]\n',
                       "Axis 'selector.treshold': Unknown config key 'selector.treshold'"),
    "typo_section.toml": ('[axes]\n"distnce.name" = ["l1"]\n', "Axis 'distnce.name': Unknown config key 'distnce'"),
    "bad_value.toml": ('[base]\nmethod = "fixmatch"\n[axes]\n"distance.name" = ["l1", "l3"]\n',
                       "In grid cell 2 of 2 (distance.name=l3): Unknown distance 'l3'"),
    "empty_axis.toml": ('[axes]\n"distance.name" = []\n', "axis 'distance.name' is empty"),
    "not_a_list.toml": ('[axes]\n"distance.name" = "l1"\n', "Axis 'distance.name' must be a list of values"),
    "zip_unequal.toml": ('zip = [["distance.name", "seed"]]\nseeds = [0, 1]\n[axes]\n"distance.name" = ["l1", "l2", "kl"]\n',
                         "zip group 1 has axes of unequal length (distance.name has 3, seed has 2 values)"),
    "zip_unknown.toml": ('zip = [["distance.name", "distance.nam"]]\n[axes]\n"distance.name" = ["l1"]\n',
                         "zip group 1 names 'distance.nam', which is not an axis. Did you mean 'distance.name'?"),
    "exclude_unknown.toml": ('exclude = [{"selector.name" = "flexmatch"}]\n[axes]\n"distance.name" = ["l1", "l2"]\n',
                             "exclude entry 1 names 'selector.name', which is not an axis"),
    "exclude_value.toml": ('exclude = [{"distance.name" = "l3"}]\n[axes]\n"distance.name" = ["l1", "l2"]\n',
                           "exclude entry 1: distance.name=l3 is not a value of that axis (l1, l2)"),
    "seeds.toml": ('seeds = ["a"]\n', "seeds must be integers"),
    "empty.toml": ("", "is empty. Give it [axes]"),
    "comments_only.toml": ("# a grid to fill in later\n", "is empty. Give it [axes]"),
    "nan_name.toml": ('[axes]\n"distance.name" = [nan, "l2"]\n', 'must name a distance, got nan. In a TOML file, quote a name'),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_grid_files_are_one_error_line_and_nothing_runs(tmp_path, name):
    text, message = BAD[name]
    grid_file = write(tmp_path / name, text)
    out = tmp_path / "runs"
    result = grid_cli(grid_file, *BASE, out=out)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = error_lines(result.output)
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["nope.toml"], "nope.toml' not found"),
    (["a.toml", "b.toml"], "at most one grid file"),
    (["distance.name=l1,"], "empty value"),
    (["distance.name=l1,l2", "--executor", "nope"], "Unknown executor 'nope'"),
    (["distance.name=l1,l2", "-X", "start_methd=spawn"], "Did you mean 'executor.start_method'"),
    (["distance.name=l1,l2", "-X", "scheduler=tcp://127.0.0.1:1"], "Unknown config key 'executor.scheduler' (for executor 'local')"),
])
def test_bad_command_lines_are_one_error_line(tmp_path, args, message):
    out = tmp_path / "runs"
    result = grid_cli(*args, "method=fixmatch", *BASE, out=out)
    assert result.exit_code != 0
    errors = error_lines(result.output)
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and not out.exists()


# --------------------------------------------------------------------------- running, resuming, failing


@pytest.mark.slow
def test_grid_runs_skips_finished_cells_and_forces(tmp_path, registry):
    out = tmp_path / "runs"
    args = ["method=fixmatch", "distance.name=l1,kl", *BASE]
    first = grid_cli(*args, "--executor", "serial", out=out)
    assert first.exit_code == 0, first.output
    assert "2 cells: 2 ran, 0 already done, 0 failed" in first.output
    done = results_in(out)
    assert len(done) == 2
    expected = {c.run_id for c in expand(load_grid(None, args), registry)}
    assert set(done) == expected
    stamps = {k: p.stat().st_mtime_ns for k, p in done.items()}

    dry = grid_cli(*args, "distance.name=l1,kl,l2", "--dry-run", out=out)
    assert dry.exit_code == 0, dry.output
    assert "3 cells, 2 already done, 1 new" in dry.output
    assert len([line for line in dry.output.splitlines() if "  done  " in line]) == 2

    again = grid_cli(*args, "--executor", "serial", out=out)
    assert "2 cells: 0 ran, 2 already done" in again.output
    assert {k: p.stat().st_mtime_ns for k, p in results_in(out).items()} == stamps

    forced = grid_cli(*args, "--executor", "serial", "--force", out=out)
    assert "2 cells: 2 ran" in forced.output
    assert all(p.stat().st_mtime_ns != stamps[k] for k, p in results_in(out).items())


@pytest.mark.slow
def test_identical_cells_dedupe_with_testbed_run(tmp_path):
    out = tmp_path / "runs"
    run = CliRunner().invoke(main, ["run", "method=fixmatch", "distance.name=kl", *BASE, "--out", str(out), "--quiet"])
    assert run.exit_code == 0, run.output
    result = grid_cli("method=fixmatch", "distance.name=l1,kl", *BASE, "--executor", "serial", out=out)
    assert "2 cells: 1 ran, 1 already done" in result.output


@pytest.mark.slow
def test_failed_cells_are_recorded_skipped_and_retried(tmp_path):
    """On the local process pool: the --plugins-dir reaches the workers, a failing cell leaves its
    error and traceback and the grid carries on; failed cells are rerun only with --retry-failed."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "explode.py").write_text(EXPLODING_DISTANCE)
    out = tmp_path / "runs"
    args = ["--plugins-dir", str(plugins), "grid", "method=fixmatch", *BASE, "distance.name=l1,explode",
            "dataset.labels_per_class=10,5000", "--workers", "2", "--out", str(out), "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output
    assert "4 cells: 1 ran, 0 already done, 3 failed" in first.output
    assert "Traceback" not in first.output
    assert "failed: TrainingError: distance 'explode' raised RuntimeError: boom in the distance at step 1" in first.output
    assert "failed: UserError: dataset 'trec': class" in first.output  # fails in prepare: 5000 labels per class

    errors = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/error.json")}
    assert len(errors) == 3 and len(results_in(out)) == 1
    for error in errors.values():
        assert "Traceback" in error["traceback"] and error["cell"].startswith("distance.name=")
    assert any("raised RuntimeError: boom in the distance at step 1" in e["error"] for e in errors.values())
    for run_dir in (out / k for k in errors):  # config.json even where prepare failed
        assert json.loads((run_dir / "config.json").read_text())["distance"]["name"] in ("l1", "explode")

    # torch threads per worker: cores // workers, in config.json but not in the run id
    (ok,) = results_in(out)
    config = json.loads((out / ok / "config.json").read_text())
    assert config["train"]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert run_id(config) == ok

    stamps = {k: (out / k / "error.json").stat().st_mtime_ns for k in errors}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1
    assert "4 cells: 0 ran, 1 already done, 0 failed, 3 failed earlier (skipped; --retry-failed reruns them)" in again.output
    assert {k: (out / k / "error.json").stat().st_mtime_ns for k in errors} == stamps

    retried = CliRunner().invoke(main, [*args, "--retry-failed", "--executor", "serial"])
    assert "4 cells: 0 ran, 1 already done, 3 failed" in retried.output
    assert all((out / k / "error.json").stat().st_mtime_ns != stamps[k] for k in errors)

    frame = load_results(out)
    assert sorted(frame.status) == ["done", "failed", "failed", "failed"]
    assert frame.loc[frame.status == "failed", "test_accuracy"].isna().all()
    assert "boom in the distance" in " ".join(frame.error.dropna())
    assert {"distance.name", "dataset.labels_per_class"} <= set(frame.columns)


@pytest.mark.slow
def test_a_damaged_result_is_not_taken_for_done(tmp_path):
    out = tmp_path / "runs"
    args = ["grid", "method=supervised", *BASE, "seed=0,1", "--executor", "serial", "--out", str(out), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    damaged = sorted(results_in(out))[0]
    (out / damaged / "result.json").write_text('{"test_accuracy": ')  # edited by hand and cut short
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert f"{damaged}  damaged" in dry.output, dry.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "2 cells: 0 ran, 1 already done, 1 failed" in again.output
    assert f"Delete {out / damaged} to rerun the run, or pass --force" in again.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0  # --force reruns it
    assert json.loads((out / damaged / "result.json").read_text())["run_id"] == damaged


@pytest.mark.slow
def test_a_cell_locked_by_another_process_is_skipped_as_running_elsewhere(tmp_path, registry):
    out = tmp_path / "runs"
    args = ["method=fixmatch", "distance.name=l1,kl", *BASE]
    locked = expand(load_grid(None, args), registry)[1].run_id
    (out / LOCKS_DIR).mkdir(parents=True)
    with open(out / LOCKS_DIR / f"{locked}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a live `testbed grid` running that cell would
        result = grid_cli(*args, "--executor", "serial", out=out)
        assert result.exit_code == 0, result.output
        assert "1 running elsewhere (skipped)" in result.output and "is running elsewhere" in result.output
        assert len(results_in(out)) == 1 and locked not in results_in(out)
        dry = grid_cli(*args, "--dry-run", out=out)
        assert f"{locked}  running" in dry.output
    resumed = grid_cli(*args, "--executor", "serial", out=out)  # the lock is gone with its holder
    assert "2 cells: 1 ran, 1 already done" in resumed.output
    assert locked in results_in(out)


def test_an_interrupted_cell_is_rerun_from_a_clean_directory(tmp_path, registry):
    out = tmp_path / "runs"
    args = ["method=fixmatch", "distance.name=l1", *BASE]
    (cell,) = expand(load_grid(None, args), registry)
    stale = out / cell.run_id
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"step": 1}\n')
    (stale / ".result.json.abc.tmp").write_text('{"half": ')  # a result.json killed while being written
    assert "unfinished" in grid_cli(*args, "--dry-run", out=out).output
    assert load_results(out).status.tolist() == ["unfinished"]
    result = grid_cli(*args, "--executor", "serial", out=out)
    assert "1 cells: 1 ran" in result.output
    assert sorted(p.name for p in stale.iterdir()) == ["config.json", "metrics.jsonl", "predictions.npz", "result.json"]


# --------------------------------------------------------------------------- kill -9 midway, resume; dask


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _check_complete_grid(out: Path, expected: set[str]) -> None:
    done = results_in(out)
    assert set(done) == expected and len(done) == 54
    for name, path in done.items():
        assert json.loads(path.read_text())["run_id"] == name
        assert len(list(path.parent.glob("result*.json"))) == 1 and not list(path.parent.glob("*.tmp"))
    run_dirs = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert sorted(p.name for p in run_dirs) == sorted(expected)  # nothing else, nothing twice
    listed = CliRunner().invoke(main, ["results", str(out), "--format", "csv"])
    assert listed.exit_code == 0, listed.output
    frame = pd.read_csv(io.StringIO(listed.stdout))
    assert len(frame) == 54 and set(frame.run_id) == expected and set(frame.status) == {"done"}
    assert {"distance.name", "selector.name", "augmentation.strong.name", "seed"} <= set(frame.columns)
    assert frame.groupby(["distance.name", "selector.name"]).size().tolist() == [6] * 9


@pytest.mark.slow
def test_kill_9_midway_then_resume_completes_54_cells_once(tmp_path, registry):
    out = tmp_path / "runs"
    expected = {c.run_id for c in expand(load_grid(TINY_GRID), registry)}
    command = [TESTBED, "grid", str(TINY_GRID), "--workers", "2", "--out", str(out), "--quiet"]
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - the killed grid writes to it until the end of the test
    first = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(results_in(out)) < 6:
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no results after 120 s"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the grid and its pool workers, at once
    first.wait()
    for _ in range(100):
        if not _group_alive(first.pid):
            break
        time.sleep(0.05)
    assert not _group_alive(first.pid), "pool workers survived the kill"

    survivors = {k: (p.stat().st_mtime_ns, p.stat().st_ino) for k, p in results_in(out).items()}
    assert 6 <= len(survivors) < 54, "the grid was not killed midway"
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"54 cells: {54 - len(survivors)} ran, {len(survivors)} already done, 0 failed" in resumed.stdout
    _check_complete_grid(out, expected)
    for name, stamp in survivors.items():  # finished before the kill: kept, not rerun
        path = out / name / "result.json"
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp


def _children(pid: int) -> list[int]:
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
            if _stat_fields(stat) and int(_stat_fields(stat)[1]) == pid]


def _stat_fields(stat: Path) -> list[str]:
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


@pytest.mark.slow
def test_pool_workers_stop_when_the_grid_process_is_killed_alone(tmp_path):
    # `kill -9 PID` of the grid only (not its process group): before the watchdog its workers
    # finished their cells holding the locks, and a resumed grid skipped those as running elsewhere
    out = tmp_path / "runs"
    command = [TESTBED, "grid", str(TINY_GRID), "--workers", "2", "--out", str(out), "--quiet"]
    grid = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(out.glob("*/metrics.jsonl")) or len(_children(grid.pid)) < 2:
        assert grid.poll() is None and time.monotonic() < deadline, "the grid did not start its workers"
        time.sleep(0.05)
    os.kill(grid.pid, signal.SIGKILL)
    grid.wait()
    for _ in range(200):
        if not _group_alive(grid.pid):
            break
        time.sleep(0.05)
    survivors = _group_alive(grid.pid)
    for pid in survivors:  # do not leak them into the rest of the test session
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "pool workers outlived the grid process"


@pytest.mark.slow
def test_the_same_grid_on_a_dask_local_cluster(tmp_path, registry):
    out = tmp_path / "runs"
    expected = {c.run_id for c in expand(load_grid(TINY_GRID), registry)}
    command = [TESTBED, "grid", str(TINY_GRID), "--executor", "dask", "--workers", "2", "--out", str(out), "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, start_new_session=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "54 cells: 54 ran, 0 already done, 0 failed" in finished.stdout
    _check_complete_grid(out, expected)


def test_the_grid_file_is_kept_with_its_runs_for_the_report(tmp_path):
    grid_file = write(tmp_path / "mine.toml", """
        seeds = [0]
        [axes]
        method = ["supervised", "fixmatch"]
    """)
    out = tmp_path / "runs"
    for _ in range(2):  # the second invocation finds everything done and adds no second copy
        result = grid_cli(grid_file, *BASE, "--executor", "serial", out=out)
        assert result.exit_code == 0, result.output
    (copy,) = out.glob("mine-*.toml")
    assert copy.read_text().endswith(grid_file.read_text())
    assert copy.read_text().startswith("# copied by `testbed grid mine.toml backbone.name=tiny")
    report = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert copy.name in (tmp_path / "report" / "index.md").read_text()


@pytest.mark.slow
def test_one_or_two_workers_give_the_same_numbers(tmp_path):
    """A 2 x 2 grid on the local pool with 1 and with 2 workers: the same result.json metrics, to the
    last bit. The base leaves train.threads to the grid, so the two give their cells different torch
    thread counts (cores // workers): not part of the run id, and here not of the numbers either."""
    args = ["method=fixmatch", "distance.name=l1,kl", "seed=0,1", *BASE, "train.steps=4"]
    results, threads = {}, {}
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        ran = grid_cli(*args, "--workers", str(workers), out=out)
        assert ran.exit_code == 0 and "4 cells: 4 ran" in ran.output, ran.output
        found = {run_id: json.loads(path.read_text()) for run_id, path in results_in(out).items()}
        threads[workers] = {result["machine"]["torch_threads"] for result in found.values()}
        results[workers] = {run_id: {k: v for k, v in result.items() if k not in (
            "wall_seconds", "train_seconds", "eval_seconds", "augment_seconds", "started_at", "finished_at", "machine")}
            for run_id, result in found.items()}
    assert len(results[1]) == 4 and results[1] == results[2]
    cores = len(os.sched_getaffinity(0))
    assert threads == {1: {cores}, 2: {max(1, cores // 2)}}
