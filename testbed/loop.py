"""The training loop. It knows the seams, never a method:

    loss = CE(student(x), y) + λ(step) · mean(weight · distance(student(strong(u)), target)) + regulariser(batch)
    target, weight = selector(teacher(weak(u)))

and never a task: the dataset's rows choose one (``testbed.types.BaseTask``; sentence or token
classification), which encodes texts and turns the model's outputs into rows [N, C] (an example,
or a word of a token task); losses, teachers' probabilities, selectors and distances see rows.

``prepare`` resolves the config into objects (all user errors surface here, before any
run directory exists); ``train`` runs the loop and reports every evaluation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from testbed.config import RunConfig
from testbed.data import DEFAULT_TASKS, Split, data_dir, make_split, rows_kind
from testbed.errors import UserError
from testbed.model import autocast, check_precision, describe_device, resolve_device, to_device
from testbed.types import (
    BackboneContext,
    BaseRegulariser,
    BaseSelector,
    BaseTask,
    BaseTeacher,
    DatasetContext,
    RegularisationBatch,
    RegulariserContext,
    RunContext,
    Sampler,
    Selection,
    TaskContext,
    TeacherContext,
    TextBatch,
    Training,
)
from testbed.views import LabeledViews, Views, open_labeled_views, open_views


@dataclass
class Parts:
    split: Split
    student: Any
    tokenizer: Any
    teacher: BaseTeacher
    selector: BaseSelector
    distance: Callable
    schedule: Callable[[int], float]
    tsa: Callable[[int], float]
    views: Views  # weak and strong views of the pool, cached on disk (testbed.views)
    device: str = "cpu"  # train.device resolved: where the student and all run state live
    regulariser: BaseRegulariser | None = None  # batch-level loss terms added to the objective; None = none
    task: BaseTask | None = None  # what the dataset's rows chose (sentence or token classification); None = sentence
    task_name: str = "sentence"
    labeled_views: LabeledViews | None = None  # augmentation.labeled; None (identity): the labeled examples as they are


def backbone_context(registry, num_labels: int, head: str = "sequence") -> BackboneContext:
    """What a backbone's factory gets: ``load_backbone(name)`` -> (model, tokenizer) for any backbone
    name, path or hub id with its default options, through ``registry`` (the run's own, so a
    backbone that wraps another sees plugins from --plugins-dir too); ``head``: the task's
    (``BaseTask.head``), which ``load_backbone`` passes on."""
    from testbed.config import resolve

    def load(name: str):
        choice = resolve({"backbone": {"name": name}}, registry).choices["backbone"]
        return choice.record.factory(choice.options, context)

    context = BackboneContext(num_labels=num_labels, load_backbone=load, head=head)
    return context


ROWS = {"text": "text + label rows (sentence classification)", "tokens": "tokens + tags rows (token classification)"}


def choose_task(cfg: RunConfig, data, registry):
    """The task record of a run: ``dataset.task``, else what the dataset says (its ``DatasetSplits.task``,
    or its record's declared ``task``), else the default of its rows (sentence; token for words + tags).
    A task that reads another kind of rows than the dataset has is a UserError."""
    kind = rows_kind(data)
    declared = getattr(registry.get("dataset", cfg.dataset.name), "task", "")
    name = cfg.dataset.task or data.task or declared or DEFAULT_TASKS[kind]
    record = registry.get("task", name)
    if record.reads != kind:
        raise UserError(f"dataset {cfg.dataset.name!r} has {ROWS.get(kind, kind)}, but task {name!r} reads "
                        f"{ROWS.get(record.reads, record.reads)}. "
                        + ("Unset dataset.task." if cfg.dataset.task else "Fix the dataset's rows or its declared task."))
    return record


def prepare(cfg: RunConfig, registry=None) -> Parts:
    if registry is None:
        from testbed.plugins import load_plugins

        registry = load_plugins()
    choice = cfg.choices
    build = lambda seam, context: choice[seam].record.factory(choice[seam].options, context)  # noqa: E731
    data = build("dataset", DatasetContext(data_dir=data_dir(), seed=cfg.seed))
    task_record = choose_task(cfg, data, registry)
    split = make_split(data, cfg.dataset.labels_per_class, cfg.dataset.validation_per_class, cfg.seed,
                       cfg.dataset.unlabeled_limit, cfg.dataset.test_limit, where=f"dataset {cfg.dataset.name!r}",
                       labeled_size=cfg.dataset.labeled_size, validation_size=cfg.dataset.validation_size)
    task = task_record.factory(task_record.options(), TaskContext(label_names=tuple(split.label_names), pool_texts=split.pool_texts))
    aligned = f"task {task_record.name!r} of dataset {cfg.dataset.name!r}" if task_record.aligned_view is not None else None
    views = open_views(cfg, split.pool_texts, registry, aligned=aligned)  # before any model: a refused augmentation costs none
    labeled_views = open_labeled_views(cfg, split.labeled, split.label_names, registry, task=aligned or f"task {task_record.name!r}")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)  # the classifier head's initialisation
    device = resolve_device(cfg.train.device)
    check_precision(device, cfg.train.precision)
    backbones = backbone_context(registry, split.num_classes, task.head)
    student, tokenizer = build("backbone", backbones)
    student.to(device)  # before the teacher is built: teachers that copy the student land on its device
    ctx = RunContext(num_classes=split.num_classes, pool_size=len(split.pool_gold), steps=cfg.train.steps, seed=cfg.seed,
                     labeled=split.labeled, unlabeled_batch_size=cfg.train.batch_size * cfg.train.unlabeled_ratio,
                     load_backbone=backbones.load_backbone, device=device, label_names=tuple(split.label_names),
                     tokenize=lambda texts: to_device(task.encode(tokenizer, texts, cfg.backbone.max_length), device), task=task)
    parts = Parts(
        split=split, student=student, tokenizer=tokenizer, views=views, device=device, task=task, task_name=task_record.name,
        labeled_views=labeled_views,
        teacher=build("teacher", TeacherContext(**vars(ctx), student=student)),
        selector=build("selector", ctx), distance=build("distance", ctx), schedule=build("schedule", ctx), tsa=build("tsa", ctx),
    )
    # last: it may read the selector (saf refuses a selector without FreeMatch's EMAs) and train the student's encoder
    parts.regulariser = build("regulariser", RegulariserContext(**vars(ctx), student=student, tokenizer=tokenizer, selector=parts.selector))
    evaluated_models(cfg, parts.teacher)  # train.evaluate=teacher with a teacher that has no model: refused before the run
    return parts


class AutocastTeacher(BaseTeacher):
    """The run's teacher as the selector sees it: its forward passes under the run's autocast, its
    probabilities back in fp32, so the selectors' thresholds and EMAs keep their precision, and as
    rows of the task (a token task's [B, T, C] become the words' [N, C])."""

    def __init__(self, teacher: BaseTeacher, autocast: Callable[[], Any], task: BaseTask | None = None):
        self.teacher, self.autocast, self.task = teacher, autocast, task or BaseTask()

    def probs(self, batch: TextBatch, stochastic: bool = False):
        with self.autocast():
            probs = self.teacher.probs(batch, stochastic).float()
        return self.task.batch_rows(probs, batch)


def run_task(parts: Parts) -> BaseTask:
    """The task of the run's parts (sentence classification for parts built without one)."""
    if parts.task is None:
        parts.task = BaseTask(None, TaskContext(label_names=tuple(parts.split.label_names), pool_texts=parts.split.pool_texts))
    return parts.task


@torch.no_grad()
def teacher_test_scores(parts: Parts, cfg: RunConfig, teacher: BaseTeacher, tokens: Callable) -> dict[str, float]:
    """A fixed teacher's own test scores (accuracy, macro-F1, ...): what its pseudo-labels are worth, beside the student's."""
    texts, size, task = parts.split.test.texts, cfg.train.eval_batch_size, run_task(parts)
    if not texts:
        return {}
    probs = torch.cat([teacher.probs(TextBatch(texts[i : i + size], tokens)).cpu() for i in range(0, len(texts), size)])
    scores = task.score(probs.numpy(), parts.split.test, parts.tokenizer, cfg.backbone.max_length)
    return {f"teacher_test_{name}": scores.get(name) for name in task.metrics}


def whole_examples(weights: torch.Tensor, owners) -> torch.Tensor:
    """``train.selection = "example"``: a row keeps its weight only when every row of its example
    (``owners``: each row's example) has weight > 0, else 0 (a sentence is kept whole or not at all)."""
    owners = torch.as_tensor(owners, device=weights.device, dtype=torch.long)
    if not len(owners):
        return weights
    failed = torch.bincount(owners, weights=(weights <= 0).to(torch.float32), minlength=int(owners.max()) + 1) > 0
    return torch.where(failed[owners], torch.zeros_like(weights), weights)


class NonFiniteLoss(ArithmeticError):
    """A term of the loss is NaN or infinite (``term``: supervised, consistency, regulariser). Raised where
    the loop reads the loss anyway (the tally's float), so the check costs no extra device sync;
    testbed.runs names the seam that produced it and the step."""

    def __init__(self, term: str, value: float):
        super().__init__(f"the {term} loss is {value}")
        self.term, self.value = term, value


class PseudoLabelTally:
    """Quantity and quality of pseudo-labels between two evaluations. Gold labels are used
    here only, to measure; they never reach the loss. A loss term that is not finite raises
    NonFiniteLoss before the optimizer steps on it."""

    def __init__(self):
        self.seen = self.selected = self.selected_known = self.selected_correct = 0
        self.known = self.correct = 0
        self.weight_sum = self.confidence_sum = self.sup_loss = self.unsup_loss = self.tsa_kept = self.reg_loss = 0.0
        self.steps = self.unsup_steps = self.reg_steps = 0
        self.per_class = None  # [3, C]: selected pseudo-labels = c, of those gold c, gold c seen (known gold only)

    def add_labeled(self, loss: float, kept: float):
        """One step's supervised loss and the share of labeled examples TSA kept in it."""
        if not math.isfinite(loss):
            raise NonFiniteLoss("supervised", loss)
        self.sup_loss += loss
        self.tsa_kept += kept
        self.steps += 1

    def add_regulariser(self, loss: float):
        """One step's regulariser terms, summed (weighted, as added to the loss)."""
        if not math.isfinite(loss):
            raise NonFiniteLoss("regulariser", loss)
        self.reg_loss += loss
        self.reg_steps += 1

    def add_unlabeled(self, weights, targets, teacher_probs, gold: np.ndarray, unsup_loss: float):
        if not math.isfinite(unsup_loss):
            raise NonFiniteLoss("consistency", unsup_loss)
        weights, targets, teacher_probs = weights.cpu(), targets.cpu(), teacher_probs.cpu()  # counted in numpy
        chosen = (weights > 0).numpy()
        known = gold >= 0
        hit = targets.argmax(-1).numpy() == gold  # the pseudo-label the student is trained toward
        teacher_hit = teacher_probs.argmax(-1).numpy() == gold
        self.seen += len(gold)
        self.selected += int(chosen.sum())
        self.weight_sum += float(weights.sum())
        self.confidence_sum += float(teacher_probs.max(-1).values.sum())
        self.selected_known += int((chosen & known).sum())
        self.selected_correct += int((chosen & known & hit).sum())
        self.known += int(known.sum())
        self.correct += int((known & teacher_hit).sum())
        self.unsup_loss += unsup_loss
        self.unsup_steps += 1
        c, pseudo = targets.shape[-1], targets.argmax(-1).numpy()
        counts = np.stack([np.bincount(v, minlength=c) for v in (pseudo[chosen & known], pseudo[chosen & known & hit], gold[known])])
        self.per_class = counts + (0 if self.per_class is None else self.per_class)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, np.asarray(value, dtype=np.int64) if key == "per_class" and value is not None else value)

    def summary(self) -> dict[str, float | None]:
        ratio = lambda a, b: a / b if b else None  # noqa: E731
        return {
            "train_loss": ratio(self.sup_loss, self.steps),
            "tsa_kept": ratio(self.tsa_kept, self.steps),
            "consistency_loss": ratio(self.unsup_loss, self.unsup_steps),
            "regulariser_loss": ratio(self.reg_loss, self.reg_steps),  # None: no regulariser term in these steps
            "mask_rate": ratio(self.selected, self.seen),
            "mean_weight": ratio(self.weight_sum, self.seen),
            "teacher_confidence": ratio(self.confidence_sum, self.seen),
            "pseudo_label_accuracy": ratio(self.selected_correct, self.selected_known),
            "teacher_accuracy": ratio(self.correct, self.known),
            "pseudo_labels_selected": self.selected,
        }


