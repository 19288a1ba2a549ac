"""The regulariser seam (loss += regulariser.loss(batch)) and the built-in regularisers: each term
against its formula written out by hand in numpy, the loop adding it (loss, gradient, optimizer,
record, checkpoint), and the set-up errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_checkpoints import TWELVE_STEPS, saved, untimed
from test_loop import LABELED, POOL, STRONG, by_hand, features, softmax
from test_loop import recorded as recorded  # the fixture that keeps each step's gradients
from test_loop import setup as loop_setup

from conftest import FAST
from testbed import BaseRegulariser, RegularisationBatch, RegulariserContext, RunContext, UserError
from testbed.config import parse_overrides, resolve
from testbed.loop import prepare, train

C = 3


def build(registry, name: str, context=None, **options):
    record = registry.get("regulariser", name)
    return record.factory(record.options(**options), context or RegulariserContext(num_classes=C, pool_size=8, steps=10, seed=0))


def unlabeled_batch(logits, weights, selector=None, step: int = 1) -> RegularisationBatch:
    logits = torch.as_tensor(logits, dtype=torch.float32)
    selection = SimpleNamespace(weights=torch.as_tensor(weights, dtype=torch.float32), targets=None, probs=None)
    return RegularisationBatch(step=step, labeled_logits=torch.zeros(2, C), labels=torch.zeros(2, dtype=torch.long),
                               selector=selector, unlabeled_logits=logits, weak_texts=["a"] * len(logits), selection=selection)


def test_the_built_in_regularisers_are_registered(registry):
    assert {"none", "saf", "entropy", "mlm"} <= set(registry.names("regulariser"))
    assert build(registry, "none").loss(unlabeled_batch(np.zeros((2, C)), [1, 1])) is None


# --------------------------------------------------------------------------- saf


LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.5, -0.5, 0.0], [-1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])


def saf_by_hand(logits, mask, p_model, label_hist):
    """USB's entropy_loss, one step at a time."""
    selected = logits[np.asarray(mask) > 0]  # the examples the selector kept
    p = softmax(selected)
    predicted = p.argmax(-1)
    hist_s = np.array([(predicted == c).sum() for c in range(C)], dtype=float)
    hist_s = hist_s / hist_s.sum()
    with np.errstate(divide="ignore"):
        inv_label_hist = 1.0 / np.asarray(label_hist, dtype=float)
        inv_hist_s = 1.0 / hist_s
    inv_label_hist[np.isinf(inv_label_hist)] = 0.0  # a class never predicted: weight 0
    inv_hist_s[np.isinf(inv_hist_s)] = 0.0
    mod_p_model = np.asarray(p_model) * inv_label_hist
    mod_p_model = mod_p_model / mod_p_model.sum()
    mod_mean = p.mean(0) * inv_hist_s
    mod_mean = mod_mean / mod_mean.sum()
    return float(np.sum(mod_p_model * np.log(mod_mean + 1e-12)))


@pytest.mark.parametrize(("mask", "p_model", "label_hist"), [
    ([1, 0, 1, 1, 0], [0.5, 0.3, 0.2], [0.5, 0.5, 0.0]),  # class 2 predicted neither in the batch nor in the EMA: 1/0 -> 0
    ([1, 1, 1, 1, 1], [0.2, 0.45, 0.35], [0.3, 0.3, 0.4]),
])
def test_saf_is_usb_entropy_loss_by_hand(registry, mask, p_model, label_hist):
    selector = SimpleNamespace(p_model=torch.tensor(p_model, dtype=torch.float64), label_hist=torch.tensor(label_hist, dtype=torch.float64))
    context = RegulariserContext(num_classes=C, pool_size=8, steps=10, seed=0, selector=selector)
    expected = saf_by_hand(LOGITS, mask, p_model, label_hist)
    assert build(registry, "saf", context, weight=1.0).loss(unlabeled_batch(LOGITS, mask, selector)).item() == pytest.approx(expected, rel=1e-5)
    default = build(registry, "saf", context)  # λ_f = 0.001, USB's NLP configs
    assert default.loss(unlabeled_batch(LOGITS, mask, selector)).item() == pytest.approx(0.001 * expected, rel=1e-5)


