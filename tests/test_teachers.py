"""The teachers (self, EMA, snapshot, model, cotrain) on tiny torch models against their formulas, and in real runs."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import FAST, read_jsonl
from testbed import BackboneContext, RunContext, TeacherContext, TextBatch, Texts, Training, UserError
from testbed.config import parse_overrides, resolve
from testbed.loop import backbone_context
from testbed.runs import execute

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: conftest.one_thread


class RecordingTraining(Training):
    """What the loop gives ``update``, counting the restarts a teacher asks for."""

    def __init__(self):
        self.restarts = 0

    def restart(self):
        self.restarts += 1


def teacher(registry, name, student, ctx=None, **options):
    record = registry.get("teacher", name)
    ctx = ctx or RunContext(num_classes=3, pool_size=10, steps=10, seed=0)
    return record.factory(record.options(**options), TeacherContext(**vars(ctx), student=student))


class Net(torch.nn.Module):
    """A Hugging Face-style classifier, model(**inputs).logits, with buffers (BatchNorm) and dropout."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4)
        self.dropout = torch.nn.Dropout(0.5)
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return SimpleNamespace(logits=self.linear(self.dropout(self.norm(x))))


def set_weights(model, value: float):
    """Every parameter and float buffer = value (+ its position, so tensors differ)."""
    with torch.no_grad():
        for i, tensor in enumerate([*model.parameters(), *model.buffers()]):
            if tensor.is_floating_point():
                tensor.copy_(value + i + torch.arange(tensor.numel(), dtype=tensor.dtype).reshape(tensor.shape) / 10)
            else:
                tensor.fill_(int(value))


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def batch_of(inputs: dict, texts=None) -> TextBatch:
    texts = texts or ["unused"] * next(iter(inputs.values())).shape[0]
    return TextBatch(texts, lambda _: inputs)


# --------------------------------------------------------------------------- self

CTX = RunContext(num_classes=3, pool_size=10, steps=5, seed=0)


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
    teacher = record.factory(record.options(dropout=dropout), TeacherContext(**vars(CTX), student=student))
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


# --------------------------------------------------------------------------- ema


def test_ema_teacher_is_the_ramped_exponential_average(registry):
    torch.manual_seed(0)
    student = Net().train()
    ema = teacher(registry, "ema", student, decay=0.8)
    assert ema.decay == 0.8
    expected = flat(student).double()
    assert torch.equal(flat(ema.model), flat(student))  # starts as a copy
    for step in range(1, 9):  # α_t = min(0.8, 1 − 1/(t+1)): 1/2, 2/3, 3/4, 0.8 from t = 4 on
        set_weights(student, value=float(step * step))
        alpha = min(0.8, 1 - 1 / (step + 1))
        expected = alpha * expected + (1 - alpha) * flat(student).double()
        training = RecordingTraining()
        ema.update(student, step, training)
        assert training.restarts == 0
        assert torch.allclose(flat(ema.model).double(), expected, rtol=1e-5), step
        for mine, theirs in zip(ema.model.buffers(), student.buffers()):  # copied, not averaged
            assert torch.equal(mine, theirs)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in student.parameters())


def test_ema_ramp_makes_the_first_updates_a_plain_mean(registry):
    student = Net()
    ema = teacher(registry, "ema", student, decay=0.999)
    set_weights(ema.model, 0.0)
    set_weights(student, 3.0)
    ema.update(student, 1, RecordingTraining())  # α_1 = 1/2
    set_weights(student, 6.0)
    ema.update(student, 2, RecordingTraining())  # α_2 = 2/3: (0 + 3 + 6) / 3, the mean of the three
    mean = Net()
    set_weights(mean, 3.0)  # set_weights is affine in its value, so this is the mean
    assert torch.allclose(flat(ema.model), flat(mean), atol=1e-5)


@pytest.mark.parametrize("steps,decay", [(6, 0.9), (500, 0.9), (5000, 1 - 1 / 50), (102_400, 1 - 1 / 1024)])
def test_ema_default_decay_is_budget_aware(registry, steps, decay):
    student = Net()
    ema = teacher(registry, "ema", student, RunContext(num_classes=3, pool_size=10, steps=steps, seed=0))
    assert ema.decay == pytest.approx(decay)  # τ = 1/(1 − α) = max(10, 1% of the steps)
    # and the update uses it once the ramp has passed: θ' = α·0 + (1 − α)·1
    with torch.no_grad():
        for p in ema.model.parameters():
            p.zero_()
        for p in student.parameters():
            p.fill_(1.0)
    ema.update(student, 10 * steps, RecordingTraining())
    assert torch.allclose(flat(ema.model), torch.full_like(flat(ema.model), 1 - decay), atol=1e-6)