def evaluate(parts: Parts, cfg: RunConfig, probs_out: dict | None = None, model=None,
             details: dict | None = None) -> dict[str, float | None]:
    """The task's scores of ``model`` (the student unless given) on validation and test: accuracy and
    macro-F1 (a token task: and entity F1, ...), as ``val_<metric>`` and ``test_<metric>``;
    ``probs_out[prefix]`` gets the probabilities (rows), ``details[prefix]`` the scores that are not
    numbers (a token task's per-type table)."""
    model = parts.student if model is None else model
    task = run_task(parts)
    out: dict[str, float | None] = {}
    for prefix, texts in (("val", parts.split.validation), ("test", parts.split.test)):
        if len(texts) == 0:
            out.update({f"{prefix}_{name}": None for name in task.metrics})
            continue
        probs = task.predict(model, parts.tokenizer, texts.texts, cfg.backbone.max_length, cfg.train.eval_batch_size,
                             cfg.train.precision)
        if probs_out is not None:
            probs_out[prefix] = probs
        scores = task.score(probs, texts, parts.tokenizer, cfg.backbone.max_length)
        out.update({f"{prefix}_{name}": scores.get(name) for name in task.metrics})
        if details is not None:
            details[prefix] = {key: value for key, value in scores.items() if key not in task.metrics}
    return out