def test_saf_is_zero_without_a_selected_example_and_absent_without_an_unlabeled_batch(registry):
    selector = SimpleNamespace(p_model=torch.full((C,), 1 / C), label_hist=torch.full((C,), 1 / C))
    saf = build(registry, "saf", RegulariserContext(num_classes=C, pool_size=8, steps=10, seed=0, selector=selector))
    assert saf.loss(unlabeled_batch(LOGITS, [0, 0, 0, 0, 0], selector)).item() == 0.0
    no_unlabeled = RegularisationBatch(step=1, labeled_logits=torch.zeros(2, C), labels=torch.zeros(2, dtype=torch.long), selector=selector)
    assert saf.loss(no_unlabeled) is None


def test_saf_reads_the_freematch_selectors_label_histogram_ema(registry):
    """FreeMatch's selector keeps USB's EMA of the teacher's argmax histogram, h_t = m h_{t-1} + (1 - m) hist / B, h_0 = 1/C."""
    record = registry.get("selector", "freematch")
    m = 0.7
    selector = record.factory(record.options(ema_momentum=m), RunContext(num_classes=C, pool_size=8, steps=100, seed=0))
    expected = np.full(C, 1 / C)
    rng = np.random.default_rng(0)
    for _ in range(3):
        probs = softmax(rng.normal(size=(6, C)) * 2)
        selector.select(torch.tensor(probs, dtype=torch.float32), torch.arange(6), 1)
        expected = m * expected + (1 - m) * np.bincount(probs.argmax(-1), minlength=C) / 6
    np.testing.assert_allclose(selector.label_hist.numpy(), expected, rtol=1e-6)
    assert selector.p_model is selector.local
    restored = record.factory(record.options(ema_momentum=m), RunContext(num_classes=C, pool_size=8, steps=100, seed=0))
    restored.load_state_dict(saved(selector.state_dict()))
    assert torch.equal(restored.label_hist, selector.label_hist)


def test_saf_without_the_freematch_selector_is_refused_at_set_up(registry):
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "regulariser=saf"]), registry)
    with pytest.raises(UserError, match="regulariser 'saf'.*Set selector.name=freematch"):
        prepare(cfg, registry)


# --------------------------------------------------------------------------- entropy


def test_entropy_is_the_mean_entropy_of_the_student_on_the_unlabeled_batch(registry):
    p = softmax(LOGITS)
    expected = np.mean(-(p * np.log(p)).sum(-1))  # every example, selected or not
    assert build(registry, "entropy", weight=1.0).loss(unlabeled_batch(LOGITS, [0, 0, 1, 0, 0])).item() == pytest.approx(expected, rel=1e-5)
    assert build(registry, "entropy").loss(unlabeled_batch(LOGITS, [1] * 5)).item() == pytest.approx(0.06 * expected, rel=1e-5)
    no_unlabeled = RegularisationBatch(step=1, labeled_logits=torch.zeros(2, C), labels=torch.zeros(2, dtype=torch.long), selector=None)
    assert build(registry, "entropy").loss(no_unlabeled) is None


# --------------------------------------------------------------------------- the loop adds the term


class Recording(BaseRegulariser):
    """0.3 · mean(labeled logits²) + 0.2 · Σ unlabeled logits + (s - 1)², s a parameter of its own (2 at the start)."""

    def __init__(self):
        self.batches = []
        self.s = torch.nn.Parameter(torch.tensor(2.0))

    def parameters(self):
        return [self.s]

    def loss(self, batch):
        self.batches.append(batch)
        term = 0.3 * batch.labeled_logits.pow(2).mean() + (self.s - 1.0) ** 2
        return term if batch.unlabeled_logits is None else term + 0.2 * batch.unlabeled_logits.sum()

    def stats(self):
        return {"calls": len(self.batches)}


