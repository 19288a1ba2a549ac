"""Text augmentations. Each takes a batch of texts and one seed per text, so a text's view
depends only on the text, its seed and the options, never on the rest of the batch."""

from dataclasses import dataclass

import numpy as np

from testbed import Augmentation, hookimpl


def identity(options):
    return lambda texts, seeds: list(texts)


@dataclass(frozen=True)
class DropSwapOptions:
    p_delete: float = 0.1  # each word is deleted with this probability (at least one word stays)
    p_swap: float = 0.1  # round(p_swap · words) random pairs of words are swapped (at least one)

    def __post_init__(self):
        for key in ("p_delete", "p_swap"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"augmentation option {key} must be in [0, 1], got {getattr(self, key)}")


def drop_swap(options: DropSwapOptions):
    """Random word deletion then random swaps (EDA's RD and RS, Wei & Zou 2019)."""

    def augment_one(text: str, seed: int) -> str:
        words = text.split()
        if len(words) < 2 or options.p_delete == options.p_swap == 0:
            return text  # nothing to delete or swap without losing the text
        rng = np.random.default_rng(seed)
        kept = [w for w, drop in zip(words, rng.random(len(words)) < options.p_delete) if not drop]
        words = kept or [words[rng.integers(len(words))]]
        if options.p_swap > 0 and len(words) >= 2:
            for _ in range(max(1, round(options.p_swap * len(words)))):
                i, j = rng.choice(len(words), size=2, replace=False)
                words[i], words[j] = words[j], words[i]
        return " ".join(words)

    return lambda texts, seeds: [augment_one(t, int(s)) for t, s in zip(texts, seeds)]


@hookimpl
def testbed_augmentations():
    return [
        Augmentation(name="identity", summary="the text unchanged", factory=identity),
        Augmentation(name="drop_swap", summary="random word deletion + random word swaps (EDA RD+RS)",
                     factory=drop_swap, options=DropSwapOptions),
    ]
