"""Schedules: λ(t), the weight of the consistency loss (config key ``schedule``), and η(t), the
training-signal-annealing threshold of the supervised loss (config key ``tsa``).

Every schedule is a function of the 1-based optimizer step t = 1 … T, T = ``ctx.steps``. Ramps
are expressed as a fraction of T, never in absolute steps, so that a ramp tuned on one budget
means the same thing on another (the lesson of DESIGN.md: USB's warm-ups, sized for 102,400
iterations, never ended in a 480-step run). With 1-based t the last step reaches the end value
exactly; the first step is 1/T of the way, not 0 (TF's 0-based ``global_step`` gives the reverse).
"""

import math
from dataclasses import dataclass

from testbed import Schedule, hookimpl


@dataclass(frozen=True)
class ConstantOptions:
    weight: float = 1.0  # λ; 0 turns the consistency term (and the unlabeled batch) off

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"schedule.weight must be 0 or more, got {self.weight}")


def constant(options: ConstantOptions, context):
    return lambda step: options.weight


@dataclass(frozen=True)
class DelayedOptions:
    weight: float = 1.0  # λ after the start
    start: float = 0.25  # the fraction of the run trained on labeled data only (λ = 0)

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"schedule.weight must be 0 or more, got {self.weight}")
        if not 0 <= self.start < 1:
            raise ValueError(f"schedule.start must be in [0, 1) (a fraction of train.steps), got {self.start}")


def delayed(options: DelayedOptions, context):
    """λ(t) = 0 for t ≤ T_start = round(start · T), then weight: a supervised phase first. Noisy
    Student's first teacher is trained on the labeled data alone; with ``teacher.rounds = R`` and
    ``start = 1/R`` the first round is that teacher's training (the loop skips the unlabeled batch
    while λ = 0)."""
    first = round(options.start * context.steps)
    return lambda step: 0.0 if step <= first else options.weight


# --------------------------------------------------------------------------- λ(t) ramp-ups


@dataclass(frozen=True)
class RampOptions:
    weight: float = 1.0  # λ_max, reached at the end of the ramp and held after it
    ramp: float = 0.3  # ramp length as a fraction of the run (Laine & Aila: 80 of 300 epochs ≈ 0.27)

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"schedule.weight must be 0 or more, got {self.weight}")
        if not 0 <= self.ramp <= 1:
            raise ValueError(f"schedule.ramp must be in [0, 1] (a fraction of train.steps), got {self.ramp}")


def _progress(options: RampOptions, context):
    """x(t) = min(1, t / T_ramp) with T_ramp = round(ramp · T) whole steps (so 0.3 · 100 ends at step
    30 exactly, not at 30.000000000000004); a zero-length ramp is already done."""
    length = round(options.ramp * context.steps)
    return lambda step: 1.0 if length <= 0 else min(1.0, step / length)


def linear(options: RampOptions, context):
    """λ(t) = weight · min(1, t / T_ramp): a straight ramp from 0, then flat."""
    x = _progress(options, context)
    return lambda step: options.weight * x(step)


def sigmoid(options: RampOptions, context):
    """Laine & Aila 2017 (Temporal Ensembling, also Mean Teacher's ramp-up):
    λ(t) = weight · exp(−5 (1 − x)²), x = min(1, t / T_ramp). Starts at weight·e⁻⁵ ≈ 0.7% of it."""
    x = _progress(options, context)
    return lambda step: options.weight * math.exp(-5.0 * (1.0 - x(step)) ** 2)


def cosine(options: RampOptions, context):
    """A half-cosine ramp-up: λ(t) = weight · (1 − cos(π x)) / 2, x = min(1, t / T_ramp).
    Flat at both ends of the ramp (zero slope), unlike the linear ramp."""
    x = _progress(options, context)
    return lambda step: options.weight * (1.0 - math.cos(math.pi * x(step))) / 2.0


@dataclass(frozen=True)
class DecreasingOptions:
    weight: float = 1.0  # λ at the start
    final: float = 0.1  # λ at the last step, as a fraction of weight

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"schedule.weight must be 0 or more, got {self.weight}")
        if not 0 <= self.final <= 1:
            raise ValueError(f"schedule.final must be in [0, 1] (a fraction of schedule.weight), got {self.final}")


def decreasing(options: DecreasingOptions, context):
    """Start large, then reduce: a linear decay over the whole run,
    λ(t) = weight · (final + (1 − final) · (1 − t / T)), from ≈ weight at t = 1 to final·weight at T.
    No single published form exists for this; it is the linear counterpart of the ramp-ups above."""
    steps = context.steps
    return lambda step: options.weight * (options.final + (1.0 - options.final) * (1.0 - min(1.0, step / steps)))


# --------------------------------------------------------------------------- TSA thresholds


def _tsa(alpha):
    """Xie et al. 2020 (UDA), google-research/uda ``get_tsa_threshold``:
    η_t = α_t · (1 − 1/K) + 1/K, rising from 1/K (chance) towards 1.

    The loop drops a labeled example from the supervised loss when the model's probability of its
    CORRECT class exceeds η_t, as UDA does (USB's port thresholded the max probability instead,
    which also masks confidently wrong examples: the ones that most need the gradient).
    """

    def factory(options, context):
        k, steps = context.num_classes, context.steps
        return lambda step: alpha(min(1.0, step / steps)) * (1.0 - 1.0 / k) + 1.0 / k

    return factory


tsa_linear = _tsa(lambda x: x)  # α_t = t/T
tsa_log = _tsa(lambda x: 1.0 - math.exp(-5.0 * x))  # α_t = 1 − exp(−5t/T): releases examples early; ends at 1 − e⁻⁵
tsa_exp = _tsa(lambda x: math.exp(5.0 * (x - 1.0)))  # α_t = exp(5(t/T − 1)): holds them back until late


@hookimpl
def testbed_schedules():
    return [
        Schedule(name="constant", summary="λ(t) = weight", factory=constant, options=ConstantOptions),
        Schedule(name="linear", summary="linear ramp-up 0 → weight over the first `ramp` fraction of the run",
                 factory=linear, options=RampOptions),
        Schedule(name="sigmoid", summary="Laine & Aila sigmoid ramp-up weight·exp(−5(1−t/T_ramp)²)",
                 factory=sigmoid, options=RampOptions),
        Schedule(name="cosine", summary="half-cosine ramp-up 0 → weight over the first `ramp` fraction",
                 factory=cosine, options=RampOptions),
        Schedule(name="delayed", summary="λ = 0 for the first `start` fraction of the run (supervised only), then weight",
                 factory=delayed, options=DelayedOptions),
        Schedule(name="decreasing", summary="linear decay weight → final·weight over the run",
                 factory=decreasing, options=DecreasingOptions),
        Schedule(name="tsa_linear", summary="UDA TSA threshold for tsa.name, α_t = t/T", factory=tsa_linear),
        Schedule(name="tsa_log", summary="UDA TSA threshold for tsa.name, α_t = 1 − exp(−5t/T)", factory=tsa_log),
        Schedule(name="tsa_exp", summary="UDA TSA threshold for tsa.name, α_t = exp(5(t/T − 1))", factory=tsa_exp),
    ]
