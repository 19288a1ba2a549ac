"""The named methods: thirteen presets, each data over the seams, each running end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import FAST, read_jsonl
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.runs import execute

PRESETS = ["supervised", "pseudolabel", "pimodel", "meanteacher", "uda", "fixmatch", "flexmatch", "freematch",
           "softmatch", "noisy-student", "distillation", "cotraining", "llm-distill"]
CATALOGUE = {
    "distance": {"l1", "l2", "kl", "ce", "js"},
    "selector": {"threshold", "flexmatch", "curriculum", "uncertainty", "freematch", "softmatch", "topk", "none"},
    "teacher": {"self", "ema", "snapshot", "model", "cotrain", "prompt"},
    "schedule": {"constant", "linear", "sigmoid", "cosine", "decreasing", "tsa_linear", "tsa_log", "tsa_exp"},
    "regulariser": {"none", "saf", "entropy", "mlm"},
    "preset": set(PRESETS),
}
# a preset's own teacher backbone would be MiniLM: a tiny one keeps the test fast
EXTRA = {"distillation": ["teacher.backbone=tiny", "teacher.steps=3"], "llm-distill": ["teacher.model=tiny"]}


def test_presets_command_lists_the_thirteen_with_their_settings():
    result = CliRunner().invoke(main, ["presets", "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.output)}
    assert set(listed) == set(PRESETS)
    assert listed["uda"]["settings"]["selector"] == {"name": "threshold", "threshold": 0.8, "soft": True, "temperature": 0.4}
    text = CliRunner().invoke(main, ["presets"]).output
    assert "uda: UDA" in text and "    selector.temperature = 0.4" in text


def test_plugins_json_lists_the_whole_catalogue():
    result = CliRunner().invoke(main, ["plugins", "--json"])
    provided: dict[str, set] = {}
    for plugin in json.loads(result.output):
        for kind, names in plugin["provides"].items():
            provided.setdefault(kind, set()).update(names)
    for kind, names in CATALOGUE.items():
        assert names <= provided[kind], f"{kind}: missing {names - provided[kind]}"


@pytest.mark.parametrize("method", PRESETS)
def test_every_preset_resolves_to_its_settings(registry, method):
    cfg = resolve(parse_overrides([f"method={method}", *EXTRA.get(method, [])]), registry)
    settings = registry.get("preset", method).settings
    for seam in ("teacher", "selector", "distance", "schedule", "tsa", "regulariser"):
        for key, value in settings.get(seam, {}).items():
            if not (method in EXTRA and f"{seam}.{key}" in " ".join(EXTRA[method])):
                assert cfg.resolved[seam][key] == value, (seam, key)
    for view in ("weak", "strong"):
        expected = settings.get("augmentation", {}).get(view, {"name": "identity"})["name"]
        assert cfg.resolved["augmentation"][view]["name"] == expected


def test_explicit_keys_override_any_preset(registry):
    cfg = resolve(parse_overrides(["method=uda", "selector.temperature=0.9", "tsa.name=tsa_exp"]), registry)
    assert cfg.resolved["selector"]["temperature"] == 0.9 and cfg.resolved["selector"]["threshold"] == 0.8
    assert cfg.resolved["tsa"]["name"] == "tsa_exp"


@pytest.mark.parametrize("method", PRESETS)
def test_every_preset_runs_end_to_end(registry, tmp_path, method):
    cfg = resolve(parse_overrides([f"method={method}", *FAST, "selector.threshold=0.3" if method == "fixmatch" else "seed=0",
                                   *EXTRA.get(method, [])]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and result["steps"] == 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    uses_unlabeled = method != "supervised"
    # ramped schedules may still be at λ = 0 at step 3, but every non-supervised method draws by step 6
    assert (metrics[-1]["mask_rate"] is not None) == uses_unlabeled
