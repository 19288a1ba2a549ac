"""LoRA against full fine-tuning, and what an EMA teacher of a LoRA student costs in memory.

- Step time and trainable parameters, LoRA (r = 4, peft's default modules: q_proj and v_proj)
  against full fine-tuning, FixMatch steps through ``testbed.loop.train``, interleaved, best of a
  few, on ``tiny-decoder`` and ``smollm2`` (SmolLM2-135M-Instruct; ~30 s to load, each time).
- Peak memory of a LoRA run with an EMA teacher against the same run with the self teacher (goal
  <= 1.2x: the teacher holds adapters and head, not a second base), each in a fresh process: the
  peak resident set while training (Linux: the high-water mark is reset after ``prepare``, since
  loading a GGUF model peaks far above training, ~3.3 GB for smollm2, and would hide it). Beside them, the
  same EMA run with a whole-model copy as the teacher (what the teacher did before it copied
  trainable tensors only), so the numbers show the measurement can tell the difference.

    HF_HUB_OFFLINE=1 python -m pytest benchmarks/test_lora.py --benchmark-only -s
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from testbed.config import parse_overrides, resolve
from testbed.loop import prepare, train
from testbed.plugins import load_plugins

BASE = ["method=fixmatch", "dataset.name=trec", "dataset.validation_per_class=1", "dataset.test_limit=6",
        "train.batch_size=8", "train.unlabeled_ratio=1", "selector.threshold=0.0", "train.threads=2", "backbone.max_length=64"]
SIZES = {"tiny-decoder": {"steps": 20, "rounds": 3}, "smollm2": {"steps": 4, "rounds": 1}}


def timed_run(overrides: list[str]) -> tuple[float, int, int]:
    """(seconds of training, trainable parameters, all parameters) of one run."""
    cfg = resolve(parse_overrides(overrides), load_plugins())
    parts = prepare(cfg)
    params = list(parts.student.parameters())
    trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return train(cfg, parts, progress=False).result["train_seconds"], trainable, total


@pytest.mark.parametrize("backbone", list(SIZES))
def test_lora_against_full_fine_tuning(benchmark, backbone):
    steps, rounds = SIZES[backbone]["steps"], SIZES[backbone]["rounds"]
    runs = {name: [*BASE, f"backbone.name={backbone}", f"train.steps={steps}", f"train.eval_every={steps}", *extra]
            for name, extra in (("full", []), ("lora", ["backbone.lora.r=4"]))}
    best, counts = {"full": float("inf"), "lora": float("inf")}, {}
    for _ in range(rounds):  # interleaved: the machine's noise hits both alike
        for name, overrides in runs.items():
            seconds, trainable, total = timed_run(overrides)
            best[name], counts[name] = min(best[name], seconds), (trainable, total)
    benchmark.pedantic(timed_run, args=(runs["lora"],), rounds=1, iterations=1)
    ratio = best["lora"] / best["full"]
    benchmark.extra_info.update(backbone=backbone, steps=steps, full_seconds_per_step=best["full"] / steps,
                                lora_seconds_per_step=best["lora"] / steps, step_time_ratio=ratio,
                                full_trainable=counts["full"][0], lora_trainable=counts["lora"][0], total=counts["full"][1])
    print(f"\n{backbone}: step {best['full'] / steps:.3f} s full, {best['lora'] / steps:.3f} s LoRA r=4 (ratio {ratio:.2f}); "
          f"trainable {counts['full'][0]:,} full, {counts['lora'][0]:,} LoRA "
          f"({counts['lora'][0] / counts['full'][0]:.2%}) of {counts['full'][1]:,}")
    assert counts["lora"][0] < counts["full"][0] / 50


# One run in a fresh process: the resident set just before prepare, the process's peak after training,
# and the bytes of the tensors the teacher holds. `whole` makes the EMA teacher copy the whole model.
MEASURE = textwrap.dedent("""
    import json, sys
    import psutil
    from testbed.config import parse_overrides, resolve
    from testbed.loop import prepare, train
    from testbed.plugins import load_plugins
    overrides, whole = json.loads(sys.argv[1]), sys.argv[2] == "whole"
    if whole:
        import testbed_plugins.teachers as teachers
        teachers._shares_base = lambda model: False  # a deep copy of the student, frozen base included
    cfg = resolve(parse_overrides(overrides), load_plugins())
    parts = prepare(cfg)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark of the resident set starts again from what the run holds now
    before = psutil.Process().memory_info().rss
    train(cfg, parts, progress=False)
    model = getattr(parts.teacher, "model", None)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) if model is not None else 0
    student = sum(t.numel() * t.element_size() for t in parts.student.parameters())
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps({"before": before, "peak": peak, "teacher_bytes": held, "student_bytes": student}))
""")


def measured(overrides: list[str], whole: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(overrides), "whole" if whole else "shared"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backbone", list(SIZES))
def test_ema_teacher_of_a_lora_student_costs_no_second_base(benchmark, backbone):
    run = [*BASE, f"backbone.name={backbone}", "backbone.lora.r=4", "train.steps=3", "train.eval_every=3"]
    runs = {"self": measured([*run, "teacher.name=self"]), "ema": measured([*run, "teacher.name=ema"]),
            "ema_whole_copy": measured([*run, "teacher.name=ema"], whole=True)}
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    growth = {name: r["peak"] - r["before"] for name, r in runs.items()}  # what training adds to the loaded run
    ratio, whole_ratio = (runs[name]["peak"] / runs["self"]["peak"] for name in ("ema", "ema_whole_copy"))
    benchmark.extra_info.update(backbone=backbone, **{f"{k}_growth_mb": v / 2**20 for k, v in growth.items()},
                                ema_over_self=ratio, whole_copy_over_self=whole_ratio,
                                teacher_bytes=runs["ema"]["teacher_bytes"], student_bytes=runs["ema"]["student_bytes"])
    peaks = {name: r["peak"] / 2**20 for name, r in runs.items()}
    print(f"\n{backbone}: peak RSS in training: self {peaks['self']:.0f} MB, EMA {peaks['ema']:.0f} MB ({ratio:.3f}x), "
          f"EMA as a whole copy {peaks['ema_whole_copy']:.0f} MB ({whole_ratio:.3f}x); growth in training "
          f"{growth['self'] / 2**20:.0f} / {growth['ema'] / 2**20:.0f} / {growth['ema_whole_copy'] / 2**20:.0f} MB; "
          f"the EMA teacher holds {runs['ema']['teacher_bytes'] / 2**10:.0f} KiB "
          f"beside a {runs['ema']['student_bytes'] / 2**20:.0f} MiB student")
    assert runs["ema"]["teacher_bytes"] < runs["ema"]["student_bytes"] / 50
    assert ratio <= 1.2
