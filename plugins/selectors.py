"""Pseudo-label selectors: teacher probabilities -> targets and per-example weights."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from testbed import BaseSelector, Selection, Selector, hookimpl


@dataclass(frozen=True)
class ThresholdOptions:
    threshold: float = 0.95  # keep examples whose top teacher probability is at least this
    soft: bool = False  # soft (sharpened) targets as in UDA instead of one-hot labels as in FixMatch
    temperature: float = 1.0  # sharpening of soft targets: p^(1/T), renormalised

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"selector.threshold must be in [0, 1], got {self.threshold}")
        if self.temperature <= 0:
            raise ValueError(f"selector.temperature must be positive, got {self.temperature}")


class ThresholdSelector(BaseSelector):
    """FixMatch (Sohn et al. 2020): weight 1 where max_c p_c >= τ, else 0. The mask is taken
    on the teacher's own probabilities, before any sharpening (as in FixMatch and UDA)."""

    def __init__(self, options: ThresholdOptions, context):
        self.options = options

    def select(self, probs, indices, step):
        confidence, predicted = probs.max(-1)
        weights = (confidence >= self.options.threshold).float()
        if self.options.soft:
            targets = (probs.log() / self.options.temperature).softmax(-1)
        else:
            targets = F.one_hot(predicted, probs.shape[-1]).float()
        return Selection(targets=targets, weights=weights)

    def stats(self):
        return {"threshold": self.options.threshold}


class KeepAll(BaseSelector):
    """Every example, weight 1, the teacher's probabilities as targets (Π-model, Mean Teacher)."""

    def __init__(self, options, context):
        pass

    def select(self, probs, indices, step):
        return Selection(targets=probs, weights=torch.ones(probs.shape[0]))


@hookimpl
def testbed_selectors():
    return [
        Selector(name="threshold", summary="fixed confidence threshold τ; hard or sharpened targets",
                 factory=ThresholdSelector, options=ThresholdOptions),
        Selector(name="none", summary="keep every example with weight 1; teacher probabilities as targets",
                 factory=KeepAll),
    ]
