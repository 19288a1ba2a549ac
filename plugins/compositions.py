"""Augmentations made of augmentations: ``sequence`` (in order), ``one_of`` (one at random per
text) and ``randaugment`` (N random operations at magnitude M). Their steps are augmentation
specs, checked by the config like ``augmentation.strong`` itself::

    [augmentation.strong]
    name = "sequence"
    steps = [{name = "drop_swap", p_delete = 0.2}, {name = "token_mask", p = 0.1}]

Every step gets its own per-text seeds derived from the text's seed, so a view still depends
only on the text, its seed and the spec.
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

    return Augmenter(augment, keeps_words=_all_keep_words(steps))


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

    def augment(texts, seeds):
        u, _ = uniforms(seeds, [1] * len(texts), salt=6)
        return apply_grouped(choices, np.searchsorted(edges, u, side="right"), texts, seeds, salt=1)

    return Augmenter(augment, keeps_words=_all_keep_words(choices))


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

    def augment(texts, seeds):
        u, starts = uniforms(seeds, [len(ops)] * len(texts), salt=7)
        order = np.argsort(np.asarray(u).reshape(len(texts), len(ops)), axis=1, kind="stable")[:, :n]
        for position in range(n):
            texts = apply_grouped(ops, order[:, position], texts, seeds, salt=100 * (position + 1))
        return texts

    return Augmenter(augment, keeps_words=_all_keep_words(ops))


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
