"""The model module (testbed.model): the accuracy and macro-F1 metric."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.model import accuracy_and_macro_f1


def test_accuracy_and_macro_f1_by_hand():
    labels = np.array([0, 0, 1, 2])
    probs = np.eye(4)[[0, 1, 1, 1]]  # predictions 0, 1, 1, 1; class 3 neither true nor predicted
    accuracy, macro_f1 = accuracy_and_macro_f1(probs, labels, num_classes=4)
    # F1: class 0 P=1 R=1/2 -> 2/3; class 1 P=1/3 R=1 -> 1/2; class 2 -> 0; class 3 absent, not averaged
    assert accuracy == pytest.approx(0.5)
    assert macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
