"""Datasets: the benchmark sets of the data directory (six sentence-classification sets and CoNLL-2003
NER), local files, and the Hugging Face hub."""

from dataclasses import dataclass
from pathlib import Path

from testbed import (
    DATA_DIR_ENV,
    SUFFIXES,
    Dataset,
    DatasetSplits,
    UserError,
    hookimpl,
    infer_label_names,
    load_dataset_dir,
    load_dataset_files,
    rows_to_texts,
)

BENCHMARKS = {
    "ag_news": "AG News topic classification, 4 classes (8,000-text train pool, 7,600 test)",
    "imdb": "IMDB movie-review sentiment, 2 classes (25k train, 25k test, 50k unlabeled)",
    "sst2": "SST-2 sentence sentiment, 2 classes (6,920 train, 872 dev, 1,821 test)",
    "trec": "TREC question type, 6 coarse classes (5,452 train, 500 test)",
    "mr": "Movie-review sentence polarity, 2 classes (9,596 train, 1,066 test)",
    "sms_spam": "SMS spam detection, 2 classes, 13% spam (4,460 train, 1,114 test)",
    "conll2003": "CoNLL-2003 English named entities, token classification, 9 IOB2 tags of PER, ORG, LOC, MISC "
                 "(14,041 train, 3,250 dev, 3,453 test sentences)",
}
TASKS = {"conll2003": "token"}  # what their rows choose, declared so a config knows before the data is read


def benchmark(name: str):
    def load(options, context) -> DatasetSplits:
        root = context.data_dir
        if root is None or not (root / name).is_dir():
            raise UserError(f"Dataset {name!r} not found: looked in {str(root / name) if root else '(no data directory)'}. "
                            f"Set ${DATA_DIR_ENV} to the directory holding {name}/ (see README.md).")
        return load_dataset_dir(root / name)

    return load


@dataclass(frozen=True)
class FilesOptions:
    path: str = ""  # a directory with train/test[/dev/unlabeled] files and labels.json, or the train file
    test: str = ""  # the test file, when path is a file
    text_column: str = "text"
    label_column: str = "label"
    # > 0: split this share of the labelled file (or of a directory's train, when it has no test file) off as the
    # test set, stratified by class and seeded by the run's seed; 0 = the test set is a file
    test_fraction: float = 0.0

    def __post_init__(self):
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"dataset.test_fraction must be at least 0 and below 1 (e.g. 0.2), got {self.test_fraction}")


def files(options: FilesOptions, context) -> DatasetSplits:
    if not options.path:
        raise UserError(f"dataset.path is empty: set it to a data directory or a train file ({', '.join(SUFFIXES)}).")
    path = Path(options.path)
    if not path.exists():
        hub = "" if path.suffix or path.is_absolute() else f" For a Hugging Face hub dataset: dataset.name=hub dataset.hub_id={options.path}."
        raise UserError(f"Dataset path {options.path!r} not found (relative paths start from {Path.cwd()}).{hub}")
    split = {"test_fraction": options.test_fraction, "seed": getattr(context, "seed", 0)}
    if path.is_dir():
        return load_dataset_dir(path, options.text_column, options.label_column, **split)
    if not options.test and not options.test_fraction:
        raise UserError(f"dataset.path {options.path!r} is a file, so dataset.test must name the test file, or "
                        "dataset.test_fraction (e.g. 0.2) split a stratified test set off it.")
    labels_json = path.parent / "labels.json"
    return load_dataset_files(path, Path(options.test) if options.test else None, labels_json=labels_json,
                              text_column=options.text_column, label_column=options.label_column, **split)


@dataclass(frozen=True)
class HubOptions:
    hub_id: str = ""  # e.g. "ag_news" or "SetFit/sst2"
    subset: str = ""
    text_column: str = "text"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"


def hub(options: HubOptions, context) -> DatasetSplits:
    if not options.hub_id:
        raise UserError("dataset.hub_id is empty: set it to a Hugging Face dataset id, e.g. dataset.hub_id=ag_news.")
    try:
        import datasets
    except ImportError:
        raise UserError("Hub datasets need the `datasets` package: pip install datasets.") from None
    try:
        loaded = datasets.load_dataset(options.hub_id, options.subset or None)
    except Exception as exc:
        raise UserError(f"Could not load hub dataset {options.hub_id!r}: {exc}") from None
    for split in (options.train_split, options.test_split):
        if split not in loaded:
            raise UserError(f"Hub dataset {options.hub_id!r} has no split {split!r}; it has {list(loaded)}.")
    feature = loaded[options.train_split].features.get(options.label_column)
    train_rows = list(loaded[options.train_split])
    names = list(feature.names) if hasattr(feature, "names") else infer_label_names(train_rows, options.label_column)
    convert = lambda split, rows: rows_to_texts(rows, names, f"{options.hub_id}[{split}]", options.text_column,  # noqa: E731
                                                options.label_column, allow_empty=True)  # a hub dataset's empty texts stay ""
    return DatasetSplits(label_names=[str(n) for n in names], train=convert(options.train_split, train_rows),
                         test=convert(options.test_split, list(loaded[options.test_split])))


def looks_like_path(name: str) -> bool:
    """An existing path, or a name written as one (a directory separator, a data file's suffix): a missing
    path then says "not found" rather than "unknown dataset"."""
    return Path(name).exists() or "/" in name or name.endswith(tuple(SUFFIXES)) or name.startswith(".")


@hookimpl
def testbed_datasets():
    return [
        *[Dataset(name=name, summary=summary, factory=benchmark(name), task=TASKS.get(name, "")) for name, summary in BENCHMARKS.items()],
        Dataset(name="files", summary="local jsonl/csv/tsv/parquet files with text and label columns, or tokens and tags columns "
                "(token classification); one labelled file with dataset.test_fraction", factory=files, options=FilesOptions,
                shorthand=lambda name: {"path": name} if looks_like_path(name) else None),  # dataset.name=path/to/data
        Dataset(name="hub", summary="a Hugging Face datasets hub id (online)", factory=hub, options=HubOptions),
    ]
