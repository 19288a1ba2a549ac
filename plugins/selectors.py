"""Pseudo-label selectors: teacher probabilities -> targets and per-example weights.

Budget awareness (see "A lesson measured on the peer" in DESIGN.md): the published adaptive
selectors are tuned for 10^5-10^6 iterations. Here every warm-up and EMA momentum is sized to
the run's step budget by default; the docstring of each selector names the published default
it replaces, and every selector reports its thresholds through ``stats()`` so a report can show
one that never engaged.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from testbed import BaseSelector, Selection, Selector, UserError, hookimpl

# --------------------------------------------------------------------------- shared helpers


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"selector.{key} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _check_unit(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"selector.{key} must be in [0, 1], got {value}")


def _check_momentum(value: float | None) -> None:
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"selector.ema_momentum must be in [0, 1) or unset (budget-aware), got {value}")


def _float64_device(context, selector: str) -> torch.device:
    """The run's device, for selectors whose statistics are float64 (kept exact over long runs):
    Apple's MPS has no float64, so there they stop with an error instead of failing mid-run."""
    device = torch.device(context.device)
    if device.type == "mps":
        raise UserError(f"selector {selector!r} keeps float64 statistics, which MPS devices do not support; "
                        "use train.device=cpu, or another selector (threshold, curriculum, topk, uncertainty).")
    return device


def _momentum(option: float | None, context) -> float:
    return context.budget_momentum() if option is None else option


def _targets(probs, soft: bool = False, temperature: float = 1.0):
    """One-hot of the argmax, or the probabilities sharpened as p^(1/T), renormalised."""
    if soft:
        return (probs.log() / temperature).softmax(-1)
    return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)


def _class_stats(thresholds) -> dict[str, float]:
    return {f"threshold/class_{c}": float(t) for c, t in enumerate(thresholds.tolist())}


def _rank_within_class(confidence, predicted, num_classes: int):
    """Rank of each example among those with the same predicted class, 0 = most confident.
    Ties get distinct ranks (earlier position first), so a top-k never takes both of a tie
    beyond k. Vectorised: sort by confidence, then stably by class."""
    order = torch.argsort(confidence, descending=True, stable=True)
    order = order[torch.argsort(predicted[order], stable=True)]
    counts = torch.bincount(predicted, minlength=num_classes)
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - starts[predicted[order]]
    return rank, counts


def _kth_per_class(confidence, predicted, k, num_classes: int):
    """Per class, the confidence of its k-th most confident example (its least confident one
    when it has fewer than k; 0 for a class with none: nothing to rank, keep whatever comes).
    ``k`` is one int for every class or a LongTensor [C] of per-class counts."""
    rank, counts = _rank_within_class(confidence, predicted, num_classes)
    last = (torch.minimum(counts, torch.as_tensor(k, device=counts.device)) - 1)[predicted]
    hit = rank == last
    thresholds = torch.zeros(num_classes, dtype=confidence.dtype, device=confidence.device)
    thresholds[predicted[hit]] = confidence[hit]
    return thresholds


# --------------------------------------------------------------------------- fixed threshold


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
        return Selection(targets=probs, weights=torch.ones(probs.shape[0], device=probs.device))


# --------------------------------------------------------------------------- FlexMatch


@dataclass(frozen=True)
class FlexMatchOptions:
    threshold: float = 0.95  # τ, the threshold of a fully learned class
    mapping: str = "convex"  # M(β): "convex" x/(2-x) (the paper's choice) or "linear" x
    warmup: str = "seen"  # "seen" (budget-aware), "pool" (published: whole pool), "off"
    warmup_fraction: float = 0.1  # "seen" warm-up ends after this fraction of train.steps at the latest
    soft: bool = False  # sharpened soft targets instead of one-hot labels
    temperature: float = 1.0  # sharpening of soft targets: p^(1/T), renormalised

    def __post_init__(self):
        _check_unit("threshold", self.threshold)
        _check_choice("mapping", self.mapping, ("convex", "linear"))
        _check_choice("warmup", self.warmup, ("seen", "pool", "off"))
        _check_unit("warmup_fraction", self.warmup_fraction)
        if self.temperature <= 0:
            raise ValueError(f"selector.temperature must be positive, got {self.temperature}")