def test_ema_explicit_decay_is_honoured_and_validated(registry):
    ema = teacher(registry, "ema", Net(), RunContext(num_classes=3, pool_size=10, steps=500, seed=0), decay=0.999)
    assert ema.decay == 0.999
    assert resolve(parse_overrides(["teacher.name=ema", "teacher.decay=0.99"]), registry).resolved["teacher"]["decay"] == 0.99
    assert resolve(parse_overrides(["teacher.name=ema"]), registry).resolved["teacher"]["decay"] is None
    for bad in ("1.0", "-0.1"):
        with pytest.raises(UserError, match=r"teacher.decay must be in \[0, 1\)"):
            resolve(parse_overrides(["teacher.name=ema", f"teacher.decay={bad}"]), registry)


@pytest.mark.parametrize("name", ["ema", "snapshot"])
def test_copy_teachers_predict_in_eval_mode_unless_asked(registry, name):
    torch.manual_seed(0)
    student = Net().train()
    student(torch.randn(32, 4))  # give BatchNorm some running statistics
    inputs = {"x": torch.randn(64, 4)}
    plain = teacher(registry, name, student)
    first, second = plain.probs(batch_of(inputs)), plain.probs(batch_of(inputs))
    assert not first.requires_grad and torch.allclose(first.sum(-1), torch.ones(64))
    assert torch.equal(first, second)
    assert torch.allclose(first, student.eval()(**inputs).logits.softmax(-1), atol=1e-6)
    student.train()
    assert not torch.equal(plain.probs(batch_of(inputs), stochastic=True), first)  # MC-dropout pass
    noisy = teacher(registry, name, student, dropout=True)
    assert not torch.equal(noisy.probs(batch_of(inputs)), noisy.probs(batch_of(inputs)))
    assert student.training and not plain.model.training and not noisy.model.training


# --------------------------------------------------------------------------- snapshot


@pytest.mark.parametrize("steps,rounds,refreshes", [(10, 4, [3, 6, 9]), (10, 3, [4, 8]), (12, 4, [3, 6, 9]),
                                                    (10, 1, []), (3, 5, [1, 2])])
def test_snapshot_refreshes_exactly_at_round_boundaries(registry, steps, rounds, refreshes):
    student = Net()
    initial = flat(student).clone()
    snap = teacher(registry, "snapshot", student, RunContext(num_classes=3, pool_size=10, steps=steps, seed=0), rounds=rounds)
    assert snap.every == math.ceil(steps / rounds)
    held = initial  # the first round's teacher is the untrained student
    for step in range(1, steps + 1):
        set_weights(student, float(step))
        training = RecordingTraining()
        snap.update(student, step, training)
        assert training.restarts == 0  # without reinit the student is never replaced
        if step in refreshes:
            held = flat(student).clone()
            for mine, theirs in zip(snap.model.buffers(), student.buffers()):
                assert torch.equal(mine, theirs)
        assert torch.equal(flat(snap.model), held), step
    assert snap.refreshed_at == refreshes  # never at the last step


def test_snapshot_reinit_restores_the_initial_student_and_says_so(registry):
    torch.manual_seed(0)
    student = Net()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    snap = teacher(registry, "snapshot", student, RunContext(num_classes=3, pool_size=10, steps=10, seed=0),
                   rounds=4, reinit_student=True)
    params = list(student.parameters())
    for step in range(1, 11):
        set_weights(student, float(step))
        trained = flat(student).clone()
        training = RecordingTraining()
        snap.update(student, step, training)
        replaced = training.restarts == 1  # the optimizer's moments belonged to the old weights
        assert replaced == (step in (3, 6, 9)), step
        if replaced:
            assert torch.equal(flat(snap.model), trained)  # the teacher got the trained weights...
            for key, value in student.state_dict().items():  # ...and the student its initial ones
                assert torch.equal(value, initial[key]), key
        else:
            assert torch.equal(flat(student), trained)
    assert all(a is b for a, b in zip(params, student.parameters()))  # in place: the optimizer still holds them