def evaluated_models(cfg: RunConfig, teacher: BaseTeacher) -> tuple[str, dict[str, Any]]:
    """(the model the run reports, every model evaluated by name). ``train.evaluate = "auto"`` reports
    the teacher's evaluation model where the teacher offers one (Mean Teacher's EMA weights, as its
    papers do), else the student; the other is evaluated too and recorded beside it."""
    offered = teacher.evaluation_model()
    if cfg.train.evaluate == "teacher" and offered is None:
        raise UserError(f"train.evaluate = 'teacher', but teacher {cfg.choices['teacher'].name!r} offers no model to evaluate "
                        "(only teachers that keep a model of the student's kind do, e.g. 'ema'). Use train.evaluate=auto or student.")
    models = {"student": None, **({"teacher": offered} if offered is not None else {})}  # None: evaluate's default, the student
    reported = "student" if cfg.train.evaluate == "student" or offered is None else "teacher"
    return reported, models


@dataclass
class Trained:
    """What a run produced: ``result`` (result.json: test metrics of the last and the
    best-on-validation evaluation, pseudo-label quality, sizes, times) and ``predictions`` (the
    arrays of predictions.npz: test probabilities of both checkpoints and the test labels)."""

    result: dict[str, Any]
    predictions: dict[str, Any]