class FlexMatchSelector(BaseSelector):
    """FlexMatch curriculum pseudo-labelling (Zhang et al. 2021, NeurIPS), class-wise thresholds.

    A memory holds, per pool example, the last class it was confidently predicted as (-1 =
    unused). With σ_c = #{examples whose memory is c}:
        β_c = σ_c / max(max_c σ_c, N_unused)   (warm-up)      or   σ_c / max_c σ_c   (no warm-up)
        T_c = M(β_c) · τ,   M(x) = x / (2 - x) ("convex", default) or x ("linear")
        weight = 1[max p >= T_{argmax p}]
    As in the official code (USB's FlexMatchThresholdingHook): the mask uses the thresholds
    from before this batch; then every example with max p >= τ (>=, as the code; the paper
    writes >) has its memory set to its argmax; all thresholds start at 0 (β = 0/0 := 0).

    Warm-up, budget-aware: the published warm-up counts N_unused over the whole unlabeled pool,
    so a run that draws a small part of a big pool keeps β ≈ 0, T_c ≈ 0 and accepts every
    pseudo-label for the whole run (measured on USB; DESIGN.md). ``warmup="seen"`` (default,
    replacing the published whole-pool warm-up) counts as unused only the examples this run has
    drawn at least once and never confidently predicted, and ends after ``warmup_fraction`` of
    the run at the latest: counting seen examples alone was measured not to be enough (AG News,
    MiniLM, 150 steps: 89% of the seen examples were still unused at the end, thresholds stayed
    below 0.04 and every pseudo-label was accepted). ``"pool"`` is the published behaviour;
    ``"off"`` is the paper's no-warm-up variant.
    """

    def __init__(self, options: FlexMatchOptions, context):
        self.options = options
        self.num_classes = context.num_classes
        self.pool_size = context.pool_size
        self.device = _float64_device(context, "flexmatch")
        self.memory = torch.full((context.pool_size,), -1, dtype=torch.long, device=self.device)  # last confident class
        self.seen = torch.zeros(context.pool_size, dtype=torch.bool, device=self.device)  # drawn at least once
        self.warmup_end = math.ceil(options.warmup_fraction * context.steps)
        self.step = 0  # the last step selected, for the warm-up and for stats()

    def _unused(self, used) -> int:
        if self.options.warmup == "pool":
            return int((~used).sum())
        if self.options.warmup == "seen" and self.step <= self.warmup_end:
            return int((self.seen & ~used).sum())
        return 0

    def learning_effect(self):
        """β_c, float64 [C]."""
        used = self.memory >= 0
        sigma = torch.bincount(self.memory[used], minlength=self.num_classes).double()
        denominator = max(float(sigma.max()), self._unused(used))
        return sigma / denominator if denominator > 0 else torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)

    def class_thresholds(self):
        beta = self.learning_effect()
        mapped = beta / (2.0 - beta) if self.options.mapping == "convex" else beta
        return mapped * self.options.threshold

    def select(self, probs, indices, step):
        self.step = step
        confidence, predicted = probs.max(-1)
        thresholds = self.class_thresholds().to(probs.dtype)  # compare in the probabilities' precision
        weights = (confidence >= thresholds[predicted]).float()
        confident = confidence >= self.options.threshold
        self.memory[indices[confident]] = predicted[confident]
        self.seen[indices] = True
        return Selection(targets=_targets(probs, self.options.soft, self.options.temperature), weights=weights)

    def stats(self):
        used = self.memory >= 0
        return {"threshold": self.options.threshold, **_class_stats(self.class_thresholds()),
                "unused_fraction": float((~used).float().mean()),  # of the pool, never confidently predicted
                "seen_fraction": float(self.seen.float().mean())}

    def state_dict(self):
        return {"memory": self.memory.clone(), "seen": self.seen.clone(), "step": self.step}

    def load_state_dict(self, state):
        self.memory, self.seen, self.step = state["memory"].to(self.device, copy=True), state["seen"].to(self.device, copy=True), state["step"]


