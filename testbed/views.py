"""Augmentation views: built from specs, seeded per text, cached on disk, summarised.

The loop asks for the weak and strong views of the unlabeled examples it draws. Pool text i at
its n-th draw gets variant ``v = n mod K`` (K = ``train.view_variants``; K = 0: ``v = n``, a fresh
view every draw, never cached). Variant v of a text is ``augment([text], [s])`` with the seed
``s = hash(text, run seed, weak|strong, v)``: it depends on the text itself, not on its position
in the pool, so runs with different pools (label budgets, limits) share views.

Views are cached in the store (testbed.store, kind ``views``: ``$TESTBED_CACHE/views``), one
entry per (augmentation spec with every option, fingerprint of files it reads, seed, weak|strong)
holding views by (text digest, variant). Only what a run draws is computed, a batch at a time,
and written as a new shard when the run evaluates (or FLUSH_EVERY views wait). An augmenter
that declares ``passthrough`` (identity: its views are its texts) never touches the cache.

``augmentation.labeled`` augments the labeled batch (``LabeledViews``): a labeled example's n-th draw
is ``augment([text], [hash(text, run seed, "labeled", n)])``, never cached; a token task's examples
go through ``Augmenter.tagged`` with their gold tags (mention replacement rewrites them), sentence
labels stay. Identity leaves the loop the labeled examples themselves.

``summarize_augmentation`` measures an augmentation on a sample: how much it changes the text
and whether a model still predicts the same class.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from testbed.config import resolve_augmentation
from testbed.store import CacheEntry, store_dir, text_digests
from testbed.types import AugmentationContext, Augmenter, Texts

FORMAT = 1  # joins each entry's key: a change of what a view is makes new entries
FLUSH_EVERY = 50_000  # views held in memory before they are written without waiting for an evaluation
ROLES = ("weak", "strong")
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- building augmentations

_registry_cache: list = []


def _default_registry():
    if not _registry_cache:
        from testbed.plugins import load_plugins

        _registry_cache.append(load_plugins())
    return _registry_cache[0]


def build(spec: Any, registry=None, where: str = "augmentation", pool: Sequence[str] | None = None,
          labeled: Texts | None = None, label_names: Sequence[str] = ()) -> tuple[Augmenter, dict, str]:
    """A spec (name or table) -> (augmenter, canonical spec, fingerprint). The fingerprint joins the
    ``fingerprint`` of the augmenter and of everything it composes. Augmenters are fitted on
    ``pool`` (``Augmenter.fit``, e.g. tf-idf statistics) before their fingerprint is read, and on a
    tagged ``labeled`` set (``Augmenter.fit_labeled``, with the tags' ``label_names``)."""
    registry = registry or _default_registry()
    record, options, canonical = resolve_augmentation(spec, registry, where)
    nested: list[str] = []

    def build_nested(inner):
        augment, _, fingerprint = build(inner, registry, f"{where} (nested)", pool, labeled, label_names)
        nested.append(fingerprint)
        return augment

    context = AugmentationContext(build=build_nested, options=lambda inner: resolve_augmentation(inner, registry, where)[1])
    augment = record.factory(options, context)
    if not isinstance(augment, Augmenter):  # a plain augment(texts, seeds) function
        augment = Augmenter(augment)
    if pool is not None:
        augment.fit(list(pool))
    if labeled is not None and labeled.tags is not None:
        augment.fit_labeled(list(labeled.texts), list(labeled.tags), tuple(label_names))
    own = augment.fingerprint or ""
    fingerprint = own if not any(nested) else hashlib.sha256("|".join([own, *nested]).encode()).hexdigest()[:16]
    return augment, canonical, fingerprint


def build_augmentation(spec: Any, registry=None) -> Callable:
    """``augment(texts, seeds) -> views`` for a spec, e.g. ``build_augmentation({"name": "eda", "alpha_sr": 0})``."""
    return build(spec, registry)[0]


# --------------------------------------------------------------------------- seeds and digests


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


# --------------------------------------------------------------------------- the cache


def cache_root() -> Path:
    """Where views are cached: ``<cache dir>/views``; never inside the shared data."""
    return store_dir("views")


def view_entry(root: Path, spec: dict, fingerprint: str, seed: int, role: str) -> CacheEntry:
    """The store entry of one spec, fingerprint, seed and role: views by (text digest, variant)."""
    # the key is what views' meta.json held before the store existed, so those entries stay readable
    key = {"format": FORMAT, "augmentation": spec["name"], "spec": spec, "fingerprint": fingerprint, "seed": seed, "role": role}
    columns = {"augmentation": spec["name"], "role": role, "seed": seed, "options": {k: v for k, v in spec.items() if k != "name"}}
    return CacheEntry(root, key, name=spec["name"], description="augmentation views", columns=columns, variants=True,
                      flush_every=FLUSH_EVERY)


class ViewStream:
    """One view (weak or strong) of the unlabeled pool, read from the cache or computed. With
    ``keep_words`` every view drawn must have as many words as its text (token tasks)."""

    def __init__(self, augment: Callable, spec: dict, fingerprint: str, role: str, pool: Sequence[str], seed: int,
                 variants: int, root: Path | None, keep_words: bool = False):
        self.augment, self.spec, self.role, self.pool, self.seed = augment, spec, role, pool, seed
        self.passthrough = getattr(augment, "passthrough", False)  # views are the texts: no cache, no digests
        self.keep_words = keep_words and not self.passthrough
        cached = root is not None and variants > 0 and not self.passthrough
        self.entry = view_entry(root, spec, fingerprint, seed, role) if cached else None
        self.table = self.entry.items if self.entry else {}  # (text digest, variant) -> view; stays empty uncached
        self.digests = None if self.passthrough else text_digests(pool)
        self.computed = self.drawn = self.unchanged = 0

    def draw(self, indices: np.ndarray, variants: np.ndarray) -> list[str]:
        pool = self.pool
        if self.passthrough:
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
                self.entry.add(fresh)
        self.drawn += len(views)
        self.unchanged += sum(1 for view, i in zip(views, indices.tolist()) if view == pool[i])
        if self.keep_words:
            self._check_words(views, indices)
        return views

    def _check_words(self, views: list[str], indices: np.ndarray) -> None:
        from testbed.errors import UserError

        for view, i in zip(views, indices.tolist()):
            before, after = len(self.pool[i].split()), len(view.split())
            if before != after:
                raise UserError(f"augmentation.{self.role} = {self.spec['name']!r} changed a text's number of words ({before} -> "
                                f"{after}): {self.pool[i][:80]!r} -> {view[:80]!r}. A token task needs views that keep every "
                                "word in place (each word keeps its tag); choose another augmentation or other options.")

    def flush(self) -> None:
        if self.entry is not None:
            self.entry.flush()

    def take_unchanged(self) -> float | None:
        """Share of views equal to their text since the last call (None: passthrough, or none drawn)."""
        share = None if self.passthrough or not self.drawn else self.unchanged / self.drawn
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

    def state_dict(self) -> dict[str, Any]:
        """How often each text was drawn (its next variant), for mid-run checkpoints: taken after an
        evaluation, when the streams' counts are fresh and their new views on disk."""
        return {"draws": self.draws.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = np.asarray(state["draws"], dtype=np.int64)

    def stats(self) -> dict[str, float | None]:
        """For the evaluation record: share of views the augmentation left unchanged; new views go to disk."""
        self.flush()
        return {f"views_unchanged/{role}": stream.take_unchanged() for role, stream in zip(ROLES, (self.weak, self.strong))}

    def flush(self) -> None:
        self.weak.flush()
        self.strong.flush()


def open_views(cfg, pool: Sequence[str], registry=None, aligned: str | None = None) -> Views:
    """The views of a run: its augmentation choices, seed and ``train.view_variants``. ``aligned``
    (what needs it, e.g. "token task 'token' of dataset 'conll2003'"): views must keep every word in
    place; an augmentation that does not declare it (``Augmenter.keeps_words``) is refused here,
    and a view whose word count differs anyway stops the run when it is drawn."""
    streams = []
    root = None
    for role in ROLES:
        spec = cfg.resolved["augmentation"][role]
        augment, canonical, fingerprint = build(spec, registry, f"augmentation.{role}", pool)
        if getattr(augment, "needs_tags", False):
            from testbed.errors import UserError

            raise UserError(f"augmentation.{role} = {canonical['name']!r} needs gold tags, which the unlabeled pool has not; "
                            f"use it as augmentation.labeled (the labeled batch of a token task), e.g. "
                            f"augmentation.labeled={canonical['name']}, and another augmentation as augmentation.{role}.")
        if aligned and not getattr(augment, "keeps_words", False):
            from testbed.errors import UserError

            raise UserError(f"augmentation.{role} = {canonical['name']!r} does not keep every word in place (with these options "
                            f"it may delete, insert, move, split or merge words), so its views cannot carry the words' tags that "
                            f"the {aligned} needs. These keep them (with their default options): {', '.join(words_keeping(registry))}, and "
                            f"sequence, one_of or randaugment made of them only. E.g. augmentation.{role}=word_mask.")
        if root is None and not getattr(augment, "passthrough", False) and cfg.train.view_variants > 0:
            root = cache_root()
        streams.append(ViewStream(augment, canonical, fingerprint, role, pool, cfg.seed, cfg.train.view_variants, root,
                                  keep_words=bool(aligned)))
    return Views(*streams, pool_size=len(pool), variants=cfg.train.view_variants)


def words_keeping(registry=None) -> list[str]:
    """Names of the augmentations whose views keep every word in place with their default options."""
    registry = registry or _default_registry()
    return sorted(name for name, (record, _) in registry.records["augmentation"].items() if getattr(record, "keeps_words", False))


def tags_serving(registry=None) -> list[str]:
    """Names of the augmentations that can augment tagged examples with their default options: they keep
    every word in place, or rewrite the tags with the words (``Augmentation.tagged``)."""
    registry = registry or _default_registry()
    return sorted(name for name, (record, _) in registry.records["augmentation"].items()
                  if getattr(record, "keeps_words", False) or getattr(record, "tagged", False))


# --------------------------------------------------------------------------- the labeled batch


class LabeledViews:
    """``augmentation.labeled``: the labeled batch, augmented. A labeled example's n-th draw gets the seed
    ``hash(text, run seed, "labeled", n)``, a fresh view every draw (the labeled set is small and
    these views cheap: nothing is cached); its draw counts go in checkpoints, so a resumed run draws
    the same views. Tagged examples (a token task) go through ``Augmenter.tagged`` and come back with
    each view's tags; sentence labels stay as they were."""

    def __init__(self, augment: Augmenter, spec: dict, examples: Texts, seed: int):
        self.augment, self.spec, self.examples, self.seed = augment, spec, examples, seed
        self.digests = text_digests(examples.texts)
        self.draws = np.zeros(len(examples), dtype=np.int64)

    def draw(self, indices) -> tuple[Texts, np.ndarray]:
        """(the batch's examples, the rows of ``indices`` in them): the views of labeled examples ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        n = np.empty(len(indices), dtype=np.int64)
        for j, i in enumerate(indices.tolist()):  # an example drawn twice in one batch gets two views
            n[j] = self.draws[i]
            self.draws[i] += 1
        seeds = view_seeds(self.digests[indices], self.seed, "labeled", n)
        texts, examples = [self.examples.texts[i] for i in indices.tolist()], self.examples
        if examples.tags is None:
            views, tags = self.augment(texts, seeds), None
        else:
            views, tags = self.augment.tagged(texts, [examples.tags[i] for i in indices.tolist()], seeds)
        self._check(texts, views, tags)
        return Texts(views, examples.labels[indices], tags), np.arange(len(indices))

    def _check(self, texts: list[str], views: list, tags: list[np.ndarray] | None) -> None:
        from testbed.errors import UserError

        name = self.spec["name"]
        if len(views) != len(texts) or not all(isinstance(v, str) for v in views):
            raise UserError(f"augmentation.labeled = {name!r} must return one string per text; got {len(views)} items for "
                            f"{len(texts)} texts. Fix the augmentation or choose another.")
        for text, view, tag in zip(texts, views, tags if tags is not None else [None] * len(views)):
            if tag is not None and len(view.split()) != len(tag):
                raise UserError(f"augmentation.labeled = {name!r} returned {len(view.split())} words with {len(tag)} tags: "
                                f"{text[:80]!r} -> {view[:80]!r}. A tagged view needs one tag per word; fix the augmentation "
                                "or choose another.")

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = np.asarray(state["draws"], dtype=np.int64)


def open_labeled_views(cfg, labeled: Texts, label_names: Sequence[str], registry=None,
                       task: str = "the token task") -> LabeledViews | None:
    """``augmentation.labeled`` of a run, fitted on its labeled set; None for identity (the loop then
    trains on the labeled examples themselves, at no cost). Refused before training: on tagged
    examples (``task`` names what needs them) an augmentation that neither keeps every word in place
    nor rewrites the tags; on sentence labels one that needs gold tags."""
    from testbed.errors import UserError

    spec = cfg.resolved["augmentation"].get("labeled", {"name": "identity"})
    augment, canonical, _ = build(spec, registry, "augmentation.labeled", labeled=labeled, label_names=label_names)
    name = canonical["name"]
    if labeled.tags is None and getattr(augment, "needs_tags", False):
        raise UserError(f"augmentation.labeled = {name!r} needs gold tags (words with a tag each, e.g. conll2003), but dataset "
                        f"{cfg.dataset.name!r} has a label per text. Choose an augmentation for texts, e.g. augmentation.labeled=eda.")
    if labeled.tags is not None and not getattr(augment, "serves_tags", getattr(augment, "keeps_words", False)):
        raise UserError(f"augmentation.labeled = {name!r} neither keeps every word in place nor rewrites the tags (with these "
                        f"options), so its views of the labeled sentences would lose the word tags {task} trains on. These work "
                        f"(with their default options): {', '.join(tags_serving(registry))}, and sequence, one_of or "
                        "randaugment made of them only. E.g. augmentation.labeled=mention_replace.")
    if augment.passthrough:
        return None
    return LabeledViews(augment, canonical, labeled, cfg.seed)


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


__all__ = ["LabeledViews", "ViewStream", "Views", "build", "build_augmentation", "cache_root", "open_labeled_views", "open_views", "summarize_augmentation",
           "summarize_augmentations", "tags_serving", "text_digests", "view_entry", "view_seeds", "word_edit_stats"]