CHECKPOINT_SECONDS = 600  # train.checkpoint_every = 0: a checkpoint at the first evaluation after 10 minutes


def train(cfg: RunConfig, parts: Parts, on_evaluation: Callable[[dict], None] = lambda record: None,
          progress: bool = True, checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None) -> Trained:
    """Train for ``cfg.train.steps`` steps; ``on_evaluation`` gets each evaluation's record.

    ``checkpoint(state)`` is called at evaluations as ``train.checkpoint_every`` says with everything
    the run needs to go on; ``train(..., resume=state)`` goes on from it (on the parts of the same
    config, fresh from ``prepare``) to exactly the numbers of a run that was never stopped."""
    t, split, student, task = cfg.train, parts.split, parts.student, run_task(parts)
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    labeled = Sampler(len(split.labeled), t.batch_size, np.random.default_rng(seeds[0]))
    unlabeled_batch = t.batch_size * t.unlabeled_ratio
    unlabeled = Sampler(len(split.pool_texts), unlabeled_batch, np.random.default_rng(seeds[1])) if unlabeled_batch and split.pool_texts else None
    device = parts.device
    # what trains: all of a fine-tuned model, the adapters and head of a LoRA one, the head on a frozen encoder
    trainable = [p for p in student.parameters() if p.requires_grad]
    # a regulariser's own parameters (an auxiliary head): a second group, only when there are any (the optimizer's
    # state of a run without them stays exactly what it was)
    extra = list(parts.regulariser.parameters()) if parts.regulariser is not None else []
    optimizer = torch.optim.AdamW([{"params": trainable}, {"params": extra}] if extra else trainable, lr=t.lr, weight_decay=t.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / t.warmup_steps) if t.warmup_steps else 1.0)
    # fp16 gradients underflow without loss scaling; disabled (fp32, bf16), the scaler passes calls straight through
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=t.precision == "fp16")
    half = lambda: autocast(device, t.precision)  # forward passes only; losses are computed in fp32  # noqa: E731
    tokens = lambda texts: to_device(task.encode(parts.tokenizer, texts, cfg.backbone.max_length), device)  # noqa: E731
    teacher = AutocastTeacher(parts.teacher, half, task)
    training = Training(optimizer, warmup)  # what a teacher that re-initialises the student restarts

    torch.manual_seed(cfg.seed)
    student.train()
    tally, whole_run, best, record = PseudoLabelTally(), PseudoLabelTally(), None, {}
    last_probs, best_probs = {}, {}  # test probabilities of the last and the best-on-validation evaluation
    last_details, best_details = {}, {}  # their scores that are not numbers (a token task's per-type table), by val/test
    primary = f"val_{task.primary}"  # what "best on validation" maximises: val_accuracy, a token task's val_entity_f1
    started = time.perf_counter()
    eval_seconds = augment_seconds = 0.0
    first = 1
    if resume is not None:
        samplers = {"labeled": labeled, "unlabeled": unlabeled}
        first, seconds = restore(resume, student, optimizer, warmup, parts, samplers, whole_run, scaler)
        best, record, last_probs, best_probs = (resume[k] for k in ("best", "record", "last_probs", "best_probs"))
        last_details, best_details = resume.get("last_details", {}), resume.get("best_details", {})
        started, eval_seconds, augment_seconds = started - seconds["elapsed"], seconds["eval"], seconds["augment"]
    saved_at, saved_step = time.perf_counter(), first - 1
    teacher_scores = teacher_test_scores(parts, cfg, teacher, tokens) if parts.teacher.fixed else {}
    reported, models = evaluated_models(cfg, parts.teacher)
    bar = tqdm(range(first, t.steps + 1), desc=f"{cfg.method} seed={cfg.seed}", disable=not progress, leave=False,
               initial=first - 1, total=t.steps)
    for step in bar:
        idx = labeled.next()
        # augmentation.labeled: the batch's views (a token task's with their rewritten tags) and idx's rows in them
        drawing = time.perf_counter()
        examples, rows = (split.labeled, idx) if parts.labeled_views is None else parts.labeled_views.draw(idx)
        augment_seconds += time.perf_counter() - drawing
        inputs = tokens([examples.texts[i] for i in rows])
        with half():
            logits = student(**inputs).logits
        logits = task.rows(logits.float(), inputs)  # [N, C]: the examples, or a token task's words
        y = torch.as_tensor(task.labels(examples, rows, inputs), device=device)
        per_example = F.cross_entropy(logits, y, reduction="none")
        eta = parts.tsa(step)  # UDA's TSA: drop examples whose correct-class probability exceeds η
        keep = (logits.detach().softmax(-1).gather(1, y[:, None]).squeeze(1) <= eta).float()
        loss = (per_example * keep).sum() / keep.sum().clamp(min=1)
        tally.add_labeled(float(loss.detach()), float(keep.mean()))
        weight = parts.schedule(step)
        student_logits = weak = selection = None  # what a regulariser sees of a step without an unlabeled batch
        if unlabeled is not None and weight > 0:
            uidx = unlabeled.next()
            drawing = time.perf_counter()
            weak, strong = parts.views.draw(uidx)  # variant (draws of the text) mod K, from the cache or computed
            augment_seconds += time.perf_counter() - drawing
            weak_batch, strong_batch = TextBatch(weak, tokens), TextBatch(strong, tokens)
            # the rows both views give: their positions in the pool (a text's, or a token task's word's) and examples
            rows, owners = task.unlabeled_rows(uidx, weak_batch, strong_batch)
            chosen = parts.selector.choose(teacher, weak_batch, torch.as_tensor(rows, device=device), step)
            targets, weights = chosen.targets.detach(), chosen.weights.detach()  # targets never carry gradient
            if t.selection == "example":
                weights = whole_examples(weights, owners)
            with half():
                student_logits = student(**strong_batch.inputs).logits
            student_logits = task.rows(student_logits.float(), strong_batch.inputs)
            consistency = (parts.distance(student_logits, targets) * weights).mean()
            loss = loss + weight * consistency
            selection = Selection(targets=targets, weights=weights, probs=chosen.probs.detach())
            for counter in (tally, whole_run):
                counter.add_unlabeled(weights, targets, selection.probs, split.pool_gold[rows], float(consistency.detach()))
        if parts.regulariser is not None:
            with half():  # an auxiliary task's forward passes as the student's; the term comes back in fp32
                term = parts.regulariser.loss(RegularisationBatch(
                    step=step, labeled_logits=logits, labels=y, selector=parts.selector, unlabeled_logits=student_logits,
                    weak_texts=weak, selection=selection))
            if term is not None:
                term = term.float()
                loss = loss + term
                tally.add_regulariser(float(term.detach()))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed; the scale then shrinks
        scaler.update()
        warmup.step()
        parts.teacher.update(student, step, training)

        if step % t.eval_every == 0 or step == t.steps:
            eval_started = time.perf_counter()
            scores, probs, details = {}, {name: {} for name in models}, {name: {} for name in models}
            for name, model in models.items():
                scores[name] = evaluate(parts, cfg, probs[name], model, details[name])
            last_probs, last_details = probs[reported], details[reported]
            both = {f"{name}_{key}": value for name, score in scores.items() for key, value in score.items()} if len(models) > 1 else {}
            record = {"step": step, **scores[reported], **both, **tally.summary(), "consistency_weight": weight, "tsa_threshold": eta,
                      "lr": warmup.get_last_lr()[0], **parts.views.stats(),
                      **{f"selector/{k}": v for k, v in parts.selector.stats().items()},
                      **{f"regulariser/{k}": v for k, v in (parts.regulariser.stats() if parts.regulariser is not None else {}).items()}}
            eval_seconds += time.perf_counter() - eval_started
            record["elapsed_seconds"] = time.perf_counter() - started
            if record[primary] is not None and (best is None or record[primary] > best[primary]):
                best, best_probs, best_details = record, last_probs, last_details
            on_evaluation(record)
            bar.set_postfix(test_acc=f"{record['test_accuracy']:.3f}", mask=record["mask_rate"])
            tally = PseudoLabelTally()
            every = t.checkpoint_every
            due = step - saved_step >= every if every > 0 else every == 0 and time.perf_counter() - saved_at >= CHECKPOINT_SECONDS
            if checkpoint is not None and due and step < t.steps:
                seconds = {"elapsed": time.perf_counter() - started, "eval": eval_seconds, "augment": augment_seconds}
                checkpoint(snapshot(step, student, optimizer, warmup, parts, {"labeled": labeled, "unlabeled": unlabeled},
                                    whole_run, seconds, scaler, best=best, record=record, last_probs=last_probs, best_probs=best_probs,
                                    last_details=last_details, best_details=best_details))
                saved_at, saved_step = time.perf_counter(), step

    wall = time.perf_counter() - started
    best, best_probs, best_details = (best, best_probs, best_details) if best else (record, last_probs, last_details)
    extra = [name for name in task.metrics if name not in ("accuracy", "macro_f1")]  # a token task's entity F1, ...
    return Trained(result={
        "test_accuracy": record["test_accuracy"], "test_macro_f1": record["test_macro_f1"],
        "test_accuracy_best_val": best["test_accuracy"], "test_macro_f1_best_val": best["test_macro_f1"],
        "best_val_step": best["step"], "val_accuracy_best": best["val_accuracy"],
        **{f"test_{name}{suffix}": source[f"test_{name}"] for name in extra for suffix, source in (("", record), ("_best_val", best))},
        **({f"{primary}_best": best[primary]} if primary != "val_accuracy" else {}),
        **{f"test_{key}{suffix}": value for suffix, source in (("", last_details), ("_best_val", best_details))
           for key, value in source.get("test", {}).items()},  # e.g. test_entity_per_type: precision, recall, F1 by type
        "mask_rate": whole_run.summary()["mask_rate"], "pseudo_label_accuracy": whole_run.summary()["pseudo_label_accuracy"],
        "steps": t.steps, "device": describe_device(device), "precision": t.precision,
        "wall_seconds": wall, "train_seconds": wall - eval_seconds, "eval_seconds": eval_seconds,
        "label_names": list(split.label_names),  # so reports name classes without loading the dataset
        "labeled_size": len(split.labeled), "validation_size": len(split.validation),
        "unlabeled_size": len(split.pool_texts), "test_size": len(split.test),
        "evaluated_model": reported,  # whose metrics test_accuracy etc. are; "best" is its best validation score (val_<primary>)
        "task": parts.task_name,
        **{f"{name}_{key}{suffix}": source[f"{name}_{key}"] for name in models if len(models) > 1
           for suffix, source in (("", record), ("_best_val", best)) for key in ("test_accuracy", "test_macro_f1", *(f"test_{m}" for m in extra))},
        **teacher_scores, "augment_seconds": augment_seconds, "pseudo_label_per_class": None if whole_run.per_class is None else
        dict(zip(("selected", "correct", "gold"), whole_run.per_class.tolist())),  # per class c, over the whole run
    }, predictions={  # calibration and per-class metrics in reports
        "test_probs_last": last_probs.get("test"), "test_probs_best_val": best_probs.get("test"),
        "test_labels": np.asarray(task.gold(split.test, parts.tokenizer, cfg.backbone.max_length))})