# --------------------------------------------------------------------------- FreeMatch


@dataclass(frozen=True)
class FreeMatchOptions:
    ema_momentum: float | None = None  # m; unset = budget-aware 1 - 1/max(10, steps/100) (published 0.999)

    def __post_init__(self):
        _check_momentum(self.ema_momentum)


class FreeMatchSelector(BaseSelector):
    """FreeMatch self-adaptive thresholding (Wang et al. 2023, ICLR), hard labels.

        τ_t    = m · τ_{t-1} + (1 - m) · mean_b max_c p_b(c)          (global, τ_0 = 1/C)
        p̃_t(c) = m · p̃_{t-1}(c) + (1 - m) · mean_b p_b(c)             (local, p̃_0 = 1/C)
        τ_t(c) = MaxNorm(p̃_t)(c) · τ_t = p̃_t(c) / max_c' p̃_t(c') · τ_t
        weight = 1[max p >= τ_t(argmax p)]
    Order as in the official code (USB's FreeMatchThresholdingHook.masking): the EMAs are first
    updated with the current batch, then the batch is masked with the updated thresholds.
    Initial values 1/C as in the paper and the current USB code.

    ``p_model`` (= p̃_t) and ``label_hist`` are public for FreeMatch's self-adaptive fairness term
    (``regulariser.name=saf``); ``label_hist`` is USB's EMA of the histogram of the teacher's argmax,
        h̃_t(c) = m · h̃_{t-1}(c) + (1 - m) · mean_b 1[argmax p_b = c]      (h̃_0 = 1/C)
    updated with the same momentum; it takes no part in selection.

    Momentum: ``ema_momentum`` unset uses m = 1 - 1/max(10, steps/100) (EMA time constant 1%
    of the run, at least 10 steps) instead of the published 0.999, which is tuned for
    10^5-10^6 iterations and keeps τ_t near 1/C, accepting everything, for a short run. The
    self-adaptive fairness loss is a loss term, not selection: the ``saf`` regulariser.
    """

    def __init__(self, options: FreeMatchOptions, context):
        self.m = _momentum(options.ema_momentum, context)
        self.num_classes = context.num_classes
        self.device = _float64_device(context, "freematch")
        self.global_threshold = torch.tensor(1.0 / context.num_classes, dtype=torch.float64, device=self.device)
        self.local = torch.full((context.num_classes,), 1.0 / context.num_classes, dtype=torch.float64, device=self.device)
        self.label_hist = torch.full((context.num_classes,), 1.0 / context.num_classes, dtype=torch.float64, device=self.device)

    @property
    def p_model(self):
        """p̃_t, the class-wise EMA of the teacher's probabilities (USB's name)."""
        return self.local

    def class_thresholds(self):
        return self.local / self.local.max() * self.global_threshold

    def select(self, probs, indices, step):
        confidence, predicted = probs.max(-1)
        m = self.m
        self.global_threshold = m * self.global_threshold + (1 - m) * confidence.double().mean()
        self.local = m * self.local + (1 - m) * probs.double().mean(0)
        hist = torch.bincount(predicted, minlength=self.num_classes).double()
        self.label_hist = m * self.label_hist + (1 - m) * hist / hist.sum()
        thresholds = self.class_thresholds().to(probs.dtype)
        weights = (confidence >= thresholds[predicted]).float()
        return Selection(targets=_targets(probs), weights=weights)

    def stats(self):
        return {"threshold": float(self.global_threshold), **_class_stats(self.class_thresholds()),
                "ema_momentum": self.m}

    def state_dict(self):
        return {"global_threshold": self.global_threshold.clone(), "local": self.local.clone(), "label_hist": self.label_hist.clone()}

    def load_state_dict(self, state):
        self.global_threshold, self.local = state["global_threshold"].to(self.device, copy=True), state["local"].to(self.device, copy=True)
        if "label_hist" in state:  # checkpoints written before it was kept: it stays at its start
            self.label_hist = state["label_hist"].to(self.device, copy=True)


