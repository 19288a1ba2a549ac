"""README.md is the front door: its plugin example and commands must stay true."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_plugin_example_is_under_20_lines_and_runs(tmp_path):
    section = _section("A plugin in 20 lines")
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 20
    command = re.search(r"```sh\n(testbed .*?)\n```", section, re.S).group(1)
    plugin_dir = tmp_path / "my_plugins"
    plugin_dir.mkdir()
    (plugin_dir / "hinge.py").write_text(code, encoding="utf-8")

    args = command.split()[1:]
    args[args.index("my_plugins")] = str(plugin_dir)
    fast = ["dataset.name=trec", "train.steps=3", "train.batch_size=4", "train.eval_every=3",
            "dataset.unlabeled_limit=50", "dataset.test_limit=30", "--out", str(tmp_path / "runs"), "--quiet"]
    result = CliRunner().invoke(main, args + fast)
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))  # .locks/ beside it
    config = (run_dir / "config.json").read_text()
    assert '"margin": 0.05' in config and '"name": "hinge"' in config


def test_readme_test_command_is_what_ci_runs():
    assert "make test" in _section("Two commands")
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^demo:", makefile, re.M)


@pytest.mark.slow
def test_the_from_python_example_runs(tmp_path):
    """The "From Python" example as written, in a fresh interpreter and an empty directory, with its `tiny`
    settings made tinier still (a 1-layer backbone, a slice of TREC, 2 steps)."""
    import json
    import os
    import subprocess
    import sys

    code = re.search(r"```python\n(.*?)```", _section("From Python"), re.S).group(1)
    line = re.search(r"^tiny = \{.*\}$", code, re.M)
    assert line is not None, "the example keeps its settings in one `tiny = {...}` line"
    tinier = {"backbone.name": "tiny", "backbone.layers": 1, "backbone.hidden": 32, "backbone.heads": 2, "backbone.intermediate": 64,
              "backbone.max_length": 32, "dataset.name": "trec", "dataset.labels_per_class": 4, "dataset.validation_per_class": 2,
              "dataset.unlabeled_limit": 30, "dataset.test_limit": 30, "train.steps": 2, "train.batch_size": 4, "train.eval_every": 2}
    code = code.replace(line.group(0), f"tiny = {json.dumps(tinier)}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESTBED_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[1] == "4 0" and lines[2] == "reports/first/index.html"  # 4 runs done, none failed; the report's page
    assert (tmp_path / "reports" / "first" / "index.md").is_file() and len(list((tmp_path / "runs" / "first").glob("*/result.json"))) == 4


@pytest.mark.slow
def test_make_demo_ends_in_a_report_that_says_what_it_found(tmp_path, monkeypatch):
    """`make demo`'s two commands as the Makefile writes them, on the demo grid with its encoder and
    sizes made tiny (a 1-layer random encoder, slices of the data, 3 steps): a report of every cell
    and the printed findings, a line per dataset and the mean rank across them."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo: install\n((?:\t.*\n)+)", makefile, re.M).group(1)
    commands = [line.strip().replace("$(VENV)/bin/", "").split(maxsplit=1) for line in recipe.splitlines()]
    assert [c[0] for c in commands] == ["testbed", "testbed"]
    import shlex

    grid, report = (shlex.split(c[1]) for c in commands)
    assert grid[:2] == ["grid", "examples/demo_grid.toml"] and report[:2] == ["report", "runs/demo"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "demo_grid.toml").write_text((ROOT / "examples" / "demo_grid.toml").read_text())
    tiny = ["backbone.encoder=tiny", "train.steps=3", "train.eval_every=3", "dataset.unlabeled_limit=40", "dataset.test_limit=40",
            "dataset.validation_per_class=2", "train.threads=1"]
    ran = CliRunner().invoke(main, grid + tiny)
    assert ran.exit_code == 0, ran.output
    printed = CliRunner().invoke(main, report)
    assert printed.exit_code == 0, printed.output
    assert "24 runs (24 finished)" in printed.output
    assert re.search(r"^  ag_news · 10 labels/class: \S+ leads, accuracy", printed.output, re.M)
    assert re.search(r"^  trec · 10 labels/class: \S+ leads, accuracy", printed.output, re.M)
    assert re.search(r"^  Across the 2 groups, mean rank \(1 = best\): ", printed.output, re.M)
    assert (tmp_path / "runs" / "demo" / "report" / "index.html").is_file()
