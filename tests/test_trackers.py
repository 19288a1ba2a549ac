"""The trackers (MLflow, TensorBoard): plugins on the run events, off unless TESTBED_TRACKERS names them."""

# A tracked run is readable with each tool's own reader.

from __future__ import annotations

import warnings

import pytest
from click.testing import CliRunner

from conftest import FAST
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.errors import TrainingError
from testbed.runs import execute

# evaluations at steps 2 and 4
TRACKED = [*FAST, "method=fixmatch", "train.steps=4", "train.eval_every=2", "selector.threshold=0.3"]


def run(registry, out):
    cfg = resolve(parse_overrides(TRACKED), registry)
    run_dir, result, ran = execute(cfg, registry, out, progress=False)
    assert ran
    return cfg, run_dir, result


def test_trackers_are_off_by_default(registry, tmp_path, monkeypatch):
    monkeypatch.delenv("TESTBED_TRACKERS", raising=False)
    _, run_dir, _ = run(registry, tmp_path / "runs")
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl", "predictions.npz", "result.json"]
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name != ".locks"] == [run_dir.name]  # no mlruns/


def test_mlflow_logs_params_and_metrics_per_step(registry, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("TESTBED_TRACKERS", "mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TESTBED_MLFLOW_URI", raising=False)
    out = tmp_path / "runs"
    cfg, run_dir, result = run(registry, out)
    store = (out / "mlruns").as_uri()
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["testbed"], output_format="list")
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.run_name == cfg.run_id and logged.info.status == "FINISHED"
    assert logged.data.tags["testbed.run_id"] == cfg.run_id
    params = logged.data.params
    assert params["method"] == "fixmatch" and params["selector.name"] == "threshold"
    assert params["selector.threshold"] == "0.3" and params["backbone.name"] == "tiny"
    client = mlflow.tracking.MlflowClient(store)
    history = client.get_metric_history(logged.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [2, 4]
    assert history[-1].value == pytest.approx(result["test_accuracy"])
    assert "selector/threshold" in logged.data.metrics and "mask_rate" in logged.data.metrics
    assert logged.data.metrics["final.test_accuracy_best_val"] == pytest.approx(result["test_accuracy_best_val"])
    frame = mlflow.search_runs(experiment_names=["testbed"])  # the pandas view
    assert frame.loc[0, "params.distance.name"] == "ce" and frame.loc[0, "metrics.test_accuracy"] == pytest.approx(result["test_accuracy"])


def test_tensorboard_writes_scalars_per_step(registry, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TESTBED_TRACKERS", "tensorboard")
    _, run_dir, result = run(registry, tmp_path / "runs")
    logdir = run_dir / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logdir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"test_accuracy", "val_accuracy", "mask_rate", "selector/threshold", "final/test_accuracy"} <= set(scalars)
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("test_accuracy")][-1] == (4, round(result["test_accuracy"], 5))
    assert [e.step for e in events.Scalars("val_accuracy")] == [2, 4]
    assert "config/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_grid_workers_log_to_one_mlflow_store_and_tensorboard(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TESTBED_TRACKERS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs"
    base = [a for a in FAST if not a.startswith(("train.steps", "train.eval_every"))]
    result = CliRunner().invoke(main, ["grid", "method=fixmatch", *base, "train.steps=2", "train.eval_every=2",
                                       "distance.name=l1,kl", "--workers", "2", "--trackers", "mlflow,tensorboard",
                                       "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri((out / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["testbed"])
    assert len(runs) == 2 and set(runs["params.distance.name"]) == {"l1", "kl"}
    assert set(runs["tags.mlflow.runName"]) == {p.parent.name for p in out.glob("*/result.json")}
    assert len(list(out.glob("*/tensorboard/events.out.tfevents.*"))) == 2
    assert "TESTBED_TRACKERS" not in __import__("os").environ  # --trackers reaches the workers, not this process


def test_an_unknown_tracker_name_warns(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_TRACKERS", "mlfow")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, run_dir, _ = run(registry, tmp_path / "runs")
    assert any("'mlfow', which is not a built-in tracker" in str(w.message) for w in caught)
    assert not (tmp_path / "runs" / "mlruns").exists()


EXPLODING_SELECTOR = '''
from testbed import hookimpl, Selector
from testbed_plugins.selectors import ThresholdSelector, ThresholdOptions

class Explodes(ThresholdSelector):
    def select(self, probs, indices, step):
        if step >= 3:
            raise {error}("{message}")
        return super().select(probs, indices, step)

@hookimpl
def testbed_selectors():
    return [Selector(name="explodes", summary="fails at step 3", factory=Explodes, options=ThresholdOptions)]
'''


@pytest.mark.parametrize("error, status", [("RuntimeError", "FAILED"), ("KeyboardInterrupt", "KILLED")])
def test_a_run_that_raises_is_not_left_running_in_mlflow_or_tensorboard(tmp_path, monkeypatch, error, status):
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from testbed.plugins import load_plugins

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "explodes.py").write_text(EXPLODING_SELECTOR.format(error=error, message="boom at step 3"))
    registry = load_plugins(plugins_dirs=[plugins])
    monkeypatch.setenv("TESTBED_TRACKERS", "mlflow,tensorboard")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TESTBED_MLFLOW_URI", raising=False)
    monkeypatch.delenv("TESTBED_TENSORBOARD_DIR", raising=False)
    out = tmp_path / "runs"
    cfg = resolve(parse_overrides([*TRACKED, "selector.name=explodes"]), registry)
    # a plugin's error inside the loop is said as a TrainingError naming the seam and the step (tests/test_faults.py)
    with pytest.raises(TrainingError if error == "RuntimeError" else KeyboardInterrupt, match="boom at step 3"):
        execute(cfg, registry, out, progress=False)
    mlflow.set_tracking_uri((out / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["testbed"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == status
    said = "TrainingError: selector 'explodes' raised RuntimeError: boom at step 3 at step 3." if error == "RuntimeError" else \
        "KeyboardInterrupt: boom at step 3"
    assert runs[0].data.tags["testbed.error"].startswith(said)
    assert [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(runs[0].info.run_id, "test_accuracy")] == [2]
    events = EventAccumulator(str(out / cfg.run_id / "tensorboard")).Reload()
    assert "error/text_summary" in events.Tags()["tensors"]
    assert (out / cfg.run_id / "error.json").is_file() == (error == "RuntimeError")  # an interrupt is not a failure