# --------------------------------------------------------------------------- SoftMatch


@dataclass(frozen=True)
class SoftMatchOptions:
    ema_momentum: float | None = None  # m; unset = budget-aware 1 - 1/max(10, steps/100) (published 0.999)
    n_sigma: float = 2.0  # width of the Gaussian below μ in standard deviations
    distribution_alignment: bool = True  # uniform alignment of the probabilities the weights are computed on
    soft: bool = False  # sharpened soft targets instead of one-hot labels
    temperature: float = 1.0  # sharpening of soft targets: p^(1/T), renormalised

    def __post_init__(self):
        _check_momentum(self.ema_momentum)
        if self.n_sigma <= 0:
            raise ValueError(f"selector.n_sigma must be positive, got {self.n_sigma}")
        if self.temperature <= 0:
            raise ValueError(f"selector.temperature must be positive, got {self.temperature}")


class SoftMatchSelector(BaseSelector):
    """SoftMatch truncated-Gaussian weighting (Chen et al. 2023, ICLR).

        μ_t  = m · μ_{t-1} + (1 - m) · mean_b max p_b              (μ_0 = 1/C)
        σ²_t = m · σ²_{t-1} + (1 - m) · var_b max p_b  (unbiased)  (σ²_0 = 1)
        weight = 1 if max p >= μ_t else exp(-(max p - μ_t)² / (2 σ²_t / n_sigma²))
    Uniform alignment (on by default): p̄_t = m · p̄_{t-1} + (1 - m) · mean_b p_b (p̄ starts at
    the first batch's mean), and the weights are computed on normalize(p · (1/C) / p̄_t)
    (with USB's 1e-6 on both sides of the ratio). Initial values, update-then-weight order and
    alignment as in the official code (USB's SoftMatchWeightingHook and DistAlignEMAHook).
    As in USB, alignment affects only the weights: the pseudo-labels are taken from the
    teacher's own probabilities ("uniform alignment in softmatch do not use aligned probs for
    generating pseudo labels"). A batch of one example leaves σ² unchanged (no variance).

    Momentum: ``ema_momentum`` unset uses m = 1 - 1/max(10, steps/100) for μ, σ² and p̄
    instead of the published 0.999 (tuned for ~10^5-10^6 iterations; in a short run μ stays
    near 1/C and σ² near 1, so every example gets weight ≈ 1).
    """

    def __init__(self, options: SoftMatchOptions, context):
        self.options = options
        self.m = _momentum(options.ema_momentum, context)
        self.num_classes = context.num_classes
        self.device = _float64_device(context, "softmatch")
        self.mu, self.variance = 1.0 / context.num_classes, 1.0
        self.p_bar = None  # the EMA of mean probabilities, started at the first batch (as in USB)

    def align(self, probs):
        """Update p̄ with the batch, then return normalize(p · (1/C) / p̄) in float64."""
        mean = probs.double().mean(0)
        self.p_bar = mean if self.p_bar is None else self.m * self.p_bar + (1 - self.m) * mean
        aligned = probs.double() * (1.0 / self.num_classes + 1e-6) / (self.p_bar + 1e-6)
        return aligned / aligned.sum(-1, keepdim=True)

    def select(self, probs, indices, step):
        scored = self.align(probs) if self.options.distribution_alignment else probs.double()
        confidence = scored.max(-1).values
        m = self.m
        self.mu = m * self.mu + (1 - m) * float(confidence.mean())
        if len(confidence) > 1:
            self.variance = m * self.variance + (1 - m) * float(confidence.var(unbiased=True))
        below = (confidence - self.mu).clamp(max=0.0)  # 0 at or above μ: weight 1
        weights = torch.exp(-below**2 / (2 * self.variance / self.options.n_sigma**2)).float()
        return Selection(targets=_targets(probs, self.options.soft, self.options.temperature), weights=weights)

    def stats(self):
        return {"mu": self.mu, "sigma": math.sqrt(self.variance), "ema_momentum": self.m}

    def state_dict(self):
        return {"mu": self.mu, "variance": self.variance, "p_bar": None if self.p_bar is None else self.p_bar.clone()}

    def load_state_dict(self, state):
        self.mu, self.variance = float(state["mu"]), float(state["variance"])
        self.p_bar = None if state["p_bar"] is None else state["p_bar"].to(self.device, copy=True)


