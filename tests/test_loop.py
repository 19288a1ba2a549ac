"""The loop itself (testbed/loop.py), by hand: one step of a linear softmax model on fixed feature
vectors, its loss and gradient written out in numpy, so a change in what the loop computes (the
consistency mean, which view goes to whom, when the teacher moves, what is detached, which model is
evaluated) fails here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch

from conftest import FAST
from testbed import BaseTeacher, RunContext, TeacherContext, Texts
from testbed.config import parse_overrides, resolve
from testbed.data import Split
from testbed.loop import Parts, train

C, D = 3, 4  # classes, features
LABELED, POOL, TEST = ["l0", "l1"], ["u0", "u1", "u2", "u3"], ["t0", "t1", "t2"]
STRONG = "!"  # the strong view of a text is the text and "!"; the weak view is the text


def features(text: str) -> np.ndarray:
    """A fixed vector per text (the weak and strong views of a text differ)."""
    seed = sum(ord(c) * 31**i for i, c in enumerate(text)) % 2**32
    return np.random.default_rng(seed).normal(size=D)


class Tokenizer:
    def __call__(self, texts, **ignored):
        return {"x": torch.tensor(np.stack([features(t) for t in texts]), dtype=torch.float32)}


class Linear(torch.nn.Module):
    """logits = W x + b, as a Hugging Face-style classifier: model(**inputs).logits."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.tensor(bias, dtype=torch.float32))

    def forward(self, x):
        return SimpleNamespace(logits=x @ self.weight.T + self.bias)


class Views:
    """Weak = the text, strong = the text + "!", no cache."""

    def __init__(self, pool):
        self.pool = pool

    def draw(self, indices):
        texts = [self.pool[i] for i in np.asarray(indices).tolist()]
        return texts, [t + STRONG for t in texts]

    def stats(self):
        return {}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Recorded(torch.optim.AdamW):
    """AdamW that keeps each step's gradients (before the update) and parameters (after it)."""

    steps: ClassVar[list] = []  # reset by the fixture

    def step(self, closure=None):
        grads = [p.grad.detach().clone() for group in self.param_groups for p in group["params"]]
        out = super().step(closure)
        Recorded.steps.append((grads, [p.detach().clone() for group in self.param_groups for p in group["params"]]))
        return out


@pytest.fixture
def recorded(monkeypatch):
    Recorded.steps = []
    monkeypatch.setattr(torch.optim, "AdamW", Recorded)
    return Recorded.steps


def setup(registry, selector: dict, teacher: dict, weight: float = 0.5, steps: int = 1):
    """A run over the fixed features: 2 labeled texts (batch 2), 4 unlabeled (batch 4), 3 test."""
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(C, D)), rng.normal(size=C) * 0.1
    overrides = [*(o for o in FAST if not o.startswith("train.")), "method=fixmatch", f"train.steps={steps}", "train.eval_every=1",
                 "train.batch_size=2", "train.unlabeled_ratio=2", "train.lr=0.1", f"schedule.weight={weight}", "train.threads=1"]
    cfg = resolve(parse_overrides(overrides), registry)
    split = Split(label_names=["a", "b", "c"], labeled=Texts(LABELED, np.array([0, 2])), validation=Texts([], np.array([], int)),
                  test=Texts(TEST, np.array([1, 0, 2])), pool_texts=POOL, pool_gold=np.array([0, 1, 2, -1]))
    student = Linear(w0, b0)
    ctx = RunContext(num_classes=C, pool_size=len(POOL), steps=steps, seed=0, labeled=split.labeled)
    build = lambda kind, spec, context: (lambda r: r.factory(r.options(**spec.get("options", {})), context))(  # noqa: E731
        registry.get(kind, spec["name"]))
    parts = Parts(split=split, student=student, tokenizer=Tokenizer(), views=Views(POOL),
                  teacher=build("teacher", teacher, TeacherContext(**vars(ctx), student=student)),
                  selector=build("selector", selector, ctx), distance=build("distance", {"name": "ce"}, ctx),
                  schedule=lambda step: weight, tsa=lambda step: 1.0)
    return cfg, parts, w0, b0


def by_hand(w, b, weight, threshold=None):
    """Loss terms and gradient of one step, from the formulas: CE on the labeled batch (mean over
    it) + λ · (1/U) Σ_j w_j CE(student(strong_j), t_j), t_j and w_j from the teacher on weak_j."""
    x_l = np.stack([features(t) for t in LABELED])
    y = np.eye(C)[[0, 2]]
    p = softmax(x_l @ w.T + b)
    sup = -np.mean(np.log((p * y).sum(-1)))
    grad_w, grad_b = (p - y).T @ x_l / len(x_l), (p - y).mean(0)
    x_weak = np.stack([features(t) for t in POOL])
    x_strong = np.stack([features(t + STRONG) for t in POOL])
    q = softmax(x_weak @ w.T + b)  # the teacher (the student itself) on the weak view
    if threshold is None:  # soft targets, every weight 1
        targets, weights = q, np.ones(len(POOL))
    else:  # hard targets, weight 1 where the teacher is confident
        targets, weights = np.eye(C)[q.argmax(-1)], (q.max(-1) >= threshold).astype(float)
    r = softmax(x_strong @ w.T + b)  # the student on the strong view
    consistency = np.mean(weights * -(targets * np.log(r)).sum(-1))  # divided by U, not by Σ w
    d = weights[:, None] * (r - targets) / len(POOL)
    return {"sup": sup, "consistency": consistency, "mask_rate": weights.mean(), "q": q,
            "grad_w": grad_w + weight * d.T @ x_strong, "grad_b": grad_b + weight * d.sum(0)}


