"""The training loop. It knows the five seams, never a method:

    loss = CE(student(x), y) + λ(step) · mean(weight · distance(student(strong(u)), target))
    target, weight = selector(teacher(weak(u)))

``prepare`` resolves the config into objects (all user errors surface here, before any
run directory exists); ``train`` runs the loop and reports every evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from testbed.config import RunConfig
from testbed.data import Split, data_dir, make_split
from testbed.model import accuracy_and_macro_f1, predict, tokenize
from testbed.types import (
    BackboneContext,
    BaseSelector,
    BaseTeacher,
    DatasetContext,
    RunContext,
    Sampler,
    TeacherContext,
    TextBatch,
    Training,
)
from testbed.views import Views, open_views


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


def backbone_context(registry, num_labels: int) -> BackboneContext:
    """What a backbone's factory gets: ``load_backbone(name)`` -> (model, tokenizer) for any backbone
    name, path or hub id with its default options, through ``registry`` (the run's own, so a
    backbone that wraps another sees plugins from --plugins-dir too)."""
    from testbed.config import resolve

    def load(name: str):
        choice = resolve({"backbone": {"name": name}}, registry).choices["backbone"]
        return choice.record.factory(choice.options, context)

    context = BackboneContext(num_labels=num_labels, load_backbone=load)
    return context


def prepare(cfg: RunConfig, registry=None) -> Parts:
    if registry is None:
        from testbed.plugins import load_plugins

        registry = load_plugins()
    choice = cfg.choices
    build = lambda seam, context: choice[seam].record.factory(choice[seam].options, context)  # noqa: E731
    data = build("dataset", DatasetContext(data_dir=data_dir()))
    split = make_split(data, cfg.dataset.labels_per_class, cfg.dataset.validation_per_class, cfg.seed,
                       cfg.dataset.unlabeled_limit, cfg.dataset.test_limit, where=f"dataset {cfg.dataset.name!r}")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)  # the classifier head's initialisation
    backbones = backbone_context(registry, split.num_classes)
    student, tokenizer = build("backbone", backbones)
    ctx = RunContext(num_classes=split.num_classes, pool_size=len(split.pool_texts), steps=cfg.train.steps, seed=cfg.seed,
                     labeled=split.labeled, unlabeled_batch_size=cfg.train.batch_size * cfg.train.unlabeled_ratio,
                     load_backbone=backbones.load_backbone,
                     tokenize=lambda texts: tokenize(tokenizer, texts, cfg.backbone.max_length))
    views = open_views(cfg, split.pool_texts, registry)
    return Parts(
        split=split, student=student, tokenizer=tokenizer, views=views,
        teacher=build("teacher", TeacherContext(**vars(ctx), student=student)),
        selector=build("selector", ctx), distance=build("distance", ctx), schedule=build("schedule", ctx), tsa=build("tsa", ctx),
    )


class PseudoLabelTally:
    """Quantity and quality of pseudo-labels between two evaluations. Gold labels are used
    here only, to measure; they never reach the loss."""

    def __init__(self):
        self.seen = self.selected = self.selected_known = self.selected_correct = 0
        self.known = self.correct = 0
        self.weight_sum = self.confidence_sum = self.sup_loss = self.unsup_loss = self.tsa_kept = 0.0
        self.steps = self.unsup_steps = 0
        self.per_class = None  # [3, C]: selected pseudo-labels = c, of those gold c, gold c seen (known gold only)

    def add_labeled(self, loss: float, kept: float):
        """One step's supervised loss and the share of labeled examples TSA kept in it."""
        self.sup_loss += loss
        self.tsa_kept += kept
        self.steps += 1

    def add_unlabeled(self, weights, targets, teacher_probs, gold: np.ndarray, unsup_loss: float):
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
            "mask_rate": ratio(self.selected, self.seen),
            "mean_weight": ratio(self.weight_sum, self.seen),
            "teacher_confidence": ratio(self.confidence_sum, self.seen),
            "pseudo_label_accuracy": ratio(self.selected_correct, self.selected_known),
            "teacher_accuracy": ratio(self.correct, self.known),
            "pseudo_labels_selected": self.selected,
        }


