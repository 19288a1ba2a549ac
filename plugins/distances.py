"""Consistency distances: student logits [B, C] vs target probabilities [B, C] -> [B]."""

from dataclasses import dataclass

import torch

from testbed import Distance, hookimpl


def l1(options, context):
    """Σ_c |p_c - t_c| between the student's probabilities and the targets."""
    return lambda logits, targets: (logits.softmax(-1) - targets).abs().sum(-1)


def l2(options, context):
    """Σ_c (p_c - t_c)², the squared error on probabilities (Π-model, Mean Teacher; USB averages over classes instead)."""
    return lambda logits, targets: (logits.softmax(-1) - targets).pow(2).sum(-1)


@dataclass(frozen=True)
class KLOptions:
    temperature: float = 1.0  # softens the student: KL(t ‖ softmax(z / T)) · T², as in distillation

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"distance.temperature must be positive, got {self.temperature}")


def kl(options, context):
    """KL(target ‖ student); 0·log 0 counts as 0, so one-hot targets are fine."""
    t = options.temperature

    def distance(logits, targets):
        log_q = (logits / t).log_softmax(-1)
        return (torch.xlogy(targets, targets) - targets * log_q).sum(-1) * t * t

    return distance


def ce(options, context):
    """Cross-entropy -Σ_c t_c log p_c: with one-hot targets, the usual hard pseudo-label loss."""
    return lambda logits, targets: -(targets * logits.log_softmax(-1)).sum(-1)


def js(options, context):
    """Jensen-Shannon divergence (Lin 1991), natural log, per example:

        JS(p, t) = ½ KL(p ‖ m) + ½ KL(t ‖ m),   m = (p + t) / 2,   p = softmax(logits)

    Symmetric, bounded by ln 2 (so one confidently wrong pseudo-label cannot dominate the batch
    the way it does under cross-entropy), and 0 only when p = t. 0·log 0 counts as 0.
    """

    def distance(logits, targets):
        log_p = logits.log_softmax(-1)  # finite even where softmax underflows to 0
        p = log_p.exp()
        # m >= t/2 > 0 wherever t > 0, and m >= p/2 > 0 wherever p > 0; the clamp only guards the
        # case where both are exactly 0 (float underflow), whose terms are 0 · finite anyway.
        log_m = ((p + targets) / 2).clamp_min(torch.finfo(logits.dtype).tiny).log()
        student_side = (p * (log_p - log_m)).sum(-1)
        target_side = (torch.xlogy(targets, targets) - targets * log_m).sum(-1)
        return (student_side + target_side) / 2

    return distance


@hookimpl
def testbed_distances():
    return [
        Distance(name="l1", summary="L1 distance between probability vectors", factory=l1),
        Distance(name="l2", summary="squared L2 distance between probability vectors", factory=l2),
        Distance(name="kl", summary="KL(target ‖ student), optional temperature", factory=kl, options=KLOptions),
        Distance(name="ce", summary="cross-entropy to hard or soft targets", factory=ce),
        Distance(name="js", summary="Jensen-Shannon divergence, symmetric and bounded by ln 2", factory=js),
    ]
