"""Meta-tests of the hook list (testbed/hookspecs.py): every hook documents a complete example,
the examples run as a real plugin, and the core calls every hook in a real grid and report.

A new hook fails ``test_every_hook_has_a_check`` until it has an example and an entry in
CHECKS that proves the core called it."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXPLODING_DISTANCE
from testbed import hookspecs
from testbed.cli import main
from testbed.plugins import load_plugins

# What the examples may use without importing it: the public API and the usual libraries.
EXAMPLE_HEADER = "import copy\n\nimport numpy as np\nimport torch\n\nfrom testbed import *  # noqa: F403\n\n"


def hook_names() -> list[str]:
    return sorted(name for name, obj in vars(hookspecs).items() if name.startswith("testbed_") and inspect.isfunction(obj))


def example(hook: str) -> str:
    """The code block after ``Example::`` in the hook's docstring."""
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Example::" in doc, f"{hook}'s docstring has no 'Example::' block"
    return textwrap.dedent(doc.split("Example::", 1)[1]).strip() + "\n"


def test_the_hook_list_is_the_collection_hooks_and_the_events():
    collection = {hook for hook, _ in hookspecs.KINDS.values()}
    events = {"testbed_run_started", "testbed_evaluation", "testbed_run_finished", "testbed_run_failed", "testbed_report_sections"}
    assert set(hook_names()) == collection | events


@pytest.mark.parametrize("hook", hook_names())
def test_each_example_is_a_plugin_that_implements_its_hook(tmp_path, hook):
    (tmp_path / "example.py").write_text(EXAMPLE_HEADER + example(hook))
    registry = load_plugins(plugins_dirs=[tmp_path], strict=True)
    implementers = {impl.plugin_name for impl in getattr(registry.pm.hook, hook).get_hookimpls()}
    assert "example" in implementers
    kind = next((kind for kind, (name, _) in hookspecs.KINDS.items() if name == hook), None)
    if kind:  # a collection hook: its record is registered under the example's plugin
        assert any(plugin == "example" for _, plugin in registry.records[kind].values())


# Every hook -> how the grid + report below shows that the core called the example's implementation.
CHECKS = {
    "testbed_augmentations": lambda out, cfg, report: cfg["augmentation"]["strong"]["name"] == "upper",
    "testbed_distances": lambda out, cfg, report: cfg["distance"]["name"] == "largest_gap",
    "testbed_selectors": lambda out, cfg, report: cfg["selector"]["name"] == "keep_soft",
    "testbed_teachers": lambda out, cfg, report: cfg["teacher"]["name"] == "initial",
    "testbed_schedules": lambda out, cfg, report: cfg["schedule"]["name"] == "second_half",
    "testbed_regularisers": lambda out, cfg, report: cfg["regulariser"]["name"] == "confident" and all(
        m["regulariser_loss"] > 0 for m in cfg["metrics"]),  # the term was added at every step
    "testbed_datasets": lambda out, cfg, report: cfg["dataset"]["name"] == "colours",
    "testbed_tasks": lambda out, cfg, report: cfg["dataset"]["task"] == "balanced" and all(
        0 <= m["test_balanced_accuracy"] <= 1 for m in cfg["metrics"]),  # the task scored every evaluation
    "testbed_backbones": lambda out, cfg, report: cfg["backbone"]["name"] == "small",
    "testbed_presets": lambda out, cfg, report: cfg["method"] == "pi_model",
    "testbed_executors": lambda out, cfg, report: "running 2 cells one by one" in out,
    "testbed_run_started": lambda out, cfg, report: "training pi_model into" in out,
    "testbed_evaluation": lambda out, cfg, report: "step 2: test accuracy" in out and "step 4: test accuracy" in out,
    "testbed_run_finished": lambda out, cfg, report: f"{cfg['run_id']}: test accuracy" in out,
    "testbed_run_failed": lambda out, cfg, report: "failed: TrainingError: distance 'explode' raised RuntimeError: boom in the "
                                                     "distance" in out,
    "testbed_report_sections": lambda out, cfg, report: "## Mean mask rate" in report,
}


def test_every_hook_has_a_check():
    assert sorted(CHECKS) == hook_names()


def test_the_core_calls_every_hook_of_the_examples(tmp_path):
    """All the examples as one plugin; a grid of two cells that uses each of their records (and a
    failing cell), through the example executor, then a report: each hook's check must hold."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "examples.py").write_text(EXAMPLE_HEADER + "\n\n".join(example(hook) for hook in hook_names()))
    (plugins / "exploding.py").write_text(EXPLODING_DISTANCE)
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent("""
        [base]
        method = "pi_model"
        dataset = {name = "colours", labels_per_class = 1, validation_per_class = 1, task = "balanced"}
        backbone = {name = "small", max_length = 8}
        train = {steps = 4, eval_every = 2, batch_size = 2, unlabeled_ratio = 1, threads = 1, view_variants = 0}
        selector.name = "keep_soft"
        teacher.name = "initial"
        schedule.name = "second_half"
        augmentation.strong.name = "upper"
        regulariser.name = "confident"

        [axes]
        "distance.name" = ["largest_gap", "explode"]
    """))
    out = tmp_path / "runs"
    runner = CliRunner()
    ran = runner.invoke(main, ["--plugins-dir", str(plugins), "grid", str(grid), "--executor", "inline", "--out", str(out)])
    assert ran.exit_code != 0 and "1 failed" in ran.output, ran.output  # the exploding cell fails, the grid goes on
    report = runner.invoke(main, ["--plugins-dir", str(plugins), "report", str(out), "-o", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    (finished,) = (p for p in out.glob("*/result.json"))
    cfg = {**json.loads((finished.parent / "config.json").read_text()), "run_id": finished.parent.name,
           "metrics": [json.loads(line) for line in (finished.parent / "metrics.jsonl").read_text().splitlines()]}
    markdown = Path(tmp_path / "report" / "index.md").read_text()
    failed = [hook for hook, check in CHECKS.items() if not check(ran.output, cfg, markdown)]
    assert not failed, f"not called, or not as documented: {failed}\n{ran.output}"
