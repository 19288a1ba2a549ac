"""The distances (l1, l2, kl, ce, js) on hand-computed values (natural log)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from testbed import RunContext
from testbed.config import parse_overrides, resolve

LN2, LN3 = math.log(2.0), math.log(3.0)
CTX = RunContext(num_classes=3, pool_size=10, steps=5, seed=0)


def distance(registry, name, **options):
    record = registry.get("distance", name)
    return record.factory(record.options(**options), CTX)


@pytest.fixture
def js(registry):
    record = registry.get("distance", "js")
    return record.factory(record.options(), RunContext(num_classes=2, pool_size=0, steps=1, seed=0))


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def js_by_hand(p, t):
    m = [(a + b) / 2 for a, b in zip(p, t)]
    return (kl(p, m) + kl(t, m)) / 2


# logits [0, ln 3] -> [1/4, 3/4]; [0, 0] -> [1/2, 1/2]
LOGITS = torch.tensor([[0.0, LN3], [0.0, 0.0]])
SOFT = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
ONE_HOT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


# --------------------------------------------------------------------------- l1, l2, kl, ce


def test_l1(registry):
    d = distance(registry, "l1")
    assert torch.allclose(d(LOGITS, ONE_HOT), torch.tensor([0.75 + 0.75, 0.5 + 0.5]))
    assert torch.allclose(d(LOGITS, SOFT), torch.tensor([0.25 + 0.25, 0.0]))


def test_l2(registry):
    d = distance(registry, "l2")
    assert torch.allclose(d(LOGITS, ONE_HOT), torch.tensor([0.75**2 * 2, 0.25 * 2]))
    assert torch.allclose(d(LOGITS, SOFT), torch.tensor([0.25**2 * 2, 0.0]))


def test_kl_soft_targets(registry):
    d = distance(registry, "kl")
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert torch.allclose(d(LOGITS, SOFT), torch.tensor([expected, 0.0]), atol=1e-6)


def test_kl_one_hot_targets_count_zero_log_zero_as_zero(registry):
    d = distance(registry, "kl")
    logits = LOGITS.clone().requires_grad_(True)
    value = d(logits, ONE_HOT)
    assert torch.allclose(value, torch.tensor([math.log(4.0), math.log(2.0)]), atol=1e-6)
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # d KL / d logits = softmax(logits) - target
    assert torch.allclose(logits.grad, torch.tensor([[0.25 - 1.0, 0.75], [0.5, 0.5 - 1.0]]), atol=1e-6)


def test_kl_with_temperature_softens_the_student_and_scales_by_t_squared(registry):
    d = distance(registry, "kl", temperature=2.0)
    logits = torch.tensor([[0.0, 2 * LN3]])  # / T = [0, ln 3] -> [1/4, 3/4]
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) * 4.0
    assert torch.allclose(d(logits, SOFT[:1]), torch.tensor([expected]), atol=1e-6)


def test_ce_soft_targets(registry):
    d = distance(registry, "ce")
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert torch.allclose(d(LOGITS, SOFT), torch.tensor([expected, math.log(2.0)]), atol=1e-6)


def test_ce_equals_cross_entropy_for_one_hot_targets(registry):
    d = distance(registry, "ce")
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 4.0], [-1.0, -1.0, -1.0], [10.0, 0.0, -10.0]])
    labels = torch.tensor([0, 2, 1, 2])
    assert torch.allclose(d(logits, F.one_hot(labels, 3).float()), F.cross_entropy(logits, labels, reduction="none"),
                          atol=1e-5)


@pytest.mark.parametrize("name", ["l1", "l2", "kl"])
def test_distance_is_zero_when_the_student_matches_the_targets(registry, name):
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 4.0], [7.0, 7.0, 7.0]])
    value = distance(registry, name)(logits, logits.softmax(-1))
    assert value.shape == (3,)
    assert torch.allclose(value, torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("name", ["l1", "l2", "kl", "ce"])
def test_distance_is_per_example_and_positive_when_different(registry, name):
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    value = distance(registry, name)(logits, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert value.shape == (2,) and (value > 0.1).all()


# --------------------------------------------------------------------------- js


def test_js_hand_values_with_one_hot_targets(js):
    # row 1: p = [1/4, 3/4], t = [1, 0], m = [5/8, 3/8]; row 2: p = [1/2, 1/2], t = [0, 1], m = [1/4, 3/4]
    row1 = (0.25 * math.log(0.25 / 0.625) + 0.75 * math.log(0.75 / 0.375) + math.log(1 / 0.625)) / 2
    row2 = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + math.log(1 / 0.75)) / 2
    assert row1 == pytest.approx(js_by_hand([0.25, 0.75], [1.0, 0.0]))
    value = js(LOGITS, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert value.shape == (2,)
    assert torch.allclose(value, torch.tensor([row1, row2]), atol=1e-6)


def test_js_hand_values_with_soft_targets(js):
    targets = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    expected = [js_by_hand([0.25, 0.75], [0.5, 0.5]), js_by_hand([0.5, 0.5], [0.2, 0.8])]
    assert torch.allclose(js(LOGITS, targets), torch.tensor(expected), atol=1e-6)


def test_js_is_symmetric(js):
    a = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 4.0], [2.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 3.0, 0.5], [2.0, 0.1, -5.0]])
    assert torch.allclose(js(a, b.softmax(-1)), js(b, a.softmax(-1)), atol=1e-6)
    assert (js(a, b.softmax(-1)) > 0.01).all()


def test_js_is_zero_at_equality_and_bounded_by_ln2(js):
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 4.0], [7.0, 7.0, 7.0]])
    assert torch.allclose(js(logits, logits.softmax(-1)), torch.zeros(3), atol=1e-6)
    disjoint = js(torch.tensor([[60.0, -60.0]]), torch.tensor([[0.0, 1.0]]))
    assert disjoint.item() == pytest.approx(LN2, abs=1e-6)


@pytest.mark.parametrize("scale", [1.0, 300.0])  # 300: the softmax underflows to exact zeros
def test_js_gradients_are_finite_and_correct_with_one_hot_targets(js, scale):
    logits = (torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [0.5, 0.5, 0.5]], dtype=torch.float64) * scale)
    targets = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    logits.requires_grad_(True)
    value = js(logits, targets)
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()
    if scale == 1.0:
        # dJS/dp_c = ½ ln(p_c / m_c), then through the softmax: g_z = p ⊙ (g − ⟨p, g⟩)
        p = logits.detach().softmax(-1)
        g = 0.5 * torch.log(p / ((p + targets) / 2))
        expected = p * (g - (p * g).sum(-1, keepdim=True))
        assert torch.allclose(logits.grad, expected, atol=1e-10)


def test_js_is_selectable_by_config(registry):
    cfg = resolve(parse_overrides(["method=fixmatch", "distance.name=js"]), registry)
    assert cfg.choices["distance"].record.factory is registry.get("distance", "js").factory
