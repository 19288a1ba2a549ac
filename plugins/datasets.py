"""Datasets: the benchmark sets of the data directory (six sentence-classification sets and CoNLL-2003
NER), local files, and the Hugging Face hub. A benchmark missing from the data directory is loaded from
its hub copy (``HUB``) through `datasets` (which caches it) and converted to the local layout."""

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    refuse_shared_data,
    rows_to_texts,
    splits_from_rows,
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


# --------------------------------------------------------------------------- hub copies of the benchmarks


class LayoutError(ValueError):
    """The hub copy is not laid out as its converter expects (a split, a column or a class name is missing)."""


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face hub, and how its splits become the local layout:
    ``convert(loaded)`` takes the hub's DatasetDict and returns rows per local split (``train``, ``test``,
    and ``dev``, ``unlabeled`` where the local copy has them) with ``id``, ``text`` and ``label`` (an
    index into ``label_names``), or ``id``, ``tokens`` and ``tags``; it raises LayoutError."""

    hub_id: str
    label_names: tuple[str, ...]  # the local labels.json, in its order
    convert: Callable[[Any], dict[str, list[dict]]]
    # None = main; "refs/convert/parquet" = the hub's own parquet export, for repositories that still hold a
    # loading script (`datasets` no longer runs scripts)
    revision: str | None = None


def _split(loaded, split: str):
    if split not in loaded:
        raise LayoutError(f"no split {split!r} (it has {', '.join(sorted(loaded))})")
    return loaded[split]


def _column(dataset, *names: str) -> str:
    """The first of ``names`` the split has (a column renamed between versions of a hub dataset)."""
    found = next((name for name in names if name in dataset.column_names), None)
    if found is None:
        raise LayoutError(f"no column {' or '.join(map(repr, names))} (it has {', '.join(dataset.column_names)})")
    return found


def _class_names(dataset, column: str) -> list[str] | None:
    """The class names a ClassLabel column (or a sequence of them) declares; None for plain ints."""
    feature = dataset.features[column]
    return getattr(getattr(feature, "feature", feature), "names", None)


def _to_local(hub_names, local: tuple[str, ...], rename: dict[str, str]) -> dict[int, int]:
    """Hub class index -> local class index, by name: the hub may order (trec) or spell (imdb's neg/pos) its
    classes otherwise than the local labels.json."""
    index = {name: i for i, name in enumerate(local)}
    unknown = [name for name in hub_names if rename.get(name, name) not in index]
    if unknown:
        raise LayoutError(f"class(es) {', '.join(map(repr, unknown))} are not among the local ones ({', '.join(local)})")
    return {i: index[rename.get(name, name)] for i, name in enumerate(hub_names)}


def _sentences(dataset, local: tuple[str, ...], *, text: str = "text", label: str = "label", hub_names: tuple[str, ...] = (),
               rename: dict[str, str] | None = None, id_prefix: str = "") -> list[dict]:
    """Rows ``{id, text, label}`` of a split, its labels as local class indices: mapped by the names of its
    ClassLabel, else of its ``<label>_text`` column (SetFit's), else of ``hub_names`` (the hub's documented
    order), else taken as they are (already the local order)."""
    text, label = _column(dataset, text), _column(dataset, label)
    labels = list(dataset[label])
    names = _class_names(dataset, label)
    if names is None and f"{label}_text" in dataset.column_names:
        named = {value: name for value, name in zip(labels, dataset[f"{label}_text"])}
        names = [named.get(i, str(i)) for i in range(max(named, default=-1) + 1)]
    names = names or list(hub_names)
    if names:
        mapping = _to_local(names, local, rename or {})
        labels = [mapping.get(value, value) for value in labels]  # a value outside them is refused with its row
    return [{"id": f"{id_prefix}{i}" if id_prefix else i, "text": t, "label": y}
            for i, (t, y) in enumerate(zip(dataset[text], labels))]


def seeded_test_split(rows: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    """(train, test) as the local copy of a set without an official split was made (its SOURCE.md): one
    random.Random(0) shuffles each class's rows in turn (classes in label order, rows in source order), the
    first round(share x n) go to test, and both keep source order."""
    rng, test = random.Random(0), set()
    for label in sorted({row["label"] for row in rows}):
        members = [i for i, row in enumerate(rows) if row["label"] == label]
        rng.shuffle(members)
        test.update(members[: round(share * len(members))])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2 (the local CoNLL-2003's scheme): an ``I-`` tag that opens an entity (first, after ``O`` or
    after another type) becomes ``B-``; tags already in IOB2 come back unchanged."""
    out: list[str] = []
    for tag in tags:
        if tag.startswith("I-") and (not out or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


AG_NEWS = ("World", "Sports", "Business", "Sci/Tech")
SENTIMENT = ("negative", "positive")
NEG_POS = {"neg": "negative", "pos": "positive"}  # IMDB's and Rotten Tomatoes' class names on the hub
TREC = ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")  # the local order (the hub's: ABBR, ENTY, DESC, HUM, LOC, NUM)
SMS = ("ham", "spam")
SMS_TEST_SHARE = 0.2  # the local copy's test share (sms_spam/SOURCE.md)
CONLL = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def _ag_news(loaded) -> dict[str, list[dict]]:
    return {split: _sentences(_split(loaded, split), AG_NEWS, hub_names=AG_NEWS) for split in ("train", "test")}


def _imdb(loaded) -> dict[str, list[dict]]:
    rows = {split: _sentences(_split(loaded, split), SENTIMENT, hub_names=("neg", "pos"), rename=NEG_POS)
            for split in ("train", "test")}
    if "unsupervised" in loaded:  # the 50k unlabeled reviews (their label is -1)
        rows["unlabeled"] = [{"id": i, "text": t} for i, t in enumerate(loaded["unsupervised"]["text"]) if t and t.strip()]
    return rows


def _sst2(loaded) -> dict[str, list[dict]]:
    return {local: _sentences(_split(loaded, split), SENTIMENT)
            for local, split in (("train", "train"), ("dev", "validation"), ("test", "test"))}


def _trec(loaded) -> dict[str, list[dict]]:
    rows = {}
    for split in ("train", "test"):
        dataset = _split(loaded, split)
        coarse, fine = _column(dataset, "coarse_label", "label-coarse"), _column(dataset, "fine_label", "label-fine")
        rows[split] = _sentences(dataset, TREC, label=coarse, hub_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"))
        fine_names = _class_names(dataset, fine)
        for row, value in zip(rows[split], dataset[fine]):  # kept as the local rows keep it: "DESC:manner"
            row["fine_label"] = fine_names[value] if fine_names else value
    return rows


def _mr(loaded) -> dict[str, list[dict]]:
    # the hub's split is its own (8,530 / 1,066 / 1,066): train + validation = the local train's 9,596 sentences
    convert = lambda split: _sentences(_split(loaded, split), SENTIMENT, hub_names=("neg", "pos"), rename=NEG_POS,  # noqa: E731
                                       id_prefix=f"{split}:")
    return {"train": convert("train") + convert("validation"), "test": convert("test")}


def _sms_spam(loaded) -> dict[str, list[dict]]:
    rows = _sentences(_split(loaded, "train"), SMS, text="sms", hub_names=SMS)
    for row in rows:
        row["text"] = row["text"].rstrip("\r\n")  # the hub keeps each line's end; the local texts are verbatim otherwise
    train, test = seeded_test_split(rows, SMS_TEST_SHARE)
    return {"train": train, "test": test}


def _conll2003(loaded) -> dict[str, list[dict]]:
    rows = {}
    for local, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        dataset = _split(loaded, split)
        tokens, tags = _column(dataset, "tokens"), _column(dataset, "ner_tags", "tags")
        names = _class_names(dataset, tags) or list(CONLL)
        _to_local(names, CONLL, {})  # every hub tag name is a local one
        rows[local] = []
        for i, (words, labels) in enumerate(zip(dataset[tokens], dataset[tags])):
            if not 0 <= min(labels, default=0) <= max(labels, default=0) < len(names):
                raise LayoutError(f"{split} sentence {i} has a tag outside the {len(names)} tag names")
            if len(words):  # the hub has no empty sentences; one would be no example
                rows[local].append({"id": i, "tokens": list(words), "tags": [CONLL.index(t) for t in iob2([names[t] for t in labels])]})
    return rows


HUB = {
    "ag_news": HubSource("fancyzhx/ag_news", AG_NEWS, _ag_news),
    "imdb": HubSource("stanfordnlp/imdb", SENTIMENT, _imdb),
    "sst2": HubSource("SetFit/sst2", SENTIMENT, _sst2),
    "trec": HubSource("CogComp/trec", TREC, _trec, revision="refs/convert/parquet"),
    "mr": HubSource("cornell-movie-review-data/rotten_tomatoes", SENTIMENT, _mr),
    "sms_spam": HubSource("ucirvine/sms_spam", SMS, _sms_spam, revision="refs/convert/parquet"),
    "conll2003": HubSource("eriktks/conll2003", CONLL, _conll2003, revision="refs/convert/parquet"),
}


def load_hub(source: HubSource):
    """The hub copy as a DatasetDict, downloaded once into the `datasets` cache (offline: read from it)."""
    import datasets
    from huggingface_hub import constants

    for cache in (datasets.config.HF_DATASETS_CACHE, constants.HF_HUB_CACHE):
        refuse_shared_data(cache, "The Hugging Face cache", "Set HF_HOME (or HF_DATASETS_CACHE and HF_HUB_CACHE) elsewhere.")
    return datasets.load_dataset(source.hub_id, revision=source.revision)


def benchmark(name: str):
    source = HUB[name]

    def load(options, context) -> DatasetSplits:
        root = context.data_dir
        if root is not None and (root / name).is_dir():
            return load_dataset_dir(root / name)  # local first: no `datasets` import, no network
        local = str(root / name) if root is not None else f"the data directory (${DATA_DIR_ENV} is unset)"
        if not getattr(context, "download", True):
            raise UserError(f"Dataset {name!r} not found in {local}; a run loads its Hugging Face hub copy ({source.hub_id}) "
                            "through `datasets`: downloaded when online, else from that library's cache.")
        try:
            loaded = load_hub(source)
        except UserError:
            raise
        except Exception as exc:  # offline, no network, the hub down: each says the same two ways out
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise UserError(f"Dataset {name!r} not found: it is not in {local}, and its Hugging Face hub copy {source.hub_id} "
                            f"could not be loaded ({reason}). Either put its files in ${DATA_DIR_ENV}/{name}/ (train and test "
                            f"jsonl and labels.json, as README.md's 'Your own data' says), or go online (HF_HUB_OFFLINE unset) "
                            f"so that `datasets` can download {source.hub_id}.") from None
        try:
            rows = source.convert(loaded)
        except LayoutError as exc:
            raise UserError(f"The Hugging Face hub copy of {name!r} ({source.hub_id}) is not laid out as testbed converts it: "
                            f"{exc}. Put its files in ${DATA_DIR_ENV}/{name}/ instead (see README.md).") from None
        # a hub dataset's empty texts stay "", as with dataset.name=hub
        return splits_from_rows(rows, list(source.label_names), f"{source.hub_id} (hub copy of {name})", allow_empty=True)

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