# --------------------------------------------------------------------------- Curriculum Labeling


@dataclass(frozen=True)
class CurriculumOptions:
    increment: float = 0.2  # fraction added per round: keep 20%, 40%, ..., 100% of the most confident

    def __post_init__(self):
        if not 0.0 < self.increment <= 1.0:
            raise ValueError(f"selector.increment must be in (0, 1], got {self.increment}")


class CurriculumSelector(BaseSelector):
    """Curriculum Labeling (Cascante-Bonilla et al. 2021, AAAI), percentile thresholds, hard labels.

    The run is split into rounds of ceil(steps · Δ) steps. In round r (0-based) the kept
    fraction is min(1, (r + 1) · Δ) and the threshold is the (1 - kept) quantile (linear
    interpolation, torch.quantile's default) of the confidences max p recorded over the pool
    by the end of round r - 1:  weight = 1[max p >= T_r]; at 100% every example is kept.
    A memory holds each pool example's latest confidence. In round 0, or while nothing is
    recorded, the batch's own confidences give the quantile.

    The paper retrains from scratch each round and scores the whole unlabeled set with the
    round's final model; here rounds are sections of one run (the teacher seam decides whether
    the teacher is a per-round snapshot) and the scores are the latest recorded per example.
    """

    def __init__(self, options: CurriculumOptions, context):
        self.increment = options.increment
        self.round_steps = max(1, math.ceil(context.steps * options.increment))
        self.device = torch.device(context.device)
        self.memory = torch.full((context.pool_size,), float("nan"), device=self.device)  # latest confidence per example
        self.round = -1
        self.round_threshold = float("nan")  # from the memory, fixed for the round; NaN = use the batch
        self.threshold = 0.0  # the last one used, for stats

    def kept_fraction(self, round_: int) -> float:
        return min(1.0, round((round_ + 1) * self.increment, 12))

    def select(self, probs, indices, step):
        round_ = (step - 1) // self.round_steps
        kept = self.kept_fraction(round_)
        if round_ != self.round:  # a new round: its threshold from what the previous rounds recorded
            self.round = round_
            recorded = self.memory[~self.memory.isnan()]
            self.round_threshold = float(torch.quantile(recorded, 1 - kept)) if round_ > 0 and len(recorded) else float("nan")
        confidence, _ = probs.max(-1)
        if kept >= 1.0:
            threshold = 0.0
        elif math.isnan(self.round_threshold):
            threshold = float(torch.quantile(confidence.float(), 1 - kept))
        else:
            threshold = self.round_threshold
        self.threshold = threshold
        weights = (confidence >= threshold).float()
        self.memory[indices] = confidence.float()
        return Selection(targets=_targets(probs), weights=weights)

    def stats(self):
        return {"kept_fraction": self.kept_fraction(max(self.round, 0)), "threshold": self.threshold}

    def state_dict(self):
        return {"memory": self.memory.clone(), "round": self.round, "round_threshold": self.round_threshold,
                "threshold": self.threshold}

    def load_state_dict(self, state):
        self.memory = state["memory"].to(self.device, copy=True)
        self.round, self.round_threshold, self.threshold = int(state["round"]), float(state["round_threshold"]), float(state["threshold"])


