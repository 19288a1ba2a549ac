"""Reading datasets and the seeded, stratified labeled / validation / unlabeled split.

A dataset directory holds ``train`` and ``test`` (and optionally ``dev`` and ``unlabeled``)
as .jsonl, .jsonl.gz, .csv or .parquet, plus an optional ``labels.json`` with the class
names (index = integer label). The gold labels of the unlabeled pool are kept apart in
``Split.pool_gold``: the training step only ever sees pool texts and positions.

The rows choose the task: ``text`` and ``label`` columns are sentence classification; ``tokens``
(a list of words) and ``tags`` (one label per word, integers or names) are token classification
(NER), whose example text is its words joined by single spaces, so views, caches and
augmentations see strings as always. Its split is not stratified: ``labeled_size`` sentences are
a seeded sample of train, validation a seeded sample of ``validation_size`` dev sentences.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.errors import UserError
from testbed.types import DatasetSplits, Texts

DATA_DIR_ENV = "TESTBED_DATA"
SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".parquet")
TEST_SAMPLE_SEED = 0  # the test subsample is the same for every run seed, so runs pair up


def data_dir() -> Path | None:
    """``$TESTBED_DATA``, else ``../shared/data`` beside the checkout when it exists."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None


def read_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl / .jsonl.gz / .csv / .parquet file as dicts."""
    name = path.name
    if not path.is_file():
        raise UserError(f"Data file {str(path)!r} not found.")
    if name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        rows = []
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        row = exc
                    if not isinstance(row, dict):
                        reason = row.msg if isinstance(row, json.JSONDecodeError) else f"got {type(row).__name__}"
                        raise UserError(f"{path}:{number}: not a JSON object ({reason}). Each line must be one JSON object.")
                    rows.append(row)
        return rows
    if name.endswith((".csv", ".parquet")):
        import pandas as pd

        try:
            frame = pd.read_csv(path, keep_default_na=False) if name.endswith(".csv") else pd.read_parquet(path)
        except Exception as exc:
            raise UserError(f"Could not read {str(path)!r}: {type(exc).__name__}: {exc}. Check that it is a valid, non-empty file.") from None
        return frame.to_dict("records")
    raise UserError(f"Data file {str(path)!r} has an unsupported format; use one of {', '.join(SUFFIXES)}.")


def find_file(directory: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    return None


def rows_to_texts(rows: list[dict], label_names: list, where: str, text_column: str = "text", label_column: str = "label") -> Texts:
    """Check and convert rows; labels are ints in range(len(label_names)) or class names."""
    if not rows:
        raise UserError(f"{where} is empty: a dataset split needs at least one row.")
    index = {name: i for i, name in enumerate(label_names)}
    texts, labels = [], []
    for number, row in enumerate(rows, 1):
        if text_column not in row or label_column not in row:
            raise UserError(f"{where}, row {number}: needs columns {text_column!r} and {label_column!r}, has {sorted(row)}. "
                            "Set dataset.text_column / dataset.label_column if yours are named differently.")
        label = row[label_column]
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(label_names):
            labels.append(int(label))
        elif isinstance(label, str) and label in index:
            labels.append(index[label])
        else:
            raise UserError(f"{where}, row {number}: label {label!r} is not one of the {len(label_names)} classes "
                            f"(integers 0..{len(label_names) - 1} or names {label_names[:6]}{'...' if len(label_names) > 6 else ''}). "
                            "Fix the row or the dataset's labels.json.")
        text = row[text_column]
        texts.append("" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text))
    return Texts(texts=texts, labels=np.asarray(labels, dtype=np.int64))


TOKENS, TAGS = "tokens", "tags"  # the columns of token-classification rows
DEFAULT_TASKS = {"text": "sentence", "tokens": "token"}  # the task a kind of rows runs unless told otherwise


def is_token_rows(rows: list[dict], text_column: str = "text") -> bool:
    """Rows of token classification: ``tokens`` and ``tags`` columns (and no text column)."""
    return bool(rows) and TOKENS in rows[0] and TAGS in rows[0] and text_column not in rows[0]


def rows_to_tokens(rows: list[dict], label_names: list, where: str) -> Texts:
    """Check and convert token-classification rows: ``tokens`` a list of non-empty words without
    whitespace, ``tags`` one label per word (ints in range(len(label_names)) or names). The text of an
    example is its words joined by single spaces, so ``text.split()`` gives the words back."""
    if not rows:
        raise UserError(f"{where} is empty: a dataset split needs at least one row.")
    index = {name: i for i, name in enumerate(label_names)}
    texts, tags = [], []
    for number, row in enumerate(rows, 1):
        words, labels = row.get(TOKENS), row.get(TAGS)
        if not isinstance(words, (list, tuple, np.ndarray)) or not isinstance(labels, (list, tuple, np.ndarray)):
            raise UserError(f"{where}, row {number}: token-classification rows need lists {TOKENS!r} and {TAGS!r}, has {sorted(row)}.")
        words, labels = list(words), list(labels)
        if len(words) != len(labels) or not words:
            raise UserError(f"{where}, row {number}: {len(words)} tokens and {len(labels)} tags; each word needs one tag "
                            "(and a row at least one word).")
        text = " ".join(word if isinstance(word, str) else "" for word in words)
        if text.split() != words:  # a word that is not a string, empty, or holds whitespace would not come back from split()
            word = next(w for w in words if not isinstance(w, str) or w.split() != [w])
            raise UserError(f"{where}, row {number}: token {word!r} is empty or holds whitespace; the words of a "
                            "sentence must be non-empty and free of whitespace (the text is the words joined by spaces).")
        if all(type(label) is int and 0 <= label < len(label_names) for label in labels):
            ids = labels
        else:
            ids = []
            for label in labels:
                if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(label_names):
                    ids.append(int(label))
                elif isinstance(label, str) and label in index:
                    ids.append(index[label])
                else:
                    raise UserError(f"{where}, row {number}: tag {label!r} is not one of the {len(label_names)} tags "
                                    f"(integers 0..{len(label_names) - 1} or names {label_names[:6]}"
                                    f"{'...' if len(label_names) > 6 else ''}). Fix the row or the dataset's labels.json.")
        texts.append(text)
        tags.append(np.asarray(ids, dtype=np.int64))
    return Texts(texts=texts, labels=np.full(len(texts), -1, dtype=np.int64), tags=tags)


def infer_label_names(rows: list[dict], label_column: str) -> list:
    """Class names when no labels.json exists: 0..max for integer labels, sorted names for strings
    (token rows: of every tag)."""
    if is_token_rows(rows):
        values = {tag for row in rows for tag in row.get(TAGS) or ()}
        label_column = TAGS
    else:
        values = {row.get(label_column) for row in rows}
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in values):
        return [str(i) for i in range(int(max(values)) + 1)]
    if values and all(isinstance(v, str) for v in values):
        return sorted(values)
    raise UserError(f"Cannot infer the classes from label column {label_column!r}: values {sorted(map(repr, values))[:5]}. "
                    "Use non-negative integers or class-name strings, or add a labels.json.")


def load_dataset_dir(directory: Path, text_column: str = "text", label_column: str = "label") -> DatasetSplits:
    """Load ``train``/``test`` (+ ``dev``, ``unlabeled``, ``labels.json``) from a directory."""
    if not directory.is_dir():
        raise UserError(f"Dataset directory {str(directory)!r} not found.")
    train_path, test_path = find_file(directory, "train"), find_file(directory, "test")
    if train_path is None or test_path is None:
        raise UserError(f"Dataset directory {str(directory)!r} needs train and test files ({', '.join(SUFFIXES)}).")
    return load_dataset_files(train_path, test_path, find_file(directory, "dev"), find_file(directory, "unlabeled"),
                              directory / "labels.json", text_column, label_column)


def load_dataset_files(train: Path, test: Path, dev: Path | None = None, unlabeled: Path | None = None,
                       labels_json: Path | None = None, text_column: str = "text", label_column: str = "label") -> DatasetSplits:
    train_rows = read_rows(train)
    if not train_rows:
        raise UserError(f"{train} is empty: a dataset split needs at least one row.")
    if labels_json is not None and labels_json.is_file():
        label_names = json.loads(labels_json.read_text(encoding="utf-8"))
    else:
        label_names = infer_label_names(train_rows, label_column)
    tokens = is_token_rows(train_rows, text_column)

    def convert(rows, path):
        if tokens:
            return rows_to_tokens(rows, label_names, str(path))
        return rows_to_texts(rows, label_names, str(path), text_column, label_column)

    extra = [unlabeled_text(row, text_column) for row in read_rows(unlabeled)] if unlabeled else []
    return DatasetSplits(label_names=[str(n) for n in label_names], train=convert(train_rows, train),
                         test=convert(read_rows(test), test), dev=convert(read_rows(dev), dev) if dev else None,
                         unlabeled=extra)


def unlabeled_text(row: dict, text_column: str = "text") -> str:
    """An unlabeled row's text: its text column, or its ``tokens`` joined by spaces."""
    if text_column not in row and isinstance(row.get(TOKENS), (list, tuple)):
        return " ".join(str(word) for word in row[TOKENS])
    return str(row.get(text_column) or "")