def test_the_loop_adds_the_regulariser_term_and_optimizes_its_parameters(registry, recorded):
    cfg, parts, w0, b0 = loop_setup(registry, {"name": "none"}, {"name": "self"})
    parts.regulariser = Recording()
    records = []
    train(cfg, parts, on_evaluation=records.append, progress=False)
    expected = by_hand(w0, b0, 0.5)  # supervised + λ · consistency, soft targets, every weight 1
    x_l = np.stack([features(t) for t in LABELED])
    x_strong = np.stack([features(t + STRONG) for t in POOL])
    z_l = x_l @ w0.T + b0
    d_l = 0.3 * 2 * z_l / z_l.size  # d/dz of 0.3 · mean(z²)
    grad_w = expected["grad_w"] + d_l.T @ x_l + 0.2 * np.ones((len(POOL), C)).T @ x_strong
    grad_b = expected["grad_b"] + d_l.sum(0) + 0.2 * len(POOL)
    (grads, after), = recorded
    assert len(grads) == 3  # the student's weight and bias, then the regulariser's own parameter (a second group)
    np.testing.assert_allclose(grads[0].numpy(), grad_w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[1].numpy(), grad_b, rtol=1e-5, atol=1e-5)
    assert grads[2].item() == pytest.approx(2.0)  # d/ds (s - 1)² at s = 2
    assert after[2].item() < 2.0 and parts.regulariser.s.item() == after[2].item()  # it moved
    (batch,) = parts.regulariser.batches
    assert batch.step == 1 and batch.selector is parts.selector and sorted(batch.labels.tolist()) == [0, 2]
    assert sorted(batch.weak_texts) == POOL and batch.unlabeled_logits.shape == (len(POOL), C)
    q = softmax(np.stack([features(t) for t in batch.weak_texts]) @ w0.T + b0)  # the teacher on the weak view, in the batch's order
    np.testing.assert_allclose(batch.selection.probs.numpy(), q, rtol=1e-5, atol=1e-6)
    assert torch.equal(batch.selection.weights, torch.ones(len(POOL)))
    x_strong_batch = np.stack([features(t + STRONG) for t in batch.weak_texts])
    term = 0.3 * np.mean(z_l**2) + 1.0 + 0.2 * np.sum(x_strong_batch @ w0.T + b0)
    (record,) = records
    assert record["regulariser_loss"] == pytest.approx(term, rel=1e-5)
    assert record["regulariser/calls"] == 1
    assert record["train_loss"] == pytest.approx(expected["sup"], rel=1e-5)


def test_a_step_without_an_unlabeled_batch_shows_the_regulariser_none_of_it(registry, recorded):
    cfg, parts, w0, b0 = loop_setup(registry, {"name": "none"}, {"name": "self"}, weight=0.0)
    parts.regulariser = Recording()
    records = []
    train(cfg, parts, on_evaluation=records.append, progress=False)
    (batch,) = parts.regulariser.batches
    assert batch.unlabeled_logits is None and batch.weak_texts is None and batch.selection is None
    assert records[0]["consistency_loss"] is None and records[0]["regulariser_loss"] is not None


def test_without_a_regulariser_the_record_says_so_and_the_optimizer_has_one_group(registry, monkeypatch):
    groups = []

    class Counting(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            groups.append(self.param_groups)

    monkeypatch.setattr(torch.optim, "AdamW", Counting)
    cfg = resolve(parse_overrides([*FAST, "method=fixmatch", "train.steps=3"]), registry)
    records = []
    train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False)
    assert len(groups[0]) == 1 and all(r["regulariser_loss"] is None for r in records)
    assert not any(key.startswith("regulariser/") for key in records[0])


# --------------------------------------------------------------------------- mlm


MLM = [*FAST, "method=fixmatch", "regulariser=mlm"]


@pytest.fixture(scope="module")
def mlm_parts(registry):
    cfg = resolve(parse_overrides(MLM), registry)
    return cfg, prepare(cfg, registry)


def masks(regulariser, texts, monkeypatch):
    """(input ids, attention mask, masked ids, labels) of the regulariser's masking of ``texts``."""
    import testbed_plugins.regularisers as module

    seen = []
    original = module.mask_tokens

    def spy(ids, eligible, *args):
        out = original(ids, eligible, *args)
        seen.append((ids, *out))
        return out

    monkeypatch.setattr(module, "mask_tokens", spy)
    with torch.no_grad():
        regulariser.loss(RegularisationBatch(step=1, labeled_logits=None, labels=None, selector=None, weak_texts=texts))
    monkeypatch.setattr(module, "mask_tokens", original)
    (ids, masked, labels), = seen
    return ids, regulariser.tokenize(texts)["attention_mask"], masked, labels