# --------------------------------------------------------------------------- checkpoints


def snapshot(step: int, student, optimizer, lr_schedule, parts: Parts, samplers: dict, whole_run: PseudoLabelTally,
             seconds: dict, scaler=None, **progress) -> dict:
    """Everything a run needs to go on after ``step`` (an evaluation step, so the per-evaluation
    tallies are empty): tensors, numbers, lists and strings only, so ``torch.load(weights_only=True)``
    reads it back."""
    plain = lambda value: json.loads(json.dumps(value))  # records: numpy scalars become floats  # noqa: E731
    arrays = lambda probs: {k: torch.from_numpy(np.asarray(v)) for k, v in probs.items()}  # noqa: E731
    return {
        "step": step, "student": trained_state(student), "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(),
        "teacher": parts.teacher.state_dict(), "selector": parts.selector.state_dict(), "views": parts.views.state_dict(),
        "labeled_views": parts.labeled_views.state_dict() if parts.labeled_views is not None else {},
        "regulariser": parts.regulariser.state_dict() if parts.regulariser is not None else {},
        "samplers": {name: sampler.state_dict() for name, sampler in samplers.items() if sampler is not None},
        "whole_run": whole_run.state_dict(), "rng": torch.get_rng_state(), "device_rng": _device_rng(parts.device), "seconds": seconds,
        "scaler": {} if scaler is None else scaler.state_dict(),  # fp16: the loss scale and its growth tracker
        "best": plain(progress["best"]), "record": plain(progress["record"]),
        "last_probs": arrays(progress["last_probs"]), "best_probs": arrays(progress["best_probs"]),
        "last_details": plain(progress.get("last_details", {})), "best_details": plain(progress.get("best_details", {})),
    }