def rows_kind(data: DatasetSplits) -> str:
    """``"tokens"`` for token-classification data (texts with per-word tags), else ``"text"``."""
    return "tokens" if data.train.tags is not None else "text"


# --------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Split:
    label_names: list[str]
    labeled: Texts
    validation: Texts
    test: Texts
    pool_texts: list[str]
    # gold label per pool row, -1 where unknown; for measurement only. A row is a text, or for token
    # classification a word: the pool's words in order, text by text (``pool_tags`` holds them per text)
    pool_gold: np.ndarray
    pool_tags: list[np.ndarray] | None = None  # token classification: each pool text's gold tags; for measurement only

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def _per_class(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


VALIDATION_SIZE = 200  # validation sentences of a token task unless dataset.validation_size says otherwise


def make_split(data: DatasetSplits, labels_per_class: int, validation_per_class: int, seed: int,
               unlabeled_limit: int = 0, test_limit: int = 0, where: str = "dataset", *,
               labeled_size: int = 0, validation_size: int = VALIDATION_SIZE) -> Split:
    """Seeded, stratified: ``labels_per_class`` labeled and ``validation_per_class`` validation
    examples per class (validation from dev when the dataset has one); the rest of train plus
    the dataset's unlabeled texts form the pool. Token classification: ``make_token_split``."""
    if rows_kind(data) == "tokens":
        return make_token_split(data, labeled_size, validation_size, seed, unlabeled_limit, test_limit, where)
    if labeled_size:
        raise UserError(f"{where} is sentence classification: its label budget is dataset.labels_per_class (stratified); "
                        "dataset.labeled_size (labeled sentences) is for token-classification datasets. Leave it at 0.")
    if validation_size != VALIDATION_SIZE:
        raise UserError(f"{where} is sentence classification: its validation set is dataset.validation_per_class per class; "
                        f"dataset.validation_size is for token-classification datasets. Leave it at {VALIDATION_SIZE}.")
    num_classes = len(data.label_names)
    if labels_per_class < 1:
        raise UserError(f"dataset.labels_per_class must be at least 1, got {labels_per_class}.")
    if validation_per_class < 0:
        raise UserError(f"dataset.validation_per_class must be 0 or more, got {validation_per_class}.")
    rng = np.random.default_rng(seed)
    train_needs = labels_per_class + (0 if data.dev is not None else validation_per_class)
    by_class = _per_class(data.train.labels, num_classes, rng)
    for c, members in enumerate(by_class):
        if len(members) < train_needs:
            raise UserError(
                f"{where}: class {data.label_names[c]!r} has {len(members)} training examples, fewer than the "
                f"{train_needs} needed (labels_per_class={labels_per_class}"
                + ("" if data.dev is not None else f" + validation_per_class={validation_per_class}")
                + "). Lower dataset.labels_per_class or dataset.validation_per_class.")
    labeled_idx = np.concatenate([m[:labels_per_class] for m in by_class])
    if data.dev is not None:
        dev_by_class = _per_class(data.dev.labels, num_classes, rng)
        for c, members in enumerate(dev_by_class):
            if len(members) < validation_per_class:
                raise UserError(f"{where}: class {data.label_names[c]!r} has {len(members)} dev examples, fewer than "
                                f"validation_per_class={validation_per_class}. Lower dataset.validation_per_class.")
        val_idx = np.concatenate([m[:validation_per_class] for m in dev_by_class])
        validation = _take(data.dev, val_idx)
        pool_idx = np.concatenate([m[labels_per_class:] for m in by_class])
    else:
        val_idx = np.concatenate([m[labels_per_class:train_needs] for m in by_class])
        validation = _take(data.train, val_idx)
        pool_idx = np.concatenate([m[train_needs:] for m in by_class])
    pool_idx = np.sort(pool_idx)
    pool_texts = [data.train.texts[i] for i in pool_idx] + list(data.unlabeled)
    pool_gold = np.concatenate([data.train.labels[pool_idx], np.full(len(data.unlabeled), -1, dtype=np.int64)])
    if unlabeled_limit and len(pool_texts) > unlabeled_limit:
        keep = np.sort(rng.choice(len(pool_texts), size=unlabeled_limit, replace=False))
        pool_texts, pool_gold = [pool_texts[i] for i in keep], pool_gold[keep]
    test = data.test
    if test_limit and len(test) > test_limit:
        test = _take(test, stratified_sample(test.labels, test_limit, np.random.default_rng(TEST_SAMPLE_SEED)))
    return Split(label_names=list(data.label_names), labeled=_take(data.train, np.sort(labeled_idx)),
                 validation=validation, test=test, pool_texts=pool_texts, pool_gold=pool_gold)


def make_token_split(data: DatasetSplits, labeled_size: int, validation_size: int, seed: int,
                     unlabeled_limit: int = 0, test_limit: int = 0, where: str = "dataset") -> Split:
    """Token classification, seeded (not stratified: a sentence has many tags): ``labeled_size``
    train sentences are labeled; validation is ``validation_size`` dev sentences (when there is no
    dev: train sentences held apart from the pool); the rest of train plus the dataset's unlabeled
    sentences form the pool, whose gold (``pool_gold``, ``pool_tags``) is one tag per word, for
    measurement only; ``test_limit`` samples test sentences with a fixed seed, the same for every run."""
    if labeled_size < 1:
        raise UserError(f"{where} is token classification: set its label budget in labeled sentences, "
                        "e.g. dataset.labeled_size=50 (dataset.labels_per_class does not apply).")
    if validation_size < 0:
        raise UserError(f"dataset.validation_size must be 0 or more, got {validation_size}.")
    rng = np.random.default_rng(seed)
    train_needs = labeled_size + (0 if data.dev is not None else validation_size)
    if train_needs > len(data.train):
        raise UserError(f"{where}: train has {len(data.train)} sentences, fewer than the {train_needs} needed (labeled_size="
                        f"{labeled_size}" + ("" if data.dev is not None else f" + validation_size={validation_size}")
                        + "). Lower dataset.labeled_size or dataset.validation_size.")
    order = rng.permutation(len(data.train))
    labeled_idx = np.sort(order[:labeled_size])
    if data.dev is not None:
        if validation_size > len(data.dev):
            raise UserError(f"{where}: dev has {len(data.dev)} sentences, fewer than dataset.validation_size={validation_size}. "
                            "Lower it.")
        validation = _take(data.dev, np.sort(rng.permutation(len(data.dev))[:validation_size]))
    else:
        validation = _take(data.train, np.sort(order[labeled_size:train_needs]))
    pool_idx = np.sort(order[train_needs:])
    pool_texts = [data.train.texts[i] for i in pool_idx] + list(data.unlabeled)
    pool_tags = [data.train.tags[i] for i in pool_idx] + [np.full(len(t.split()), -1, dtype=np.int64) for t in data.unlabeled]
    if unlabeled_limit and len(pool_texts) > unlabeled_limit:
        keep = np.sort(rng.choice(len(pool_texts), size=unlabeled_limit, replace=False))
        pool_texts, pool_tags = [pool_texts[i] for i in keep], [pool_tags[i] for i in keep]
    test = data.test
    if test_limit and len(test) > test_limit:
        test = _take(test, np.sort(np.random.default_rng(TEST_SAMPLE_SEED).permutation(len(test))[:test_limit]))
    pool_gold = np.concatenate(pool_tags) if pool_tags else np.zeros(0, dtype=np.int64)
    return Split(label_names=list(data.label_names), labeled=_take(data.train, labeled_idx), validation=validation, test=test,
                 pool_texts=pool_texts, pool_gold=pool_gold.astype(np.int64), pool_tags=pool_tags)


def stratified_sample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` examples keeping class proportions (largest remainders)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def _take(texts: Texts, idx: np.ndarray) -> Texts:
    tags = None if texts.tags is None else [texts.tags[i] for i in idx]
    return Texts(texts=[texts.texts[i] for i in idx], labels=texts.labels[idx], tags=tags)
