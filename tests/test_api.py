"""The Python API (testbed.run, grid, report, load_results): the CLI's config keys, resolution, run
directories and errors, from Python values."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

import testbed
from conftest import FAST
from testbed.api import user_config
from testbed.cli import main
from testbed.config import parse_value, resolve

# the FAST overrides as Python values, and fewer steps
QUICK = {**{key: parse_value(value, key) for key, value in (item.split("=", 1) for item in FAST)}, "train.steps": 2, "train.eval_every": 2}


def test_dotted_nested_and_command_line_forms_resolve_alike(registry, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text('method = "fixmatch"\n[selector]\nthreshold = 0.9\n')
    forms = [user_config(None, {"method": "fixmatch", "selector.threshold": 0.9}),
             user_config({"method": "fixmatch", "selector": {"threshold": 0.9}}),
             user_config({"method": "fixmatch", "selector": {"name": "threshold", "threshold": 0.9}}),
             user_config(["method=fixmatch", "selector.threshold=0.9"]),
             user_config({"selector.threshold": 0.5}, {"method": "fixmatch", "selector": {"threshold": 0.9}}),  # keywords win
             user_config(toml), user_config(str(toml), {"seed": 0})]
    assert len({resolve(form, registry).run_id for form in forms}) == 1
    # a name given after its options joins them, as on the command line
    cfg = resolve(user_config({"augmentation.strong.p_delete": 0.3, "augmentation.strong": "drop_swap"}, {"method": "fixmatch"}), registry)
    assert cfg.resolved["augmentation"]["strong"]["p_delete"] == 0.3


def test_run_is_testbed_run(tmp_path):
    out = tmp_path / "runs"
    result = testbed.run(method="fixmatch", out=out, progress=False, **QUICK, **{"selector.threshold": 0.5})
    assert isinstance(result, dict) and result.ran and result.run_dir.parent == out and result["method"] == "fixmatch"
    assert result.config["selector"]["threshold"] == 0.5 and (result.run_dir / "result.json").is_file()
    again = testbed.run(method="fixmatch", out=out, progress=False, selector={"threshold": 0.5}, **QUICK)
    assert not again.ran and again == result and again.run_dir == result.run_dir
    cli = CliRunner().invoke(main, ["run", "method=fixmatch", "selector.threshold=0.5", *FAST, "train.steps=2", "train.eval_every=2",
                                    "--out", str(out), "--quiet"])
    assert cli.exit_code == 0 and "already finished" in cli.output and str(result.run_dir) in cli.output  # the same run


def test_mistakes_raise_the_cli_s_user_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(testbed.UserError, match=r"Unknown config key 'selector.treshold'.*Did you mean 'selector.threshold'"):
        testbed.run(method="fixmatch", **{"selector.treshold": 0.9})
    with pytest.raises(testbed.UserError, match="must be float, got 'high'"):
        testbed.run(method="fixmatch", **{"selector.threshold": "high"})
    with pytest.raises(testbed.UserError, match="Config file 'missing.toml' not found"):
        testbed.run("missing.toml")
    with pytest.raises(testbed.UserError, match="unknown grid key 'bse'"):
        testbed.grid({"bse": {"method": "fixmatch"}})
    with pytest.raises(testbed.UserError, match=r"In grid cell 2 of 2 \(distance.name=klx\): Unknown distance 'klx'"):
        testbed.grid(method="fixmatch", **{"distance.name": ["kl", "klx"]})
    with pytest.raises(testbed.UserError, match="Runs directory 'nothing' not found"):
        testbed.report("nothing")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_grid_keywords_are_axes_or_base_values(tmp_path):
    summary = testbed.grid(out=tmp_path / "runs", dry_run=True, method=["supervised", "fixmatch"], seeds=3, **{"train.steps": 5, **QUICK})
    assert (summary.cells, summary.statuses, summary.ran, summary.complete) == (6, {"new": 6}, 0, False)
    assert len(summary.lines) == 6 and "method=fixmatch seed=2" in summary.lines[-1] and "dry run: nothing ran" in str(summary)
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('seeds = [0, 1]\n[base]\nmethod = "fixmatch"\n[axes]\n"distance.name" = ["l1", "kl"]\n')
    fixed = testbed.grid(grid_file, out=tmp_path / "runs", dry_run=True, **{"distance.name": "kl"})  # a value fixes the axis
    assert fixed.cells == 2 and all("distance" not in line for line in fixed.lines)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_grid_report_and_results(tmp_path):
    spec = {"base": dict(QUICK), "axes": {"method": ["supervised", "fixmatch"]}}
    summary = testbed.grid(spec, out=tmp_path / "runs", seeds=2, executor="serial", progress=False)
    assert (summary.cells, summary.ran, summary.done, summary.failed, summary.complete) == (4, 4, 4, 0, True)
    assert str(summary).startswith("4 cells: 4 ran, 0 already done, 0 failed")
    assert testbed.grid(spec, out=tmp_path / "runs", seeds=2, executor="serial", progress=False).ran == 0  # finished cells stay
    frame = testbed.load_results(tmp_path / "runs")
    assert sorted(frame.method) == ["fixmatch", "fixmatch", "supervised", "supervised"] and set(frame.status) == {"done"}
    assert summary.results().equals(frame)

    report = testbed.report(tmp_path / "runs", out=tmp_path / "report")
    assert report.path == tmp_path / "report" / "index.html" and report.path.is_file() and "## Leaderboard" in report.markdown
    assert set(report.leaderboard.cell) == {"supervised", "fixmatch"} and "verdict" in report.comparisons
    html = report._repr_html_()  # what Jupyter shows inline
    assert 'id="leaderboard">Leaderboard</h2>' in html and "<td>fixmatch</td>" in html
    assert html.count("data:image/png;base64,") >= 3 and not re.search(r'src="(?!data:)', html)  # every plot embedded
    assert html.startswith('<div class="testbed-report"><style>.testbed-report.testbed-report{') and "<body" not in html and "\nbody{" not in html
    assert repr(report) == f"Report({str(report.path)!r})"


def test_the_api_names_leave_the_modules_importable():
    from testbed.grid import expand
    from testbed.report import render_report

    assert callable(testbed.grid) and callable(testbed.report) and expand.__module__ == "testbed.grid"
    assert render_report.__module__ == "testbed.report" and testbed.load_results.__module__ == "testbed.results"
    assert {"run", "grid", "report", "load_results"} <= set(testbed.__all__)