def frozen_names(student) -> set[str]:
    """State-dict names of the parameters that never train (a LoRA model's base; tied copies included)."""
    return {name for name, p in student.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trained_state(student) -> dict:
    """The student's state without its frozen weights: a LoRA checkpoint of an 8B model holds its
    adapters, head and buffers, not the 8B base that ``prepare`` loads the same way again."""
    frozen = frozen_names(student)
    return {name: tensor for name, tensor in student.state_dict().items() if name not in frozen}


def restore(state: dict, student, optimizer, lr_schedule, parts: Parts, samplers: dict, whole_run: PseudoLabelTally,
            scaler=None) -> tuple[int, dict]:
    """Load ``snapshot``'s state into a run's fresh objects; (the first step to run, the seconds spent).
    The probabilities come back as numpy arrays in ``state``."""
    frozen = frozen_names(student)
    loaded = student.load_state_dict(state["student"], strict=False)  # the frozen weights are prepare's, unchanged
    if loaded.unexpected_keys or set(loaded.missing_keys) - frozen:
        raise ValueError(f"the checkpoint's student does not fit this run's model: missing {sorted(set(loaded.missing_keys) - frozen)[:5]}, "
                         f"unexpected {loaded.unexpected_keys[:5]}")
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    parts.teacher.load_state_dict(state["teacher"])
    parts.selector.load_state_dict(state["selector"])
    if parts.regulariser is not None and "regulariser" in state:  # checkpoints written before regularisers have none
        parts.regulariser.load_state_dict(state["regulariser"])
    parts.views.load_state_dict(state["views"])
    if parts.labeled_views is not None:  # the labeled examples' draw counts: the same views after the resume
        parts.labeled_views.load_state_dict(state["labeled_views"])
    for name, sampler in samplers.items():
        if sampler is not None:
            sampler.load_state_dict(state["samplers"][name])
    whole_run.load_state_dict(state["whole_run"])
    torch.set_rng_state(state["rng"])
    if state.get("device_rng") is not None:
        _set_device_rng(parts.device, state["device_rng"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    for key in ("last_probs", "best_probs"):
        state[key] = {k: v.numpy() for k, v in state[key].items()}
    return state["step"] + 1, state["seconds"]


def _device_rng(device: str):
    """The generator dropout draws from on a GPU (the CPU's is saved apart); None on the CPU."""
    kind = torch.device(device).type
    return torch.cuda.get_rng_state(device) if kind == "cuda" else torch.mps.get_rng_state() if kind == "mps" else None


def _set_device_rng(device: str, state) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif torch.device(device).type == "mps":
        torch.mps.set_rng_state(state)


def misplaced_tensors(parts: Parts, state: dict, device: str) -> list[str]:
    """Every state tensor of a run that is not on ``device``, by path: the student, the optimizer, the
    teacher, the selector and the regulariser of a checkpoint ``state`` (``snapshot``), and the tensors
    and modules the teacher, selector and regulariser hold as attributes (a teacher's own model need not be in its state_dict). The
    CPU parts of a checkpoint by design (random states, probabilities) are not looked at. What
    scripts/gpu_check.py asserts on a GPU, and tests/test_device.py on the CPU."""
    want = torch.device(device)
    found: list[tuple[str, torch.Tensor]] = []

    def walk(path: str, value) -> None:
        if isinstance(value, torch.Tensor):
            found.append((path, value))
        elif isinstance(value, torch.nn.Module):
            found.extend((f"{path}.{name}", t) for name, t in [*value.named_parameters(), *value.named_buffers()])
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(f"{path}[{i}]", item)

    for key in ("student", "optimizer", "teacher", "selector"):
        walk(key, state[key])
    # a regulariser's random state ("rng", a generator's bytes) is a CPU part by design
    walk("regulariser", {k: v for k, v in state.get("regulariser", {}).items() if k != "rng"})
    holders = (("teacher", parts.teacher), ("selector", parts.selector), ("regulariser", parts.regulariser))
    for name, holder in ((name, holder) for name, holder in holders if holder is not None):
        for attribute, value in vars(holder).items():
            if isinstance(value, (torch.Tensor, torch.nn.Module)):
                walk(f"{name}.{attribute}", value)
    same = lambda t: t.device.type == want.type and (want.index is None or t.device.index == want.index)  # noqa: E731
    # torch keeps Adam's step counter, a 0-d tensor, on the CPU unless the optimizer is fused or capturable (no sync per step)
    counter = lambda path, t: path.startswith("optimizer.") and path.endswith(".step") and t.dim() == 0  # noqa: E731
    return [f"{path} on {tensor.device}" for path, tensor in found if not same(tensor) and not counter(path, tensor)]
