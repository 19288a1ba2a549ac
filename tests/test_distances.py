"""The Jensen-Shannon distance on hand-computed values (natural log)."""

from __future__ import annotations

import math

import pytest
import torch

from testbed.config import parse_overrides, resolve

LN2, LN3 = math.log(2.0), math.log(3.0)


@pytest.fixture
def js(registry):
    record = registry.get("distance", "js")
    return record.factory(record.options())


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def js_by_hand(p, t):
    m = [(a + b) / 2 for a, b in zip(p, t)]
    return (kl(p, m) + kl(t, m)) / 2


# logits [0, ln 3] -> [1/4, 3/4]; [0, 0] -> [1/2, 1/2]
LOGITS = torch.tensor([[0.0, LN3], [0.0, 0.0]])


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
