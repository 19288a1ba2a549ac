"""End to end through the CLI: run directories, results, resume, reproducibility, listings."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FAST, TIME_FIELDS, read_jsonl
from testbed.cli import main
from testbed.config import parse_overrides, resolve, run_id
from testbed.errors import UserError
from testbed.runs import LOCKS_DIR, execute

# eval_every=3 with 7 steps: evaluations at 3, 6 and always at the last step
FIXMATCH = ["run", "method=fixmatch", *FAST, "train.steps=7", "selector.threshold=0.3"]
SUPERVISED = ["run", "method=supervised", *FAST, "train.steps=4", "train.eval_every=2"]
METRIC_KEYS = {"step", "val_accuracy", "test_accuracy", "mask_rate", "pseudo_label_accuracy"}
RESULT_KEYS = {"run_id", "test_accuracy", "test_accuracy_best_val", "test_macro_f1", "steps", "wall_seconds"}
RESULT_TIME_FIELDS = {"wall_seconds", "train_seconds", "eval_seconds", "augment_seconds", "started_at", "finished_at"}


def invoke(args: list[str], out: Path):
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return result


def only_run_dir(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.name != LOCKS_DIR]  # OUT/.locks: the runs' locks
    return run_dir


@pytest.fixture(scope="module")
def fixmatch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixmatch") / "runs"
    result = invoke(FIXMATCH, out)
    return out, only_run_dir(out), result.output


def untimed(record: dict, fields=TIME_FIELDS) -> dict:
    return {k: v for k, v in record.items() if k not in fields}


# --------------------------------------------------------------------------- a run


def test_run_writes_config_metrics_and_result(fixmatch_run, registry):
    out, run_dir, output = fixmatch_run
    assert "fixmatch on trec (seed 0): finished" in output
    assert f"run directory: {run_dir}" in output
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "metrics.jsonl", "predictions.npz", "result.json"]

    config = json.loads((run_dir / "config.json").read_text())
    assert config == resolve(parse_overrides(FIXMATCH[1:]), registry).resolved
    assert config["method"] == "fixmatch" and config["backbone"]["name"] == "tiny"
    assert config["dataset"]["name"] == "trec" and config["dataset"]["labels_per_class"] == 10

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6, 7]
    for m in metrics:
        assert set(m) >= METRIC_KEYS
        assert 0 <= m["val_accuracy"] <= 1 and 0 <= m["test_accuracy"] <= 1
        assert 0 <= m["mask_rate"] <= 1
        assert m["pseudo_label_accuracy"] is None or 0 <= m["pseudo_label_accuracy"] <= 1
        assert m["selector/threshold"] == 0.3

    result = json.loads((run_dir / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    assert result["steps"] == 7 and result["wall_seconds"] > 0
    assert result["method"] == "fixmatch" and result["dataset"] == "trec" and result["seed"] == 0
    assert result["test_accuracy"] == metrics[-1]["test_accuracy"]
    assert result["test_macro_f1"] == metrics[-1]["test_macro_f1"]
    best = max(metrics, key=lambda m: m["val_accuracy"])  # the first of the best
    assert result["best_val_step"] == best["step"]
    assert result["test_accuracy_best_val"] == best["test_accuracy"]
    assert result["labeled_size"] == 60 and result["validation_size"] == 30
    assert result["unlabeled_size"] == 200 and result["test_size"] == 100
    assert result["label_names"] == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]  # trec's labels.json
    # provenance: the commit of this checkout (tests run from one), "+dirty" while files are edited
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", result["git_commit"])


def test_run_dir_name_is_the_run_id_of_its_config(fixmatch_run):
    _, run_dir, _ = fixmatch_run
    result = json.loads((run_dir / "result.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert run_dir.name == result["run_id"] == run_id(config)
    assert re.fullmatch(r"[0-9a-f]{12}", run_dir.name)


def test_supervised_run_draws_no_unlabeled_batch(tmp_path):
    out = tmp_path / "runs"
    invoke(SUPERVISED, out)
    run_dir = only_run_dir(out)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [2, 4]
    for m in metrics:
        assert m["mask_rate"] is None and m["pseudo_label_accuracy"] is None and m["consistency_loss"] is None
        assert m["consistency_weight"] == 0.0 and m["train_loss"] > 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["method"] == "supervised" and result["steps"] == 4
    assert run_dir.name == result["run_id"] == run_id(json.loads((run_dir / "config.json").read_text()))


# --------------------------------------------------------------------------- resume


def test_finished_run_is_not_rerun_unless_forced(fixmatch_run, tmp_path):
    _, original, _ = fixmatch_run
    out = tmp_path / "runs"
    shutil.copytree(original, out / original.name)
    result_path = out / original.name / "result.json"
    before = result_path.stat()
    text = result_path.read_text()

    again = invoke(FIXMATCH, out)
    assert "already finished (use --force to rerun)" in again.output
    after = result_path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert result_path.read_text() == text

    forced = invoke([*FIXMATCH, "--force"], out)
    assert ": finished" in forced.output and "already" not in forced.output
    after = result_path.stat()
    assert (after.st_mtime_ns, after.st_ino) != (before.st_mtime_ns, before.st_ino)
    assert json.loads(result_path.read_text())["run_id"] == original.name
    assert only_run_dir(out).name == original.name


def test_a_damaged_result_is_an_error_naming_the_fix_and_force_reruns(fixmatch_run, tmp_path, registry):
    out, run_dir, _ = fixmatch_run
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    (copy / run_dir.name / "result.json").write_text("{")
    cfg = resolve(parse_overrides(FIXMATCH[1:]), registry)
    with pytest.raises(UserError, match=f"result.json is not valid JSON .* Delete {copy / run_dir.name} to rerun"):
        execute(cfg, registry, copy, progress=False)
    _, result, ran = execute(cfg, registry, copy, force=True, progress=False)
    assert ran and json.loads((copy / run_dir.name / "result.json").read_text())["test_accuracy"] == result["test_accuracy"]


# --------------------------------------------------------------------------- reproducibility


def test_same_config_and_seed_reproduce_exactly(fixmatch_run, tmp_path):
    _, first, _ = fixmatch_run
    out = tmp_path / "elsewhere"
    assert "already" not in invoke(FIXMATCH, out).output  # really trained again
    second = only_run_dir(out)
    assert second.name == first.name
    a, b = (json.loads((d / "result.json").read_text()) for d in (first, second))
    assert a["test_accuracy"] == b["test_accuracy"]
    assert untimed(a, RESULT_TIME_FIELDS) == untimed(b, RESULT_TIME_FIELDS)
    ma, mb = (read_jsonl(d / "metrics.jsonl") for d in (first, second))
    assert [untimed(m) for m in ma] == [untimed(m) for m in mb]


def test_a_different_seed_is_a_different_run(fixmatch_run, tmp_path):
    _, first, _ = fixmatch_run
    out = tmp_path / "seed1"
    invoke([*FIXMATCH, "seed=1"], out)
    second = only_run_dir(out)
    assert second.name != first.name
    a, b = (read_jsonl(d / "metrics.jsonl") for d in (first, second))
    assert [m["train_loss"] for m in a] != [m["train_loss"] for m in b]


# --------------------------------------------------------------------------- other inputs


def test_run_from_a_toml_file_and_a_files_dataset(tmp_path, tiny_dataset_dir):
    config = tmp_path / "exp.toml"
    config.write_text(f'method = "fixmatch"\n[dataset]\nname = "files"\npath = "{tiny_dataset_dir}"\n', encoding="utf-8")
    out = tmp_path / "runs"
    overrides = [a for a in FAST if not a.startswith("dataset.")] + ["dataset.validation_per_class=2"]
    result = invoke(["run", str(config), *overrides, "train.steps=3"], out)
    assert "fixmatch on tinydata (seed 0): finished" in result.output  # a local dataset goes by its directory's name
    run_dir = only_run_dir(out)
    config_json = json.loads((run_dir / "config.json").read_text())
    assert config_json["dataset"]["path"] == str(tiny_dataset_dir) and config_json["method"] == "fixmatch"
    done = json.loads((run_dir / "result.json").read_text())
    assert done["labeled_size"] == 20 and done["validation_size"] == 4 and done["test_size"] == 8


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["run", str(d / "nope.toml")], "nope.toml' not found"),
    (lambda d: ["run", str(d / "bad.toml")], "bad.toml' is not valid TOML"),
    (lambda d: ["run", str(d / "bad.toml"), str(d / "other.toml")], "at most one config file"),
    (lambda d: ["run", "selector.treshold=0.5", "method=fixmatch"], "Did you mean 'selector.threshold'"),
    (lambda d: ["run", "train.steps=abc"], "'train.steps' must be int"),
    (lambda d: ["run", "method=nope"], "Unknown preset 'nope'"),
])
def test_config_errors_via_cli(tmp_path, make_args, message):
    (tmp_path / "bad.toml").write_text("method = = 1\n")
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, [*make_args(tmp_path), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output and not out.exists()


# --------------------------------------------------------------------------- listings


def test_datasets_lists_trec(data_root):
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0, result.output
    assert f"data directory: {data_root}" in result.output
    assert re.search(r"^trec\s+sentence\s+6\s+5452\s+0\s+500\s+0\s+DESC, ENTY, ABBR, HUM, LOC, NUM$", result.output, re.M)
    assert re.search(r"^sst2\s+sentence\s+2\s+6920\s+872\s+1821\s+0\s", result.output, re.M)
    assert re.search(r"^conll2003\s+token\s+9\s+14041\s+3250\s+3453\s+0\s+O, B-PER, I-PER", result.output, re.M)  # sentences
    as_json = CliRunner().invoke(main, ["datasets", "--json"])
    rows = {row["name"]: row for row in json.loads(as_json.stdout)}
    assert rows["trec"]["classes"] == 6 and rows["trec"]["train"] == 5452 and rows["trec"]["test"] == 500
    assert rows["trec"]["task"] == "sentence" and rows["conll2003"]["task"] == "token"
    assert set(rows) == {"ag_news", "imdb", "sst2", "trec", "mr", "sms_spam", "conll2003"}  # files/hub need options


def test_datasets_reports_a_missing_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_DATA", str(tmp_path))
    result = CliRunner().invoke(main, ["datasets"])
    assert result.exit_code == 0
    assert re.search(r"^trec\s+unavailable: Dataset 'trec' not found", result.output, re.M)


def test_presets_lists_supervised_and_fixmatch():
    result = CliRunner().invoke(main, ["presets"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^supervised: ", result.output, re.M) and re.search(r"^fixmatch: ", result.output, re.M)
    assert '    selector.threshold = 0.95' in result.output
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["presets", "--json"]).stdout)}
    assert {"supervised", "fixmatch"} <= set(rows)
    assert rows["supervised"]["settings"] == {"schedule": {"name": "constant", "weight": 0.0}}
    assert rows["fixmatch"]["settings"]["selector"]["name"] == "threshold"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output
