"""Shared fixtures: the plugin registry, fast run settings, tiny data directories."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network: the tiny backbone's tokenizer is local
if "TESTBED_CACHE" not in os.environ:  # views and fitted models of test runs stay out of ~/.cache
    os.environ["TESTBED_CACHE"] = tempfile.mkdtemp(prefix="testbed-tests-cache-")
    atexit.register(shutil.rmtree, os.environ["TESTBED_CACHE"], ignore_errors=True)

from testbed.config import parse_overrides, resolve
from testbed.data import data_dir
from testbed.plugins import load_plugins

# A few steps of a 1-layer, 32-wide BERT on small slices of the data, single-threaded
# (one thread is both faster for a model this small and bit-for-bit reproducible).
FAST = [
    "backbone.name=tiny",
    "backbone.layers=1",
    "backbone.hidden=32",
    "backbone.heads=2",
    "backbone.intermediate=64",
    "backbone.max_length=32",
    "dataset.name=trec",
    "dataset.labels_per_class=10",
    "dataset.validation_per_class=5",
    "dataset.unlabeled_limit=200",
    "dataset.test_limit=100",
    "train.steps=6",
    "train.batch_size=8",
    "train.eval_every=3",
    "train.eval_batch_size=64",
    "train.threads=1",
]

# Fields of a metrics record that measure time, so differ between identical runs.
TIME_FIELDS = {"elapsed_seconds"}

# a plugin file whose distance raises at its first unlabeled step (distance.name=explode)
EXPLODING_DISTANCE = '''
from testbed import hookimpl, Distance

def explode(options, context):
    def distance(logits, targets):
        raise RuntimeError("boom in the distance")
    return distance

@hookimpl
def testbed_distances():
    return [Distance(name="explode", summary="always fails", factory=explode)]
'''


@pytest.fixture(autouse=True)
def _clean_plugin_env(monkeypatch):
    """Tests decide themselves whether extra plugins or strict mode are on."""
    monkeypatch.delenv("TESTBED_PLUGINS_DIR", raising=False)
    monkeypatch.delenv("TESTBED_STRICT_PLUGINS", raising=False)


@pytest.fixture(scope="session")
def registry():
    """The built-in plugins only."""
    return load_plugins()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = data_dir()
    assert root is not None and (root / "trec").is_dir(), "the shared data directory is needed for these tests"
    return root


@pytest.fixture
def fast():
    """The fast overrides as a list of key=value strings (a fresh copy per test)."""
    return list(FAST)


@pytest.fixture
def fast_config(registry):
    """resolve(FAST + extra overrides) with the built-in registry."""

    def make(*extra: str, reg=None):
        return resolve(parse_overrides([*FAST, *extra]), reg or registry)

    return make


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_rows(n_per_class: int, classes=(0, 1), prefix: str = "") -> list[dict]:
    """Distinct texts, balanced classes."""
    return [{"text": f"{prefix}example {c} number {i} with some words", "label": c}
            for c in classes for i in range(n_per_class)]


@pytest.fixture
def tiny_dataset_dir(tmp_path) -> Path:
    """A small, valid two-class dataset directory (jsonl + labels.json)."""
    d = tmp_path / "tinydata"
    write_jsonl(d / "train.jsonl", tiny_rows(20, prefix="train "))
    write_jsonl(d / "test.jsonl", tiny_rows(4, prefix="test "))
    (d / "labels.json").write_text(json.dumps(["neg", "pos"]), encoding="utf-8")
    return d


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def one_thread():
    """One torch thread for a test: tiny models run faster and reproducibly on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
