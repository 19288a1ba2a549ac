"""Consistency distances: student logits [B, C] vs target probabilities [B, C] -> [B]."""

from dataclasses import dataclass

import torch

from testbed import Distance, hookimpl


def l1(options):
    """Σ_c |p_c - t_c| between the student's probabilities and the targets."""
    return lambda logits, targets: (logits.softmax(-1) - targets).abs().sum(-1)


def l2(options):
    """Σ_c (p_c - t_c)², the squared error on probabilities (Π-model, Mean Teacher; USB averages over classes instead)."""
    return lambda logits, targets: (logits.softmax(-1) - targets).pow(2).sum(-1)


@dataclass(frozen=True)
class KLOptions:
    temperature: float = 1.0  # softens the student: KL(t ‖ softmax(z / T)) · T², as in distillation

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"distance.temperature must be positive, got {self.temperature}")


def kl(options):
    """KL(target ‖ student); 0·log 0 counts as 0, so one-hot targets are fine."""
    t = options.temperature

    def distance(logits, targets):
        log_q = (logits / t).log_softmax(-1)
        return (torch.xlogy(targets, targets) - targets * log_q).sum(-1) * t * t

    return distance


def ce(options):
    """Cross-entropy -Σ_c t_c log p_c: with one-hot targets, the usual hard pseudo-label loss."""
    return lambda logits, targets: -(targets * logits.log_softmax(-1)).sum(-1)


@hookimpl
def testbed_distances():
    return [
        Distance(name="l1", summary="L1 distance between probability vectors", factory=l1),
        Distance(name="l2", summary="squared L2 distance between probability vectors", factory=l2),
        Distance(name="kl", summary="KL(target ‖ student), optional temperature", factory=kl, options=KLOptions),
        Distance(name="ce", summary="cross-entropy to hard or soft targets", factory=ce),
    ]