# --------------------------------------------------------------------------- UPS (uncertainty)


@dataclass(frozen=True)
class UncertaintyOptions:
    passes: int = 10  # K stochastic (dropout) teacher passes
    threshold: float = 0.7  # τ_p on the mean confidence (UPS)
    max_uncertainty: float = 0.05  # κ_p on the uncertainty of the predicted class (UPS, for "std")
    measure: str = "std"  # "std" (UPS), "entropy" or "bald", the latter two divided by log C

    def __post_init__(self):
        if self.passes < 2:
            raise ValueError(f"selector.passes must be at least 2, got {self.passes}")
        _check_unit("threshold", self.threshold)
        if self.max_uncertainty < 0:
            raise ValueError(f"selector.max_uncertainty must be 0 or more, got {self.max_uncertainty}")
        _check_choice("measure", self.measure, ("std", "entropy", "bald"))


def _entropy(probs):
    return -torch.special.xlogy(probs, probs).sum(-1)  # 0 · log 0 = 0


class UncertaintySelector(BaseSelector):
    """Uncertainty-aware selection in the spirit of UPS (Rizve et al. 2021, ICLR), hard labels.

    From K dropout passes p^(1..K) [K, B, C]: p̄ = mean_k p^(k), ŷ = argmax p̄ and
        weight = 1[max p̄ >= τ  and  u <= κ]
    with u one of
        "std":     std_k p^(k)(ŷ), unbiased (torch.std, as the UPS code), UPS's measure
        "entropy": H(p̄) / log C
        "bald":    (H(p̄) - mean_k H(p^(k))) / log C, the mutual information (Houlsby et al. 2011)
    Dividing both entropies by log C puts them on [0, 1] whatever the number of classes.
    Defaults τ = 0.7, κ = 0.05, K = 10 are UPS's (κ is meant for "std"). UPS's code selects
    std < κ; we use <= so κ is a maximum. UPS's negative pseudo-labels and per-round class
    balancing are not part of this selector.
    """

    def __init__(self, options: UncertaintyOptions, context):
        self.options = options
        self.log_classes = math.log(max(context.num_classes, 2))

    def choose(self, teacher, batch, indices, step):
        """K stochastic (dropout) passes of the teacher, [K, B, C], instead of one."""
        passes = torch.stack([teacher.probs(batch, stochastic=True) for _ in range(self.options.passes)])
        selection = self.select(passes, indices, step)
        selection.probs = passes.mean(0)
        return selection

    def uncertainty(self, probs, mean, predicted):
        if self.options.measure == "std":
            picked = probs.gather(2, predicted[None, :, None].expand(probs.shape[0], -1, 1)).squeeze(-1)
            return picked.std(0)
        if self.options.measure == "entropy":
            return _entropy(mean) / self.log_classes
        return (_entropy(mean) - _entropy(probs).mean(0)) / self.log_classes

    def select(self, probs, indices, step):
        if probs.dim() != 3:
            raise ValueError(f"the uncertainty selector needs [K, B, C] probabilities from K teacher passes, got shape {tuple(probs.shape)}")
        mean = probs.mean(0)
        confidence, predicted = mean.max(-1)
        uncertain = self.uncertainty(probs, mean, predicted)
        weights = ((confidence >= self.options.threshold) & (uncertain <= self.options.max_uncertainty)).float()
        return Selection(targets=_targets(mean), weights=weights)

    def stats(self):
        return {"threshold": self.options.threshold, "max_uncertainty": self.options.max_uncertainty}


# --------------------------------------------------------------------------- class-balanced top-k


