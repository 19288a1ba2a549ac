"""Backbones from a local Hugging Face directory, and hub datasets (with a stand-in `datasets`)."""

import sys
import types

import pytest
from click.testing import CliRunner

from testbed import UserError
from testbed.cli import main
from testbed.config import parse_overrides, resolve

from conftest import FAST


def test_backbone_from_a_local_model_directory(tmp_path, registry):
    tiny = registry.get("backbone", "tiny")
    model, tokenizer = tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), 6)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    args = [a for a in FAST if not a.startswith("backbone.")] + [f"backbone.name={tmp_path / 'model'}", "backbone.max_length=32"]
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = (run_dir / "config.json").read_text()
    assert '"name": "huggingface"' in config and str(tmp_path / "model") in config


def test_missing_local_model_is_one_clear_error(tmp_path):
    args = [a for a in FAST if not a.startswith("backbone.")]
    result = CliRunner().invoke(main, ["run", *args, f"backbone.name={tmp_path}/nope/model", "--out", str(tmp_path / "runs")])
    assert result.exit_code != 0
    assert "Could not load backbone" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


class _ClassLabel:
    def __init__(self, names):
        self.names = names


class _Split(list):
    def __init__(self, rows, features):
        super().__init__(rows)
        self.features = features


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in for the `datasets` package: offline, so the conversion code is what is tested."""
    calls = []

    def load_dataset(hub_id, subset=None):
        calls.append((hub_id, subset))
        if hub_id != "org/reviews":
            raise FileNotFoundError(f"Dataset '{hub_id}' doesn't exist on the Hub")
        features = {"sentence": None, "stars": _ClassLabel(["bad", "good"])}
        train = [{"sentence": f"review {i}", "stars": i % 2} for i in range(40)]
        test = [{"sentence": f"test {i}", "stars": i % 2} for i in range(10)]
        return {"train": _Split(train, features), "test": _Split(test, features)}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_dataset_uses_class_names_and_columns(fake_hub, registry):
    record = registry.get("dataset", "hub")
    data = record.factory(record.options(hub_id="org/reviews", subset="en", text_column="sentence", label_column="stars"))
    assert fake_hub == [("org/reviews", "en")]
    assert data.label_names == ["bad", "good"]
    assert data.train.texts[3] == "review 3" and data.train.labels[3] == 1 and len(data.test) == 10


def test_hub_dataset_errors_are_user_errors(fake_hub, registry):
    record = registry.get("dataset", "hub")
    with pytest.raises(UserError, match="Could not load hub dataset 'org/missing'"):
        record.factory(record.options(hub_id="org/missing"))
    with pytest.raises(UserError, match="has no split 'validation'"):
        record.factory(record.options(hub_id="org/reviews", text_column="sentence", label_column="stars", test_split="validation"))
    cfg = resolve(parse_overrides(["dataset.name=hub"]), registry)
    with pytest.raises(UserError, match="dataset.hub_id is empty"):
        cfg.choices["dataset"].record.factory(cfg.choices["dataset"].options)
