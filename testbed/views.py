"""Augmentation views: built from specs, seeded per text, cached on disk, summarised.

The loop asks for the weak and strong views of the unlabeled examples it draws. Pool text i at
its n-th draw gets variant ``v = n mod K`` (K = ``train.view_variants``; K = 0: ``v = n``, a fresh
view every draw, never cached). Variant v of a text is ``augment([text], [s])`` with the seed
``s = hash(text, run seed, weak|strong, v)``: it depends on the text itself, not on its position
in the pool, so runs with different pools (label budgets, limits) share views.

The cache (``$TESTBED_CACHE``/views, default ``~/.cache/testbed/views``) has one directory per
(augmentation spec with every option, fingerprint of files it reads, seed, weak|strong):
``<name>-<key>/meta.json`` says what it holds, and ``shard-*.npz`` files hold views by (text
digest, variant). Only what a run draws is computed, a batch at a time, and appended as a new
shard when the run evaluates or ends; a shard is written to a temporary file and renamed, so
two processes filling the same entry at once only ever add complete, identical views. Many
shards are merged into one on reading. Identity views never touch the cache.

``summarize_augmentation`` measures an augmentation on a sample: how much it changes the text
and whether a model still predicts the same class.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import resolve_augmentation
from testbed.errors import UserError
from testbed.types import AugmentationContext

FORMAT = 1
FLUSH_EVERY = 50_000  # views held in memory before they are written without waiting for an evaluation
COMPACT_AT = 16  # shards in one entry before a reader merges them
ROLES = ("weak", "strong")
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- building augmentations

_registry_cache: list = []


def _default_registry():
    if not _registry_cache:
        from testbed.plugins import load_plugins

        _registry_cache.append(load_plugins())
    return _registry_cache[0]


def build(spec: Any, registry=None, where: str = "augmentation", pool: Sequence[str] | None = None) -> tuple[Callable, dict, str]:
    """A spec (name or table) -> (augment callable, canonical spec, fingerprint). The fingerprint
    joins the ``fingerprint`` attributes of the augmentation and everything it composes.
    Augmentations with a ``fit(texts)`` method (e.g. tf-idf) are fitted on ``pool`` first."""
    registry = registry or _default_registry()
    record, options, canonical = resolve_augmentation(spec, registry, where)
    nested: list[str] = []
    if record.composite:
        def build_nested(inner):
            augment, _, fingerprint = build(inner, registry, f"{where} (nested)", pool)
            nested.append(fingerprint)
            return augment

        context = AugmentationContext(build=build_nested, options=lambda inner: resolve_augmentation(inner, registry, where)[1])
        augment = record.factory(options, context)
    else:
        augment = record.factory(options)
    if pool is not None and callable(getattr(augment, "fit", None)):
        augment.fit(list(pool))
    own = getattr(augment, "fingerprint", "") or ""
    fingerprint = own if not any(nested) else hashlib.sha256("|".join([own, *nested]).encode()).hexdigest()[:16]
    return augment, canonical, fingerprint


def build_augmentation(spec: Any, registry=None) -> Callable:
    """``augment(texts, seeds) -> views`` for a spec, e.g. ``build_augmentation({"name": "eda", "alpha_sr": 0})``."""
    return build(spec, registry)[0]


# --------------------------------------------------------------------------- seeds and digests


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """64-bit BLAKE2b digest of each text (uint64): the text's identity in the cache."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
                        for t in texts), dtype=np.uint64, count=len(texts))


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def view_seeds(digests: np.ndarray, seed: int, role: str, variants: np.ndarray) -> np.ndarray:
    """The seed of variant v of a text for a run seed and role: int64 in [0, 2^63)."""
    salt = int.from_bytes(hashlib.blake2b(f"{role}:{seed}".encode(), digest_size=8).digest(), "little")
    with np.errstate(over="ignore"):
        x = _mix(np.asarray(digests, dtype=np.uint64) ^ np.uint64(salt))
        x = _mix(x + (np.asarray(variants, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(1)).astype(np.int64)


# --------------------------------------------------------------------------- the disk cache


def _protected() -> list[Path]:
    from testbed.resources import shared_data_dirs

    return shared_data_dirs()


def cache_root() -> Path:
    """Where views are cached: ``<cache dir>/views``; never inside the shared data."""
    from testbed.resources import cache_dir, refuse_shared_data

    root = cache_dir() / "views"
    refuse_shared_data(root, "The cache directory", "Point $TESTBED_CACHE somewhere else.")
    return root


def _atomic_bytes(path: Path, write: Callable) -> None:
    from testbed.runs import atomic_write  # not at the top: runs imports the loop, which imports this module

    atomic_write(path, write)


def _read_shard(path: Path) -> tuple[list[int], list[int], list[str]]:
    with np.load(path, allow_pickle=False) as z:
        digests, variants, offsets = z["digest"].tolist(), z["variant"].tolist(), z["offsets"].tolist()
        text = z["blob"].tobytes().decode("utf-8", "surrogatepass")
    return digests, variants, [text[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def _write_shard(path: Path, items: list[tuple[tuple[int, int], str]]) -> None:
    views = [view for _, view in items]
    offsets = np.zeros(len(views) + 1, dtype=np.int64)
    np.cumsum([len(v) for v in views], out=offsets[1:])
    arrays = {"digest": np.asarray([k[0] for k, _ in items], dtype=np.uint64),
              "variant": np.asarray([k[1] for k, _ in items], dtype=np.uint32), "offsets": offsets,
              "blob": np.frombuffer("".join(views).encode("utf-8", "surrogatepass"), dtype=np.uint8)}
    _atomic_bytes(path, lambda handle: np.savez(handle, **arrays))


class Entry:
    """One cache entry: the views of one spec, fingerprint, seed and role, by (text digest, variant)."""

    def __init__(self, root: Path, spec: dict, fingerprint: str, seed: int, role: str):
        self.meta = {"format": FORMAT, "augmentation": spec["name"], "spec": spec, "fingerprint": fingerprint,
                     "seed": seed, "role": role}
        blob = json.dumps(self.meta, sort_keys=True, separators=(",", ":"), default=str)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:20]
        safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in spec["name"])
        self.dir = root / f"{safe}-{self.key}"

    def load(self) -> dict[tuple[int, int], str]:
        table: dict[tuple[int, int], str] = {}
        loaded = []
        for path in sorted(self.dir.glob("shard-*.npz")):
            try:
                digests, variants, views = _read_shard(path)
            except FileNotFoundError:
                continue  # merged away by another process meanwhile; its views are in the merged shard
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                warnings.warn(f"Skipping unreadable view-cache shard {path}: {exc}", stacklevel=2)
                continue
            table.update(zip(zip(digests, variants), views))
            loaded.append(path)
        if len(loaded) >= COMPACT_AT:
            self._compact(table, loaded)
        return table

    def write(self, items: list[tuple[tuple[int, int], str]]) -> None:
        if not items:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.is_file():
            _atomic_bytes(meta, lambda h: h.write(json.dumps(self.meta, indent=2, sort_keys=True, default=str).encode()))
        _write_shard(self.dir / f"shard-{uuid.uuid4().hex[:16]}.npz", items)

    def _compact(self, table: dict, shards: list[Path]) -> None:
        """Merge ``shards`` into one; one process at a time (others skip), readers never miss a view."""
        with open(self.dir / ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self.write(list(table.items()))
            for path in shards:
                path.unlink(missing_ok=True)


class ViewStream:
    """One view (weak or strong) of the unlabeled pool, read from the cache or computed."""

    def __init__(self, augment: Callable, spec: dict, fingerprint: str, role: str, pool: Sequence[str], seed: int,
                 variants: int, root: Path | None):
        self.augment, self.spec, self.role, self.pool, self.seed = augment, spec, role, pool, seed
        self.identity = spec["name"] == "identity"
        self.entry = Entry(root, spec, fingerprint, seed, role) if root is not None and variants > 0 and not self.identity else None
        self.table = self.entry.load() if self.entry else {}
        self.digests = None if self.identity else text_digests(pool)
        self.pending: list[tuple[tuple[int, int], str]] = []
        self.computed = self.drawn = self.unchanged = 0

    def draw(self, indices: np.ndarray, variants: np.ndarray) -> list[str]:
        pool = self.pool
        if self.identity:
            return [pool[i] for i in indices]
        keys = list(zip(self.digests[indices].tolist(), variants.tolist()))
        views = [self.table.get(key) for key in keys]
        missing: dict[tuple[int, int], int] = {}
        for j, view in enumerate(views):
            if view is None:
                missing.setdefault(keys[j], j)
        if missing:
            rows = np.asarray(list(missing.values()))
            texts = [pool[i] for i in indices[rows]]
            computed = self.augment(texts, view_seeds(self.digests[indices[rows]], self.seed, self.role, variants[rows]))
            if len(computed) != len(texts) or not all(isinstance(v, str) for v in computed):
                raise TypeError(f"augmentation {self.spec['name']!r} must return one string per text; got "
                                f"{len(computed)} items for {len(texts)} texts")
            fresh = dict(zip(missing, computed))
            views = [fresh[key] if view is None else view for key, view in zip(keys, views)]
            self.computed += len(texts)
            if self.entry is not None:
                self.table.update(fresh)
                self.pending.extend(fresh.items())
                if len(self.pending) >= FLUSH_EVERY:
                    self.flush()
        self.drawn += len(views)
        self.unchanged += sum(1 for view, i in zip(views, indices.tolist()) if view == pool[i])
        return views

    def flush(self) -> None:
        if self.entry is not None and self.pending:
            self.entry.write(self.pending)
        self.pending = []

    def take_unchanged(self) -> float | None:
        """Share of views equal to their text since the last call (None: identity, or none drawn)."""
        share = None if self.identity or not self.drawn else self.unchanged / self.drawn
        self.drawn = self.unchanged = 0
        return share


class Views:
    """The weak and strong views of one run's unlabeled pool."""

    def __init__(self, weak: ViewStream, strong: ViewStream, pool_size: int, variants: int):
        self.weak, self.strong, self.variants = weak, strong, variants
        self.draws = np.zeros(pool_size, dtype=np.int64)

    def draw(self, indices) -> tuple[list[str], list[str]]:
        """(weak views, strong views) of pool texts ``indices``; counts each text's draws."""
        indices = np.asarray(indices, dtype=np.int64)
        n = np.empty(len(indices), dtype=np.int64)
        for j, i in enumerate(indices.tolist()):  # a text drawn twice in one batch gets two variants
            n[j] = self.draws[i]
            self.draws[i] += 1
        variants = n % self.variants if self.variants else n
        return self.weak.draw(indices, variants), self.strong.draw(indices, variants)

    def stats(self) -> dict[str, float | None]:
        """For the evaluation record: share of views the augmentation left unchanged; new views go to disk."""
        self.flush()
        return {f"views_unchanged/{role}": stream.take_unchanged() for role, stream in zip(ROLES, (self.weak, self.strong))}

    def flush(self) -> None:
        self.weak.flush()
        self.strong.flush()


def open_views(cfg, pool: Sequence[str], registry=None) -> Views:
    """The views of a run: its augmentation choices, seed and ``train.view_variants``."""
    streams = []
    root = None
    for role in ROLES:
        spec = cfg.resolved["augmentation"][role]
        augment, canonical, fingerprint = build(spec, registry, f"augmentation.{role}", pool)
        if root is None and canonical["name"] != "identity" and cfg.train.view_variants > 0:
            root = cache_root()
        streams.append(ViewStream(augment, canonical, fingerprint, role, pool, cfg.seed, cfg.train.view_variants, root))
    return Views(*streams, pool_size=len(pool), variants=cfg.train.view_variants)


# --------------------------------------------------------------------------- listing and clearing


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _entries(root: Path):
    """(entry directory, its meta.json, its readable shards) of a cache root; unreadable ones skipped."""
    for directory in sorted(root.glob("*-*")) if root.is_dir() else []:
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        shards = []
        for shard in directory.glob("shard-*.npz"):
            with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile), np.load(shard) as z:
                shards.append({k: z[k] for k in z.files})
        yield directory, meta, shards


def cache_entries(root: Path | None = None) -> list[dict]:
    """Every entry: augmentation, options, seed, role, variants and texts held, bytes."""
    root = root or cache_root()
    rows = []
    for directory, meta, shards in _entries(root):
        digests = {d for z in shards for d in z["digest"].tolist()}
        variants = {v for z in shards for v in z["variant"].tolist()}
        options = {k: v for k, v in meta["spec"].items() if k != "name"}
        rows.append({"entry": directory.name, "augmentation": meta["augmentation"], "options": options, "seed": meta["seed"],
                     "role": meta["role"], "variants": len(variants), "texts": len(digests), "bytes": _size(directory)})
    return rows


FEATURES = "features"  # beside views/: the frozen-encoder backbone's cached encoder outputs (plugins/frozen.py)


def feature_entries(root: Path | None = None) -> list[dict]:
    """Every entry of the feature cache: encoder, pooling, hidden size, texts held, bytes."""
    root = root or cache_root().parent / FEATURES
    rows = []
    for directory, meta, shards in _entries(root):
        keys = {k for z in shards for k in z["key"].tolist()}
        rows.append({"entry": directory.name, "encoder": meta.get("encoder"), "pooling": meta.get("pooling"),
                     "hidden": meta.get("hidden"), "texts": len(keys), "bytes": _size(directory)})
    return rows


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def cache_report(as_json: bool = False) -> str:
    """What ``testbed cache`` prints."""
    root = cache_root()
    entries = cache_entries(root)
    features_root = root.parent / FEATURES
    features = feature_entries(features_root)
    total, views = _size(root.parent), _size(root)
    if as_json:
        return json.dumps({"cache_dir": str(root.parent), "views_dir": str(root), "total_bytes": total,
                           "views_bytes": views, "entries": entries, "features_dir": str(features_root),
                           "features_bytes": _size(features_root), "feature_entries": features}, indent=2)
    lines = [f"cache directory: {root.parent}  ({_human(total)} in all; views {_human(views)} in {root})",
             f"{len(entries)} view entr{'y' if len(entries) == 1 else 'ies'}" + (":" if entries else "")]
    if entries:
        lines.append(f"  {'augmentation':<16} {'role':<6} {'seed':>5} {'variants':>8} {'texts':>7} {'size':>9}  options")
        for e in entries:
            lines.append(f"  {e['augmentation']:<16} {e['role']:<6} {e['seed']:>5} {e['variants']:>8} {e['texts']:>7} "
                         f"{_human(e['bytes']):>9}  {json.dumps(e['options'], sort_keys=True)}")
    if features:
        lines.append(f"{len(features)} feature entr{'y' if len(features) == 1 else 'ies'} (frozen encoder outputs, "
                     f"{_human(_size(features_root))} in {features_root}):")
        lines.append(f"  {'encoder':<24} {'pooling':<7} {'hidden':>6} {'texts':>7} {'size':>9}  entry")
        for e in features:
            lines.append(f"  {str(e['encoder']):<24} {str(e['pooling']):<7} {str(e['hidden']):>6} {e['texts']:>7} "
                         f"{_human(e['bytes']):>9}  {e['entry']}")
    return "\n".join(lines)


def clear_cache(name: str | None = None, everything: bool = False) -> str:
    """Remove the view entries of augmentation ``name`` and the feature entries of encoder ``name``
    (or entry directory ``name``), or all of them."""
    if not everything and not name:
        raise UserError("Say what to clear: `testbed cache clear --all`, or `testbed cache clear NAME` with an "
                        "augmentation or encoder name from `testbed cache`.")
    root = cache_root()
    entries = cache_entries(root)
    features_root = root.parent / FEATURES
    features = feature_entries(features_root)
    chosen = entries if everything else [e for e in entries if name in (e["augmentation"], e["entry"])]
    chosen_features = features if everything else [e for e in features if name in (e["encoder"], e["entry"])]
    if not everything and not chosen and not chosen_features:
        names = sorted({e["augmentation"] for e in entries}) + sorted({f"{e['encoder']} (features)" for e in features})
        what = "views or features" if features else "views"
        return f"No cached {what} of {name!r}. Cached: {', '.join(names) if names else '(nothing)'}."
    messages = []
    for directory, picked, kind in ((root, chosen, "view"), (features_root, chosen_features, "feature")):
        for e in picked:
            shutil.rmtree(directory / e["entry"], ignore_errors=True)
        if everything and directory.is_dir():
            shutil.rmtree(directory, ignore_errors=True)
        if picked or (everything and kind == "view"):
            freed = sum(e["bytes"] for e in picked)
            messages.append(f"Removed {len(picked)} {kind} entr{'y' if len(picked) == 1 else 'ies'} ({_human(freed)}) from {directory}.")
    return " ".join(messages)


# --------------------------------------------------------------------------- diversity and fidelity


def word_edit_stats(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """(Levenshtein distance, longest common subsequence) of two word lists, one numpy row at a time."""
    if not a or not b:
        return max(len(a), len(b)), 0
    ids: dict[str, int] = {}
    x = [ids.setdefault(w, len(ids)) for w in a]
    y = np.asarray([ids.setdefault(w, len(ids)) for w in b])
    cols = np.arange(len(y) + 1)
    lev, lcs = cols.copy(), np.zeros(len(y) + 1, dtype=np.int64)
    row, common = np.empty_like(lev), np.zeros_like(lcs)
    for i, word in enumerate(x, 1):
        match = y == word
        row[0] = i
        np.minimum(lev[:-1] + ~match, lev[1:] + 1, out=row[1:])  # substitute / delete; then insertions:
        lev = np.minimum.accumulate(row - cols) + cols
        common[1:] = np.maximum(lcs[1:], np.where(match, lcs[:-1] + 1, 0))
        lcs = np.maximum.accumulate(common)
    return int(lev[-1]), int(lcs[-1])


def summarize_augmentation(spec: Any, texts: Sequence[str], *, registry=None, seed: int = 0, model=None, tokenizer=None,
                           max_length: int = 128, batch_size: int = 64) -> dict[str, Any]:
    """Diversity and fidelity of one augmentation on ``texts`` (one view per text, variant 0):

    - ``unchanged``: share of views equal to their text;
    - ``tokens_changed``: mean share of a text's words that do not survive, in order, in its view
      (1 - LCS / words);
    - ``edit_distance``: mean word-level Levenshtein distance / the longer length;
    - ``length_ratio``: mean words(view) / words(text);
    - ``agreement``: with ``model`` and ``tokenizer`` (a sequence classifier), the share of texts
      whose predicted class is the same on the view (None without a model);
    - ``sentences_per_second`` of the augmentation itself.

    ``pandas.DataFrame([summarize_augmentation(s, texts) for s in specs])`` is a comparison table.
    """
    texts = list(texts)
    augment, canonical, _ = build(spec, registry)
    seeds = view_seeds(text_digests(texts), seed, "summary", np.zeros(len(texts), dtype=np.int64))
    started = time.perf_counter()
    views = augment(texts, seeds)
    seconds = time.perf_counter() - started
    changed, edits, ratios = [], [], []
    for text, view in zip(texts, views):
        a, b = text.split(), view.split()
        distance, common = word_edit_stats(a, b)
        changed.append(1 - common / len(a) if a else float(bool(b)))
        edits.append(distance / max(len(a), len(b), 1))
        ratios.append(len(b) / len(a) if a else 1.0)
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    row = {"augmentation": canonical["name"], "spec": json.dumps(canonical, sort_keys=True), "texts": len(texts),
           "unchanged": mean([v == t for v, t in zip(views, texts)]), "tokens_changed": mean(changed),
           "edit_distance": mean(edits), "length_ratio": mean(ratios), "agreement": None,
           "sentences_per_second": len(texts) / seconds if seconds > 0 else None}
    if model is not None and tokenizer is not None and texts:
        from testbed.model import predict

        before = predict(model, tokenizer, texts, max_length, batch_size).argmax(-1)
        after = predict(model, tokenizer, views, max_length, batch_size).argmax(-1)
        row["agreement"] = float((before == after).mean())
    return row


def summarize_augmentations(specs: Sequence[Any], texts: Sequence[str], **kwargs):
    """One ``summarize_augmentation`` row per spec, as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([summarize_augmentation(spec, texts, **kwargs) for spec in specs])


__all__ = ["Views", "ViewStream", "build", "build_augmentation", "cache_entries", "cache_report", "cache_root", "clear_cache",
           "open_views", "summarize_augmentation", "summarize_augmentations", "text_digests", "view_seeds", "word_edit_stats"]