@dataclass(frozen=True)
class TopKOptions:
    fraction: float = 0.5  # "count": k = ceil(fraction · B / C) per class; "proportion": CBST's portion p
    scope: str = "batch"  # "batch": top-k of each batch; "round": per-class thresholds from the pool memory
    per_class: str = "count"  # "count": the same k for every class; "proportion": floor(p · n_c) of class c (CBST)

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"selector.fraction must be in (0, 1], got {self.fraction}")
        _check_choice("scope", self.scope, ("batch", "round"))
        _check_choice("per_class", self.per_class, ("count", "proportion"))


class TopKSelector(BaseSelector):
    """Class-balanced top-k selection, hard labels: each class keeps its own most confident
    examples (those whose argmax is that class), so no class is crowded out by a global threshold.
    How many each class keeps (``per_class``):

    "count" (default): the same k for every class, k = ceil(fraction · B / C) of a batch of B
        (k_pool = ceil(fraction · N_recorded / C) of the pool memory), all of a class when it has
        fewer. An equal count per class is the balancing UPS applies to its selected pseudo-labels
        (Rizve et al. 2021; nayeemrizve/ups utils/pseudo_labeling_util.py cuts every class to the
        smallest class's count, at least 25); here k is a fixed share of the batch instead.
    "proportion": class-balanced self-training, CBST (Zou et al. 2018, ECCV): of the n_c examples
        predicted c, the floor(p · n_c) most confident are kept, p = ``fraction``, so the kept
        classes keep the proportions of the teacher's own predictions. As the CBST code
        (yzou2/CRST crst_seg.py ``kc_parameters``): each class's confidences sorted in descending
        order, k_c = floor(n_c · p), the threshold is the k_c-th confidence, and 1 when k_c = 0 (a
        class with too few predictions, or none, keeps only a confidence of exactly 1). Not included: CBST's
        portion schedule (p from 0.2 by 0.05 per round up to 0.5 in that code) and its label
        argmax_c p_c / T_c (here the label is argmax_c p_c, kept when max p >= T_{argmax p}).

    "count" stays the default: it is the rule this selector has always had (its runs keep their
    ids), and it is the one that rebalances a teacher biased towards some classes, which
    "proportion" by design passes on.

    Scopes:
    "batch": among the examples of the batch whose argmax is c, the k_c most confident are kept;
        ties are ranked by position, so exactly min(k_c, n_c) per class.
    "round": weight = 1[max p >= T_{argmax p}], T_c = the confidence of the k_c-th most confident
        pool example predicted c in a memory of each example's latest prediction and confidence
        (k_c from the memory's counts as above). T is recomputed at the start of each round from
        what earlier rounds recorded; a round is one pass over the pool, but at most 10% of the
        run's steps so that a short run over a big pool still gets pool-level thresholds. In round 0
        the batch rule is used.
    """

    def __init__(self, options: TopKOptions, context):
        self.options = options
        self.num_classes, self.pool_size, self.steps = context.num_classes, context.pool_size, context.steps
        self.per_step = context.unlabeled_batch_size  # 0: taken from the first batch
        self.device = torch.device(context.device)
        self.memory_class = torch.full((context.pool_size,), -1, dtype=torch.long, device=self.device)
        self.memory_confidence = torch.zeros(context.pool_size, device=self.device)
        self.round = -1
        self.round_active = False  # thresholds from the memory are in force
        self.thresholds = torch.zeros(context.num_classes, device=self.device)  # in force (round) or the last batch's cutoffs

    def round_steps(self) -> int:
        return max(1, min(math.ceil(self.pool_size / max(self.per_step, 1)), math.ceil(0.1 * self.steps)))

    def _new_round(self, step):
        round_ = (step - 1) // self.round_steps()
        if round_ == self.round:
            return
        self.round = round_
        recorded = self.memory_class >= 0
        if round_ > 0 and recorded.any():
            self.thresholds = self._thresholds(self.memory_confidence[recorded], self.memory_class[recorded])
            self.round_active = True

    def _counts(self, predicted):
        """k_c per class, LongTensor [C]: the same ceil(fraction · n / C) for every class ("count"),
        or floor(n_c · fraction) of the n_c examples predicted c ("proportion", CBST)."""
        if self.options.per_class == "count":
            k = math.ceil(self.options.fraction * len(predicted) / self.num_classes)
            return torch.full((self.num_classes,), k, dtype=torch.long, device=predicted.device)
        n = torch.bincount(predicted, minlength=self.num_classes)
        return torch.floor(n.double() * self.options.fraction).long()

    def _thresholds(self, confidence, predicted):
        """T_c: the k_c-th confidence of class c; for "proportion" 1 where k_c = 0 (CBST)."""
        counts = self._counts(predicted)
        thresholds = _kth_per_class(confidence, predicted, counts, self.num_classes)
        if self.options.per_class == "proportion":
            thresholds[counts == 0] = 1.0
        return thresholds

    def select(self, probs, indices, step):
        confidence, predicted = probs.max(-1)
        confidence = confidence.float()
        if not self.per_step:
            self.per_step = len(confidence)
        if self.options.scope == "round":
            self._new_round(step)
        if self.round_active:
            weights = (confidence >= self.thresholds[predicted]).float()
        else:
            rank, _ = _rank_within_class(confidence, predicted, self.num_classes)
            weights = (rank < self._counts(predicted)[predicted]).float()
            self.thresholds = self._thresholds(confidence, predicted)
        if self.options.scope == "round":
            self.memory_class[indices], self.memory_confidence[indices] = predicted, confidence
        return Selection(targets=_targets(probs), weights=weights)

    def stats(self):
        out = _class_stats(self.thresholds)  # in force, or the last batch's k-th confidence per class
        if self.options.scope == "round":
            out["round_thresholds"] = float(self.round_active)
        return out

    def state_dict(self):
        return {"memory_class": self.memory_class.clone(), "memory_confidence": self.memory_confidence.clone(),
                "round": self.round, "round_active": self.round_active, "thresholds": self.thresholds.clone(),
                "per_step": self.per_step}

    def load_state_dict(self, state):
        self.memory_class, self.memory_confidence = state["memory_class"].to(self.device, copy=True), state["memory_confidence"].to(self.device, copy=True)
        self.round, self.round_active = int(state["round"]), bool(state["round_active"])
        self.thresholds, self.per_step = state["thresholds"].to(self.device, copy=True), int(state["per_step"])


