"""The datasets: loading files, hub datasets, the seeded stratified split, gold labels kept from training, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import FAST, tiny_rows, write_jsonl
from testbed import DatasetContext, DatasetSplits, Texts
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.data import load_dataset_dir, load_dataset_files, make_split, read_rows
from testbed.errors import UserError
from testbed.loop import prepare, train


@pytest.fixture(scope="module")
def trec(data_root):
    return load_dataset_dir(data_root / "trec")


@pytest.fixture(scope="module")
def sst2(data_root):
    return load_dataset_dir(data_root / "sst2")


def synthetic(sizes=(30, 17, 25), dev_sizes=None, unlabeled=0) -> DatasetSplits:
    """Unique texts 'c<class>-<i>', classes interleaved, so positions and texts identify examples."""
    def texts_of(sizes, tag):
        rows = [(f"{tag}c{c}-{i}", c) for c, n in enumerate(sizes) for i in range(n)]
        rows = rows[::2] + rows[1::2]  # not sorted by class
        return Texts(texts=[t for t, _ in rows], labels=np.array([c for _, c in rows], dtype=np.int64))

    return DatasetSplits(label_names=[f"class{c}" for c in range(len(sizes))], train=texts_of(sizes, ""),
                         test=texts_of((5,) * len(sizes), "test-"),
                         dev=texts_of(dev_sizes, "dev-") if dev_sizes else None,
                         unlabeled=[f"extra-{i}" for i in range(unlabeled)])


def label_of(texts: Texts) -> dict[str, int]:
    return dict(zip(texts.texts, texts.labels.tolist()))


# --------------------------------------------------------------------------- the split


def test_real_trec_is_loaded(trec):
    assert trec.label_names == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
    assert len(trec.train) == 5452 and len(trec.test) == 500
    assert trec.dev is None and trec.unlabeled == []
    assert trec.train.labels.dtype == np.int64 and set(trec.train.labels.tolist()) == set(range(6))


def test_split_is_stratified_on_trec(trec):
    split = make_split(trec, labels_per_class=10, validation_per_class=7, seed=0)
    assert np.bincount(split.labeled.labels, minlength=6).tolist() == [10] * 6
    assert np.bincount(split.validation.labels, minlength=6).tolist() == [7] * 6
    assert len(split.pool_texts) == len(trec.train) - 6 * 17
    # as multisets (trec has duplicate questions), labeled + validation + pool is exactly train
    together = Counter(zip(split.labeled.texts, split.labeled.labels.tolist()))
    together.update(zip(split.validation.texts, split.validation.labels.tolist()))
    together.update(zip(split.pool_texts, split.pool_gold.tolist()))
    assert together == Counter(zip(trec.train.texts, trec.train.labels.tolist()))
    assert split.test is trec.test and split.num_classes == 6


def test_split_is_disjoint_and_covers_train_exactly():
    data = synthetic(unlabeled=4)
    split = make_split(data, labels_per_class=5, validation_per_class=3, seed=1)
    labeled, validation, pool = set(split.labeled.texts), set(split.validation.texts), set(split.pool_texts)
    assert len(labeled) == 15 and len(validation) == 9
    assert not labeled & validation and not labeled & pool and not validation & pool
    assert labeled | validation | (pool - set(data.unlabeled)) == set(data.train.texts)
    assert len(split.pool_texts) == len(data.train) - 24 + 4
    # every example keeps its own label; the extra unlabeled texts are unknown (-1)
    gold = label_of(data.train)
    assert label_of(split.labeled) == {t: gold[t] for t in labeled}
    assert label_of(split.validation) == {t: gold[t] for t in validation}
    for text, g in zip(split.pool_texts, split.pool_gold.tolist()):
        assert g == (-1 if text.startswith("extra-") else gold[text])


def test_split_is_seeded():
    data = synthetic()
    a, b = make_split(data, 5, 3, seed=7), make_split(data, 5, 3, seed=7)
    assert a.labeled.texts == b.labeled.texts and a.validation.texts == b.validation.texts
    assert a.pool_texts == b.pool_texts and np.array_equal(a.pool_gold, b.pool_gold)
    c = make_split(data, 5, 3, seed=8)
    assert set(c.labeled.texts) != set(a.labeled.texts)
    assert set(c.validation.texts) != set(a.validation.texts)


def test_unlabeled_limit_is_a_seeded_subset_of_the_pool():
    data = synthetic(unlabeled=10)
    full = make_split(data, 5, 3, seed=2)
    limited = make_split(data, 5, 3, seed=2, unlabeled_limit=20)
    assert len(limited.pool_texts) == 20
    assert limited.labeled.texts == full.labeled.texts  # the cap does not change the labeled set
    pairs = dict(zip(full.pool_texts, full.pool_gold.tolist()))
    assert all(pairs[t] == g for t, g in zip(limited.pool_texts, limited.pool_gold.tolist()))
    assert make_split(data, 5, 3, seed=2, unlabeled_limit=20).pool_texts == limited.pool_texts
    assert make_split(data, 5, 3, seed=2, unlabeled_limit=1000).pool_texts == full.pool_texts


def test_test_limit_is_a_subset_shared_by_all_seeds(trec):
    a = make_split(trec, 10, 5, seed=0, test_limit=100)
    b = make_split(trec, 10, 5, seed=1, test_limit=100)
    assert len(a.test) == 100 and a.test.texts == b.test.texts  # runs with different seeds pair up
    full = Counter(zip(trec.test.texts, trec.test.labels.tolist()))
    assert not Counter(zip(a.test.texts, a.test.labels.tolist())) - full


def test_test_limit_sample_is_stratified(trec):
    sample = make_split(trec, 10, 5, seed=0, test_limit=100).test
    expected = np.bincount(trec.test.labels, minlength=6) * 100 / len(trec.test)
    got = np.bincount(sample.labels, minlength=6)
    assert np.all(np.abs(got - expected) < 1), (got, expected)


def test_sst2_takes_validation_from_dev(sst2):
    split = make_split(sst2, labels_per_class=10, validation_per_class=8, seed=0)
    assert np.bincount(split.validation.labels).tolist() == [8, 8]
    assert set(split.validation.texts) <= set(sst2.dev.texts)
    dev = label_of(sst2.dev)
    assert all(dev[t] == y for t, y in zip(split.validation.texts, split.validation.labels.tolist()))
    # train is only split into labeled and pool
    assert np.bincount(split.labeled.labels).tolist() == [10, 10]
    assert len(split.labeled) + len(split.pool_texts) == len(sst2.train)


def test_dev_validation_on_synthetic_data():
    data = synthetic(sizes=(8, 8), dev_sizes=(6, 6))
    # train only needs labels_per_class when the validation comes from dev
    split = make_split(data, labels_per_class=8, validation_per_class=4, seed=0)
    assert split.pool_texts == [] and len(split.labeled) == 16
    assert all(t.startswith("dev-") for t in split.validation.texts)
    assert np.bincount(split.validation.labels).tolist() == [4, 4]


def test_validation_per_class_larger_than_a_dev_class_is_an_error():
    data = synthetic(sizes=(20, 20), dev_sizes=(6, 3))
    with pytest.raises(UserError, match="class1"):
        make_split(data, labels_per_class=5, validation_per_class=5, seed=0)


@pytest.mark.parametrize("lpc, vpc, message", [
    (13, 5, r"class 'class1' has 17 training examples, fewer than the 18 needed \(labels_per_class=13 \+ "
             r"validation_per_class=5\)\. Lower dataset.labels_per_class"),
    (0, 5, "labels_per_class must be at least 1"),
    (5, -1, "validation_per_class must be 0 or more"),
])
def test_impossible_split_is_a_user_error(lpc, vpc, message):
    with pytest.raises(UserError, match=message):
        make_split(synthetic(), lpc, vpc, seed=0)


# --------------------------------------------------------------------------- gold labels never train


def test_pool_gold_labels_never_reach_training(fast_config):
    cfg = fast_config("method=fixmatch", "selector.threshold=0.0")  # every pseudo-label is used

    def run(garble=None):
        parts = prepare(cfg)
        if garble is not None:
            parts.split = dataclasses.replace(parts.split, pool_gold=garble(parts.split))
        records = []
        result = train(cfg, parts, on_evaluation=records.append, progress=False).result
        return parts.student, records, result

    student, records, result = run()
    assert records[-1]["mask_rate"] == 1.0 and records[-1]["pseudo_label_accuracy"] is not None
    garbles = {
        "shifted": lambda s: (s.pool_gold + 1) % s.num_classes,  # every gold label wrong
        "unknown": lambda s: np.full_like(s.pool_gold, -1),
    }
    for name, garble in garbles.items():
        other, other_records, other_result = run(garble)
        for (key, p), (_, q) in zip(student.state_dict().items(), other.state_dict().items()):
            assert torch.equal(p, q), (name, key)
        assert other_result["test_accuracy"] == result["test_accuracy"]
        assert [r["train_loss"] for r in other_records] == [r["train_loss"] for r in records]
        assert [r["consistency_loss"] for r in other_records] == [r["consistency_loss"] for r in records]
        # ... while the measurement, which is what gold labels are for, did change
        assert [r["pseudo_label_accuracy"] for r in other_records] != [r["pseudo_label_accuracy"] for r in records]
    assert all(r["pseudo_label_accuracy"] is None for r in other_records)


# --------------------------------------------------------------------------- file formats


def test_csv_with_string_labels(tmp_path):
    frame = pd.DataFrame({"text": ["free prize now", "see you at 5", "win cash", "ok thanks"],
                          "label": ["spam", "ham", "spam", "ham"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[:2].to_csv(tmp_path / "test.csv", index=False)
    data = load_dataset_dir(tmp_path)
    assert data.label_names == ["ham", "spam"]  # inferred, sorted
    assert data.train.texts == frame.text.tolist()
    assert data.train.labels.tolist() == [1, 0, 1, 0] and data.test.labels.tolist() == [1, 0]


def test_parquet_with_string_labels_and_labels_json(tmp_path):
    frame = pd.DataFrame({"sentence": ["good", "bad", "great", "awful"], "y": ["pos", "neg", "pos", "neg"]})
    frame.to_parquet(tmp_path / "train.parquet")
    frame.to_parquet(tmp_path / "test.parquet")
    (tmp_path / "labels.json").write_text(json.dumps(["pos", "neg"]))  # order from labels.json, not sorted
    data = load_dataset_dir(tmp_path, text_column="sentence", label_column="y")
    assert data.label_names == ["pos", "neg"]
    assert data.train.texts == ["good", "bad", "great", "awful"]
    assert data.train.labels.tolist() == [0, 1, 0, 1]


def test_csv_integer_labels_with_labels_json(tmp_path):
    pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [2, 0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"text": ["g"], "label": [1]}).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "labels.json").write_text(json.dumps(["x", "y", "z"]))
    data = load_dataset_dir(tmp_path)
    assert data.label_names == ["x", "y", "z"] and data.train.labels.tolist() == [2, 0, 1]


def test_gzip_jsonl_dev_and_unlabeled(tmp_path):
    rows = tiny_rows(3)
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    write_jsonl(tmp_path / "test.jsonl", rows[:2])
    write_jsonl(tmp_path / "dev.jsonl", rows[2:4])
    write_jsonl(tmp_path / "unlabeled.jsonl", [{"text": "u1"}, {"text": "u2"}])
    data = load_dataset_dir(tmp_path)
    assert data.label_names == ["0", "1"] and len(data.train) == 6
    assert data.dev.texts == [rows[2]["text"], rows[3]["text"]]
    assert data.unlabeled == ["u1", "u2"]


def test_files_dataset_through_the_registry(registry, tmp_path):
    rows = tiny_rows(3, classes=("a", "b"))
    write_jsonl(tmp_path / "my_train.jsonl", rows)
    write_jsonl(tmp_path / "my_test.jsonl", rows[:2])
    record = registry.get("dataset", "files")
    data = record.factory(record.options(path=str(tmp_path / "my_train.jsonl"), test=str(tmp_path / "my_test.jsonl")), DatasetContext())
    assert data.label_names == ["a", "b"] and len(data.train) == 6 and len(data.test) == 2
    with pytest.raises(UserError, match="dataset.test must name the test file"):
        record.factory(record.options(path=str(tmp_path / "my_train.jsonl")), DatasetContext())
    with pytest.raises(UserError, match="dataset.path is empty"):
        record.factory(record.options(), DatasetContext())


def test_tsv_is_read_like_csv_without_quoting(tmp_path):
    texts = ['he said "no", then left', "a, b and c", "'single' quotes"]
    (tmp_path / "train.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in zip(texts, ["x", "y", "x"])))
    (tmp_path / "test.tsv").write_text("text\tlabel\nfine\t1\n")
    (tmp_path / "labels.json").write_text('["x", "y"]')
    data = load_dataset_dir(tmp_path)
    assert data.train.texts == texts and data.train.labels.tolist() == [0, 1, 0] and data.test.labels.tolist() == [1]


def test_test_fraction_splits_one_labelled_file_stratified_and_seeded_by_the_run(registry, tmp_path):
    rows = [{"text": f"text {c} {i}", "label": name} for c, (name, n) in enumerate([("a", 30), ("b", 20), ("c", 10)])
            for i in range(n)]
    write_jsonl(tmp_path / "all.jsonl", rows)
    record = registry.get("dataset", "files")
    options = record.options(path=str(tmp_path / "all.jsonl"), test_fraction=0.2)
    split = lambda seed: record.factory(options, DatasetContext(seed=seed))  # noqa: E731
    first = split(0)
    assert np.bincount(first.test.labels).tolist() == [6, 4, 2] and np.bincount(first.train.labels).tolist() == [24, 16, 8]
    assert sorted(first.train.texts + first.test.texts) == sorted(r["text"] for r in rows)
    assert split(0).test.texts == first.test.texts and split(1).test.texts != first.test.texts
    # a directory without a test file splits its train the same way; token rows, a seeded sample of sentences
    write_jsonl(tmp_path / "dir" / "train.jsonl", rows)
    assert load_dataset_dir(tmp_path / "dir", test_fraction=0.2, seed=0).test.texts == first.test.texts
    words = [{"tokens": ["w", str(i)], "tags": ["O", "B-X"]} for i in range(10)]
    write_jsonl(tmp_path / "ner.jsonl", words)
    ner = record.factory(record.options(path=str(tmp_path / "ner.jsonl"), test_fraction=0.3), DatasetContext(seed=0))
    assert len(ner.test) == 3 and len(ner.train) == 7 and ner.test.tags is not None


def test_an_empty_csv_text_is_read_as_empty_not_nan_and_refused(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n,a\nhello,b\n")
    assert [row["text"] for row in read_rows(tmp_path / "train.csv")] == ["", "hello"]  # not "nan"
    with pytest.raises(UserError, match=r"train.csv: 1 row\(s\) with an empty text \(row 1\)"):  # the table: test_bad_input.py
        load_dataset_files(tmp_path / "train.csv", tmp_path / "train.csv")


# --------------------------------------------------------------------------- bad input


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, part of the error message)."""
    cases = {}

    def case(name, files: dict, message: str, *extra: str, labels=None):
        d = tmp_path / name
        d.mkdir()
        for file, rows in files.items():
            if isinstance(rows, str):
                (d / file).write_text(rows, encoding="utf-8")
            else:
                write_jsonl(d / file, rows)
        if labels is not None:
            (d / "labels.json").write_text(json.dumps(labels))
        cases[name] = (["dataset.name=files", f"dataset.path={d}", *extra], message)

    good = tiny_rows(20)
    case("missing_test", {"train.jsonl": good}, "needs train and test files")
    case("empty_train", {"train.jsonl": "", "test.jsonl": good}, "train.jsonl is empty", labels=["neg", "pos"])
    case("empty_test", {"train.jsonl": good, "test.jsonl": "\n"}, "test.jsonl is empty")
    case("label_out_of_range", {"train.jsonl": good + [{"text": "odd one", "label": 5}], "test.jsonl": good},
         "label 5 is not one of the 2 classes", labels=["neg", "pos"])
    case("too_few_per_class", {"train.jsonl": good, "test.jsonl": good},
         "has 20 training examples, fewer than the 55 needed", "dataset.labels_per_class=50")
    case("bad_json_line", {"train.jsonl": '{"text": "a", "label": 0}\n{oops\n', "test.jsonl": good},
         "train.jsonl:2: not a JSON object")
    case("missing_column", {"train.jsonl": [{"sentence": "a", "label": 0}], "test.jsonl": good},
         "needs columns 'text' and 'label'")
    cases["missing_train_file"] = (["dataset.name=files", f"dataset.path={tmp_path / 'nope.jsonl'}",
                                    f"dataset.test={tmp_path / 'nope_test.jsonl'}"], "nope.jsonl' not found")
    return cases