def evaluate(parts: Parts, cfg: RunConfig, probs_out: dict | None = None) -> dict[str, float | None]:
    """Accuracy and macro-F1 on validation and test; ``probs_out[prefix]`` gets the probabilities."""
    out: dict[str, float | None] = {}
    for prefix, texts in (("val", parts.split.validation), ("test", parts.split.test)):
        if len(texts) == 0:
            out[f"{prefix}_accuracy"] = out[f"{prefix}_macro_f1"] = None
            continue
        probs = predict(parts.student, parts.tokenizer, texts.texts, cfg.backbone.max_length, cfg.train.eval_batch_size)
        if probs_out is not None:
            probs_out[prefix] = probs
        out[f"{prefix}_accuracy"], out[f"{prefix}_macro_f1"] = accuracy_and_macro_f1(probs, texts.labels, parts.split.num_classes)
    return out


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
    t, split, student = cfg.train, parts.split, parts.student
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    labeled = Sampler(len(split.labeled), t.batch_size, np.random.default_rng(seeds[0]))
    unlabeled_batch = t.batch_size * t.unlabeled_ratio
    unlabeled = Sampler(len(split.pool_texts), unlabeled_batch, np.random.default_rng(seeds[1])) if unlabeled_batch and split.pool_texts else None
    labels = torch.as_tensor(split.labeled.labels)
    optimizer = torch.optim.AdamW(student.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / t.warmup_steps) if t.warmup_steps else 1.0)
    tokens = lambda texts: tokenize(parts.tokenizer, texts, cfg.backbone.max_length)  # noqa: E731
    training = Training(optimizer, warmup)  # what a teacher that re-initialises the student restarts

    torch.manual_seed(cfg.seed)
    student.train()
    tally, whole_run, best, record = PseudoLabelTally(), PseudoLabelTally(), None, {}
    last_probs, best_probs = {}, {}  # test probabilities of the last and the best-on-validation evaluation
    started = time.perf_counter()
    eval_seconds = augment_seconds = 0.0
    first = 1
    if resume is not None:
        samplers = {"labeled": labeled, "unlabeled": unlabeled}
        first, seconds = restore(resume, student, optimizer, warmup, parts, samplers, whole_run)
        best, record, last_probs, best_probs = (resume[k] for k in ("best", "record", "last_probs", "best_probs"))
        started, eval_seconds, augment_seconds = started - seconds["elapsed"], seconds["eval"], seconds["augment"]
    saved_at, saved_step = time.perf_counter(), first - 1
    bar = tqdm(range(first, t.steps + 1), desc=f"{cfg.method} seed={cfg.seed}", disable=not progress, leave=False,
               initial=first - 1, total=t.steps)
    for step in bar:
        idx = labeled.next()
        logits = student(**tokens([split.labeled.texts[i] for i in idx])).logits
        per_example = F.cross_entropy(logits, labels[idx], reduction="none")
        eta = parts.tsa(step)  # UDA's TSA: drop examples whose correct-class probability exceeds η
        keep = (logits.detach().softmax(-1).gather(1, labels[idx, None]).squeeze(1) <= eta).float()
        loss = (per_example * keep).sum() / keep.sum().clamp(min=1)
        tally.add_labeled(float(loss.detach()), float(keep.mean()))
        weight = parts.schedule(step)
        if unlabeled is not None and weight > 0:
            uidx = unlabeled.next()
            drawing = time.perf_counter()
            weak, strong = parts.views.draw(uidx)  # variant (draws of the text) mod K, from the cache or computed
            augment_seconds += time.perf_counter() - drawing
            chosen = parts.selector.choose(parts.teacher, TextBatch(weak, tokens), torch.as_tensor(uidx), step)
            targets, weights = chosen.targets.detach(), chosen.weights.detach()  # targets never carry gradient
            student_logits = student(**tokens(strong)).logits
            consistency = (parts.distance(student_logits, targets) * weights).mean()
            loss = loss + weight * consistency
            for counter in (tally, whole_run):
                counter.add_unlabeled(weights, targets, chosen.probs.detach(), split.pool_gold[uidx], float(consistency.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        warmup.step()
        parts.teacher.update(student, step, training)

        if step % t.eval_every == 0 or step == t.steps:
            eval_started = time.perf_counter()
            last_probs = {}
            record = {"step": step, **evaluate(parts, cfg, last_probs), **tally.summary(), "consistency_weight": weight, "tsa_threshold": eta,
                      "lr": warmup.get_last_lr()[0], **parts.views.stats(),
                      **{f"selector/{k}": v for k, v in parts.selector.stats().items()}}
            eval_seconds += time.perf_counter() - eval_started
            record["elapsed_seconds"] = time.perf_counter() - started
            if record["val_accuracy"] is not None and (best is None or record["val_accuracy"] > best["val_accuracy"]):
                best, best_probs = record, last_probs
            on_evaluation(record)
            bar.set_postfix(test_acc=f"{record['test_accuracy']:.3f}", mask=record["mask_rate"])
            tally = PseudoLabelTally()
            every = t.checkpoint_every
            due = step - saved_step >= every if every > 0 else every == 0 and time.perf_counter() - saved_at >= CHECKPOINT_SECONDS
            if checkpoint is not None and due and step < t.steps:
                seconds = {"elapsed": time.perf_counter() - started, "eval": eval_seconds, "augment": augment_seconds}
                checkpoint(snapshot(step, student, optimizer, warmup, parts, {"labeled": labeled, "unlabeled": unlabeled},
                                    whole_run, seconds, best=best, record=record, last_probs=last_probs, best_probs=best_probs))
                saved_at, saved_step = time.perf_counter(), step

    wall = time.perf_counter() - started
    best, best_probs = (best, best_probs) if best else (record, last_probs)
    return Trained(result={
        "test_accuracy": record["test_accuracy"], "test_macro_f1": record["test_macro_f1"],
        "test_accuracy_best_val": best["test_accuracy"], "test_macro_f1_best_val": best["test_macro_f1"],
        "best_val_step": best["step"], "val_accuracy_best": best["val_accuracy"],
        "mask_rate": whole_run.summary()["mask_rate"], "pseudo_label_accuracy": whole_run.summary()["pseudo_label_accuracy"],
        "steps": t.steps, "wall_seconds": wall, "train_seconds": wall - eval_seconds, "eval_seconds": eval_seconds,
        "label_names": list(split.label_names),  # so reports name classes without loading the dataset
        "labeled_size": len(split.labeled), "validation_size": len(split.validation),
        "unlabeled_size": len(split.pool_texts), "test_size": len(split.test),
        "augment_seconds": augment_seconds, "pseudo_label_per_class": None if whole_run.per_class is None else
        dict(zip(("selected", "correct", "gold"), whole_run.per_class.tolist())),  # per class c, over the whole run
    }, predictions={  # calibration and per-class metrics in reports
        "test_probs_last": last_probs.get("test"), "test_probs_best_val": best_probs.get("test"),
        "test_labels": np.asarray(split.test.labels)})


# --------------------------------------------------------------------------- checkpoints


def snapshot(step: int, student, optimizer, lr_schedule, parts: Parts, samplers: dict, whole_run: PseudoLabelTally,
             seconds: dict, **progress) -> dict:
    """Everything a run needs to go on after ``step`` (an evaluation step, so the per-evaluation
    tallies are empty): tensors, numbers, lists and strings only, so ``torch.load(weights_only=True)``
    reads it back."""
    plain = lambda value: json.loads(json.dumps(value))  # records: numpy scalars become floats  # noqa: E731
    arrays = lambda probs: {k: torch.from_numpy(np.asarray(v)) for k, v in probs.items()}  # noqa: E731
    return {
        "step": step, "student": student.state_dict(), "optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict(),
        "teacher": parts.teacher.state_dict(), "selector": parts.selector.state_dict(), "views": parts.views.state_dict(),
        "samplers": {name: sampler.state_dict() for name, sampler in samplers.items() if sampler is not None},
        "whole_run": whole_run.state_dict(), "rng": torch.get_rng_state(), "seconds": seconds,
        "best": plain(progress["best"]), "record": plain(progress["record"]),
        "last_probs": arrays(progress["last_probs"]), "best_probs": arrays(progress["best_probs"]),
    }


def restore(state: dict, student, optimizer, lr_schedule, parts: Parts, samplers: dict, whole_run: PseudoLabelTally) -> tuple[int, dict]:
    """Load ``snapshot``'s state into a run's fresh objects; (the first step to run, the seconds spent).
    The probabilities come back as numpy arrays in ``state``."""
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    lr_schedule.load_state_dict(state["lr_schedule"])
    parts.teacher.load_state_dict(state["teacher"])
    parts.selector.load_state_dict(state["selector"])
    parts.views.load_state_dict(state["views"])
    for name, sampler in samplers.items():
        if sampler is not None:
            sampler.load_state_dict(state["samplers"][name])
    whole_run.load_state_dict(state["whole_run"])
    torch.set_rng_state(state["rng"])
    for key in ("last_probs", "best_probs"):
        state[key] = {k: v.numpy() for k, v in state[key].items()}
    return state["step"] + 1, state["seconds"]