def test_snapshot_rounds_are_validated(registry):
    with pytest.raises(UserError, match="teacher.rounds must be at least 1"):
        resolve(parse_overrides(["teacher.name=snapshot", "teacher.rounds=0"]), registry)


# --------------------------------------------------------------------------- model (distillation)

KEYWORDS = ["apple", "river", "engine", "violin"]
FILLER = ["the", "a", "of", "some", "many", "few", "old", "new", "big", "small", "red", "blue"]


@pytest.fixture(scope="module")
def labeled() -> Texts:
    """Four classes, each marked by one keyword among filler words."""
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for label, keyword in enumerate(KEYWORDS):
        for _ in range(6):
            words = list(rng.choice(FILLER, 5))
            words.insert(int(rng.integers(0, 6)), keyword)
            texts.append(" ".join(words))
            labels.append(label)
    return Texts(texts, np.array(labels))


def no_student_tokens(texts):
    raise AssertionError("this teacher must tokenize the texts itself")


def test_model_teacher_fine_tunes_on_the_labeled_set(registry, labeled):
    ctx = RunContext(num_classes=4, pool_size=0, steps=10, seed=0, labeled=labeled, load_backbone=backbone_context(registry, 4).load_backbone)
    rng_before = torch.random.get_rng_state()
    options = dict(backbone="tiny", steps=30, lr=1e-3, batch_size=8, max_length=32)
    trained = teacher(registry, "model", None, ctx, **options)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the run's RNG stream is untouched
    batch = TextBatch(labeled.texts, no_student_tokens)  # its own tokenizer, never the student's tokens
    probs = trained.probs(batch)
    assert probs.shape == (24, 4) and not probs.requires_grad
    assert (probs.argmax(-1).numpy() == labeled.labels).mean() >= 0.9  # chance is 0.25
    assert not trained.model.training and not any(p.requires_grad for p in trained.model.parameters())
    # seeded: the same run context gives the same teacher
    assert torch.allclose(teacher(registry, "model", None, ctx, **options).probs(batch), probs)
    # soft targets at temperature T are softmax(z / T)
    warm = teacher(registry, "model", None, ctx, **options, temperature=2.0).probs(batch)
    assert torch.allclose(warm, (probs.log() / 2).softmax(-1), atol=1e-5)


def test_model_teacher_needs_a_backbone_loader_and_labeled_data(registry, labeled):
    with pytest.raises(UserError, match="cannot load backbones"):
        teacher(registry, "model", None, RunContext(num_classes=4, pool_size=0, steps=10, seed=0, labeled=labeled))
    with pytest.raises(UserError, match="trains on the labeled set"):
        teacher(registry, "model", None, RunContext(num_classes=4, pool_size=0, steps=10, seed=0,
                                                    load_backbone=backbone_context(registry, 4).load_backbone))
    with pytest.raises(UserError, match="teacher.steps must be 0 or more"):
        resolve(parse_overrides(["teacher.name=model", "teacher.steps=-1"]), registry)


# --------------------------------------------------------------------------- cotrain


def test_reinit_head_changes_only_the_head_of_a_hugging_face_model(registry):
    from testbed_plugins.teachers import reinit_head

    tiny = registry.get("backbone", "tiny")
    model, _ = tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), BackboneContext(3, None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    reinit_head(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"classifier.weight"}  # the bias is re-initialised to 0, as it was
    assert model.classifier.weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)


# Unlabeled texts u0-u3 sit at e0, where the student says class 2 with p ≈ 1; u4-u7 at e1, where it
# says class 2 with p = 0.9 exactly; labeled texts l0-l3 at e2 with label 0.
FEATURES = {**{f"u{i}": [1.0, 0, 0, 0] for i in range(4)}, **{f"u{i}": [0, 1.0, 0, 0] for i in range(4, 8)},
            **{f"l{i}": [0, 0, 1.0, 0] for i in range(4)}}


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3, bias=False)

    def forward(self, x):
        return SimpleNamespace(logits=self.linear(x))


def features(texts):
    return {"x": torch.tensor([FEATURES[t] for t in texts])}


