"""Reading datasets and the seeded, stratified labeled / validation / unlabeled split.

A dataset directory holds ``train`` and ``test`` (and optionally ``dev`` and ``unlabeled``)
as .jsonl, .jsonl.gz, .csv, .tsv or .parquet, plus an optional ``labels.json`` with the class
names (index = integer label); with ``test_fraction`` a single labelled file (or a directory
without ``test``) is split into train and test, stratified and seeded by the run's seed. The gold
labels of the unlabeled pool are kept apart in ``Split.pool_gold``: the training step only ever
sees pool texts and positions.

Files are UTF-8 (a byte-order mark and CRLF line ends are fine); what cannot be right is refused
with the file, the row and the fix: bytes that are not UTF-8, a missing column, a label that is not
a class, an empty text, a text over ``MAX_TEXT_CHARS`` (in a CSV, an unbalanced quote swallows the
lines after it into one field), two rows with the same ``id``, a single class.

The rows choose the task: ``text`` and ``label`` columns are sentence classification; ``tokens``
(a list of words) and ``tags`` (one label per word, integers or names) are token classification
(NER), whose example text is its words joined by single spaces, so views, caches and
augmentations see strings as always. Its split is not stratified: ``labeled_size`` sentences are
a seeded sample of train, validation a seeded sample of ``validation_size`` dev sentences.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.errors import UserError
from testbed.types import DatasetSplits, Texts

DATA_DIR_ENV = "TESTBED_DATA"
SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".tsv", ".parquet")
TEST_SAMPLE_SEED = 0  # the test subsample is the same for every run seed, so runs pair up
# a longer text is a broken file, not an example: a CSV field opened by an unbalanced quote runs on to the next quote
MAX_TEXT_CHARS = 1_000_000
ID_COLUMN = "id"  # rows that have it must not repeat it within a file (a file concatenated twice, a bad join)


def data_dir() -> Path | None:
    """``$TESTBED_DATA``, else ``../shared/data`` beside the checkout when it exists."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None


def one_line(text: str) -> str:
    """A library's message on one line (an error is one line in the CLI)."""
    return " ".join(str(text).split())