CASES = ["missing_test", "empty_train", "empty_test", "label_out_of_range", "too_few_per_class", "bad_json_line",
         "missing_column", "missing_train_file"]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_a_user_error(tmp_path, fast_config, name):
    overrides, message = bad_inputs(tmp_path)[name]
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        prepare(fast_config(*overrides))


@pytest.mark.parametrize("name", CASES)
def test_bad_input_via_cli_is_one_error_line_and_no_run_dir(tmp_path, name):
    overrides, message = bad_inputs(tmp_path)[name]
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", *FAST, *overrides, "--out", str(out), "--quiet"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not a crash
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_the_good_tiny_dataset_is_accepted(tiny_dataset_dir, fast_config):
    # the counterpart of the bad inputs above: same shape, valid, so the errors are due to the defects
    parts = prepare(fast_config("dataset.name=files", f"dataset.path={tiny_dataset_dir}"))
    assert len(parts.split.labeled) == 20 and len(parts.split.validation) == 10 and len(parts.split.pool_texts) == 10


def test_empty_csv_file_is_a_user_error(tmp_path):
    (tmp_path / "train.csv").write_text("")
    with pytest.raises(UserError):
        read_rows(tmp_path / "train.csv")


@pytest.mark.parametrize("line", ["5", "null"])
def test_json_line_that_is_not_an_object_is_a_user_error(tmp_path, line):
    (tmp_path / "train.jsonl").write_text(line + "\n")
    write_jsonl(tmp_path / "test.jsonl", tiny_rows(2))
    (tmp_path / "labels.json").write_text(json.dumps(["0", "1"]))
    with pytest.raises(UserError):
        load_dataset_dir(tmp_path)