@hookimpl
def testbed_selectors():
    return [
        Selector(name="threshold", summary="fixed confidence threshold τ; hard or sharpened targets",
                 factory=ThresholdSelector, options=ThresholdOptions),
        Selector(name="none", summary="keep every example with weight 1; teacher probabilities as targets",
                 factory=KeepAll),
        Selector(name="flexmatch", summary="FlexMatch class-wise thresholds M(β_c)·τ from a per-example memory; budget-aware warm-up",
                 factory=FlexMatchSelector, options=FlexMatchOptions),
        Selector(name="freematch", summary="FreeMatch self-adaptive global × local EMA thresholds; budget-aware momentum",
                 factory=FreeMatchSelector, options=FreeMatchOptions),
        Selector(name="softmatch", summary="SoftMatch truncated-Gaussian weights with uniform alignment; budget-aware momentum",
                 factory=SoftMatchSelector, options=SoftMatchOptions),
        Selector(name="curriculum", summary="Curriculum Labeling: keep the top 20%, 40%, ... by confidence percentile per round",
                 factory=CurriculumSelector, options=CurriculumOptions),
        Selector(name="uncertainty", summary="UPS-style: K dropout passes; confident and low-uncertainty (std, entropy or BALD)",
                 factory=UncertaintySelector, options=UncertaintyOptions),
        Selector(name="topk", summary="class-balanced top-k per class (an equal count, or CBST's proportion), in the batch or from a pool memory",
                 factory=TopKSelector, options=TopKOptions),
    ]