def test_one_fixmatch_step_has_the_loss_and_gradient_of_the_formula(registry, recorded):
    cfg, parts, w0, b0 = setup(registry, {"name": "threshold", "options": {"threshold": 0.9}}, {"name": "self"})
    confidences = np.sort(by_hand(w0, b0, 0.5)["q"].max(-1))
    threshold = float(confidences[1:3].mean())  # between the 2nd and 3rd: two of four selected
    cfg, parts, w0, b0 = setup(registry, {"name": "threshold", "options": {"threshold": threshold}}, {"name": "self"})
    expected = by_hand(w0, b0, 0.5, threshold)
    assert expected["mask_rate"] == 0.5  # so dividing by Σ w instead of U would double the term
    records = []
    trained = train(cfg, parts, on_evaluation=records.append, progress=False)
    (grads, after), = recorded
    np.testing.assert_allclose(grads[0].numpy(), expected["grad_w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1].numpy(), expected["grad_b"], rtol=1e-5, atol=1e-6)
    (record,) = records
    assert record["train_loss"] == pytest.approx(expected["sup"], rel=1e-5)
    assert record["consistency_loss"] == pytest.approx(expected["consistency"], rel=1e-5)
    assert record["mask_rate"] == 0.5 and record["consistency_weight"] == 0.5
    # what is evaluated is the student after its step
    x_test = np.stack([features(t) for t in TEST])
    w1, b1 = (t.numpy().astype(np.float64) for t in after)
    np.testing.assert_allclose(trained.predictions["test_probs_last"], softmax(x_test @ w1.T + b1), rtol=1e-5, atol=1e-6)


class GradCarrying(BaseTeacher):
    """A teacher that forgets torch.no_grad: its probabilities carry the student's gradient."""

    def __init__(self, student):
        self.student = student

    def probs(self, batch, stochastic=False):
        return self.student(**batch.inputs).logits.softmax(-1)

    def update(self, student, step, training):
        pass


def test_targets_never_carry_gradient_whatever_the_teacher_returns(registry, recorded):
    cfg, parts, w0, b0 = setup(registry, {"name": "none"}, {"name": "self"})
    parts.teacher = GradCarrying(parts.student)
    train(cfg, parts, progress=False)
    expected = by_hand(w0, b0, 0.5)  # soft targets held constant
    (grads, _), = recorded
    np.testing.assert_allclose(grads[0].numpy(), expected["grad_w"], rtol=1e-5, atol=1e-6)


def test_the_ema_teacher_moves_after_the_optimizer_step(registry, recorded):
    cfg, parts, w0, b0 = setup(registry, {"name": "none"}, {"name": "ema", "options": {"decay": 0.9}})
    train(cfg, parts, progress=False)
    (_, after), = recorded
    alpha = min(0.9, 1 - 1 / (1 + 1))  # the ramp at step 1: 1/2
    ema = dict(parts.teacher.model.named_parameters())
    np.testing.assert_allclose(ema["weight"].detach().numpy(), alpha * w0 + (1 - alpha) * after[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ema["bias"].detach().numpy(), alpha * b0 + (1 - alpha) * after[1].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("evaluate", ["auto", "student"])
def test_an_ema_teacher_is_the_model_evaluated_and_both_are_recorded(registry, recorded, evaluate):
    """Mean Teacher's papers report the EMA weights: with train.evaluate=auto the headline metrics and
    the saved probabilities are the teacher's, the student's are recorded beside them; =student swaps."""
    cfg, parts, w0, b0 = setup(registry, {"name": "none"}, {"name": "ema", "options": {"decay": 0.9}})
    cfg = resolve({**cfg.resolved, "train": {**cfg.resolved["train"], "evaluate": evaluate}}, registry)
    trained = train(cfg, parts, progress=False)
    (_, after), = recorded
    w1, b1 = after[0].numpy(), after[1].numpy()
    x_test = np.stack([features(t) for t in TEST])
    student = softmax(x_test @ w1.T + b1)
    teacher = softmax(x_test @ (0.5 * w0 + 0.5 * w1).T + (0.5 * b0 + 0.5 * b1))  # α = 1/2 at step 1
    reported, other = (teacher, student) if evaluate == "auto" else (student, teacher)
    np.testing.assert_allclose(trained.predictions["test_probs_last"], reported, rtol=1e-5, atol=1e-6)
    result, labels = trained.result, np.array([1, 0, 2])
    assert result["evaluated_model"] == ("teacher" if evaluate == "auto" else "student")
    assert result["test_accuracy"] == pytest.approx(np.mean(reported.argmax(-1) == labels))
    assert result["student_test_accuracy"] == pytest.approx(np.mean(student.argmax(-1) == labels))
    assert result["teacher_test_accuracy"] == pytest.approx(np.mean(teacher.argmax(-1) == labels))
    assert not np.allclose(student, teacher, atol=1e-3)  # the two models differ, so the test tells them apart


def test_a_self_teacher_reports_the_student_only(registry, recorded):
    cfg, parts, w0, b0 = setup(registry, {"name": "none"}, {"name": "self"})
    result = train(cfg, parts, progress=False).result
    assert result["evaluated_model"] == "student" and "student_test_accuracy" not in result and "teacher_test_accuracy" not in result


def test_evaluating_a_teacher_without_a_model_is_refused(registry):
    from testbed.errors import UserError
    from testbed.loop import evaluated_models

    cfg = resolve(parse_overrides(["method=fixmatch", "train.evaluate=teacher"]), registry)
    record = registry.get("teacher", "self")
    teacher = record.factory(record.options(), TeacherContext(num_classes=C, pool_size=1, steps=1, seed=0, student=None))
    with pytest.raises(UserError, match="offers no model to evaluate"):
        evaluated_models(cfg, teacher)
