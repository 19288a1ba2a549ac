"""Mid-run checkpoints (train.checkpoint_every, runs.write_checkpoint/read_checkpoint, loop.train's
resume): a run stopped after a checkpoint goes on from it to exactly the numbers of a run that
was never stopped."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FAST, TIME_FIELDS, read_jsonl
from testbed.cli import main
from testbed.config import parse_overrides, resolve
from testbed.loop import prepare, train
from testbed.runs import CHECKPOINT, execute, read_checkpoint

TIMES = {"wall_seconds", "train_seconds", "eval_seconds", "augment_seconds", "started_at", "finished_at", "machine"}
TWELVE_STEPS = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "train.steps=12", "train.eval_every=3"]


def saved(state: dict) -> dict:
    """``state`` as runs.write_checkpoint stores it and read_checkpoint gives it back, at once (a
    state holds the live tensors of the model, which training goes on changing)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def untimed(trained) -> tuple[dict, dict]:
    return ({k: v for k, v in trained.result.items() if k not in TIMES},
            {k: np.asarray(v).tolist() for k, v in trained.predictions.items()})


# every kind of state: EMA and snapshot teachers, a re-initialised student, a trained peer, pool
# memories (flexmatch, curriculum, topk rounds), EMAs (freematch, softmatch), MC dropout, TSA, views
@pytest.mark.parametrize("method", [
    ["method=flexmatch", "teacher.name=ema", "augmentation.strong.name=drop_swap", "dataset.unlabeled_limit=20"],  # texts drawn again
    ["method=freematch"], ["method=softmatch"], ["method=uda"], ["method=meanteacher"],
    ["method=fixmatch", "selector.name=uncertainty", "selector.passes=3"],
    ["method=fixmatch", "selector.name=curriculum"], ["method=fixmatch", "selector.name=topk", "selector.scope=round"],
    ["method=noisy-student", "teacher.reinit_student=true", "teacher.rounds=3"], ["method=cotraining"],
    ["method=distillation", "teacher.backbone=tiny", "teacher.steps=5"],
    # a LoRA decoder student: the teachers' state is their own adapters and head, the base is the student's
    ["method=meanteacher", "backbone.name=tiny-decoder", "backbone.lora.r=4"],
    ["method=cotraining", "backbone.name=tiny-decoder", "backbone.lora.r=4"],
], ids=lambda m: " ".join(m))
def test_a_run_resumed_from_a_checkpoint_ends_with_the_numbers_of_an_uninterrupted_one(registry, method):
    cfg = resolve(parse_overrides([*TWELVE_STEPS, "train.checkpoint_every=3", *method]), registry)
    states, records = [], []
    full = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False,
                 checkpoint=lambda state: states.append(saved(state)))
    assert [state["step"] for state in states] == [3, 6, 9]  # never at the last step: the run ends there
    resumed_records = []
    resumed = train(cfg, prepare(cfg, registry), on_evaluation=resumed_records.append, progress=False, resume=states[1])
    assert untimed(resumed) == untimed(full)
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rs]  # noqa: E731
    assert drop(resumed_records) == drop(records)[2:]  # steps 9 and 12, as the uninterrupted run saw them
    assert resumed.result["wall_seconds"] >= states[1]["seconds"]["elapsed"]  # the time before the stop counts


def test_checkpoint_every_is_not_part_of_the_run_id_and_never_changes_numbers(registry, tmp_path):
    never = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch", "train.checkpoint_every=-1"]), registry)
    often = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch", "train.checkpoint_every=3"]), registry)
    assert never.run_id == often.run_id
    states = []
    a = train(never, prepare(never, registry), progress=False, checkpoint=states.append)
    assert states == []
    b = train(often, prepare(often, registry), progress=False, checkpoint=lambda state: states.append(saved(state)))
    assert len(states) == 3 and untimed(a) == untimed(b)