@pytest.fixture
def cotrain_setup(registry):
    student = Linear().train()
    with torch.no_grad():
        student.linear.weight.zero_()
        student.linear.weight[2, 0] = 20.0
        student.linear.weight[2, 1] = math.log(18.0)  # softmax([0, 0, ln 18]) = [1/20, 1/20, 18/20]
    ctx = RunContext(num_classes=3, pool_size=8, steps=10, seed=0, labeled=Texts([f"l{i}" for i in range(4)], np.zeros(4, int)),
                     tokenize=features)
    unlabeled = [f"u{i}" for i in range(8)]
    return student, ctx, unlabeled


@pytest.mark.parametrize("threshold,selected", [(0.95, 4), (0.85, 8)])
def test_cotrain_peer_learns_the_students_confident_pseudo_labels(registry, cotrain_setup, threshold, selected):
    student, ctx, unlabeled = cotrain_setup
    student_weights = flat(student).clone()
    torch.manual_seed(0)
    co = teacher(registry, "cotrain", student, ctx, threshold=threshold, lr=0.1, batch_size=4)
    assert not torch.equal(co.peer.linear.weight, student.linear.weight)  # a different head
    for step in range(1, 61):
        probs = co.probs(TextBatch(unlabeled, features))
        assert probs.shape == (8, 3) and not probs.requires_grad
        training = RecordingTraining()
        co.update(student, step, training)
        assert training.restarts == 0
        assert co.pseudo_labels == selected
    assert torch.equal(flat(student), student_weights) and student.training  # the student is only read
    assert not co.peer.training
    peer = co.probs(TextBatch(unlabeled + ["l0"], features))
    assert (peer[:4, 2] > 0.9).all() and peer[-1, 0] > 0.9  # the student's pseudo-labels and the gold label
    if selected == 8:  # the less confident half was admitted too
        assert (peer[4:8, 2] > 0.9).all()
    else:
        assert (peer[4:8, 2] < 0.9).all()


def test_cotrain_without_a_remembered_batch_trains_on_labeled_data_only(registry, cotrain_setup):
    student, ctx, unlabeled = cotrain_setup
    co = teacher(registry, "cotrain", student, ctx, lr=0.1, batch_size=4)
    for step in range(1, 31):
        co.update(student, step, RecordingTraining())  # λ = 0 steps: probs was never called
    assert co.pseudo_labels == 0
    assert co.probs(TextBatch(["l0"], features)).argmax(-1).item() == 0


def test_cotrain_with_its_own_backbone_uses_its_own_tokenizer(registry, labeled):
    torch.manual_seed(0)
    tiny = registry.get("backbone", "tiny")
    student, tokenizer = tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), BackboneContext(4, None))
    names = []

    def load(name):
        names.append(name)
        return tiny.factory(tiny.options(layers=1, hidden=32, heads=2, intermediate=64), BackboneContext(4, None))

    calls = []

    def student_tokens(texts):
        calls.append(len(texts))
        return dict(tokenizer(texts, padding="longest", return_tensors="pt"))

    ctx = RunContext(num_classes=4, pool_size=8, steps=10, seed=0, labeled=labeled, load_backbone=load,
                     tokenize=no_student_tokens)
    co = teacher(registry, "cotrain", student, ctx, backbone="tiny", threshold=0.0, batch_size=4)
    assert names == ["tiny"]
    before = flat(co.peer).clone()
    batch = TextBatch(labeled.texts[:5], student_tokens)
    assert co.probs(batch).shape == (5, 4)
    assert calls == []  # the peer read the texts with its own tokenizer
    co.update(student, 1, RecordingTraining())
    assert calls == [5]  # the student's tokens, for the student's pseudo-labels
    assert co.pseudo_labels == 5 and not torch.equal(flat(co.peer), before)


def test_cotrain_needs_labeled_data(registry):
    with pytest.raises(UserError, match="trains on the labeled set"):
        teacher(registry, "cotrain", Linear(), RunContext(num_classes=3, pool_size=8, steps=10, seed=0, tokenize=features))


# --------------------------------------------------------------------------- in the loop