def test_empty_train_file_without_labels_json_names_the_file(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    write_jsonl(tmp_path / "test.jsonl", tiny_rows(2))
    with pytest.raises(UserError, match=r"train\.jsonl.* is empty"):
        load_dataset_dir(tmp_path)


# --------------------------------------------------------------------------- hub datasets (a stand-in `datasets`)


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
    data = record.factory(record.options(hub_id="org/reviews", subset="en", text_column="sentence", label_column="stars"), DatasetContext())
    assert fake_hub == [("org/reviews", "en")]
    assert data.label_names == ["bad", "good"]
    assert data.train.texts[3] == "review 3" and data.train.labels[3] == 1 and len(data.test) == 10


def test_hub_dataset_errors_are_user_errors(fake_hub, registry):
    record = registry.get("dataset", "hub")
    with pytest.raises(UserError, match="Could not load hub dataset 'org/missing'"):
        record.factory(record.options(hub_id="org/missing"), DatasetContext())
    with pytest.raises(UserError, match="has no split 'validation'"):
        record.factory(record.options(hub_id="org/reviews", text_column="sentence", label_column="stars", test_split="validation"), DatasetContext())
    cfg = resolve(parse_overrides(["dataset.name=hub"]), registry)
    with pytest.raises(UserError, match="dataset.hub_id is empty"):
        cfg.choices["dataset"].record.factory(cfg.choices["dataset"].options, DatasetContext())
