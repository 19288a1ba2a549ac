"""testbed new-plugin: the package it writes passes its own test (in a subprocess, uninstalled: PYTHONPATH
and the module file), testbed finds it by --plugins-dir and by its entry point, and bad names are refused."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_public_api import core_imports

from testbed.cli import main
from testbed.scaffold import KINDS

FAST_KINDS = ("distance", "selector")  # the rest are the same machinery: in the slow lane


def new_plugin(tmp_path: Path, name: str, kind: str, *extra: str):
    return CliRunner().invoke(main, ["new-plugin", name, "--kind", kind, "--dir", str(tmp_path / name), "--no-install", *extra])


def run_its_tests(package: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package), "HF_HUB_OFFLINE": "1", "TESTBED_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_a_plugin_that_testbed_loads_and_resolves(tmp_path, kind):
    from testbed.config import parse_overrides, resolve
    from testbed.plugins import load_plugins
    from testbed.scaffold import KIND_TEMPLATES

    name = f"my_{kind}"
    result = new_plugin(tmp_path, name, kind)
    assert result.exit_code == 0, result.output
    package = tmp_path / name
    written = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert written == ["README.md", "pyproject.toml", f"testbed_{name}.py", "tests/conftest.py", f"tests/test_{name}.py"]
    for path in written:
        assert str(package / path) in result.output  # says what it wrote
    assert f"testbed --plugins-dir {package} run" in result.output and "Not installed (--no-install)" in result.output
    assert core_imports(package / f"testbed_{name}.py") == []  # only `from testbed import ...`, as every plugin
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff:  # what it writes is clean code to start from
        lint = subprocess.run([ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length", "130", "."],
                              capture_output=True, text=True, cwd=package)  # there, testbed is a third-party package, as for its author
        assert lint.returncode == 0, lint.stdout
    registry = load_plugins([package], strict=True)
    assert registry.records[kind][name][1] == f"testbed_{name}"
    use = {key: value.replace("$name", name) if isinstance(value, str) else value for key, value in KIND_TEMPLATES[kind].use.items()}
    cfg = resolve(parse_overrides([f"{key}={json.dumps(value)}" for key, value in use.items()]), registry)
    assert name in (cfg.method, *(choice.name for choice in cfg.choices.values()))


@pytest.mark.parametrize("kind", [k if k in FAST_KINDS else pytest.param(k, marks=pytest.mark.slow) for k in KINDS])
def test_the_generated_package_passes_its_own_test(tmp_path, kind):
    """Its test in a subprocess, as its author runs it: the config through resolve, the factory, a tiny run."""
    name = f"my_{kind}"
    assert new_plugin(tmp_path, name, kind).exit_code == 0
    done = run_its_tests(tmp_path / name, tmp_path)
    assert done.returncode == 0 and "4 passed" in done.stdout, done.stdout + done.stderr


def test_the_pyproject_declares_the_entry_point_as_testbed_does_for_its_own():
    import tomllib

    from testbed.scaffold import render

    ours = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    files, _ = render("hinge", "distance", Path("testbed-hinge"))
    theirs = tomllib.loads(files["pyproject.toml"])
    assert "testbed" in ours["project"]["entry-points"] and theirs["project"]["entry-points"] == {"testbed": {"testbed_hinge": "testbed_hinge"}}
    assert theirs["tool"]["setuptools"]["py-modules"] == ["testbed_hinge"]


def test_plugins_dir_route_lists_it(tmp_path):
    assert new_plugin(tmp_path, "hinge", "distance").exit_code == 0
    result = CliRunner().invoke(main, ["--plugins-dir", str(tmp_path / "hinge"), "--strict-plugins", "plugins", "--json"])
    assert result.exit_code == 0, result.output
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert plugins["testbed_hinge"]["provides"] == {"distance": ["hinge"]}
    assert plugins["testbed_hinge"]["source"] == str(tmp_path / "hinge" / "testbed_hinge.py")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="building the wheel offline needs setuptools here")
def test_entry_point_route_once_installed(tmp_path):
    """pip installs the package (into a directory of its own, not this environment), and testbed, with
    that directory on its path, finds the plugin through the entry point its pyproject declares."""
    assert new_plugin(tmp_path, "confident", "selector").exit_code == 0
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                          "--target", str(target), str(tmp_path / "confident")], capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    listed = subprocess.run([sys.executable, "-m", "testbed.cli", "--strict-plugins", "plugins", "--json"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["testbed_confident"]["source"] == "entry point of testbed-confident 0.1.0"
    assert plugins["testbed_confident"]["provides"] == {"selector": ["confident"]}


@pytest.mark.parametrize(("args", "message"), [
    (["my-plugin", "--kind", "distance"], "Plugin name 'my-plugin' must be a Python identifier (letters, digits and _, a letter first), e.g. 'my_plugin'."),
    (["2fast", "--kind", "distance"], "Plugin name '2fast' must be a Python identifier"),
    (["class", "--kind", "selector"], "Plugin name 'class' must be a Python identifier"),
    (["kl", "--kind", "distance"], "A distance named 'kl' already exists (from plugin 'distances'); choose another name."),
    (["fixmatch", "--kind", "preset"], "A preset named 'fixmatch' already exists (from plugin 'presets')"),
    (["hinge", "--kind", "loss"], "Invalid value for '--kind'"),
])
def test_bad_names_are_refused_with_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["new-plugin", *args, "--no-install"])
    assert result.exit_code != 0 and message in result.output, result.output
    if "--kind'" not in message:
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_existing_directory_is_refused(tmp_path):
    (tmp_path / "hinge").mkdir()
    (tmp_path / "hinge" / "mine.txt").write_text("keep")
    result = new_plugin(tmp_path, "hinge", "distance")
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'hinge'} already exists; pass --dir with a new directory, or remove it first.\n"
    assert [p.name for p in (tmp_path / "hinge").iterdir()] == ["mine.txt"]


def test_it_installs_editable_with_this_python(tmp_path, monkeypatch):
    import testbed.scaffold as scaffold

    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(scaffold.subprocess, "run", fake_run)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["new-plugin", "hinge", "--kind", "distance"])
    assert result.exit_code == 0, result.output
    (command,) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "install"] and command[-2:] == ["-e", "testbed-hinge"] and "--no-deps" in command
    assert "Installed, editable: pip install" in result.output and "\n  testbed run distance.name=hinge" in result.output
    assert (tmp_path / "testbed-hinge" / "testbed_hinge.py").is_file()

    def failing(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network\n")

    monkeypatch.setattr(scaffold.subprocess, "run", failing)
    result = CliRunner().invoke(main, ["new-plugin", "wide", "--kind", "selector"])
    assert result.exit_code == 1 and "ERROR: no network" in result.output and "testbed --plugins-dir testbed-wide" in result.output
    assert (tmp_path / "testbed-wide" / "testbed_wide.py").is_file()  # written before the install failed