def test_the_default_checkpoints_every_ten_minutes_of_training(registry, monkeypatch):
    import testbed.loop

    cfg = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch"]), registry)
    assert cfg.train.checkpoint_every == 0
    steps = []
    train(cfg, prepare(cfg, registry), progress=False, checkpoint=lambda state: steps.append(state["step"]))
    assert steps == []  # a short run: none
    monkeypatch.setattr(testbed.loop, "CHECKPOINT_SECONDS", 0.0)
    train(cfg, prepare(cfg, registry), progress=False, checkpoint=lambda state: steps.append(state["step"]))
    assert steps == [3, 6, 9]


INTERRUPT_AT_STEP_6 = '''
from testbed import hookimpl

@hookimpl
def testbed_evaluation(run_dir, record):
    if record["step"] == 6:
        raise KeyboardInterrupt
'''


def test_an_interrupted_run_resumes_with_the_metrics_up_to_its_checkpoint(registry, tmp_path, capfd):
    from testbed.plugins import load_plugins

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "interrupt.py").write_text(INTERRUPT_AT_STEP_6)
    interrupting = load_plugins(plugins_dirs=[plugins])
    cfg = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch", "train.checkpoint_every=3"]), registry)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, interrupting, tmp_path / "runs", progress=False)
    run_dir = tmp_path / "runs" / cfg.run_id
    assert read_checkpoint(run_dir, cfg.run_id)["loop"]["step"] == 3  # the step-6 checkpoint comes after its evaluation
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [3, 6]

    capfd.readouterr()
    resumed_dir, resumed, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert ran and f"{cfg.run_id}: resuming from step 3" in capfd.readouterr().err
    assert not (run_dir / CHECKPOINT).exists()  # finished: nothing left to resume
    never_stopped, result, _ = execute(cfg, registry, tmp_path / "never", progress=False)
    assert {k: v for k, v in resumed.items() if k not in TIMES} == {k: v for k, v in result.items() if k not in TIMES}
    drop = lambda path: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in read_jsonl(path)]  # noqa: E731
    assert drop(run_dir / "metrics.jsonl") == drop(never_stopped / "metrics.jsonl")  # steps 3, 6, 9, 12, once each
    with np.load(run_dir / "predictions.npz") as a, np.load(never_stopped / "predictions.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint", "foreign"])
def test_a_damaged_or_foreign_checkpoint_is_reported_and_never_used(registry, tmp_path, damage):
    cfg = resolve(parse_overrides([*TWELVE_STEPS, "method=fixmatch"]), registry)
    run_dir = tmp_path / "runs" / cfg.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 3}\n')  # leftovers of the attempt that wrote it
    if damage == "foreign":
        torch.save({"format": 1, "run_id": "0123456789ab", "started_at": "", "loop": {"step": 6}}, run_dir / CHECKPOINT)
    else:
        (run_dir / CHECKPOINT).write_bytes(damage)
    with pytest.warns(UserWarning, match="Ignoring the checkpoint .* starts again from step 0"):
        _, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    _, fresh, _ = execute(cfg, registry, tmp_path / "fresh", progress=False)
    assert ran and {k: v for k, v in result.items() if k not in TIMES} == {k: v for k, v in fresh.items() if k not in TIMES}
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [3, 6, 9, 12]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path):
    """A real `testbed run`, killed (kill -9) as soon as it has written a checkpoint, then run again."""
    args = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "method=fixmatch",
            "train.steps=200", "train.eval_every=10", "train.checkpoint_every=10"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESTBED_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "testbed.cli", "run", *args, "--out", str(tmp_path / "runs"), "--quiet"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and not list((tmp_path / "runs").glob(f"*/{CHECKPOINT}")):
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    (checkpoint,) = (tmp_path / "runs").glob(f"*/{CHECKPOINT}")
    run_dir = checkpoint.parent
    assert not (run_dir / "result.json").exists()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{run_dir.name}: resuming from step " in again.stderr
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "never"), "--quiet"])
    assert result.exit_code == 0, result.output
    resumed, never = (json.loads((d / run_dir.name / "result.json").read_text()) for d in (tmp_path / "runs", tmp_path / "never"))
    assert {k: v for k, v in resumed.items() if k not in TIMES} == {k: v for k, v in never.items() if k not in TIMES}
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(10, 201, 10))
