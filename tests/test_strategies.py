"""The built-in strategies on hand-computed tensors: distances, selectors, augmentations,
schedule, teacher, and the metric."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from testbed import RunContext, TextBatch
from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.model import accuracy_and_macro_f1

CTX = RunContext(num_classes=3, pool_size=10, steps=5, seed=0)
LN3 = math.log(3.0)


def distance(registry, name, **options):
    record = registry.get("distance", name)
    return record.factory(record.options(**options))


def selector(registry, name, **options):
    record = registry.get("selector", name)
    return record.factory(record.options(**options), CTX)


def augmentation(registry, name, **options):
    record = registry.get("augmentation", name)
    return record.factory(record.options(**options))


# logits [0, ln 3] -> probabilities [1/4, 3/4]; logits [0, 0] -> [1/2, 1/2]
LOGITS = torch.tensor([[0.0, LN3], [0.0, 0.0]])
SOFT = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
ONE_HOT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


# --------------------------------------------------------------------------- distances


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


# --------------------------------------------------------------------------- selectors


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


# --------------------------------------------------------------------------- augmentations

LONG = "the quick brown fox jumps over the lazy dog while seven wizards quietly judge every boxer in town"


def test_identity_augmentation(registry):
    aug = augmentation(registry, "identity")
    texts = ["a b", "", LONG]
    out = aug(texts, np.array([1, 2, 3]))
    assert out == texts and out is not texts


def test_drop_swap_is_seeded_per_text(registry):
    aug = augmentation(registry, "drop_swap")
    assert aug([LONG], np.array([5])) == aug([LONG], np.array([5]))
    outputs = {aug([LONG], np.array([seed]))[0] for seed in range(5)}
    assert len(outputs) > 1 and LONG not in outputs
    # the view of a text depends on the text and its seed only, not on the rest of the batch
    batch = aug(["other words here to change things", LONG], np.array([9, 5]))
    assert batch[1] == aug([LONG], np.array([5]))[0]


def test_drop_swap_only_drops_and_reorders_words(registry):
    words = LONG.split()
    for seed in range(5):
        out = augmentation(registry, "drop_swap", p_delete=0.3, p_swap=0.2)([LONG], np.array([seed]))[0].split()
        assert 1 <= len(out) < len(words) + 1
        assert not (set(out) - set(words))
    swapped = augmentation(registry, "drop_swap", p_delete=0.0, p_swap=0.5)([LONG], np.array([3]))[0]
    assert sorted(swapped.split()) == sorted(words) and swapped != LONG
    one_left = augmentation(registry, "drop_swap", p_delete=1.0, p_swap=0.0)([LONG], np.array([3]))[0]
    assert len(one_left.split()) == 1 and one_left in words  # at least one word stays


@pytest.mark.parametrize("text", ["", "   ", "word", "  word  "])
def test_drop_swap_leaves_too_short_texts_alone(registry, text):
    aug = augmentation(registry, "drop_swap", p_delete=0.9, p_swap=0.9)
    assert aug([text], np.array([1])) == [text]


def test_drop_swap_with_zero_probabilities_is_the_identity(registry):
    aug = augmentation(registry, "drop_swap", p_delete=0.0, p_swap=0.0)
    texts = [LONG, "two words", "What is the full form of .com ?"]
    assert aug(texts, np.array([1, 2, 3])) == texts


@pytest.mark.parametrize("override", ["augmentation.strong.p_delete=2", "augmentation.strong.p_swap=-0.1"])
def test_drop_swap_options_are_validated(registry, override):
    with pytest.raises(UserError, match=r"Invalid value in section 'augmentation.strong'.*must be in \[0, 1\]"):
        resolve(parse_overrides(["method=fixmatch", override]), registry)


# --------------------------------------------------------------------------- schedule and teacher


def test_constant_schedule(registry):
    record = registry.get("schedule", "constant")
    weight = record.factory(record.options(weight=0.25), CTX)
    assert [weight(step) for step in (1, 2, 100)] == [0.25, 0.25, 0.25]
    assert record.factory(record.options(), CTX)(1) == 1.0
    with pytest.raises(UserError, match="schedule.weight must be 0 or more"):
        resolve(parse_overrides(["schedule.weight=-1"]), registry)


class DropoutModel(torch.nn.Module):
    """A Hugging Face-style classifier: model(**inputs).logits."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        return SimpleNamespace(logits=self.linear(self.dropout(x)))


@pytest.mark.parametrize("dropout", [True, False])
def test_self_teacher(registry, dropout):
    torch.manual_seed(0)
    student = DropoutModel().train()
    record = registry.get("teacher", "self")
    teacher = record.factory(record.options(dropout=dropout), CTX, student)
    inputs = {"x": torch.ones(64, 4)}
    batch = TextBatch(["unused"] * 64, lambda texts: inputs)
    first, second = teacher.probs(batch), teacher.probs(batch)
    assert not first.requires_grad
    assert torch.allclose(first.sum(-1), torch.ones(64))
    assert student.training  # left in train mode either way
    if dropout:  # predicts in train mode: dropout makes the rows differ
        assert not torch.equal(first, second)
    else:
        assert torch.equal(first, second)
        assert torch.allclose(first, student.eval()(**inputs).logits.softmax(-1))


# --------------------------------------------------------------------------- metric


def test_accuracy_and_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 2])
    probs = np.eye(4)[[0, 1, 1, 1]]  # predictions 0, 1, 1, 1; class 3 neither true nor predicted
    accuracy, macro_f1 = accuracy_and_macro_f1(probs, labels, num_classes=4)
    # F1: class 0 P=1 R=1/2 -> 2/3; class 1 P=1/3 R=1 -> 1/2; class 2 -> 0; class 3 absent, not averaged
    assert accuracy == pytest.approx(0.5)
    assert macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
