"""Augmentations made of augmentations: ``sequence`` (in order), ``one_of`` (one at random per
text) and ``randaugment`` (N random operations at magnitude M). Their steps are augmentation
specs, checked by the config like ``augmentation.strong`` itself::

    [augmentation.strong]
    name = "sequence"
    steps = [{name = "drop_swap", p_delete = 0.2}, {name = "token_mask", p = 0.1}]

Every step gets its own per-text seeds derived from the text's seed, so a view still depends
only on the text, its seed and the spec.

Tagged examples (``augmentation.labeled`` of a token task) pass through a composition made only of
augmentations that serve them (keep every word in place, or rewrite the tags: ``mention_replace``),
with the same draws as plain texts: ``{name = "one_of", choices = ["identity", "mention_replace"]}``
replaces mentions in half the draws. A composition with one part that needs gold tags needs them too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from testbed import Augmentation, AugmentationSpec, Augmenter, hookimpl
from testbed_plugins._text import check_probability, derive_seeds, uniforms


def apply_grouped(augments, choice: np.ndarray, texts: list[str], seeds: np.ndarray, salt: int) -> list[str]:
    """Text i through ``augments[choice[i]]`` (-1: as it is), one batched call per augmentation."""
    out = list(texts)
    for k, augment in enumerate(augments):
        members = np.flatnonzero(choice == k)
        if len(members):
            views = augment([texts[i] for i in members], derive_seeds(seeds[members], salt + k))
            for i, view in zip(members.tolist(), views):
                out[i] = view
    return out


def apply_grouped_tagged(augments, choice: np.ndarray, texts: list[str], tags: list, seeds: np.ndarray, salt: int):
    """``apply_grouped`` for tagged examples: (views, their tags), with the same seeds per text."""
    out, out_tags = list(texts), list(tags)
    for k, augment in enumerate(augments):
        members = np.flatnonzero(choice == k)
        if len(members):
            views, new = augment.tagged([texts[i] for i in members], [tags[i] for i in members],
                                        derive_seeds(seeds[members], salt + k))
            for i, view, tag in zip(members.tolist(), views, new):
                out[i], out_tags[i] = view, tag
    return out, out_tags


def composed(augment, tagged, parts) -> Augmenter:
    """A composition's augmenter: it keeps words when every part does, passes tagged examples through
    (``tagged``) when every part serves them, and needs gold tags when any part does."""
    serve = all(getattr(part, "serves_tags", getattr(part, "keeps_words", False)) for part in parts)
    return Augmenter(augment, keeps_words=_all_keep_words(parts), tagged=tagged if serve else None,
                     needs_tags=any(getattr(part, "needs_tags", False) for part in parts))


@dataclass(frozen=True)
class SequenceOptions:
    steps: list[AugmentationSpec] = field(default_factory=list)  # applied in order

    def __post_init__(self):
        if not self.steps:
            raise ValueError('sequence needs steps, e.g. steps = [{name = "drop_swap"}, {name = "token_mask", p = 0.1}]')


def sequence(options: SequenceOptions, context):
    steps = [context.build(spec) for spec in options.steps]

    def augment(texts, seeds):
        for k, step in enumerate(steps):
            texts = step(texts, derive_seeds(seeds, 1 + k))
        return texts

    def augment_tagged(texts, tags, seeds):
        for k, step in enumerate(steps):
            texts, tags = step.tagged(texts, tags, derive_seeds(seeds, 1 + k))
        return texts, tags

    return composed(augment, augment_tagged, steps)


def _all_keep_words(augments) -> bool:
    """A composition keeps every word in place when each of its parts does."""
    return all(getattr(augment, "keeps_words", False) for augment in augments)


@dataclass(frozen=True)
class OneOfOptions:
    choices: list[AugmentationSpec] = field(default_factory=list)  # one of these per text
    weights: list[float] = field(default_factory=list)  # relative weights; empty = uniform

    def __post_init__(self):
        if not self.choices:
            raise ValueError('one_of needs choices, e.g. choices = ["word_swap", "token_mask"]')
        if self.weights and (len(self.weights) != len(self.choices) or min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"one_of weights must be {len(self.choices)} non-negative numbers with a positive sum, "
                             f"got {self.weights}")


def one_of(options: OneOfOptions, context):
    choices = [context.build(spec) for spec in options.choices]
    weights = np.asarray(options.weights or [1.0] * len(choices), dtype=float)
    edges = np.cumsum(weights / weights.sum())[:-1]

    def choose(seeds):
        u, _ = uniforms(seeds, [1] * len(seeds), salt=6)
        return np.searchsorted(edges, u, side="right")

    def augment(texts, seeds):
        return apply_grouped(choices, choose(seeds), texts, seeds, salt=1)

    def augment_tagged(texts, tags, seeds):
        return apply_grouped_tagged(choices, choose(seeds), texts, tags, seeds, salt=1)

    return composed(augment, augment_tagged, choices)


DEFAULT_OPS = ["word_delete", "word_swap", {"name": "word_mask", "span": 2.0}, "token_dropout", "token_mask"]


@dataclass(frozen=True)
class RandAugmentOptions:
    n: int = 2  # operations per view, drawn without repetition per text, applied in the drawn order
    magnitude: float = 0.15  # M: sets the option p of every operation that has one (a probability)
    ops: list[AugmentationSpec] = field(default_factory=lambda: list(DEFAULT_OPS))

    def __post_init__(self):
        check_probability(self, "magnitude")
        if not self.ops:
            raise ValueError("randaugment needs ops")
        if not 1 <= self.n <= len(self.ops):
            raise ValueError(f"randaugment's n must be between 1 and the number of ops ({len(self.ops)}), got {self.n}")


def randaugment(options: RandAugmentOptions, context):
    """RandAugment (Cubuk et al. 2020) for text: per view, n operations at one shared magnitude."""
    ops = []
    for spec in options.ops:
        spec = {"name": spec} if isinstance(spec, str) else spec
        if "p" in {f.name for f in dataclasses.fields(context.options(spec))}:
            spec = {**spec, "p": options.magnitude}
        ops.append(context.build(spec))
    n = options.n

    def draw_order(seeds):
        u, _ = uniforms(seeds, [len(ops)] * len(seeds), salt=7)
        return np.argsort(np.asarray(u).reshape(len(seeds), len(ops)), axis=1, kind="stable")[:, :n]

    def augment(texts, seeds):
        order = draw_order(seeds)
        for position in range(n):
            texts = apply_grouped(ops, order[:, position], texts, seeds, salt=100 * (position + 1))
        return texts

    def augment_tagged(texts, tags, seeds):
        order = draw_order(seeds)
        for position in range(n):
            texts, tags = apply_grouped_tagged(ops, order[:, position], texts, tags, seeds, salt=100 * (position + 1))
        return texts, tags

    return composed(augment, augment_tagged, ops)


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="sequence", summary="augmentations applied in order (steps = [spec, ...])",
                     factory=sequence, options=SequenceOptions),
        Augmentation(name="one_of", summary="one augmentation per text, drawn from choices (optionally weighted)",
                     factory=one_of, options=OneOfOptions),
        Augmentation(name="randaugment", summary="RandAugment for text: n random ops per view, each at magnitude M",
                     factory=randaugment, options=RandAugmentOptions),
    ]
