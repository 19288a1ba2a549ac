"""The plugin manager: built-ins, plugin files, duplicates, broken plugins, the CLI listing.
(The meta-tests of the hooks themselves are in test_hooks.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FAST, read_jsonl
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.plugins import PluginWarning, load_plugins
from testbed.runs import execute

BUILTIN_PLUGINS = {"augmentations", "backbones", "datasets", "distances", "presets", "schedules", "selectors", "teachers",
                   "executors", "trackers"}

EXPECTED_BUILTINS = {
    "distance": {"l1", "l2", "kl", "ce"},
    "selector": {"threshold", "none"},
    "teacher": {"self"},
    "schedule": {"constant"},
    "augmentation": {"identity", "drop_swap"},
    "dataset": {"ag_news", "imdb", "sst2", "trec", "mr", "sms_spam", "files", "hub"},
    "backbone": {"tiny", "minilm", "huggingface"},
    "preset": {"supervised", "fixmatch"},
}

# The plugin of the hookspecs docstring, plus a record of every call so a test can see it ran.
HINGE_PLUGIN = '''
from dataclasses import dataclass
import torch
from testbed import hookimpl, Distance

CALLS = []

@dataclass(frozen=True)
class HingeOptions:
    margin: float = 0.1

def hinge(options, context):
    def distance(student_logits, targets):
        CALLS.append(tuple(student_logits.shape))
        p = student_logits.softmax(-1)
        return torch.relu((targets - p).abs() - options.margin).sum(-1)
    return distance

@hookimpl
def testbed_distances():
    return [Distance(name="hinge", summary="L1 beyond a margin", factory=hinge, options=HingeOptions)]
'''

# Records every event hook call.
RECORDER_PLUGIN = '''
from testbed import hookimpl

EVENTS = []

@hookimpl
def testbed_run_started(run_dir, config):
    EVENTS.append(("run_started", run_dir, config))

@hookimpl
def testbed_evaluation(run_dir, record):
    EVENTS.append(("evaluation", run_dir, dict(record)))

@hookimpl
def testbed_run_finished(run_dir, result):
    EVENTS.append(("run_finished", run_dir, dict(result)))

@hookimpl
def testbed_report_sections(results, context):
    EVENTS.append(("report_sections", len(results)))
    return []
'''

DUPLICATE_L1_PLUGIN = '''
from testbed import hookimpl, Distance

@hookimpl
def testbed_distances():
    return [Distance(name="l1", summary="another l1", factory=lambda options: None)]
'''

BROKEN_PLUGINS = {
    "syntax_error": "def oops(:\n    pass\n",
    "raises_at_import": "raise RuntimeError('boom at import time')\n",
    "hook_raises": textwrap.dedent('''
        from testbed import hookimpl

        @hookimpl
        def testbed_distances():
            raise RuntimeError("boom inside the hook")
    '''),
    "misspelled_hook": textwrap.dedent('''
        from testbed import hookimpl, Distance

        @hookimpl
        def testbed_distance():
            return [Distance(name="never", summary="misspelled hook", factory=lambda o: None)]
    '''),
    "wrong_record": textwrap.dedent('''
        from testbed import hookimpl

        @hookimpl
        def testbed_distances():
            return ["not a Distance record"]
    '''),
    "wrong_hook_arguments": textwrap.dedent('''
        from testbed import hookimpl

        @hookimpl
        def testbed_evaluation(run_dir, metrics):
            pass
    '''),
}


def plugin_dir(tmp_path: Path, files: dict[str, str], name: str = "plugins") -> Path:
    d = tmp_path / name
    d.mkdir()
    for stem, source in files.items():
        (d / f"{stem}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return d


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


# --------------------------------------------------------------------------- built-ins


def test_builtins_load_and_provide_every_expected_name(registry):
    assert registry.failures == []
    for kind, names in EXPECTED_BUILTINS.items():
        assert names <= set(registry.names(kind)), kind
        for name in names:
            record = registry.get(kind, name)
            assert record.name == name and record.summary


def test_builtins_register_as_entry_points_named_after_their_seam(registry):
    infos = {p.name: p for p in registry.plugins}
    assert set(infos) >= BUILTIN_PLUGINS
    for name in BUILTIN_PLUGINS:
        assert infos[name].source.startswith("entry point of testbed"), infos[name].source
    assert set(infos["distances"].provides["distance"]) == {"l1", "l2", "kl", "ce", "js"}
    assert {"supervised", "fixmatch", "uda", "distillation"} <= set(infos["presets"].provides["preset"])
    # every record remembers which plugin provided it
    assert registry.records["distance"]["kl"][1] == "distances"
    assert registry.records["backbone"]["tiny"][1] == "backbones"


def test_unknown_name_lists_the_valid_ones(registry):
    with pytest.raises(UserError, match=r"Did you mean 'kl'\?.*Valid distances: ce, js, kl, l1, l2"):
        registry.get("distance", "kll")


def test_core_imports_no_plugin_module():
    core = Path(__file__).resolve().parents[1] / "testbed"
    for path in core.glob("*.py"):
        assert "testbed_plugins" not in path.read_text(encoding="utf-8"), path


# --------------------------------------------------------------------------- duplicates


def test_two_plugins_with_the_same_name_is_an_error_naming_both(tmp_path):
    d = plugin_dir(tmp_path, {"dup_l1": DUPLICATE_L1_PLUGIN})
    with pytest.raises(UserError) as info:
        load_plugins(plugins_dirs=[d])
    message = str(info.value)
    assert "'l1'" in message and "'distances'" in message and "'dup_l1'" in message


def test_duplicate_name_via_cli_is_one_error_line(tmp_path):
    d = plugin_dir(tmp_path, {"dup_l1": DUPLICATE_L1_PLUGIN})
    result = CliRunner().invoke(main, ["--plugins-dir", str(d), "plugins"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # a handled error, not a crash
    (line,) = error_lines(result.output)
    assert "dup_l1" in line and "distances" in line
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- plugin files


def test_plugin_file_is_discovered_from_a_directory(tmp_path, registry):
    d = plugin_dir(tmp_path, {"hinge_distance": HINGE_PLUGIN})
    reg = load_plugins(plugins_dirs=[d])
    assert "hinge" in reg.names("distance")
    assert set(registry.names("distance")) | {"hinge"} == set(reg.names("distance"))
    info = {p.name: p for p in reg.plugins}["hinge_distance"]
    assert info.source == str(d / "hinge_distance.py")
    assert info.provides == {"distance": ["hinge"]}
    # its options are config keys like any built-in's
    cfg = resolve(parse_overrides(["distance.name=hinge", "distance.margin=0.25"]), reg)
    assert cfg.choices["distance"].options.margin == 0.25
    assert cfg.resolved["distance"] == {"name": "hinge", "margin": 0.25}


def test_plugins_dir_from_environment(tmp_path, monkeypatch):
    d = plugin_dir(tmp_path, {"hinge_env": HINGE_PLUGIN})
    assert "hinge" not in load_plugins().names("distance")
    monkeypatch.setenv("TESTBED_PLUGINS_DIR", str(d))
    reg = load_plugins()
    assert "hinge" in reg.names("distance")
    assert reg.records["distance"]["hinge"][1] == "hinge_env"


def test_missing_plugins_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_plugins(plugins_dirs=[tmp_path / "nope"])


def test_plugin_distance_is_used_in_a_real_training_run(tmp_path):
    d = plugin_dir(tmp_path, {"hinge_run": HINGE_PLUGIN})
    out = tmp_path / "runs"
    args = ["--plugins-dir", str(d), "run", *FAST, "method=fixmatch", "distance.name=hinge", "distance.margin=0.0",
            "selector.threshold=0.0", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in out.iterdir() if not p.name.startswith("."))  # .locks/ beside it
    config = json.loads((run_dir / "config.json").read_text())
    assert config["distance"] == {"name": "hinge", "margin": 0.0}
    calls = sys.modules["testbed_plugin_files.hinge_run"].CALLS
    # one call per unlabeled step: the unlabeled batch is batch_size x unlabeled_ratio = 8
    assert calls == [(8, 6)] * 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    # threshold 0 keeps every pseudo-label and margin 0 makes hinge the L1 distance: strictly positive
    assert all(m["mask_rate"] == 1.0 and m["consistency_loss"] > 0 for m in metrics)


# --------------------------------------------------------------------------- event hooks


def test_event_hooks_receive_the_run(tmp_path):
    d = plugin_dir(tmp_path, {"recorder": RECORDER_PLUGIN})
    reg = load_plugins(plugins_dirs=[d])
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "selector.threshold=0.0"]), reg)
    run_dir, result, ran = execute(cfg, reg, tmp_path / "runs", progress=False)
    assert ran
    events = reg.pm.get_plugin("recorder").EVENTS
    kinds = [e[0] for e in events]
    assert kinds == ["run_started", "evaluation", "evaluation", "run_finished"]  # steps 3 and 6
    assert all(e[1] == run_dir for e in events)
    assert events[0][2] == cfg.resolved
    records = [e[2] for e in events[1:3]]
    assert [r["step"] for r in records] == [3, 6]
    for r in records:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["mask_rate"] == 1.0
    assert records == read_jsonl(run_dir / "metrics.jsonl")  # the very lines of metrics.jsonl
    assert events[3][2] == json.loads((run_dir / "result.json").read_text())
    assert events[3][2]["test_accuracy"] == records[-1]["test_accuracy"]


# --------------------------------------------------------------------------- broken plugins


@pytest.mark.parametrize("stem", sorted(BROKEN_PLUGINS))
def test_broken_plugin_is_skipped_with_a_warning_naming_it(tmp_path, stem):
    d = plugin_dir(tmp_path, {stem: BROKEN_PLUGINS[stem], "hinge_ok": HINGE_PLUGIN})
    with pytest.warns(PluginWarning, match=f"Plugin '{stem}' was skipped"):
        reg = load_plugins(plugins_dirs=[d])
    assert [name for name, _ in reg.failures] == [stem]
    # the built-ins and the healthy plugin next to it still load
    assert "hinge" in reg.names("distance")
    for kind, names in EXPECTED_BUILTINS.items():
        assert names <= set(reg.names(kind))
    assert "never" not in reg.names("distance")
    assert all(not p.provides for p in reg.plugins if p.name == stem)


def test_misspelled_hook_warning_suggests_the_real_hook(tmp_path):
    d = plugin_dir(tmp_path, {"misspelled_hook": BROKEN_PLUGINS["misspelled_hook"]})
    with pytest.warns(PluginWarning, match=r"unknown hook 'testbed_distance'.*Did you mean 'testbed_distances'"):
        load_plugins(plugins_dirs=[d])


@pytest.mark.parametrize("stem", ["syntax_error", "raises_at_import", "hook_raises", "misspelled_hook"])
def test_broken_plugin_does_not_break_the_cli(tmp_path, stem):
    d = plugin_dir(tmp_path, {stem: BROKEN_PLUGINS[stem]})
    runner = CliRunner()
    helped = runner.invoke(main, ["--plugins-dir", str(d), "--help"])
    assert helped.exit_code == 0 and "Usage:" in helped.output
    listed = runner.invoke(main, ["--plugins-dir", str(d), "plugins"])
    assert listed.exit_code == 0, listed.output
    assert f"Warning: Plugin '{stem}' was skipped" in listed.stderr
    assert f"{stem}  SKIPPED:" in listed.stdout
    assert "distances  (entry point of testbed" in listed.stdout
    assert "Traceback" not in listed.output


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("stem", ["syntax_error", "hook_raises"])
def test_strict_mode_fails_with_one_error_line(tmp_path, monkeypatch, stem, how):
    d = plugin_dir(tmp_path, {stem: BROKEN_PLUGINS[stem]})
    args = ["--plugins-dir", str(d), "plugins"]
    if how == "flag":
        args.insert(0, "--strict-plugins")
    else:
        monkeypatch.setenv("TESTBED_STRICT_PLUGINS", "1")
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    (line,) = error_lines(result.output)
    assert f"Plugin '{stem}' was skipped" in line and "strict" in line
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_strict_mode_raises_user_error_from_the_api(tmp_path):
    d = plugin_dir(tmp_path, {"raises_at_import": BROKEN_PLUGINS["raises_at_import"]})
    with pytest.raises(UserError, match="raises_at_import.*boom at import time"):
        load_plugins(plugins_dirs=[d], strict=True)


def test_installed_console_script_survives_a_broken_plugin(tmp_path):
    script = Path(sys.executable).parent / "testbed"
    assert script.is_file()
    d = plugin_dir(tmp_path, {"raises_at_import": BROKEN_PLUGINS["raises_at_import"]})
    done = subprocess.run([str(script), "--plugins-dir", str(d), "plugins", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)}
    assert names >= BUILTIN_PLUGINS and "raises_at_import" not in names
    assert "Warning: Plugin 'raises_at_import' was skipped" in done.stderr
    strict = subprocess.run([str(script), "--strict-plugins", "--plugins-dir", str(d), "plugins"],
                            capture_output=True, text=True, timeout=120)
    assert strict.returncode != 0
    assert "Traceback" not in strict.stderr + strict.stdout
    assert len(error_lines(strict.stderr)) == 1 and len(strict.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- listing


def test_plugins_json_lists_builtins_with_what_they_provide():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == {"name", "source", "provides"}
        assert isinstance(row["provides"], dict)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) >= BUILTIN_PLUGINS
    provided: dict[str, set] = {}
    for row in rows:
        for kind, names in row["provides"].items():
            provided.setdefault(kind, set()).update(names)
    for kind, names in EXPECTED_BUILTINS.items():
        assert names <= provided[kind], kind
    assert set(by_name["selectors"]["provides"]["selector"]) == {
        "threshold", "none", "flexmatch", "freematch", "softmatch", "curriculum", "uncertainty", "topk"}


def test_plugins_json_includes_a_plugin_file(tmp_path):
    d = plugin_dir(tmp_path, {"hinge_listed": HINGE_PLUGIN})
    result = CliRunner().invoke(main, ["--plugins-dir", str(d), "plugins", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {row["name"]: row for row in json.loads(result.stdout)}
    assert by_name["hinge_listed"] == {"name": "hinge_listed", "source": str(d / "hinge_listed.py"),
                                       "provides": {"distance": ["hinge"]}}