@pytest.mark.parametrize("extra", [
    ["teacher.name=ema"],
    ["teacher.name=snapshot", "teacher.rounds=2", "teacher.reinit_student=true"],
    ["teacher.name=model", "teacher.backbone=tiny", "teacher.steps=3"],
    ["teacher.name=cotrain"],
    ["teacher.name=cotrain", "teacher.backbone=tiny"],
], ids=["ema", "snapshot-reinit", "model", "cotrain", "cotrain-backbone"])
def test_teachers_run_end_to_end(registry, tmp_path, extra):
    cfg = resolve(parse_overrides(["method=fixmatch", *FAST, "selector.threshold=0.0", *extra]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and result["steps"] == 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert m["mask_rate"] == 1.0  # threshold 0: every teacher prediction becomes a pseudo-label
        assert 0 <= m["teacher_accuracy"] <= 1 and 0 < m["teacher_confidence"] <= 1
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["consistency_loss"])


# --------------------------------------------------------------------------- LoRA students: teachers own adapters and head only

LORA = ["backbone.name=tiny-decoder", "backbone.layers=1", "backbone.hidden=32", "backbone.heads=2", "backbone.lora.r=4"]
WEAK = ["a first text", "a second, longer text with more words", "three"]


@pytest.fixture
def lora_student(registry):
    """A tiny-decoder student with LoRA adapters (r = 4), its tokenized batch, its trainable tensors."""
    choice = resolve(parse_overrides(LORA), registry).choices["backbone"]
    torch.manual_seed(0)
    student, tokenizer = choice.record.factory(choice.options, backbone_context(registry, 3))
    student.train()
    inputs = dict(tokenizer(WEAK, padding="longest", return_tensors="pt"))
    trained = [p for p in student.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trained) < sum(p.numel() for p in student.parameters()) / 50
    return student, inputs, trained


def step_student(trained, scale=0.05):
    """An optimizer step's worth of change in the student's trainable tensors (in place, as AdamW)."""
    with torch.no_grad():
        for p in trained:
            p.add_(torch.randn_like(p) * scale)


def storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def test_ema_teacher_of_a_lora_student_holds_adapters_and_head_and_the_same_average(registry, lora_student):
    from testbed_plugins.teachers import TrainableCopy

    student, inputs, trained = lora_student
    ema = teacher(registry, "ema", student, decay=0.8)
    assert isinstance(ema.model, TrainableCopy)
    own = list(ema.model.parameters())
    assert [t.shape for t in own] == [p.shape for p in trained] and not any(t.requires_grad for t in own)
    assert sum(t.numel() for t in own) == sum(p.numel() for p in trained)  # no base weight among them
    assert not storages(own) & storages([*student.parameters(), *student.buffers()])  # copies, not views of the student
    assert set(ema.state_dict()["model"]) == {n for n, p in student.named_parameters() if p.requires_grad}
    reference = copy.deepcopy(student).requires_grad_(False).eval()  # what a whole-model EMA teacher would average
    full = [p for p in reference.parameters()]
    step_student(trained)  # adapters' B start at zero: move them so the adapters count
    for step in range(1, 7):
        step_student(trained)
        alpha = min(0.8, 1 - 1 / (step + 1))
        torch._foreach_lerp_(full, [p.detach() for p in student.parameters()], 1 - alpha)
        ema.update(student, step, RecordingTraining())
    with torch.no_grad():
        before = student.eval()(**inputs).logits
        student.train()
        probs = ema.probs(batch_of(inputs, WEAK))
        assert student.training  # its mode back, and its own tensors: the same outputs as before
        after = student.eval()(**inputs).logits
        assert torch.equal(probs, reference(**inputs).logits.softmax(-1))  # bit for bit: the frozen base's average is itself
    assert torch.equal(before, after) and not torch.allclose(probs, after.softmax(-1))  # the teacher is not the student


def test_a_teacher_swap_leaves_the_students_step_in_progress_intact(registry, lora_student):
    """The loop asks the teacher between the student's forward and its backward: the gradients are
    those of a step without the teacher."""
    student, inputs, trained = lora_student
    ema = teacher(registry, "ema", student)
    step_student(trained)
    grads = []
    for ask_teacher in (False, True):
        student.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks in both passes
        loss = student(**inputs).logits.logsumexp(-1).sum()
        if ask_teacher:
            ema.probs(batch_of(inputs, WEAK))
        loss.backward()
        grads.append([p.grad.clone() for p in trained])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_snapshot_of_a_lora_student_refreshes_and_reinitialises_only_what_trains(registry, lora_student):
    student, inputs, trained = lora_student
    frozen = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    initial = [p.detach().clone() for p in trained]
    snap = teacher(registry, "snapshot", student, RunContext(num_classes=3, pool_size=10, steps=4, seed=0), rounds=2,
                   reinit_student=True)
    assert set(snap.initial) == set(snap.model.names) and sum(t.numel() for t in snap.initial.values()) == sum(p.numel() for p in trained)
    step_student(trained)
    student.eval()
    expected = student(**inputs).logits.softmax(-1).detach()
    student.train()
    training = RecordingTraining()
    snap.update(student, 2, training)  # a round boundary: the teacher takes the student, the student restarts
    assert snap.refreshed_at == [2] and training.restarts == 1
    assert all(torch.equal(p, q) for p, q in zip(trained, initial))  # adapters and head back to their start
    assert all(torch.equal(p, frozen[n]) for n, p in student.named_parameters() if n in frozen)
    assert torch.equal(snap.probs(batch_of(inputs, WEAK)), expected)
    assert student.training


def test_cotrain_peer_of_a_lora_student_owns_its_adapters_and_a_new_head(registry, lora_student, labeled):
    student, inputs, trained = lora_student
    tokenizer_ctx = resolve(parse_overrides(LORA), registry).choices["backbone"]
    _, tokenizer = tokenizer_ctx.record.factory(tokenizer_ctx.options, backbone_context(registry, 3))
    ctx = RunContext(num_classes=3, pool_size=8, steps=10, seed=0, labeled=Texts(labeled.texts, labeled.labels % 3),
                     tokenize=lambda texts: dict(tokenizer(texts, padding="longest", return_tensors="pt")))
    student_state = {n: p.detach().clone() for n, p in student.named_parameters()}
    co = teacher(registry, "cotrain", student, ctx, threshold=0.0, batch_size=4, lr=0.01)
    peer = dict(co.peer.state_dict())
    assert set(peer) == {n for n, p in student.named_parameters() if p.requires_grad}
    heads = [n for n in peer if ".modules_to_save." in n]
    assert heads and all(not torch.equal(peer[n], student_state[n]) for n in heads)  # a re-initialised head
    assert all(torch.equal(peer[n], student_state[n]) for n in peer if n not in heads)  # the student's adapters
    before = [t.clone() for t in co.peer.parameters()]
    co.probs(batch_of(inputs, WEAK))
    co.update(student, 1, RecordingTraining())
    assert co.pseudo_labels == 3
    assert all(torch.equal(p, student_state[n]) for n, p in student.named_parameters())  # the student is only read
    assert any(not torch.equal(a, b) for a, b in zip(co.peer.parameters(), before))  # the peer learned
    assert all(p.grad is None for p in student.parameters())  # into its own tensors, not the student's


@pytest.mark.parametrize("extra", [["teacher.name=ema"], ["teacher.name=snapshot", "teacher.rounds=2", "teacher.reinit_student=true"],
                                   ["teacher.name=cotrain"]], ids=["ema", "snapshot-reinit", "cotrain"])
def test_teachers_of_a_lora_student_run_end_to_end(registry, tmp_path, extra):
    cfg = resolve(parse_overrides(["method=fixmatch", *FAST, *LORA, "selector.threshold=0.0", *extra]), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and result["steps"] == 6
    assert all(m["mask_rate"] == 1.0 and math.isfinite(m["consistency_loss"]) for m in read_jsonl(run_dir / "metrics.jsonl"))


def test_a_restart_clears_the_moments_and_starts_the_warm_up_again():
    """Noisy Student's re-initialised student gets what the first student got: no Adam moments from
    the old weights, and the learning-rate warm-up from its first step."""
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([weight], lr=1.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 4))  # the loop's warm-up, 4 steps
    first = warmup.get_last_lr()[0]
    for _ in range(6):
        weight.sum().backward()
        optimizer.step()
        warmup.step()
    assert warmup.get_last_lr()[0] == 1.0 and optimizer.state
    Training(optimizer, warmup).restart()
    assert not optimizer.state and warmup.get_last_lr()[0] == first == 0.25 and optimizer.param_groups[0]["lr"] == 0.25
