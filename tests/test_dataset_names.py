"""A run's dataset name (result.json's ``dataset``, the report's groups): a local dataset goes by its
directory (or file) name, not ``files``; ``dataset.label`` overrides any dataset's name; the new key leaves
the run ids of existing configs as they were."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from conftest import FAST, tiny_rows, write_jsonl
from testbed.cli import main
from testbed.config import parse_overrides, resolve, run_id
from testbed.report import load_report_table
from testbed.results import dataset_name


@pytest.mark.parametrize(("dataset", "name"), [
    ({"name": "trec"}, "trec"),
    ({"name": "files", "path": "data/reviews"}, "reviews"),
    ({"name": "files", "path": "data/reviews/"}, "reviews"),
    ({"name": "files", "path": "/abs/questions/all.csv", "test_fraction": 0.2}, "all"),
    ({"name": "files", "path": "corpora/tweets.jsonl.gz", "test": "corpora/tweets_test.jsonl.gz"}, "tweets"),
    ({"name": "hub", "hub_id": "SetFit/sst2"}, "SetFit/sst2"),
    ({"name": "files", "path": "data/reviews", "label": "reviews (cleaned)"}, "reviews (cleaned)"),
    ({"name": "trec", "label": ""}, "trec"),
    ({"name": "trec", "label": "TREC-6"}, "TREC-6"),
])
def test_dataset_name_of_a_config(dataset, name):
    assert dataset_name({"method": "supervised", "dataset": dataset}) == name


def test_a_label_changes_the_run_id_and_no_label_keeps_the_old_one(registry, tiny_dataset_dir):
    for overrides in (["method=fixmatch"], [f"dataset.name={tiny_dataset_dir}"]):
        cfg = resolve(parse_overrides(overrides), registry)
        assert cfg.resolved["dataset"]["label"] == ""  # recorded in config.json, at its default
        older = json.loads(json.dumps(cfg.resolved))
        del older["dataset"]["label"]  # a config.json written before the key existed
        assert run_id(older) == cfg.run_id
        labelled = resolve(parse_overrides([*overrides, "dataset.label=mine"]), registry)
        assert labelled.resolved["dataset"]["label"] == "mine" and labelled.run_id != cfg.run_id


def test_a_grid_of_two_local_datasets_reports_two_groups_named_by_their_directories(tmp_path):
    """A real grid over two data directories, and a run with dataset.label: result.json names each run's data,
    and the report has one group per dataset (not one group "files" with the paths as cells)."""
    dirs = []
    for name, prefix in (("reviews", "review "), ("questions", "question ")):
        d = tmp_path / "corpora" / name
        write_jsonl(d / "train.jsonl", tiny_rows(20, prefix=f"{prefix}train "))
        write_jsonl(d / "test.jsonl", tiny_rows(4, prefix=f"{prefix}test "))
        dirs.append(d)
    out = tmp_path / "runs"
    base = [o for o in FAST if not o.startswith(("dataset.name", "train.steps", "train.eval_every"))] + ["train.steps=2", "train.eval_every=2"]
    grid = CliRunner().invoke(main, ["grid", "method=supervised", *base, "dataset.name=files", f"dataset.path={dirs[0]},{dirs[1]}",
                                     "--executor", "serial", "--out", str(out), "--quiet"])
    assert grid.exit_code == 0, grid.output
    run = CliRunner().invoke(main, ["run", "method=supervised", *base, f"dataset.name={dirs[0]}", "dataset.label=reviews, relabelled",
                                    "--out", str(out), "--quiet"])
    assert run.exit_code == 0 and "supervised on reviews, relabelled (seed 0): finished" in run.output, run.output
    results = {json.loads(p.read_text())["dataset"] for p in out.glob("*/result.json")}
    assert results == {"reviews", "questions", "reviews, relabelled"}

    frame, cells = load_report_table([out])
    assert sorted(frame["group"]) == ["questions · 10 labels/class", "reviews · 10 labels/class",
                                      "reviews, relabelled · 10 labels/class"]
    assert cells == [] and set(frame["cell"]) == {"(all runs)"}  # the paths and the label name the groups, not cells

    report = CliRunner().invoke(main, ["report", str(out), "-o", str(tmp_path / "report"), "--baseline", "supervised"])
    assert report.exit_code == 0, report.output
    with open(tmp_path / "report" / "summary.csv", encoding="utf-8") as handle:
        assert {row["dataset"] for row in csv.DictReader(handle)} == {"reviews", "questions", "reviews, relabelled"}