def _decode(raw: bytes, path: Path, first_line: int = 1) -> str:
    """UTF-8 text (a leading byte-order mark dropped); bytes that are not UTF-8 are a UserError naming
    the line and the byte, and how to convert the file."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}). Save the file as UTF-8, "
                        f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed_{path.name}` for Latin-1 text.") from None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"Could not read {str(path)!r}: {one_line(exc).rstrip('.') or type(exc).__name__}. "
                        + ("Check that it is a complete gzip file (`gzip -t`)." if path.name.endswith(".gz") else
                           "Check that the file is readable.")) from None


def read_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl / .jsonl.gz / .csv / .tsv / .parquet file as dicts. Text files are UTF-8, with or
    without a byte-order mark, LF or CRLF line ends; a .tsv has a header and tab-separated fields without
    quoting (as GLUE's), a .csv quotes as usual."""
    name = path.name
    if not path.is_file():
        raise UserError(f"Data file {str(path)!r} not found.")
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows = []
        for number, raw in enumerate(_read_bytes(path).split(b"\n"), 1):
            line = _decode(raw, path, number)
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
    if name.endswith((".csv", ".tsv")):
        import pandas as pd

        text = _decode(_read_bytes(path), path)
        if not text.strip():
            raise UserError(f"{path} is empty: it needs a header line naming its columns (e.g. text,label) and rows.")
        tsv = name.endswith(".tsv")
        try:
            frame = pd.read_csv(io.StringIO(text), keep_default_na=False, **(
                {"sep": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}))
        except Exception as exc:
            raise UserError(f"Could not read {str(path)!r}: {type(exc).__name__}: {one_line(exc).rstrip('.')}. "
                            + ("Each line needs as many tab-separated fields as the header (no tab inside a text)."
                               if tsv else "Check the quoting: a field holding a comma or a quote must be quoted, "
                                           "and a quote inside it doubled.")) from None
        return frame.to_dict("records")
    if name.endswith(".parquet"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise UserError(f"Could not read {str(path)!r}: {type(exc).__name__}: {one_line(exc).rstrip('.')}. Check that it is a "
                            "valid, non-empty parquet file.") from None
        return frame.to_dict("records")
    raise UserError(f"Data file {str(path)!r} has an unsupported format; use one of {', '.join(SUFFIXES)}.")


def find_file(directory: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    return None


def rows_to_texts(rows: list[dict], label_names: list, where: str, text_column: str = "text", label_column: str = "label",
                  *, allow_empty: bool = False) -> Texts:
    """Check and convert rows; labels are ints in range(len(label_names)) or class names. An empty text
    is refused (``allow_empty``: kept as ""), and so is one longer than ``MAX_TEXT_CHARS``."""
    if not rows:
        raise UserError(f"{where} is empty: a dataset split needs at least one row.")
    index = {name: i for i, name in enumerate(label_names)}
    texts, labels, empty = [], [], []
    for number, row in enumerate(rows, 1):
        if text_column not in row or label_column not in row:
            raise UserError(f"{where}, row {number}: needs columns {text_column!r} and {label_column!r}, has {sorted(row)}. "
                            "Set dataset.text_column / dataset.label_column if yours are named differently.")
        labels.append(label_id(row[label_column], index, label_names, f"{where}, row {number}", "label", "classes"))
        text = row[text_column]
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
        check_length(text, where, number)
        if not text.strip():
            empty.append(number)
        texts.append(text)
    if empty and not allow_empty:
        raise UserError(f"{where}: {len(empty)} row(s) with an empty text (row{'s' if len(empty) > 1 else ''} "
                        f"{', '.join(map(str, empty[:5]))}{', ...' if len(empty) > 5 else ''}): there is nothing to classify. "
                        "Remove those rows or fill in their text.")
    return Texts(texts=texts, labels=np.asarray(labels, dtype=np.int64))


def label_id(label, index: dict[str, int], label_names: list[str], where: str, what: str, plural: str) -> int:
    """A class (or tag) given as its index or its name -> its index; anything else is the row's error."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(label_names):
        return int(label)
    if isinstance(label, str) and label in index:
        return index[label]
    raise UserError(f"{where}: {what} {label!r} is not one of the {len(label_names)} {plural} "
                    f"(integers 0..{len(label_names) - 1} or names {label_names[:6]}{'...' if len(label_names) > 6 else ''}). "
                    "Fix the row or the dataset's labels.json.")


def check_length(text: str, where: str, number: int) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise UserError(f"{where}, row {number}: a text of {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,}: "
                        "in a CSV an unbalanced quote makes one field swallow the lines after it. Fix the quoting, or "
                        "split the text into examples.")


def check_unique_ids(rows: list[dict], where: str) -> None:
    """Rows with an ``id`` column must not repeat an id within a file."""
    if not rows or ID_COLUMN not in rows[0]:
        return
    seen: dict = {}
    for number, row in enumerate(rows, 1):
        key = row.get(ID_COLUMN)
        if key is None:  # a row without an id
            continue
        try:
            first = seen.setdefault(key, number)
        except TypeError:  # an unhashable id (a list): not an id this check can compare
            return
        if first != number:
            raise UserError(f"{where}: rows {first} and {number} have the same {ID_COLUMN} {key!r}; ids must be unique within "
                            "a file (was it concatenated twice?). Remove the duplicate rows, or rename the id column.")


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
        check_length(text, where, number)
        if text.split() != words:  # a word that is not a string, empty, or holds whitespace would not come back from split()
            word = next(w for w in words if not isinstance(w, str) or w.split() != [w])
            raise UserError(f"{where}, row {number}: token {word!r} is empty or holds whitespace; the words of a "
                            "sentence must be non-empty and free of whitespace (the text is the words joined by spaces).")
        if all(type(label) is int and 0 <= label < len(label_names) for label in labels):
            ids = labels
        else:
            ids = [label_id(label, index, label_names, f"{where}, row {number}", "tag", "tags") for label in labels]
        texts.append(text)
        tags.append(np.asarray(ids, dtype=np.int64))
    return Texts(texts=texts, labels=np.full(len(texts), -1, dtype=np.int64), tags=tags)


def infer_label_names(rows: list[dict], label_column: str, where: str = "") -> list:
    """Class names when no labels.json exists: 0..max for integer labels, sorted names for strings
    (token rows: of every tag)."""
    if is_token_rows(rows):
        values = {tag for row in rows for tag in row.get(TAGS) or ()}
        label_column = TAGS
    else:
        if label_column not in rows[0]:
            raise UserError(f"{where or 'The data'}, row 1: no label column {label_column!r}, has {sorted(rows[0])}. "
                            "Set dataset.label_column if yours is named differently.")
        values = {row.get(label_column) for row in rows}
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in values):
        return [str(i) for i in range(int(max(values)) + 1)]
    if values and all(isinstance(v, str) for v in values):
        return sorted(values)
    raise UserError(f"{where + ': c' if where else 'C'}annot infer the classes from label column {label_column!r}: values "
                    f"{sorted(map(repr, values))[:5]}. Use non-negative integers or class-name strings, or add a labels.json.")


def load_dataset_dir(directory: Path, text_column: str = "text", label_column: str = "label", *,
                     test_fraction: float = 0.0, seed: int = 0) -> DatasetSplits:
    """Load ``train``/``test`` (+ ``dev``, ``unlabeled``, ``labels.json``) from a directory; with
    ``test_fraction``, a directory without ``test`` has that share of train split off as its test set."""
    if not directory.is_dir():
        raise UserError(f"Dataset directory {str(directory)!r} not found.")
    train_path, test_path = find_file(directory, "train"), find_file(directory, "test")
    if train_path is None or (test_path is None and not test_fraction):
        raise UserError(f"Dataset directory {str(directory)!r} needs train and test files ({', '.join(SUFFIXES)}), "
                        f"or a train file and dataset.test_fraction (e.g. 0.2) to split a test set off it.")
    if test_path is not None and test_fraction:
        raise UserError(f"Dataset directory {str(directory)!r} has its own test file {test_path.name}; "
                        "dataset.test_fraction is for data without one. Leave it at 0.")
    return load_dataset_files(train_path, test_path, find_file(directory, "dev"), find_file(directory, "unlabeled"),
                              directory / "labels.json", text_column, label_column, test_fraction=test_fraction, seed=seed)


def read_label_names(path: Path) -> list:
    """A labels.json: a JSON list of distinct class names (UTF-8, a byte-order mark allowed)."""
    try:
        names = json.loads(_decode(path.read_bytes(), path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}). It must be a list of class names, "
                        'e.g. ["negative", "positive"].') from None
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
        raise UserError(f"{path}: must be a non-empty JSON list of class names (strings), e.g. [\"negative\", \"positive\"]; "
                        f"got {one_line(json.dumps(names))[:80]}.")
    repeated = sorted({str(n) for n in names if [str(m) for m in names].count(str(n)) > 1})
    if repeated:
        raise UserError(f"{path}: class name(s) {', '.join(map(repr, repeated))} appear more than once; each class needs "
                        "one name, at the index of its integer label.")
    return names


TEST_SPLIT_SALT = 0x7E57  # the test split's random stream, apart from the label-budget split's (both from the run seed)


def load_dataset_files(train: Path, test: Path | None, dev: Path | None = None, unlabeled: Path | None = None,
                       labels_json: Path | None = None, text_column: str = "text", label_column: str = "label", *,
                       test_fraction: float = 0.0, seed: int = 0) -> DatasetSplits:
    """Read and check the files of a dataset. Without ``test`` (``test_fraction`` > 0), a seeded share of
    train becomes the test set: stratified by class for sentence rows, a random sample of sentences
    for token rows; ``seed`` is the run's."""
    if test is None and not test_fraction:
        raise UserError(f"{train} is the only data file: name a test file (dataset.test), or split one off with "
                        "dataset.test_fraction (e.g. 0.2).")
    if test is not None and test_fraction:
        raise UserError(f"dataset.test_fraction={test_fraction} splits a test set off {train}, but a test file "
                        f"({test}) is given too. Use one of them.")
    train_rows = read_rows(train)
    if not train_rows:
        raise UserError(f"{train} is empty: a dataset split needs at least one row.")
    if labels_json is not None and labels_json.is_file():
        label_names = read_label_names(labels_json)
    else:
        label_names = infer_label_names(train_rows, label_column, str(train))
    tokens = is_token_rows(train_rows, text_column)

    def convert(rows, path):
        check_unique_ids(rows, str(path))
        if tokens:
            return rows_to_tokens(rows, label_names, str(path))
        return rows_to_texts(rows, label_names, str(path), text_column, label_column)

    extra = []
    if unlabeled:
        rows = read_rows(unlabeled)
        check_unique_ids(rows, str(unlabeled))
        extra = [unlabeled_text(row, text_column, str(unlabeled), number) for number, row in enumerate(rows, 1)]
    train_texts = convert(train_rows, train)
    if len(label_names) < 2:
        raise UserError(f"{train} has a single class ({label_names[0]!r}): classification needs at least two. Add examples "
                        "of the other classes, or a labels.json naming every class.")
    test_texts = convert(read_rows(test), test) if test is not None else None
    if test_texts is None:
        train_texts, test_texts = split_test(train_texts, test_fraction, seed, str(train))
    return DatasetSplits(label_names=[str(n) for n in label_names], train=train_texts,
                         test=test_texts, dev=convert(read_rows(dev), dev) if dev else None,
                         unlabeled=extra)


def splits_from_rows(splits: dict[str, list[dict]], label_names: list, where: str, *, allow_empty: bool = False) -> DatasetSplits:
    """A dataset from rows already in memory, in the layout of the files (e.g. converted from the Hugging
    Face hub), checked as files are: ``splits`` holds ``train`` and ``test`` (+ ``dev``, ``unlabeled``)
    rows with ``text`` and ``label`` (or ``tokens`` and ``tags``; unlabeled rows need only a text);
    ``where`` names the source in errors; ``allow_empty`` keeps an empty labelled text as ""."""
    missing = [split for split in ("train", "test") if not splits.get(split)]
    if missing:
        raise UserError(f"{where} has no {' and no '.join(missing)} rows: a dataset needs train and test splits.")
    tokens = is_token_rows(splits["train"])

    def convert(split: str) -> Texts:
        rows, place = splits[split], f"{where} [{split}]"
        check_unique_ids(rows, place)
        if tokens:
            return rows_to_tokens(rows, label_names, place)
        return rows_to_texts(rows, label_names, place, allow_empty=allow_empty)

    unlabeled = [unlabeled_text(row, "text", f"{where} [unlabeled]", number)
                 for number, row in enumerate(splits.get("unlabeled") or (), 1)]
    return DatasetSplits(label_names=[str(n) for n in label_names], train=convert("train"), test=convert("test"),
                         dev=convert("dev") if splits.get("dev") else None, unlabeled=unlabeled)


def split_test(texts: Texts, fraction: float, seed: int, where: str) -> tuple[Texts, Texts]:
    """(train, test): ``fraction`` of ``texts`` as a test set, seeded by ``seed``; stratified by class
    (largest remainders) for sentence rows, a random sample for token rows."""
    if not 0 < fraction < 1:
        raise UserError(f"dataset.test_fraction must be between 0 and 1 (exclusive), got {fraction}.")
    size = round(fraction * len(texts))
    if not 1 <= size < len(texts):
        raise UserError(f"{where}: dataset.test_fraction={fraction} of its {len(texts)} rows leaves "
                        f"{'no test' if size < 1 else 'no training'} example. Use a fraction between "
                        f"{1 / len(texts):.3g} and {1 - 1 / len(texts):.3g}, or more data.")
    rng = np.random.default_rng([TEST_SPLIT_SALT, seed])
    if texts.tags is None:
        test_idx = stratified_sample(texts.labels, size, rng)
    else:
        test_idx = np.sort(rng.permutation(len(texts))[:size])
    train_idx = np.setdiff1d(np.arange(len(texts)), test_idx)
    return _take(texts, train_idx), _take(texts, test_idx)


def unlabeled_text(row: dict, text_column: str = "text", where: str = "unlabeled", number: int = 0) -> str:
    """An unlabeled row's text: its text column, or its ``tokens`` joined by spaces; row ``number`` of
    file ``where``, for the errors (no such column, an empty or over-long text)."""
    if text_column not in row and isinstance(row.get(TOKENS), (list, tuple, np.ndarray)):
        text = " ".join(str(word) for word in row[TOKENS])
    elif text_column not in row:
        raise UserError(f"{where}, row {number}: needs a column {text_column!r} (or {TOKENS!r}), has {sorted(row)}. "
                        "Set dataset.text_column if yours is named differently.")
    else:
        text = row[text_column]
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if not text.strip():
        raise UserError(f"{where}, row {number}: the text is empty. Remove the row or fill in its text.")
    check_length(text, where, number)
    return text


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