def test_mlm_masks_about_15_percent_of_the_non_special_tokens_as_bert(mlm_parts, monkeypatch):
    cfg, parts = mlm_parts
    mlm, tokenizer = parts.regulariser, parts.tokenizer
    texts = parts.split.pool_texts
    ids, attention, masked, labels = masks(mlm, texts, monkeypatch)
    chosen = labels != -100
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
    eligible = attention.bool() & ~special
    assert not (chosen & ~eligible).any()  # never [CLS], [SEP] or padding
    assert torch.equal(labels[chosen], ids[chosen])  # the original token is the target
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    within = lambda share, p, n: abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)  # four binomial standard deviations  # noqa: E731
    n, m = eligible.sum().item(), chosen.sum().item()
    assert n > 2000 and within(m / n, 0.15, n), m / n
    to_mask = (masked[chosen] == tokenizer.mask_token_id).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert within(to_mask, 0.8, m) and within(kept, 0.1, m), (to_mask, kept)  # 80% [MASK], 10% kept, 10% random


def test_mlm_masks_are_reproducible_by_seed_and_leave_the_run_rng_alone(registry, monkeypatch):
    def fresh(seed: int):
        cfg = resolve(parse_overrides([*MLM, f"seed={seed}"]), registry)
        return prepare(cfg, registry)

    texts = ["what is the capital of france ?", "who wrote hamlet ?", "how far is the moon ?"]
    parts = fresh(0)
    context = RegulariserContext(num_classes=6, pool_size=10, steps=10, seed=0, tokenize=parts.regulariser.tokenize,
                                 student=parts.student, tokenizer=parts.tokenizer)
    state = torch.get_rng_state()
    a = build(registry, "mlm", context)  # its decoder's initialisation draws from its own generator
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), parts.regulariser.parameters()))
    torch.manual_seed(1)
    first = masks(a, texts * 10, monkeypatch)
    torch.manual_seed(2)  # the run's stream elsewhere: the masks do not follow it
    second = masks(fresh(0).regulariser, texts * 10, monkeypatch)
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    other = masks(fresh(1).regulariser, texts * 10, monkeypatch)
    assert not torch.equal(first[3], other[3])


def test_mlm_parameters_are_optimized_beside_the_student(registry, monkeypatch):
    groups = []

    class Keeping(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            groups.append(self.param_groups)

    monkeypatch.setattr(torch.optim, "AdamW", Keeping)
    cfg = resolve(parse_overrides([*MLM, "train.steps=3", "train.eval_every=3"]), registry)
    parts = prepare(cfg, registry)
    mlm = parts.regulariser
    before = [p.detach().clone() for p in mlm.parameters()]
    embeddings = parts.student.get_input_embeddings().weight.detach().clone()
    records = []
    train(cfg, parts, on_evaluation=records.append, progress=False)
    (param_groups,) = groups
    assert len(param_groups) == 2 and [id(p) for p in param_groups[1]["params"]] == [id(p) for p in mlm.parameters()]
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, mlm.parameters()))  # the transform and the bias moved
    assert not torch.equal(embeddings, parts.student.get_input_embeddings().weight.detach())  # the tied decoder trains them
    (record,) = records
    assert record["regulariser_loss"] > 0 and 0 < record["regulariser/mask_rate"] < 0.4
    assert 0 <= record["regulariser/accuracy"] <= 1


def test_a_tiny_run_with_mlm_finishes_and_resumes_from_a_checkpoint_to_the_same_numbers(registry):
    cfg = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch", "regulariser=mlm", "train.checkpoint_every=3"]), registry)
    states, records = [], []
    full = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False,
                 checkpoint=lambda state: states.append(saved(state)))
    assert [state["step"] for state in states] == [3, 6, 9] and "rng" in states[1]["regulariser"]
    assert all(r["regulariser_loss"] > 0 for r in records) and full.result["test_accuracy"] is not None
    resumed_records = []
    resumed = train(cfg, prepare(cfg, registry), on_evaluation=resumed_records.append, progress=False, resume=states[1])
    assert untimed(resumed) == untimed(full)
    drop = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_seconds"} for r in rs]  # noqa: E731
    assert drop(resumed_records) == drop(records)[2:]


def test_mlm_on_the_frozen_backbone_is_refused_at_set_up(registry):
    fast = [o for o in FAST if not o.startswith("backbone.")]
    cfg = resolve(parse_overrides([*fast, "method=fixmatch", "regulariser=mlm", "backbone.name=frozen", "backbone.encoder=tiny",
                                   "backbone.max_length=32"]), registry)
    with pytest.raises(UserError, match="mlm needs a fine-tuned backbone"):
        prepare(cfg, registry)
