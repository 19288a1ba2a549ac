"""The batching around a backbone: tokenizing, predicting, scoring; devices (train.device) and the
autocast of train.precision."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from testbed.errors import UserError
from testbed.types import Encoded


def available_devices() -> list[str]:
    """What this machine offers, as train.device values, for error messages and gpu_check."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str) -> str:
    """train.device -> a concrete torch device (``auto``: cuda, else mps, else cpu; ``cuda``: the
    current CUDA device, so the run records which). A UserError names what this machine has."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    kind, _, index = name.partition(":")
    missing = None
    if kind == "cuda" and not torch.cuda.is_available():
        missing = "no CUDA device" + (" (this torch is a CPU-only build)" if torch.version.cuda is None else "")
    elif kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        missing = f"no {name}"
    elif kind == "mps" and not torch.backends.mps.is_available():
        missing = "no MPS (Apple GPU) device"
    if missing:
        raise UserError(f"train.device={name} but torch {torch.__version__} sees {missing} here. Available: "
                        f"{', '.join(available_devices())}. Use train.device=auto to take the best of these.")
    if kind == "cuda" and not index:
        name = f"cuda:{torch.cuda.current_device()}"
    return name


def describe_device(device: str) -> str:
    """``cuda:0 (NVIDIA H200)`` for result.json; ``cpu`` and ``mps`` as they are."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else device


_WARNED: set[str] = set()


def check_precision(device: str, precision: str) -> None:
    """Half precision on a CPU that emulates it: warn, once per process, and say why."""
    if torch.device(device).type != "cpu" or precision == "fp32" or precision in _WARNED:
        return
    if precision == "bf16":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    else:
        native = torch.cpu._is_amx_fp16_supported()
    if not native:
        _WARNED.add(precision)
        feature = "AVX512-BF16 or AMX" if precision == "bf16" else "AMX-FP16"
        warnings.warn(f"train.precision={precision} on a CPU without native {precision} ({feature}): autocast emulates it, "
                      "slower than fp32 (MiniLM in bf16 ran at 0.3-0.4x the speed of fp32 on a 2-core Xeon without it). "
                      "Use train.precision=fp32 on this machine, and half precision on a GPU or an AMX CPU.", stacklevel=2)


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision -> autocast dtype; fp32 = no autocast


def autocast(device: str | torch.device, precision: str):
    """The autocast context of a forward pass at ``precision`` on ``device``: disabled for fp32,
    so fp32 runs exactly the ops they ran before autocast existed here."""
    return torch.autocast(torch.device(device).type, dtype=HALF.get(precision), enabled=precision in HALF)


def to_device(inputs: dict, device: str | torch.device) -> dict:
    """A tokenized batch on ``device`` (on the CPU, ``.to`` returns the same tensors); an ``Encoded``
    batch stays one, with what it carries beside the model's inputs."""
    if isinstance(inputs, Encoded):
        return inputs.to(device)
    return {key: value.to(device) for key, value in inputs.items()}


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Pad to the longest text of the batch, not to max_length: short texts cost less."""
    return dict(tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"))


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int, precision: str = "fp32") -> np.ndarray:
    """Class probabilities [N, C] in eval mode, on the model's device under ``precision``'s autocast;
    batches texts of similar length together. The probabilities come back to the CPU once, at the
    end (one device sync per evaluation, not per batch)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = []
    for start in range(0, len(texts), batch_size):
        inputs = to_device(tokenize(tokenizer, [texts[i] for i in order[start : start + batch_size]], max_length), device)
        with autocast(device, precision):
            logits = model(**inputs).logits
        batches.append(logits.float().softmax(-1))  # probabilities in fp32, whatever the autocast dtype
    model.train(was_training)
    if not batches:
        return np.zeros((0, 0))
    probs = np.empty((len(texts), batches[0].shape[-1]), dtype=np.float32)
    probs[order] = torch.cat(batches).cpu().numpy()
    return probs


def accuracy_and_macro_f1(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[float, float]:
    predicted = probs.argmax(-1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_pos = np.diag(confusion).astype(float)
    precision = np.divide(true_pos, confusion.sum(0), out=np.zeros(num_classes), where=confusion.sum(0) > 0)
    recall = np.divide(true_pos, confusion.sum(1), out=np.zeros(num_classes), where=confusion.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes), where=(precision + recall) > 0)
    present = (confusion.sum(0) + confusion.sum(1)) > 0  # as sklearn: classes in labels or predictions
    return float(true_pos.sum() / max(len(labels), 1)), float(f1[present].mean()) if present.any() else 0.0
