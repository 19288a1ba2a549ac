"""The selectors: threshold and none, and the adaptive ones against their papers' formulas."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from conftest import FAST, read_jsonl
from testbed import RunContext, UserError
from testbed.config import parse_overrides, resolve
from testbed.runs import execute

# The adaptive selectors (FlexMatch, FreeMatch, SoftMatch, Curriculum Labeling, UPS-style uncertainty
# and class-balanced top-k) are checked against formulas computed here by hand (plain Python over the
# same numbers, never the implementation's helpers). Also: budget-aware defaults, the DESIGN lesson
# (a short run over a big pool), save/resume, option validation and a short real run of each.
NEW = ["flexmatch", "freematch", "softmatch", "curriculum", "uncertainty", "topk"]


def make(registry, name, ctx, **options):
    record = registry.get("selector", name)
    return record.factory(record.options(**options), ctx)


def batch(rows):
    return torch.tensor(rows, dtype=torch.float32)


def class_thresholds(stats, num_classes):
    return [stats[f"threshold/class_{c}"] for c in range(num_classes)]


# --------------------------------------------------------------------------- threshold and none

SMALL_CTX = RunContext(num_classes=3, pool_size=10, steps=5, seed=0)


def selector(registry, name, **options):
    record = registry.get("selector", name)
    return record.factory(record.options(**options), SMALL_CTX)


PROBS = torch.tensor([[0.75, 0.25, 0.0], [0.5, 0.25, 0.25], [0.125, 0.125, 0.75], [0.25, 0.7499, 0.0001]])


def test_threshold_selector_weights_and_boundary(registry):
    s = selector(registry, "threshold", threshold=0.75)
    chosen = s.select(PROBS, torch.arange(4), step=1)
    # exactly tau counts as confident; just below does not
    assert torch.equal(chosen.weights, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert chosen.weights.dtype.is_floating_point
    assert s.stats() == {"threshold": 0.75}


def test_threshold_selector_hard_targets_are_one_hot_of_argmax(registry):
    chosen = selector(registry, "threshold", threshold=0.0).select(PROBS, torch.arange(4), step=1)
    assert torch.equal(chosen.targets, torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]))
    assert torch.equal(chosen.weights, torch.ones(4))


def test_threshold_selector_soft_targets_are_sharpened(registry):
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    chosen = selector(registry, "threshold", threshold=0.7, soft=True, temperature=0.5).select(probs, torch.arange(2), 1)
    squared = torch.tensor([[0.36, 0.09, 0.01], [0.04, 0.04, 0.36]])  # p^(1/T) with T = 0.5
    assert torch.allclose(chosen.targets, squared / squared.sum(-1, keepdim=True), atol=1e-6)
    # sharpened, the first row's top would pass 0.7 (0.78); the mask is on the raw probabilities
    assert torch.equal(chosen.weights, torch.tensor([0.0, 0.0]))
    plain = selector(registry, "threshold", threshold=0.5, soft=True).select(probs, torch.arange(2), 1)
    assert torch.allclose(plain.targets, probs, atol=1e-6)  # T = 1: the teacher's probabilities
    assert torch.equal(plain.weights, torch.tensor([1.0, 1.0]))


def test_none_selector_keeps_everything(registry):
    chosen = selector(registry, "none").select(PROBS, torch.arange(4), step=1)
    assert torch.equal(chosen.weights, torch.ones(4))
    assert torch.equal(chosen.targets, PROBS)


# --------------------------------------------------------------------------- FlexMatch

# pool of 10, 3 classes, τ = 0.9. Batch 1: confident (>= τ) predictions 0, 0, 1, 1 on examples
# 0, 1, 2, 5; examples 3, 4, 6 drawn but unconfident; 7, 8, 9 never drawn.
FLEX_CTX = RunContext(num_classes=3, pool_size=10, steps=100, seed=0)
FLEX_B1 = batch([[0.95, 0.03, 0.02], [0.92, 0.04, 0.04], [0.05, 0.91, 0.04], [0.5, 0.3, 0.2],
                 [0.2, 0.2, 0.6], [0.02, 0.95, 0.03], [0.3, 0.4, 0.3]])
FLEX_I1 = torch.tensor([0, 1, 2, 3, 4, 5, 6])


def flex_expected(sigma, unused, mapping, tau=0.9):
    """β_c = σ_c / max(max σ, N_unused); T_c = M(β_c) τ (hand formula; N_unused = 0 without warm-up)."""
    denominator = max(max(sigma), unused)
    beta = [s / denominator if denominator else 0.0 for s in sigma]
    mapped = [b / (2 - b) for b in beta] if mapping == "convex" else beta
    return [m * tau for m in mapped]


@pytest.mark.parametrize("mapping", ["convex", "linear"])
@pytest.mark.parametrize("warmup, unused", [("pool", 6), ("seen", 3), ("off", 0)])
def test_flexmatch_thresholds_from_counts(registry, mapping, warmup, unused):
    s = make(registry, "flexmatch", FLEX_CTX, threshold=0.9, mapping=mapping, warmup=warmup)
    first = s.select(FLEX_B1, FLEX_I1, 1)
    assert torch.equal(first.weights, torch.ones(7))  # nothing recorded yet: every T_c = 0
    # σ = [2, 2, 0]; unused: pool 10 - 4 = 6, seen-but-unconfident {3, 4, 6} = 3, off 0
    expected = flex_expected([2, 2, 0], unused, mapping)
    assert class_thresholds(s.stats(), 3) == pytest.approx(expected)
    if warmup == "off":
        assert expected == pytest.approx([0.9, 0.9, 0.0])
    # the next batch is masked with those thresholds
    probs = batch([[0.5, 0.25, 0.25], [0.25, 0.35, 0.4], [0.1, 0.85, 0.05], [0.85, 0.1, 0.05]])
    chosen = s.select(probs, torch.tensor([7, 8, 9, 3]), 2)
    want = [float(p.max() >= expected[int(p.argmax())]) for p in probs]
    assert chosen.weights.tolist() == want
    assert torch.equal(chosen.targets, torch.eye(3)[[0, 2, 1, 0]])
    assert s.stats()["threshold"] == 0.9


def test_flexmatch_memory_keeps_the_last_confident_prediction(registry):
    s = make(registry, "flexmatch", FLEX_CTX, threshold=0.75, warmup="off", mapping="linear")
    s.select(batch([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]), torch.tensor([0, 1, 2]), 1)
    assert class_thresholds(s.stats(), 3) == pytest.approx([0.75, 0.375, 0.0])  # σ = [2, 1, 0]
    # example 0 becomes confidently class 2; example 1 exactly at τ (0.75 is exact in binary) counts
    # and moves to class 1; example 2 unconfident keeps its old class
    s.select(batch([[0.1, 0.1, 0.8], [0.125, 0.75, 0.125], [0.4, 0.3, 0.3]]), torch.tensor([0, 1, 2]), 2)
    assert class_thresholds(s.stats(), 3) == pytest.approx([0.0, 0.75, 0.375])  # σ = [0, 2, 1]
    stats = s.stats()
    assert stats["unused_fraction"] == pytest.approx(7 / 10) and stats["seen_fraction"] == pytest.approx(3 / 10)


def test_flexmatch_soft_targets_are_sharpened_and_mask_on_raw_probabilities(registry):
    s = make(registry, "flexmatch", FLEX_CTX, soft=True, temperature=0.5)
    probs = batch([[0.6, 0.3, 0.1]])
    chosen = s.select(probs, torch.tensor([0]), 1)
    squared = torch.tensor([0.36, 0.09, 0.01])
    assert torch.allclose(chosen.targets[0], squared / squared.sum(), atol=1e-6)


def test_flexmatch_seen_warmup_engages_in_a_short_run_over_a_big_pool(registry):
    """The DESIGN lesson: 20 steps of 16 over a pool of 100,000. The published whole-pool warm-up
    keeps every T_c ≈ 0 and accepts everything; the budget-aware one reaches T_c = τ."""
    ctx = RunContext(num_classes=4, pool_size=100_000, steps=20, seed=0, unlabeled_batch_size=16)
    pool = make(registry, "flexmatch", ctx, warmup="pool")
    seen = make(registry, "flexmatch", ctx)  # the default
    assert seen.options.warmup == "seen"
    confident = [[0.97 if c == k % 4 else 0.01 for c in range(4)] for k in range(14)]
    unsure = [[0.3, 0.25, 0.25, 0.2], [0.2, 0.3, 0.25, 0.25]]
    probs = batch(confident + unsure)
    for step in range(1, 21):
        indices = torch.arange((step - 1) * 16, step * 16)
        last_pool, last_seen = pool.select(probs, indices, step), seen.select(probs, indices, step)
    # after 19 batches: 19 · 14 = 266 confident, spread over classes as k % 4 for k < 14
    sigma = [19 * sum(1 for k in range(14) if k % 4 == c) for c in range(4)]  # [76, 76, 57, 57]
    expected_pool = flex_expected(sigma, 100_000 - 266, "convex", tau=0.95)
    expected_seen = flex_expected(sigma, 19 * 2, "convex", tau=0.95)
    assert max(expected_pool) < 0.01 and expected_seen[0] == pytest.approx(0.95)
    assert torch.equal(last_pool.weights, torch.ones(16))  # accepts everything, as on USB
    want = [float(p.max() >= expected_seen[int(p.argmax())]) for p in probs]
    assert last_seen.weights.tolist() == want
    assert last_seen.weights[-2:].tolist() == [0.0, 0.0] and last_seen.weights.sum() < 16
    assert pool.stats()["threshold/class_0"] < 0.01 and seen.stats()["threshold/class_0"] > 0.9


def test_flexmatch_seen_warmup_ends_after_its_fraction_of_the_run(registry):
    """Measured on AG News: most seen examples stay unused in a short run, so counting seen
    examples alone kept T_c ≈ 0. The warm-up therefore ends after warmup_fraction of the steps."""
    ctx = RunContext(num_classes=2, pool_size=1_000, steps=50, seed=0)
    s = make(registry, "flexmatch", ctx, warmup_fraction=0.1)  # warm-up over steps 1..5
    confident_0 = batch([[0.99, 0.01]] * 2 + [[0.6, 0.4]] * 8)  # 2 confident, 8 seen but unused
    confident_1 = batch([[0.01, 0.99]] + [[0.4, 0.6]] * 9)
    for step in range(1, 6):
        s.select(confident_0 if step % 2 else confident_1, torch.arange((step - 1) * 10, step * 10), step)
    # σ = [6, 2]; seen & unused = 50 - 8 = 42 -> warm-up still on at step 5
    assert class_thresholds(s.stats(), 2) == pytest.approx(flex_expected([6, 2], 42, "convex", tau=0.95))
    chosen = s.select(confident_0, torch.arange(50, 60), 6)  # step 6 > 5: no warm-up
    expected = flex_expected([6, 2], 0, "convex", tau=0.95)  # computed before this batch's update
    assert expected[0] == pytest.approx(0.95)
    assert chosen.weights.tolist() == [1.0, 1.0] + [0.0] * 8
    fresh = make(registry, "flexmatch", ctx, warmup_fraction=0.1)
    fresh.load_state_dict(s.state_dict())
    assert fresh.stats() == s.stats()


# --------------------------------------------------------------------------- FreeMatch

FREE_BATCHES = [
    [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
    [[0.9, 0.05, 0.05], [0.3, 0.4, 0.3], [0.25, 0.25, 0.5], [0.8, 0.1, 0.1]],
    [[0.5, 0.4, 0.1], [0.1, 0.85, 0.05], [0.34, 0.33, 0.33], [0.2, 0.2, 0.6]],
]


def test_freematch_thresholds_after_three_updates_by_hand(registry):
    m, C = 0.7, 3
    s = make(registry, "freematch", RunContext(num_classes=C, pool_size=8, steps=100, seed=0), ema_momentum=m)
    tau, local = 1 / C, [1 / C] * C
    for step, rows in enumerate(FREE_BATCHES, 1):
        chosen = s.select(batch(rows), torch.arange(4), step)
        # the official order: the EMAs take this batch first, then it is masked
        tau = m * tau + (1 - m) * sum(max(r) for r in rows) / len(rows)
        local = [m * local[c] + (1 - m) * sum(r[c] for r in rows) / len(rows) for c in range(C)]
        per_class = [local[c] / max(local) * tau for c in range(C)]
        assert s.stats()["threshold"] == pytest.approx(tau)
        assert class_thresholds(s.stats(), C) == pytest.approx(per_class)
        assert chosen.weights.tolist() == [float(max(r) >= per_class[r.index(max(r))]) for r in rows]
        assert chosen.targets.argmax(-1).tolist() == [r.index(max(r)) for r in rows]
    assert 0 < sum(chosen.weights) < 4  # the last batch is split: the test can tell masks apart


@pytest.mark.parametrize("name", ["freematch", "softmatch"])
@pytest.mark.parametrize("steps, expected", [(480, 0.9), (500, 0.9), (5_000, 0.98), (100_000, 0.999), (200_000, 0.9995)])
def test_budget_aware_momentum_default(registry, name, steps, expected):
    ctx = RunContext(num_classes=3, pool_size=8, steps=steps, seed=0)
    assert make(registry, name, ctx).stats()["ema_momentum"] == pytest.approx(expected)  # 1 - 1/max(10, steps/100)
    assert make(registry, name, ctx, ema_momentum=0.999).stats()["ema_momentum"] == 0.999  # explicit: as given


def test_freematch_default_momentum_is_used_in_the_update(registry):
    s = make(registry, "freematch", RunContext(num_classes=3, pool_size=8, steps=480, seed=0))
    s.select(batch(FREE_BATCHES[0]), torch.arange(4), 1)
    mean_max = (0.7 + 0.6 + 0.5 + 0.8) / 4
    assert s.stats()["threshold"] == pytest.approx(0.9 / 3 + 0.1 * mean_max)
    published = make(registry, "freematch", RunContext(num_classes=3, pool_size=8, steps=480, seed=0), ema_momentum=0.999)
    published.select(batch(FREE_BATCHES[0]), torch.arange(4), 1)
    assert published.stats()["threshold"] == pytest.approx(0.999 / 3 + 0.001 * mean_max)


# --------------------------------------------------------------------------- SoftMatch

SOFT_CTX = RunContext(num_classes=3, pool_size=8, steps=100, seed=0)
SOFT_ROWS = [[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.4, 0.35, 0.25]]


def gaussian_weights(confidences, mu, variance, n_sigma):
    return [1.0 if p >= mu else math.exp(-((p - mu) ** 2) / (2 * variance / n_sigma**2)) for p in confidences]


def test_softmatch_weights_without_alignment_by_hand(registry):
    m, C = 0.5, 3
    s = make(registry, "softmatch", SOFT_CTX, ema_momentum=m, distribution_alignment=False)
    mu, variance = 1 / C, 1.0  # USB's initial values
    for step, rows in enumerate([SOFT_ROWS, [r[::-1] for r in SOFT_ROWS]], 1):
        chosen = s.select(batch(rows), torch.arange(4), step)
        confidences = [max(r) for r in rows]
        mu = m * mu + (1 - m) * statistics.fmean(confidences)
        variance = m * variance + (1 - m) * statistics.variance(confidences)  # unbiased
        assert s.stats()["mu"] == pytest.approx(mu) and s.stats()["sigma"] == pytest.approx(math.sqrt(variance))
        assert chosen.weights.tolist() == pytest.approx(gaussian_weights(confidences, mu, variance, 2.0), abs=1e-6)
    assert chosen.weights.min() < 0.999  # some weight is below 1: the test tells the formula apart


def test_softmatch_n_sigma_narrows_the_gaussian(registry):
    s = make(registry, "softmatch", SOFT_CTX, ema_momentum=0.0, distribution_alignment=False, n_sigma=4.0)
    chosen = s.select(batch(SOFT_ROWS), torch.arange(4), 1)
    confidences = [max(r) for r in SOFT_ROWS]
    want = gaussian_weights(confidences, statistics.fmean(confidences), statistics.variance(confidences), 4.0)
    assert chosen.weights.tolist() == pytest.approx(want, abs=1e-6)


def test_softmatch_uniform_alignment_by_hand(registry):
    m, C = 0.5, 3
    s = make(registry, "softmatch", SOFT_CTX, ema_momentum=m)
    assert s.options.distribution_alignment  # on by default, as in SoftMatch
    # the teacher favours class 0; alignment divides by the running mean, so a row can change argmax
    batches = [SOFT_ROWS, [[0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]]]
    mu, variance, p_bar = 1 / C, 1.0, None
    for step, rows in enumerate(batches, 1):
        chosen = s.select(batch(rows), torch.arange(4), step)
        mean = [statistics.fmean(r[c] for r in rows) for c in range(C)]
        p_bar = mean if p_bar is None else [m * p_bar[c] + (1 - m) * mean[c] for c in range(C)]  # first batch: its mean
        aligned = []
        for r in rows:
            scaled = [r[c] * (1 / C) / p_bar[c] for c in range(C)]
            aligned.append([x / sum(scaled) for x in scaled])
        confidences = [max(a) for a in aligned]
        mu = m * mu + (1 - m) * statistics.fmean(confidences)
        variance = m * variance + (1 - m) * statistics.variance(confidences)
        assert s.stats()["mu"] == pytest.approx(mu, abs=1e-5)
        assert chosen.weights.tolist() == pytest.approx(gaussian_weights(confidences, mu, variance, 2.0), abs=1e-5)
        # pseudo-labels come from the teacher's own probabilities, not the aligned ones (USB)
        assert chosen.targets.argmax(-1).tolist() == [r.index(max(r)) for r in rows]
    assert [a.index(max(a)) for a in aligned] != [r.index(max(r)) for r in rows]  # alignment did move an argmax


# --------------------------------------------------------------------------- Curriculum Labeling


def test_curriculum_quantile_thresholds_across_round_boundaries(registry):
    # 10 steps, Δ = 0.2: rounds of ceil(10 · 0.2) = 2 steps, keeping 20%, 40%, 60%, 80%, 100%
    s = make(registry, "curriculum", RunContext(num_classes=2, pool_size=8, steps=10, seed=0), increment=0.2)
    rng = np.random.default_rng(3)
    confidences = {}  # pool index -> latest confidence, kept by the test
    expected_kept = [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0]
    round_threshold = None
    for step in range(1, 11):
        indices = [0, 1, 2, 3] if step % 2 else [4, 5, 6, 7]
        top = rng.uniform(0.5, 1.0, size=4)
        rows = [[t, 1 - t] if i % 2 == 0 else [1 - t, t] for i, t in enumerate(top)]
        kept = expected_kept[step - 1]
        if step in (3, 5, 7):  # a new round: the quantile of what was recorded by the previous round's end
            round_threshold = float(np.quantile(np.array(list(confidences.values()), dtype=np.float32), 1 - kept))
        if kept == 1.0:
            threshold = 0.0
        elif step <= 2:  # round 0: the batch's own confidences
            threshold = float(np.quantile(np.array(top, dtype=np.float32), 1 - kept))
        else:
            threshold = round_threshold
        chosen = s.select(batch(rows), torch.tensor(indices), step)
        assert s.stats()["kept_fraction"] == pytest.approx(kept)
        assert s.stats()["threshold"] == pytest.approx(threshold, abs=1e-6)
        assert chosen.weights.tolist() == [float(np.float32(t) >= np.float32(threshold)) for t in top]
        assert torch.equal(chosen.targets.argmax(-1), torch.tensor([0, 1, 0, 1]))
        confidences.update(zip(indices, top.tolist()))
    assert s.state_dict()["round"] == 4  # steps 9 and 10


def test_curriculum_round_threshold_is_frozen_within_a_round(registry):
    s = make(registry, "curriculum", RunContext(num_classes=2, pool_size=4, steps=10, seed=0), increment=0.2)
    s.select(batch([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]), torch.arange(4), 1)
    s.select(batch([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]]), torch.arange(4), 2)
    recorded = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    s.select(batch([[0.55, 0.45]] * 4), torch.arange(4), 3)  # round 1 starts; memory now all 0.55
    first = s.stats()["threshold"]
    assert first == pytest.approx(float(np.quantile(recorded, 0.6)))
    s.select(batch([[0.55, 0.45]] * 4), torch.arange(4), 4)
    assert s.stats()["threshold"] == first
    s.select(batch([[0.55, 0.45]] * 4), torch.arange(4), 5)  # round 2 sees the new memory
    assert s.stats()["threshold"] == pytest.approx(0.55)


# --------------------------------------------------------------------------- uncertainty (UPS)

# K = 3 passes, B = 3, C = 2:
#   example 0: stable and confident; example 1: confident on average, unstable;
#   example 2: stable but unsure
UNC_PROBS = torch.tensor([
    [[0.90, 0.10], [0.99, 0.01], [0.55, 0.45]],
    [[0.92, 0.08], [0.60, 0.40], [0.55, 0.45]],
    [[0.91, 0.09], [0.90, 0.10], [0.56, 0.44]],
])


def entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def by_hand(measure):
    K, B, C = UNC_PROBS.shape
    rows = UNC_PROBS.tolist()
    out = []
    for b in range(B):
        passes = [rows[k][b] for k in range(K)]
        mean = [statistics.fmean(p[c] for p in passes) for c in range(C)]
        top = mean.index(max(mean))
        if measure == "std":
            u = statistics.stdev(p[top] for p in passes)  # unbiased, like torch.std in the UPS code
        elif measure == "entropy":
            u = entropy(mean) / math.log(C)
        else:
            u = (entropy(mean) - statistics.fmean(entropy(p) for p in passes)) / math.log(C)
        out.append((max(mean), top, u))
    return out


@pytest.mark.parametrize("measure, max_uncertainty", [("std", 0.05), ("entropy", 0.6), ("bald", 0.05)])
def test_uncertainty_selector_measures_by_hand(registry, measure, max_uncertainty):
    s = make(registry, "uncertainty", RunContext(num_classes=2, pool_size=8, steps=10, seed=0), passes=3,
             threshold=0.7, max_uncertainty=max_uncertainty, measure=measure)
    assert s.options.passes == 3
    chosen = s.select(UNC_PROBS, torch.arange(3), 1)
    expected = by_hand(measure)
    assert chosen.weights.tolist() == [float(conf >= 0.7 and u <= max_uncertainty) for conf, _, u in expected]
    assert chosen.weights.tolist() == [1.0, 0.0, 0.0]  # only the stable, confident example
    assert torch.equal(chosen.targets, torch.eye(2)[[top for _, top, _ in expected]])
    # κ just above example 1's uncertainty selects it, just below does not (example 2 always fails τ):
    # this pins the measure's exact value, e.g. the unbiased std and the division by log C
    for offset, want in ((1e-4, [1.0, 1.0, 0.0]), (-1e-4, [1.0, 0.0, 0.0])):
        kappa = expected[1][2] + offset
        tight = make(registry, "uncertainty", RunContext(num_classes=2, pool_size=8, steps=10, seed=0), passes=3,
                     threshold=0.7, max_uncertainty=kappa, measure=measure)
        assert tight.select(UNC_PROBS, torch.arange(3), 1).weights.tolist() == want
        assert tight.stats() == {"threshold": 0.7, "max_uncertainty": pytest.approx(kappa)}


def test_uncertainty_selector_needs_several_passes(registry):
    s = make(registry, "uncertainty", RunContext(num_classes=2, pool_size=8, steps=10, seed=0))
    assert s.options.passes == 10
    with pytest.raises(ValueError, match="K, B, C"):
        s.select(UNC_PROBS[0], torch.arange(3), 1)


# --------------------------------------------------------------------------- top-k


def test_topk_is_class_balanced_and_ties_are_not_double_selected(registry):
    s = make(registry, "topk", RunContext(num_classes=2, pool_size=8, steps=10, seed=0), fraction=0.5)
    # k = ceil(0.5 · 8 / 2) = 2. Class 0: 0.9, 0.8, 0.8, 0.6, 0.55 (a tie at the k-th place);
    # class 1: 0.7, 0.95, 0.95 (a tie at the top, both fit)
    tops = [0.8, 0.9, 0.6, 0.8, 0.55, 0.7, 0.95, 0.95]
    classes = [0, 0, 0, 0, 0, 1, 1, 1]
    probs = batch([[t, 1 - t] if c == 0 else [1 - t, t] for t, c in zip(tops, classes)])
    chosen = s.select(probs, torch.arange(8), 1)
    weights = chosen.weights.tolist()
    for c in (0, 1):
        mine = [i for i in range(8) if classes[i] == c]
        assert sum(weights[i] for i in mine) == 2  # exactly k per class
        picked = sorted((tops[i] for i in mine if weights[i]), reverse=True)
        assert picked == sorted((tops[i] for i in mine), reverse=True)[:2]  # the k most confident
    assert weights[0] + weights[3] == 1  # of the tie 0.8 / 0.8 one is taken
    assert torch.equal(chosen.targets.argmax(-1), torch.tensor(classes))
    assert class_thresholds(s.stats(), 2) == pytest.approx([0.8, 0.95])


def test_topk_keeps_all_of_a_small_class(registry):
    s = make(registry, "topk", RunContext(num_classes=3, pool_size=8, steps=10, seed=0), fraction=1.0)
    # k = ceil(6 / 3) = 2: class 0 has 4, class 1 has 1, class 2 has 1
    probs = batch([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.6, 0.2, 0.2], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7]])
    assert s.select(probs, torch.arange(6), 1).weights.tolist() == [1, 1, 0, 0, 1, 1]


def test_topk_round_scope_uses_pool_thresholds_after_the_first_round(registry):
    # pool 6, batches of 3, 10 steps: a round is min(ceil(6 / 3), ceil(0.1 · 10)) = 1 step
    ctx = RunContext(num_classes=2, pool_size=6, steps=10, seed=0, unlabeled_batch_size=3)
    s = make(registry, "topk", ctx, fraction=0.5, scope="round")
    first = batch([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    assert s.select(first, torch.tensor([0, 1, 2]), 1).weights.tolist() == [1, 0, 1]  # k = ceil(0.75) = 1 per class
    assert s.stats()["round_thresholds"] == 0.0
    # memory: class 0 {0.9, 0.6}, class 1 {0.7}; k_pool = ceil(0.5 · 3 / 2) = 1 -> T = [0.9, 0.7]
    second = batch([[0.95, 0.05], [0.85, 0.15], [0.2, 0.8], [0.35, 0.65]])
    assert s.select(second, torch.tensor([3, 4, 5, 0]), 2).weights.tolist() == [1, 0, 1, 0]
    assert class_thresholds(s.stats(), 2) == pytest.approx([0.9, 0.7]) and s.stats()["round_thresholds"] == 1.0
    # step 3: memory is {0: 0.65 (class 1), 1: 0.6, 2: 0.7, 3: 0.95, 4: 0.85, 5: 0.8}; 6 recorded,
    # k_pool = ceil(0.5 · 6 / 2) = 2: class 0 {0.95, 0.85, 0.6} -> 0.85; class 1 {0.8, 0.7, 0.65} -> 0.7
    s.select(batch([[0.5, 0.5]]), torch.tensor([1]), 3)
    assert class_thresholds(s.stats(), 2) == pytest.approx([0.85, 0.7])


# CBST (Zou et al. 2018), as its code computes it (yzou2/CRST crst_seg.py kc_parameters): per class,
# the confidences of the examples predicted c sorted descending, k_c = floor(n_c · p), threshold = the
# k_c-th of them, 1 when k_c = 0. Nine examples, three classes, p = 0.5:
CBST_TOPS = [0.9, 0.8, 0.7, 0.6, 0.55, 0.95, 0.65, 0.6, 0.5]
CBST_CLASSES = [0, 0, 0, 0, 0, 1, 1, 1, 2]


def three_class_rows(tops, classes):
    rows = []
    for t, c in zip(tops, classes):
        row = [(1 - t) / 2] * 3
        row[c] = t
        rows.append(row)
    return batch(rows)


def test_topk_proportion_keeps_floor_p_of_each_class_like_cbst(registry):
    s = make(registry, "topk", RunContext(num_classes=3, pool_size=9, steps=10, seed=0), fraction=0.5,
             per_class="proportion")
    chosen = s.select(three_class_rows(CBST_TOPS, CBST_CLASSES), torch.arange(9), 1)
    # class 0: n = 5, floor(2.5) = 2 -> 0.9, 0.8; class 1: n = 3, floor(1.5) = 1 -> 0.95; class 2: floor(0.5) = 0
    assert chosen.weights.tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 0]
    assert class_thresholds(s.stats(), 3) == pytest.approx([0.8, 0.95, 1.0])
    # the equal count on the same batch: k = ceil(0.5 · 9 / 3) = 2 for every class, all of class 2's one
    s = make(registry, "topk", RunContext(num_classes=3, pool_size=9, steps=10, seed=0), fraction=0.5)
    assert s.select(three_class_rows(CBST_TOPS, CBST_CLASSES), torch.arange(9), 1).weights.tolist() == [1, 1, 0, 0, 0, 1, 1, 0, 1]
    assert class_thresholds(s.stats(), 3) == pytest.approx([0.8, 0.65, 0.5])


def test_topk_proportion_round_scope_thresholds_from_the_pool(registry):
    # pool 6, batches of 3, 10 steps: a round is 1 step (as above)
    ctx = RunContext(num_classes=2, pool_size=6, steps=10, seed=0, unlabeled_batch_size=3)
    s = make(registry, "topk", ctx, fraction=0.5, scope="round", per_class="proportion")
    first = batch([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    # class 0: floor(0.5 · 2) = 1 -> 0.9; class 1: floor(0.5 · 1) = 0 -> nothing, T = 1
    assert s.select(first, torch.tensor([0, 1, 2]), 1).weights.tolist() == [1, 0, 0]
    # memory: class 0 {0.9, 0.6}, class 1 {0.7} -> the same T = [0.9, 1]; 1.0 itself passes (CBST: p / T >= 1)
    second = batch([[0.95, 0.05], [0.85, 0.15], [0.2, 0.8], [0.0, 1.0]])
    assert s.select(second, torch.tensor([3, 4, 5, 0]), 2).weights.tolist() == [1, 0, 0, 1]
    assert class_thresholds(s.stats(), 2) == pytest.approx([0.9, 1.0]) and s.stats()["round_thresholds"] == 1.0
    # memory now {0: 1.0 (class 1), 1: 0.6, 2: 0.7, 3: 0.95, 4: 0.85, 5: 0.8}: class 0 {0.95, 0.85, 0.6} and
    # class 1 {1.0, 0.8, 0.7}, floor(0.5 · 3) = 1 each -> T = [0.95, 1.0]
    s.select(batch([[0.5, 0.5]]), torch.tensor([1]), 3)
    assert class_thresholds(s.stats(), 2) == pytest.approx([0.95, 1.0])


# --------------------------------------------------------------------------- every selector


def random_steps(selector, ctx, steps, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for step in steps:
        passes = getattr(getattr(selector, "options", None), "passes", 1)  # MC-dropout selectors select from [K, B, C]
        shape = (passes, 6, ctx.num_classes) if passes > 1 else (6, ctx.num_classes)
        probs = (torch.randn(shape, generator=g) * 2).softmax(-1)
        indices = torch.randint(0, ctx.pool_size, (6,), generator=g)
        out.append(selector.select(probs, indices, step))
    return out


CTX = RunContext(num_classes=4, pool_size=30, steps=12, seed=0, unlabeled_batch_size=6)
STATEFUL = {"flexmatch", "freematch", "softmatch", "curriculum", "topk"}
VARIANTS = [("threshold", {}), ("none", {}), ("flexmatch", {}), ("flexmatch", {"warmup": "pool", "soft": True}),
            ("freematch", {}), ("softmatch", {}), ("softmatch", {"soft": True, "temperature": 0.5}),
            ("curriculum", {}), ("uncertainty", {"passes": 3, "measure": "bald"}), ("topk", {}),
            ("topk", {"scope": "round"}), ("topk", {"scope": "round", "per_class": "proportion"})]


@pytest.mark.parametrize("name, options", VARIANTS)
def test_weights_in_unit_interval_and_targets_are_distributions(registry, name, options):
    s = make(registry, name, CTX, **options)
    for chosen in random_steps(s, CTX, range(1, 13), seed=1):
        assert chosen.weights.shape == (6,) and chosen.targets.shape == (6, 4)
        assert ((chosen.weights >= 0) & (chosen.weights <= 1)).all()
        assert torch.allclose(chosen.targets.sum(-1), torch.ones(6), atol=1e-5)
        assert (chosen.targets >= 0).all()
    stats = s.stats()
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in stats.items()), stats


@pytest.mark.parametrize("name, options", VARIANTS)
def test_state_survives_save_and_load(registry, name, options, tmp_path):
    original = make(registry, name, CTX, **options)
    random_steps(original, CTX, range(1, 6), seed=2)  # stop mid-round (curriculum: rounds of 3 steps; topk: 2)
    torch.save(original.state_dict(), tmp_path / "selector.pt")
    resumed = make(registry, name, CTX, **options)
    resumed.load_state_dict(torch.load(tmp_path / "selector.pt"))
    assert resumed.stats() == original.stats()
    for a, b in zip(random_steps(original, CTX, range(6, 13), seed=3), random_steps(resumed, CTX, range(6, 13), seed=3)):
        assert torch.equal(a.weights, b.weights) and torch.equal(a.targets, b.targets)
    assert resumed.stats() == original.stats()
    if name in STATEFUL and (name != "topk" or options.get("scope") == "round"):  # the state matters here
        fresh = make(registry, name, CTX, **options)
        random_steps(fresh, CTX, range(6, 13), seed=3)
        assert fresh.stats() != original.stats()


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("overrides, message", [
    (["selector.name=flexmatch", "selector.mapping=cubic"], "selector.mapping must be one of 'convex', 'linear'"),
    (["selector.name=flexmatch", "selector.warmup=always"], "selector.warmup must be one of"),
    (["selector.name=flexmatch", "selector.threshold=1.5"], "selector.threshold must be in"),
    (["selector.name=flexmatch", "selector.temperature=0"], "selector.temperature must be positive"),
    (["selector.name=freematch", "selector.ema_momentum=1.0"], "selector.ema_momentum must be in"),
    (["selector.name=softmatch", "selector.ema_momentum=-0.1"], "selector.ema_momentum must be in"),
    (["selector.name=softmatch", "selector.n_sigma=0"], "selector.n_sigma must be positive"),
    (["selector.name=curriculum", "selector.increment=0"], "selector.increment must be in"),
    (["selector.name=curriculum", "selector.increment=1.2"], "selector.increment must be in"),
    (["selector.name=uncertainty", "selector.passes=1"], "selector.passes must be at least 2"),
    (["selector.name=uncertainty", "selector.measure=variance"], "selector.measure must be one of"),
    (["selector.name=uncertainty", "selector.max_uncertainty=-1"], "selector.max_uncertainty must be 0 or more"),
    (["selector.name=topk", "selector.fraction=0"], "selector.fraction must be in"),
    (["selector.name=topk", "selector.scope=epoch"], "selector.scope must be one of"),
    (["selector.name=topk", "selector.per_class=share"], "selector.per_class must be one of 'count', 'proportion'"),
])
def test_options_are_validated(registry, overrides, message):
    with pytest.raises(UserError, match=message):
        resolve(parse_overrides(["method=fixmatch", *overrides]), registry)


def test_options_resolve_and_unset_momentum_is_kept_unset(registry):
    cfg = resolve(parse_overrides(["method=fixmatch", "selector.name=freematch"]), registry)
    assert cfg.resolved["selector"] == {"name": "freematch", "ema_momentum": None}
    cfg = resolve(parse_overrides(["method=fixmatch", "selector.name=freematch", "selector.ema_momentum=0.99"]), registry)
    assert cfg.choices["selector"].options.ema_momentum == 0.99


# --------------------------------------------------------------------------- a real run of each

RUN = ["method=fixmatch", *FAST]
STATS = {"flexmatch": "selector/threshold/class_0", "freematch": "selector/threshold", "softmatch": "selector/mu",
         "curriculum": "selector/kept_fraction", "uncertainty": "selector/max_uncertainty", "topk": "selector/threshold/class_0"}


@pytest.mark.parametrize("name", NEW)
def test_short_run_records_selector_stats(registry, tmp_path, name):
    cfg = resolve(parse_overrides([*RUN, f"selector.name={name}"]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and (run_dir / "result.json").is_file()
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert STATS[name] in m and isinstance(m[STATS[name]], float)
        assert 0 <= m["mask_rate"] <= 1
