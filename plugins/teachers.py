"""Teachers: who produces the probabilities on the weak view.

``probs`` runs without gradient and returns [B, C]; ``update`` runs after every optimizer step;
a teacher that replaces the student's weights calls ``training.restart()`` there (the optimizer's
moments belong to the old weights). Each factory gets a ``TeacherContext``: the run's facts and
the ``student``. Teachers that are copies of the student
read ``batch.inputs`` (the student's tokens); teachers with their own backbone tokenize
``batch.texts`` with their own tokenizer, so the two models may have different vocabularies.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from testbed import BaseTeacher, Sampler, Teacher, UserError, hookimpl

# --------------------------------------------------------------------------- helpers


@torch.no_grad()
def _probabilities(model, inputs: dict, dropout: bool, temperature: float = 1.0):
    """softmax(logits / T) with dropout on or off; the model is left in eval mode (a teacher's
    resting state), whatever mode the call needed."""
    model.train(dropout)
    try:
        return (model(**inputs).logits / temperature).softmax(-1)
    finally:
        model.eval()


def _frozen_copy(model):
    """A copy that no optimizer will touch: no gradients, eval mode. A deep copy, or, for a student
    with frozen parameters (a LoRA model), a ``TrainableCopy``: its trainable tensors only."""
    if _shares_base(model):
        return TrainableCopy(model).requires_grad_(False).eval()
    return copy.deepcopy(model).requires_grad_(False).eval()


def _shares_base(model) -> bool:
    """True for a student that trains some of its parameters and freezes the rest (a LoRA model:
    adapters and head train, the base is frozen). Its copies share the frozen part: the optimizer
    never touches a parameter without gradient, so what is frozen is the same in every copy."""
    trains = {p.requires_grad for p in model.parameters()}
    return trains == {True, False}


class TrainableCopy:
    """A copy of a student that owns only the student's trainable tensors (a LoRA model's adapters
    and head) and shares the rest of it: a call runs the student's own modules with this copy's
    tensors put in place of the student's, and puts the student's back afterwards, whatever happens.
    So an EMA teacher of an 8B LoRA model holds its own adapters and head, not a second 8B base.

    It has the interface teachers use of a model: ``copy(**inputs)``, ``train``/``eval`` (its own
    mode; the student's comes back after every call), ``parameters`` (its tensors), ``buffers``
    (none: buffers are shared; a LoRA transformer's are constants, e.g. rotary frequencies),
    ``requires_grad_``, ``state_dict``/``load_state_dict`` (its tensors by the student's parameter
    names). ``copy_from(student)`` takes the student's current values; ``sources(student)`` lists the
    student's tensors in this copy's order.

    Swapping replaces entries of the modules' parameter tables (no data moves, nothing in place),
    so the student's autograd graph of the step in progress is untouched; a backward pass that
    should reach this copy's tensors (a co-training peer) runs inside ``swapped()``, since
    gradient checkpointing recomputes the forward pass there.
    """

    def __init__(self, student, requires_grad: bool = False):
        self.student, self.training = student, False
        named = [(name, p) for name, p in student.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self._sources = [p for _, p in named]
        self.tensors = [torch.nn.Parameter(p.detach().clone(), requires_grad=requires_grad) for _, p in named]
        index = {id(p): i for i, p in enumerate(self._sources)}
        # every module attribute that holds a trainable tensor (a tied tensor sits in several modules)
        self.slots = [(module, attr, index[id(p)]) for module in student.modules()
                      for attr, p in module._parameters.items() if p is not None and id(p) in index]

    @contextlib.contextmanager
    def swapped(self):
        """The student running as this copy: its modules hold this copy's tensors, in this copy's mode."""
        mode = self.student.training
        saved = [(module, attr, module._parameters[attr]) for module, attr, _ in self.slots]
        try:
            for module, attr, i in self.slots:
                module._parameters[attr] = self.tensors[i]
            self.student.train(self.training)
            yield self.student
        finally:
            for module, attr, tensor in saved:
                module._parameters[attr] = tensor
            self.student.train(mode)

    def __call__(self, **inputs):
        with self.swapped() as model:
            return model(**inputs)

    def sources(self, student) -> list:
        if student is self.student:
            return self._sources
        params = dict(student.named_parameters())
        return [params[name] for name in self.names]

    @torch.no_grad()
    def copy_from(self, student) -> None:
        torch._foreach_copy_(self.tensors, [p.detach() for p in self.sources(student)])

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def parameters(self):
        return iter(self.tensors)

    def buffers(self):
        return iter(())

    def requires_grad_(self, requires_grad: bool = True):
        for tensor in self.tensors:
            tensor.requires_grad_(requires_grad)
        return self

    def state_dict(self) -> dict:
        return {name: tensor.detach() for name, tensor in zip(self.names, self.tensors)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.names):
            odd = sorted(set(state) ^ set(self.names))[:3]
            raise ValueError(f"this state is not of this student's trainable tensors (differing names, e.g. {odd}): "
                             "a checkpoint of another config or model")
        torch._foreach_copy_(self.tensors, [state[name] for name in self.names])


def _device(model) -> torch.device:
    return next(iter(model.parameters())).device


def _running(model):
    """``with _running(model) as m``: the module to run a forward and backward pass on."""
    return model.swapped() if isinstance(model, TrainableCopy) else contextlib.nullcontext(model)


def _own_tokenizer(tokenizer, max_length: int, device: str = "cpu"):
    """Pad to the longest text of the batch, as the student's tokenizer does; tensors on ``device``."""
    return lambda texts: {key: value.to(device) for key, value in
                          tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt").items()}


def _labeled_or_error(context, teacher: str):
    if context.labeled is None or len(context.labeled) == 0:
        raise UserError(f"teacher {teacher!r} trains on the labeled set, but the run context has none. "
                        "It is built by the training loop; when constructing it by hand, pass RunContext(labeled=...).")
    return context.labeled


def _load_or_error(context, name: str, teacher: str):
    if context.load_backbone is None:
        raise UserError(f"teacher {teacher!r} needs to load backbone {name!r}, but the run context cannot load backbones. "
                        "Run it through the training loop with a plugin registry, or pass RunContext(load_backbone=...).")
    return context.load_backbone(name)


def _check_training_options(options) -> None:
    """The options of teachers that train a model of their own."""
    if options.lr <= 0:
        raise ValueError(f"teacher.lr must be positive, got {options.lr}")
    if options.batch_size < 1:
        raise ValueError(f"teacher.batch_size must be at least 1, got {options.batch_size}")
    if options.max_length < 2:
        raise ValueError(f"teacher.max_length must be at least 2, got {options.max_length}")


# --------------------------------------------------------------------------- self


@dataclass(frozen=True)
class SelfOptions:
    dropout: bool = True  # predict in train mode, as FixMatch and UDA do with their shared forward pass


class SelfTeacher(BaseTeacher):
    """The student itself, without gradient (FixMatch, UDA, pseudo-labelling)."""

    def __init__(self, options: SelfOptions, context):
        student = context.student
        self.student, self.dropout = student, options.dropout

    @torch.no_grad()
    def probs(self, batch, stochastic=False):
        if self.dropout or stochastic:
            return self.student(**batch.inputs).logits.softmax(-1)
        self.student.eval()
        try:
            return self.student(**batch.inputs).logits.softmax(-1)
        finally:
            self.student.train()


# --------------------------------------------------------------------------- ema

@dataclass(frozen=True)
class EmaOptions:
    decay: float | None = None  # α; None = budget-aware 1 − 1/max(10, 0.01·train.steps), replacing the paper's 0.999
    dropout: bool = False  # predict with dropout on (Mean Teacher's noisy teacher); off = eval mode

    def __post_init__(self):
        if self.decay is not None and not 0 <= self.decay < 1:
            raise ValueError(f"teacher.decay must be in [0, 1) or unset for the budget-aware default, got {self.decay}")


class EmaTeacher(BaseTeacher):
    """Mean Teacher (Tarvainen & Valpola 2017): the teacher's weights are an exponential moving
    average of the student's, updated after every optimizer step t = 1, 2, …

        θ'_t = α_t θ'_{t−1} + (1 − α_t) θ_t,   α_t = min(α, 1 − 1/(t + 1))

    The ramp α_t (from the paper's code) makes the teacher the plain mean of the weights so far
    until t + 1 reaches τ = 1/(1 − α), so early on it is not anchored to the random initialisation.
    Buffers (e.g. BatchNorm statistics, position ids) are copied from the student, not averaged.
    ``decay`` defaults to a budget-aware α (``RunContext.budget_momentum``), not 0.999.
    For a student with frozen parameters (LoRA) the teacher averages the trainable tensors only
    and shares the frozen base (``TrainableCopy``): the average of a constant is that constant, so
    the result is the same, bit for bit, as averaging a whole copy.
    """

    def __init__(self, options: EmaOptions, context):
        student = context.student
        self.decay = context.budget_momentum() if options.decay is None else options.decay
        self.dropout = options.dropout
        self.model = _frozen_copy(student)
        self.params = list(self.model.parameters())
        self.buffers = list(self.model.buffers())

    def probs(self, batch, stochastic=False):
        return _probabilities(self.model, batch.inputs, self.dropout or stochastic)

    @torch.no_grad()
    def update(self, student, step, training):
        alpha = min(self.decay, 1.0 - 1.0 / (step + 1))
        # θ' ← θ' + (1 − α)(θ − θ') = α θ' + (1 − α) θ, all tensors in one fused call
        sources = self.model.sources(student) if isinstance(self.model, TrainableCopy) else student.parameters()
        torch._foreach_lerp_(self.params, [p.detach() for p in sources], 1.0 - alpha)
        for mine, theirs in zip(self.buffers, student.buffers()):
            mine.copy_(theirs)

    def evaluation_model(self):
        return self.model  # Mean Teacher's papers and code evaluate the EMA weights

    def state_dict(self):
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class SnapshotOptions:
    rounds: int = 4  # the teacher is refreshed every ceil(train.steps / rounds) steps
    reinit_student: bool = False  # at each refresh, reset the student to its initial weights (Noisy Student)
    dropout: bool = False  # predict with dropout on; Noisy Student's teacher is unnoised

    def __post_init__(self):
        if self.rounds < 1:
            raise ValueError(f"teacher.rounds must be at least 1, got {self.rounds}")


class SnapshotTeacher(BaseTeacher):
    """Self-training with a frozen teacher (Noisy Student, Xie et al. 2020): the run is split into
    ``rounds`` rounds of L = ceil(T / rounds) steps; after steps L, 2L, … (< T) the teacher becomes a
    frozen copy of the current student and, with ``reinit_student``, the student restarts from its
    initial weights (the pretrained encoder and the run's initial head, saved at construction),
    as Noisy Student trains each new student from scratch. Budget-aware by construction: rounds are
    fractions of the run, not epochs.

    The first round's teacher is the untrained student (a random head on the encoder): its
    pseudo-labels are near chance. Noisy Student's first teacher is trained on the labeled data
    alone: pair this teacher with the ``delayed`` schedule, ``schedule.start = 1 / rounds``, so the
    first round is supervised (the ``noisy-student`` preset does). With reinit_student the student's
    optimizer moments and learning-rate warm-up restart too (``Training.restart``).
    No refresh happens at the last step, so the evaluated student is never a freshly reset one.
    """

    def __init__(self, options: SnapshotOptions, context):
        student = context.student
        self.every, self.steps, self.dropout = math.ceil(context.steps / options.rounds), context.steps, options.dropout
        self.model = _frozen_copy(student)
        self.initial = None
        if options.reinit_student:  # a LoRA student restarts its adapters and head; its frozen base never moved
            self.initial = (self.model.state_dict() if isinstance(self.model, TrainableCopy) else student.state_dict())
            self.initial = {k: v.detach().clone() for k, v in self.initial.items()}
        self.refreshed_at: list[int] = []

    def probs(self, batch, stochastic=False):
        return _probabilities(self.model, batch.inputs, self.dropout or stochastic)

    @torch.no_grad()
    def update(self, student, step, training):
        if step % self.every or step >= self.steps:
            return
        if isinstance(self.model, TrainableCopy):
            self.model.copy_from(student)
        else:
            self.model.load_state_dict(student.state_dict())
        self.refreshed_at.append(step)
        if self.initial is not None:
            if isinstance(self.model, TrainableCopy):  # in place: the optimizer still holds these parameters
                torch._foreach_copy_([p.detach() for p in self.model.sources(student)], [self.initial[k] for k in self.model.names])
            else:
                student.load_state_dict(self.initial)  # in place: the optimizer still holds these parameters
            training.restart()  # but its moments belonged to the old weights

    def state_dict(self):  # ``initial`` is the student as its factory saw it: the same on resume
        return {"model": self.model.state_dict(), "refreshed_at": list(self.refreshed_at)}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.refreshed_at = list(state["refreshed_at"])


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelOptions:
    backbone: str = "minilm"  # a backbone name, local path or hub id; loaded with its own tokenizer
    steps: int = 100  # supervised fine-tuning steps on the labeled set before the run; 0 = use as loaded
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128  # the teacher's own tokenizer
    temperature: float = 1.0  # soft targets softmax(z / T) (Hinton et al.); pair with distance.temperature

    def __post_init__(self):
        if not self.backbone:
            raise ValueError("teacher.backbone must name a backbone, a local path or a hub id")
        if self.steps < 0:
            raise ValueError(f"teacher.steps must be 0 or more, got {self.steps}")
        _check_training_options(self)
        if self.temperature <= 0:
            raise ValueError(f"teacher.temperature must be positive, got {self.temperature}")


class ModelTeacher(BaseTeacher):
    """Knowledge distillation (Hinton et al. 2015): a separate model, fine-tuned supervised on the
    labeled set for ``steps`` AdamW steps (shuffled batches, seeded with the run's seed) before the
    run starts, then frozen; its soft targets softmax(z / T) teach the student on unlabeled text.
    The backbones may differ (e.g. a larger teacher): the teacher tokenizes the texts itself.

    Token tasks (NER): the teacher is a token classifier (the run's backbones build the task's head),
    fine-tuned on the labeled words through the task's encoding, rows and labels; its probabilities
    per word are put at the positions of the student's encoding of the same words ([B, T, C] in the
    student's tokens), so the two tokenizers may differ. A word the teacher's ``max_length`` cut off
    gets the uniform distribution.
    """

    fixed = True  # trained before the run, then frozen

    def __init__(self, options: ModelOptions, context):
        labeled = _labeled_or_error(context, "model")
        self.temperature = options.temperature
        task = getattr(context, "task", None)
        self.task = task if task is not None and task.head == "token" else None  # per-word targets
        # A private RNG stream: the teacher's head and dropout neither depend on nor disturb the run's.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.model, tokenizer = _load_or_error(context, options.backbone, "model")
            self.model.to(context.device)  # where the student is: its probabilities meet the student's logits
            if self.task is None:
                self.tokens = _own_tokenizer(tokenizer, options.max_length, context.device)
            else:
                self.tokens = lambda texts: self.task.encode(tokenizer, texts, options.max_length).to(context.device)
            self._fine_tune(labeled, options, np.random.default_rng(context.seed))
        self.model.requires_grad_(False).eval()

    def _fine_tune(self, labeled, options: ModelOptions, rng):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr)
        labels = torch.as_tensor(np.asarray(labeled.labels), dtype=torch.long, device=_device(self.model))
        batches = Sampler(len(labeled), options.batch_size, rng)
        self.model.train()
        for _ in range(options.steps):
            idx = batches.next()
            inputs = self.tokens([labeled.texts[i] for i in idx])
            logits = self.model(**inputs).logits
            if self.task is None:
                loss = F.cross_entropy(logits, labels[idx])
            else:  # the labeled words' tags, at their first subwords
                tags = torch.as_tensor(self.task.labels(labeled, idx, inputs), dtype=torch.long, device=logits.device)
                loss = F.cross_entropy(self.task.rows(logits, inputs), tags)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def probs(self, batch, stochastic=False):
        own = self.tokens(batch.texts)
        probs = _probabilities(self.model, own, stochastic, self.temperature)
        return probs if self.task is None else in_student_positions(probs, own.words, batch.inputs.words)


def in_student_positions(probs, own_words, student_words):
    """A token classifier's probabilities [B, T', C] on its own encoding (``own_words``: the word each
    position starts, -1 elsewhere) at the student's positions of the same words [B, T, C]; a word
    absent from the teacher's encoding (cut by its max_length) gets the uniform distribution."""
    batch, classes = probs.shape[0], probs.shape[-1]
    own_words, student_words = own_words.to(probs.device), student_words.to(probs.device)
    width = int(max(int(own_words.max()), int(student_words.max()), -1)) + 1
    table = torch.full((batch, width + 1, classes), 1.0 / classes, dtype=probs.dtype, device=probs.device)
    b, t = (own_words >= 0).nonzero(as_tuple=True)
    table[b, own_words[b, t]] = probs[b, t]
    rows = torch.arange(batch, device=probs.device)[:, None]
    return table[rows, torch.where(student_words >= 0, student_words, width)]


# --------------------------------------------------------------------------- cotrain


def reinit_head(model) -> None:
    """Re-initialise a classifier's head in place with the current torch RNG: every child module
    outside the pretrained body (Hugging Face's ``base_model_prefix``, e.g. ``bert``), using the
    model's own initialiser; for other models, the last child module that has parameters."""
    prefix = getattr(model, "base_model_prefix", None)
    children = [(name, module) for name, module in model.named_children() if any(True for _ in module.parameters())]
    if prefix and any(name == prefix for name, _ in children):
        head = [module for name, module in children if name != prefix]
    else:
        head = [module for _, module in children[-1:]]
    init = getattr(model, "_init_weights", None)
    for module in head:
        if callable(init):
            module.apply(init)  # as a freshly loaded head would be initialised
        else:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()


@torch.no_grad()
def _reinit_copy_head(peer: TrainableCopy) -> None:
    """``reinit_head`` for a LoRA peer: re-initialise, with the current torch RNG and the model's own
    initialiser, the head tensors the peer owns (peft's trained copy of the head, never the frozen
    original it keeps beside it), writing into the peer's tensors, not the student's."""
    student = peer.student
    base = student.get_base_model() if hasattr(student, "get_base_model") else student
    prefix = getattr(base, "base_model_prefix", None)
    head = {module for name, child in base.named_children() if name != prefix for module in child.modules()}
    owned = []  # modules whose tensors the peer owns, in the student's module order (the RNG draws in that order)
    for module, _, _ in peer.slots:
        if module in head and module not in owned:
            owned.append(module)
    if not owned:
        raise UserError(f"teacher 'cotrain': found no trainable head in {type(base).__name__} to re-initialise for the peer.")
    init = getattr(base, "_init_weights", None)
    with peer.swapped():
        for module in owned:
            if callable(init):
                init(module)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()


@dataclass(frozen=True)
class CotrainOptions:
    backbone: str = ""  # "" = a copy of the student with a re-initialised head; else a backbone name/path/hub id
    threshold: float = 0.95  # the student's confidence needed for its pseudo-label to train the peer
    lr: float = 5e-5  # the peer's AdamW learning rate
    batch_size: int = 16  # labeled examples in each peer step
    max_length: int = 128  # the peer's own tokenizer (when backbone is set)

    def __post_init__(self):
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"teacher.threshold must be in [0, 1], got {self.threshold}")
        _check_training_options(self)


class CotrainTeacher(BaseTeacher):
    """Co-training (Blum & Mitchell 1998), online and deep as in Qiao et al. 2018 (Deep Co-Training):
    two networks, each the other's teacher. The peer's probabilities on the weak view are the
    student's targets (through the selector, like any teacher); after each student step the peer
    takes one AdamW step on

        CE(peer(x_l), y_l)  +  Σ_u 1[max p_s(u) ≥ τ] · CE(peer(u), argmax p_s(u)) / |u|

    a labeled batch plus the student's hard pseudo-labels (eval mode, after its step) on the same
    unlabeled texts, where the student is confident. The loss is normalised as FixMatch's (by the
    whole unlabeled batch) with weight 1.

    "Different views" here: Blum & Mitchell assume two conditionally independent feature sets;
    text offers no such split. The two models differ instead by initialisation (a re-initialised
    head with another seed, or another backbone with its own tokenizer) and by input: the peer
    learns from the student's predictions on the weak view, the student from the peer's on the
    strong view. Limits: the encoders start identical when ``backbone`` is empty, so the two
    models' errors are correlated and they can confirm each other's mistakes; Qiao et al.'s
    view-difference term (adversarial examples) and JS agreement loss are not implemented here
    (``distance.name=js`` gives the student side of the latter). Cost per step: one peer
    forward/backward and one extra student forward.

    Token tasks (NER): the same per word. The peer's step is CE on the labeled batch's words plus CE
    on the remembered batch's words where the student is confident, normalised by all of its words;
    a peer of another backbone encodes the words itself, and the two models' probabilities meet at
    each other's positions of the same words (a word one of them cut off is uniform: never selected).
    """

    def __init__(self, options: CotrainOptions, context):
        task = getattr(context, "task", None)
        self.task = task if task is not None and task.head == "token" else None  # per-word pseudo-labels
        student = context.student
        self.labeled = _labeled_or_error(context, "cotrain")
        self.threshold, self.batch_size = options.threshold, options.batch_size
        # seed + 1: the peer's head must differ from the student's (initialised with the run's seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed + 1)
            if options.backbone:
                self.peer, tokenizer = _load_or_error(context, options.backbone, "cotrain")
                self.peer.to(context.device)  # where the student is: its probabilities meet the student's logits
                self.own_tokens = True
                if self.task is None:
                    self.tokens = _own_tokenizer(tokenizer, options.max_length, context.device)
                else:
                    self.tokens = lambda texts: self.task.encode(tokenizer, texts, options.max_length).to(context.device)
            else:
                if context.tokenize is None:
                    raise UserError("teacher 'cotrain' with a copy of the student needs the student's tokenizer "
                                    "(RunContext.tokenize); the training loop provides it.")
                if _shares_base(student):  # a LoRA student: a peer of its own adapters and head on the shared base
                    self.peer = TrainableCopy(student, requires_grad=True)
                    _reinit_copy_head(self.peer)
                else:
                    self.peer = copy.deepcopy(student)
                    reinit_head(self.peer)
                self.tokens, self.own_tokens = context.tokenize, False
        self.peer.requires_grad_(True).eval()
        self.optimizer = torch.optim.AdamW(self.peer.parameters(), lr=options.lr)
        self.labels = torch.as_tensor(np.asarray(self.labeled.labels), dtype=torch.long, device=_device(self.peer))
        self.batches = Sampler(len(self.labeled), options.batch_size, np.random.default_rng(context.seed + 1))
        self.remembered = None  # the last weak-view batch the student was taught on
        self.pseudo_labels = 0  # how many of the student's pseudo-labels the peer used in its last step

    def probs(self, batch, stochastic=False):
        self.remembered = batch
        inputs = self.tokens(batch.texts) if self.own_tokens else batch.inputs
        probs = _probabilities(self.peer, inputs, stochastic)
        return in_student_positions(probs, inputs.words, batch.inputs.words) if self.task and self.own_tokens else probs

    def update(self, student, step, training):
        if self.task is not None:
            return self._update_words(student)
        idx = self.batches.next()
        texts, targets = [self.labeled.texts[i] for i in idx], [self.labels[idx]]
        unlabeled = 0
        if self.remembered is not None:  # None when λ(step) = 0 and no unlabeled batch was drawn
            was_training = student.training
            confidence, label = _probabilities(student, self.remembered.inputs, False).max(-1)
            student.train(was_training)  # _probabilities leaves models in eval mode
            keep = (confidence >= self.threshold).nonzero().squeeze(1)
            texts += [self.remembered.texts[i] for i in keep.tolist()]
            targets.append(label[keep])
            unlabeled, self.pseudo_labels, self.remembered = len(self.remembered.texts), len(keep), None
        self.peer.train()
        with _running(self.peer) as peer:  # backward too: gradient checkpointing reruns the peer's forward there
            per_example = F.cross_entropy(peer(**self.tokens(texts)).logits, torch.cat(targets), reduction="none")
            n = len(idx)
            loss = per_example[:n].mean() + (per_example[n:].sum() / unlabeled if unlabeled else 0.0)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.peer.eval()

    def _update_words(self, student):
        """Token tasks: the peer's step on the labeled words plus the student's confident words of the
        remembered batch, normalised by all of that batch's words (FixMatch's normalisation per word)."""
        idx = self.batches.next()
        labeled = self.tokens([self.labeled.texts[i] for i in idx])
        tags = torch.as_tensor(self.task.labels(self.labeled, idx, labeled), dtype=torch.long, device=_device(self.peer))
        targets = None
        if self.remembered is not None:  # None when λ(step) = 0 and no unlabeled batch was drawn
            was_training = student.training
            student_probs = _probabilities(student, self.remembered.inputs, False)
            student.train(was_training)  # _probabilities leaves models in eval mode
            unlabeled = self.tokens(self.remembered.texts) if self.own_tokens else self.remembered.inputs
            if self.own_tokens:  # the student's words at the peer's positions; a word the student cut off is uniform
                student_probs = in_student_positions(student_probs, self.remembered.inputs.words, unlabeled.words)
            confidence, label = self.task.rows(student_probs, unlabeled).max(-1)
            targets, self.remembered = (unlabeled, confidence >= self.threshold, label), None
            self.pseudo_labels = int(targets[1].sum())
        self.peer.train()
        with _running(self.peer) as peer:  # backward too: gradient checkpointing reruns the peer's forward there
            loss = F.cross_entropy(self.task.rows(peer(**labeled).logits, labeled), tags)
            if targets is not None:
                unlabeled, keep, label = targets
                per_word = F.cross_entropy(self.task.rows(peer(**unlabeled).logits, unlabeled), label, reduction="none")
                loss = loss + (per_word * keep).sum() / max(len(keep), 1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.peer.eval()

    def state_dict(self):  # ``remembered`` is always None between steps: update() consumes it
        return {"peer": self.peer.state_dict(), "optimizer": self.optimizer.state_dict(),
                "batches": self.batches.state_dict(), "pseudo_labels": self.pseudo_labels}

    def load_state_dict(self, state):
        self.peer.load_state_dict(state["peer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.pseudo_labels = int(state["pseudo_labels"])


@hookimpl
def testbed_teachers():
    return [
        Teacher(name="self", summary="the student itself, no gradient", factory=SelfTeacher, options=SelfOptions),
        Teacher(name="ema", summary="Mean Teacher: EMA of the student's weights (budget-aware decay)",
                factory=EmaTeacher, options=EmaOptions),
        Teacher(name="snapshot", summary="self-training: frozen copy of the student, refreshed every round",
                factory=SnapshotTeacher, options=SnapshotOptions),
        Teacher(name="model", summary="distillation: a separate model fine-tuned on the labeled set, then frozen",
                factory=ModelTeacher, options=ModelOptions),
        Teacher(name="cotrain", summary="co-training: a peer model, each the other's teacher",
                factory=CotrainTeacher, options=CotrainOptions),
    ]
