"""Precomputed views: augmented texts that a file already holds, e.g. back-translations.

A file row maps a text to its views: ``{"text": ..., "aug_back_translation": ...}`` (jsonl, csv,
parquet, as SAT's ``sat_labeled_10pc_aug.jsonl``) or USB's JSON, ``{"0": {"ori": ..., "aug_0": ...,
"aug_1": ...}, ...}``. A text is looked up by its exact string (then with whitespace collapsed);
with several view columns each seed picks one of them. A text without a view passes through
unchanged and is counted (``unchanged``; ``missing`` counts the texts the file does not know).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from testbed import Augmentation, Augmenter, UserError, data_dir, hookimpl, read_rows
from testbed_plugins._text import uniforms


@dataclass(frozen=True)
class PrecomputedOptions:
    path: str = ""  # the file; relative paths are tried from the working directory, then the data directory
    columns: list[str] = field(default_factory=list)  # view columns; empty = every column named aug*
    text_column: str = ""  # the original text's column; empty = "text", or "ori" (USB)


def find_file(path: str) -> Path:
    if not path:
        raise UserError("precomputed: set the path option to a file holding the views (jsonl, csv, parquet or USB json).")
    candidates = [Path(path)]
    if not Path(path).is_absolute() and data_dir() is not None:
        candidates.append(data_dir() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"precomputed: view file {path!r} not found (looked in {', '.join(str(c) for c in candidates)}).")


def read_view_rows(path: Path) -> list[dict]:
    if path.suffix != ".json":
        return read_rows(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"precomputed: {path} is not valid JSON: {exc}") from None
    rows = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"precomputed: {path} must hold a list of objects or an object of objects (USB's layout).")
    return rows


def normalise(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=8)
def load_views(path: str, columns: tuple[str, ...], text_column: str, content_hash: str):
    """(exact text -> views, normalised text -> views, columns); ``content_hash`` keys the memo by file content."""
    rows = read_view_rows(Path(path))
    if not rows:
        raise UserError(f"precomputed: {path} has no rows.")
    names = list(dict.fromkeys(k for row in rows for k in row))
    text_column = text_column or ("text" if "text" in names else "ori" if "ori" in names else "")
    if text_column not in names:
        raise UserError(f"precomputed: {path} has no text column {text_column or 'text'!r}; its columns: {names}. "
                        "Set the text_column option.")
    columns = list(columns) or [n for n in names if n.startswith("aug")]
    unknown = [c for c in columns if c not in names]
    if not columns or unknown:
        raise UserError(f"precomputed: view column(s) {unknown or '(none named aug*)'} not in {path}; its columns: {names}. "
                        "Set the columns option, e.g. columns = [\"aug_back_translation\"].")
    exact: dict[str, list] = {}
    for row in rows:
        text = row.get(text_column)
        if isinstance(text, str):
            views = [row.get(c) if isinstance(row.get(c), str) and row.get(c).strip() else None for c in columns]
            exact.setdefault(text, views)
    loose = {normalise(t): v for t, v in exact.items()}
    return exact, loose, columns


def precomputed(options: PrecomputedOptions, context):
    path = find_file(options.path)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    exact, loose, columns = load_views(str(path.resolve()), tuple(options.columns), options.text_column, fingerprint)

    def augment(texts, seeds):
        picks, _ = uniforms(seeds, [1] * len(texts), salt=5)
        out = []
        for text, u in zip(texts, picks):
            views = exact.get(text) or loose.get(normalise(text))
            if views is None:
                augmenter.missing += 1
                out.append(text)
                continue
            view = views[int(u * len(views))]
            out.append(view if view is not None else next((v for v in views if v is not None), text))
        return out

    augmenter = Augmenter(augment, fingerprint=fingerprint)
    augmenter.missing = 0
    augmenter.columns = columns
    return augmenter


@hookimpl
def testbed_augmentations():
    return [Augmentation(name="precomputed", summary="views a file already holds (e.g. back-translations), looked up by text",
                         factory=precomputed, options=PrecomputedOptions)]
