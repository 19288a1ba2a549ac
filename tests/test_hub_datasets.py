"""The named benchmarks' hub fallback: local data first, else the Hugging Face hub copy through `datasets`,
converted to the local layout (splits, columns, class names); offline without local data, one error that
names both ways to get it. The hub copies are built here in memory in the hub's shape: no network."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from conftest import FAST
from testbed import DatasetContext, splits_from_rows
from testbed.cli import main
from testbed.data import find_file
from testbed_plugins import datasets as named

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
STRING = Value("string")


def labelled(names, **columns) -> Features:
    return Features({"text": STRING, "label": ClassLabel(names=list(names)), **columns})


def fake_hub(name: str) -> DatasetDict:
    """A few rows of each split of ``name``'s hub copy, with the hub's split names, columns and class names
    (their order included: trec's differs from the local one)."""
    if name == "ag_news":
        features = labelled(["World", "Sports", "Business", "Sci/Tech"])
        return DatasetDict({split: Dataset.from_dict({"text": [f"{split} chips", f"{split} goal"], "label": [3, 1]}, features=features)
                            for split in ("train", "test")})
    if name == "imdb":
        features = labelled(["neg", "pos"])
        return DatasetDict({**{split: Dataset.from_dict({"text": [f"{split} awful<br />", f"{split} great"], "label": [0, 1]},
                                                        features=features) for split in ("train", "test")},
                            "unsupervised": Dataset.from_dict({"text": ["an unrated review", ""], "label": [-1, -1]}, features=features)})
    if name == "sst2":  # SetFit's: plain int labels beside their names
        return DatasetDict({split: Dataset.from_dict({"text": [f"{split} dull .", f"{split} a gem ."], "label": [0, 1],
                                                      "label_text": ["negative", "positive"]}) for split in ("train", "validation", "test")})
    if name == "trec":
        fine = ClassLabel(names=["ABBR:abb", "ABBR:exp", "DESC:manner", "HUM:ind", "NUM:date"])
        features = Features({"text": STRING, "coarse_label": ClassLabel(names=["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]),
                             "fine_label": fine})
        return DatasetDict({split: Dataset.from_dict({"text": ["How did serfdom develop ?", "Who wrote Hamlet ?"],
                                                      "coarse_label": [2, 3], "fine_label": [2, 3]}, features=features)
                            for split in ("train", "test")})
    if name == "mr":
        features = labelled(["neg", "pos"])
        return DatasetDict({split: Dataset.from_dict({"text": [f"{split} tedious .", f"{split} moving ."], "label": [0, 1]},
                                                     features=features) for split in ("train", "validation", "test")})
    if name == "sms_spam":
        features = Features({"sms": STRING, "label": ClassLabel(names=["ham", "spam"])})
        texts = [f"message {i}\n" for i in range(20)]
        return DatasetDict({"train": Dataset.from_dict({"sms": texts, "label": [int(i % 5 == 0) for i in range(20)]}, features=features)})
    if name == "conll2003":
        tags = ClassLabel(names=list(named.CONLL))
        features = Features({"id": STRING, "tokens": List(STRING), "pos_tags": List(Value("int32")), "ner_tags": List(tags)})
        # I-ORG opening an entity (IOB1, as the 2003 files have it); B-MISC already IOB2
        return DatasetDict({split: Dataset.from_dict({"id": ["0"], "tokens": [["EU", "rejects", "German", "call"]],
                                                      "pos_tags": [[22, 42, 16, 21]], "ner_tags": [[4, 0, 7, 0]]}, features=features)
                            for split in ("train", "validation", "test")})
    raise AssertionError(name)


def local_layout(directory: Path) -> dict[str, set[str]]:
    """The local copy's splits and the columns of each (its first row's keys)."""
    layout = {}
    for split in ("train", "test", "dev", "unlabeled"):
        path = find_file(directory, split)
        if path is not None:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as handle:
                layout[split] = set(json.loads(handle.readline()))
    return layout


@pytest.mark.parametrize("name", sorted(named.HUB))
def test_each_hub_converter_gives_the_local_splits_columns_and_class_names(name, data_root):
    source = named.HUB[name]
    rows = source.convert(fake_hub(name))
    assert list(source.label_names) == json.loads((data_root / name / "labels.json").read_text())
    local = local_layout(data_root / name)
    assert set(rows) == set(local)  # train/test, + dev (sst2, conll2003), + unlabeled (imdb)
    for split, split_rows in rows.items():
        assert split_rows, split
        # the local columns, less what the hub does not have (imdb's rating from the file name)
        needed = {"text"} if split == "unlabeled" else {"tokens", "tags"} if name == "conll2003" else {"text", "label"}
        assert needed | {"id"} <= set(split_rows[0]) <= local[split], (split, split_rows[0], local[split])
    data = splits_from_rows(rows, list(source.label_names), name, allow_empty=True)  # checked as local files are
    assert data.label_names == json.loads((data_root / name / "labels.json").read_text())


def names_of(data, split="train") -> list[str]:
    texts = getattr(data, split)
    return [data.label_names[y] for y in texts.labels]


def convert(name: str):
    source = named.HUB[name]
    return splits_from_rows(source.convert(fake_hub(name)), list(source.label_names), name, allow_empty=True)


def test_classes_are_mapped_by_name_not_by_index():
    assert names_of(convert("ag_news")) == ["Sci/Tech", "Sports"]
    imdb = convert("imdb")
    assert names_of(imdb, "test") == ["negative", "positive"]  # the hub's neg/pos
    assert imdb.unlabeled == ["an unrated review"]  # the unsupervised split, its empty text dropped
    trec = named.HUB["trec"].convert(fake_hub("trec"))
    # hub DESC is index 2 and HUM 3; the local labels.json has DESC at 0 and HUM at 3
    assert [(r["label"], r["fine_label"]) for r in trec["train"]] == [(0, "DESC:manner"), (3, "HUM:ind")]
    sst2 = convert("sst2")
    assert names_of(sst2, "dev") == ["negative", "positive"] and sst2.dev.texts == ["validation dull .", "validation a gem ."]


def test_mr_train_is_the_hubs_train_and_validation():
    rows = named.HUB["mr"].convert(fake_hub("mr"))
    assert [r["text"] for r in rows["train"]] == ["train tedious .", "train moving .", "validation tedious .", "validation moving ."]
    assert [r["id"] for r in rows["train"]] == ["train:0", "train:1", "validation:0", "validation:1"]  # still unique
    assert [r["label"] for r in rows["test"]] == [0, 1]


def test_conll2003_tags_keep_the_local_names_and_become_iob2():
    data = convert("conll2003")
    assert data.dev is not None and data.dev.texts == ["EU rejects German call"]
    assert [data.label_names[t] for t in data.train.tags[0]] == ["B-ORG", "O", "B-MISC", "O"]
    assert named.iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]


def test_sms_spam_from_the_hub_is_split_exactly_as_the_local_copy(data_root):
    """The hub has one split; the local copy's seeded 80/20 split (its SOURCE.md) is redone on it: rebuilt
    here from the local rows in source order, shaped as the hub's (``sms`` with its line end), it comes back
    to the local train and test files, row for row."""
    local = {split: [json.loads(line) for line in (data_root / "sms_spam" / f"{split}.jsonl").open(encoding="utf-8")]
             for split in ("train", "test")}
    source_order = sorted(local["train"] + local["test"], key=lambda row: row["id"])
    hub = DatasetDict({"train": Dataset.from_dict(
        {"sms": [row["text"] + "\n" for row in source_order], "label": [row["label"] for row in source_order]},
        features=Features({"sms": STRING, "label": ClassLabel(names=["ham", "spam"])}))})
    rows = named.HUB["sms_spam"].convert(hub)
    assert rows == local


def test_a_changed_hub_layout_is_one_clear_error(monkeypatch, tmp_path):
    broken = DatasetDict({"train": fake_hub("ag_news")["train"]})  # no test split
    monkeypatch.setattr(named, "load_hub", lambda source: broken)
    with pytest.raises(named.UserError, match=r"hub copy of 'ag_news' \(fancyzhx/ag_news\) is not laid out as testbed converts "
                                              r"it: no split 'test' \(it has train\)\. Put its files in \$TESTBED_DATA/ag_news/"):
        named.benchmark("ag_news")(None, DatasetContext(data_dir=tmp_path))


# --------------------------------------------------------------------------- which source wins


def hub_must_not_be_called(source):
    raise AssertionError(f"the hub was asked for {source.hub_id} although the data is local")


def test_local_data_wins_over_the_hub(monkeypatch, data_root):
    monkeypatch.setattr(named, "load_hub", hub_must_not_be_called)
    data = named.benchmark("ag_news")(None, DatasetContext(data_dir=data_root))
    assert len(data.train) == 8000 and len(data.test) == 7600  # the local SAT pool, not the hub's 120,000


def test_without_local_data_the_hub_copy_is_converted(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(named, "load_hub", lambda source: asked.append(source.hub_id) or fake_hub("trec"))
    data = named.benchmark("trec")(None, DatasetContext(data_dir=tmp_path))
    assert asked == ["CogComp/trec"]
    assert data.label_names == list(named.TREC) and names_of(data) == ["DESC", "HUM"]


def test_listing_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setattr(named, "load_hub", hub_must_not_be_called)
    with pytest.raises(named.UserError, match=rf"Dataset 'trec' not found in {tmp_path}/trec; a run loads its Hugging "
                                              r"Face hub copy \(CogComp/trec\)"):
        named.benchmark("trec")(None, DatasetContext(data_dir=tmp_path, download=False))
    result = CliRunner().invoke(main, ["datasets"], env={"TESTBED_DATA": str(tmp_path)})
    assert result.exit_code == 0 and "unavailable: Dataset 'conll2003' not found" in result.output, result.output


def test_offline_without_local_data_names_both_ways_to_get_it(tmp_path, monkeypatch):
    """Through the CLI as a user runs it: HF_HUB_OFFLINE=1 (conftest), an empty data directory and an empty
    `datasets` cache: one Error line, no traceback, and both ways out."""
    monkeypatch.setenv("TESTBED_DATA", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))  # no copy from an earlier download
    result = CliRunner().invoke(main, ["run", *FAST, "dataset.name=ag_news", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    (error,) = errors
    assert f"Dataset 'ag_news' not found: it is not in {tmp_path / 'data' / 'ag_news'}" in error
    assert "Either put its files in $TESTBED_DATA/ag_news/" in error
    assert "or go online (HF_HUB_OFFLINE unset) so that `datasets` can download fancyzhx/ag_news." in error
    assert "OfflineModeIsEnabled" in error  # what went wrong, in the library's words


def test_the_readme_lists_every_hub_copy():
    section = README[README.index("## Datasets"):]
    for name, source in named.HUB.items():
        assert f"| `{name}` | `{source.hub_id}`" in section, name
