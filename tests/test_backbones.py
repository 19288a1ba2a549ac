"""The backbones: a Hugging Face model from a local directory, and a missing one."""

from click.testing import CliRunner

from conftest import FAST
from testbed import BackboneContext
from testbed.cli import main


def test_backbone_from_a_local_model_directory(tmp_path, registry):
    tiny = registry.get("backbone", "tiny")
    model, tokenizer = tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), BackboneContext(6, None))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    args = [a for a in FAST if not a.startswith("backbone.")] + [f"backbone.name={tmp_path / 'model'}", "backbone.max_length=32"]
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))  # .locks/ beside it
    config = (run_dir / "config.json").read_text()
    assert '"name": "huggingface"' in config and str(tmp_path / "model") in config


def test_missing_local_model_is_one_clear_error(tmp_path):
    args = [a for a in FAST if not a.startswith("backbone.")]
    result = CliRunner().invoke(main, ["run", *args, f"backbone.name={tmp_path}/nope/model", "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert "Could not load backbone" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
