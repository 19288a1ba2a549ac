"""The schedules: constant, λ(t) ramps and UDA's TSA thresholds against the papers' formulas, and in real runs."""

from __future__ import annotations

import math

import pytest

from conftest import FAST, read_jsonl
from testbed import RunContext, UserError
from testbed.config import parse_overrides, resolve
from testbed.runs import execute

T = 100
CTX = RunContext(num_classes=3, pool_size=10, steps=5, seed=0)


def make(registry, name, steps=T, num_classes=4, **options):
    record = registry.get("schedule", name)
    return record.factory(record.options(**options), RunContext(num_classes=num_classes, pool_size=10, steps=steps, seed=0))


# --------------------------------------------------------------------------- constant


def test_constant_schedule(registry):
    record = registry.get("schedule", "constant")
    weight = record.factory(record.options(weight=0.25), CTX)
    assert [weight(step) for step in (1, 2, 100)] == [0.25, 0.25, 0.25]
    assert record.factory(record.options(), CTX)(1) == 1.0
    with pytest.raises(UserError, match="schedule.weight must be 0 or more"):
        resolve(parse_overrides(["schedule.weight=-1"]), registry)


def test_delayed_schedule_is_zero_through_the_supervised_phase(registry):
    weight = make(registry, "delayed", steps=100, weight=0.5, start=0.25)
    assert [weight(t) for t in (1, 24, 25, 26, 100)] == [0.0, 0.0, 0.0, 0.5, 0.5]  # steps 1..25 supervised
    assert make(registry, "delayed", steps=10, start=0.0)(1) == 1.0  # no supervised phase
    with pytest.raises(UserError, match=r"schedule.start must be in \[0, 1\)"):
        resolve(parse_overrides(["schedule.name=delayed", "schedule.start=1"]), registry)


def test_noisy_students_first_teacher_is_trained_on_labeled_data_alone(registry, tmp_path):
    """The preset's first round is supervised (no unlabeled batch, λ = 0) and ends where the snapshot
    teacher takes its first copy: the first teacher never saw a pseudo-label."""
    cfg = resolve(parse_overrides([*FAST, "method=noisy-student", "train.steps=8", "train.eval_every=1"]), registry)
    rounds, start = cfg.resolved["teacher"]["rounds"], cfg.resolved["schedule"]["start"]
    assert start == 1 / rounds
    run = execute(cfg, registry, tmp_path, progress=False)
    records = read_jsonl(run.run_dir / "metrics.jsonl")
    supervised = [r["step"] for r in records if r["consistency_weight"] == 0]
    assert supervised == [1, 2] and all(r["consistency_loss"] is None for r in records[:2])
    assert all(r["consistency_loss"] is not None for r in records[2:])  # pseudo-labels from step 3, after the first refresh


# --------------------------------------------------------------------------- λ(t)

# Formulas written out independently of the plugin, with x = min(1, t / (ramp · T)).
RAMPS = {
    "linear": lambda w, x: w * x,
    "sigmoid": lambda w, x: w * math.exp(-5.0 * (1.0 - x) ** 2),  # Laine & Aila 2017
    "cosine": lambda w, x: w * (1.0 - math.cos(math.pi * x)) / 2.0,
}


@pytest.mark.parametrize("name", sorted(RAMPS))
@pytest.mark.parametrize("steps,ramp", [(100, 0.3), (1000, 0.3), (100, 0.5)])
def test_ramp_up_schedules_follow_their_formula(registry, name, steps, ramp):
    weight = 2.5
    schedule = make(registry, name, steps=steps, weight=weight, ramp=ramp)
    length = boundary = round(ramp * steps)  # the ramp ends on a whole step
    for t in (1, boundary // 2, boundary - 1, boundary, boundary + 1, steps):
        expected = RAMPS[name](weight, min(1.0, t / length))
        assert schedule(t) == pytest.approx(expected, rel=1e-12, abs=1e-12), (name, t)
    assert schedule(boundary) == pytest.approx(weight) and schedule(steps) == pytest.approx(weight)
    assert 0 <= schedule(1) < 0.05 * weight  # starts (almost) at 0
    values = [schedule(t) for t in range(1, steps + 1)]
    assert values == sorted(values)  # never decreases


def test_ramps_are_fractions_of_the_budget(registry):
    short, long = make(registry, "linear", steps=100), make(registry, "linear", steps=1000)
    assert short(15) == pytest.approx(0.5) and long(150) == pytest.approx(0.5)
    assert short(30) == long(300) == 1.0


def test_ramp_midpoints(registry):
    assert make(registry, "cosine", ramp=0.5)(25) == pytest.approx(0.5)
    assert make(registry, "sigmoid", ramp=0.5)(25) == pytest.approx(math.exp(-1.25))


@pytest.mark.parametrize("name", sorted(RAMPS))
def test_zero_length_ramp_is_constant(registry, name):
    schedule = make(registry, name, weight=0.7, ramp=0.0)
    assert [schedule(t) for t in (1, 2, T)] == [0.7, 0.7, 0.7]


def test_decreasing_schedule_follows_its_formula(registry):
    weight, final = 3.0, 0.2
    schedule = make(registry, "decreasing", weight=weight, final=final)
    for t in (1, 25, 50, 99, T):
        assert schedule(t) == pytest.approx(weight * (final + (1 - final) * (1 - t / T)), rel=1e-12), t
    assert schedule(T) == pytest.approx(weight * final)
    assert schedule(1) == pytest.approx(weight * (1 - (1 - final) / T))
    values = [schedule(t) for t in range(1, T + 1)]
    assert values == sorted(values, reverse=True)
    default = make(registry, "decreasing")
    assert default(T) == pytest.approx(0.1) and default(T // 2) == pytest.approx(0.55)


@pytest.mark.parametrize("override,message", [
    ("schedule.ramp=1.5", "schedule.ramp must be in"),
    ("schedule.ramp=-0.1", "schedule.ramp must be in"),
    ("schedule.weight=-1", "schedule.weight must be 0 or more"),
])
@pytest.mark.parametrize("name", sorted(RAMPS))
def test_ramp_options_are_validated(registry, name, override, message):
    with pytest.raises(UserError, match=message):
        resolve(parse_overrides([f"schedule.name={name}", override]), registry)


@pytest.mark.parametrize("override", ["schedule.final=1.5", "schedule.final=-0.5"])
def test_decreasing_options_are_validated(registry, override):
    with pytest.raises(UserError, match="schedule.final must be in"):
        resolve(parse_overrides(["schedule.name=decreasing", override]), registry)


# --------------------------------------------------------------------------- TSA

K = 4
# UDA's get_tsa_threshold: α_t by schedule, then η_t = α_t (1 − 1/K) + 1/K
ALPHA = {
    "tsa_linear": lambda x: x,
    "tsa_log": lambda x: 1.0 - math.exp(-5.0 * x),
    "tsa_exp": lambda x: math.exp(5.0 * (x - 1.0)),
}


@pytest.mark.parametrize("name", sorted(ALPHA))
def test_tsa_thresholds_follow_uda(registry, name):
    eta = make(registry, name, num_classes=K)
    for t in (1, T // 4, T // 2, T):
        expected = ALPHA[name](t / T) * (1 - 1 / K) + 1 / K
        assert eta(t) == pytest.approx(expected, rel=1e-12), (name, t)
    values = [eta(t) for t in range(1, T + 1)]
    assert values == sorted(values) and values[0] > 1 / K and values[-1] <= 1.0


def test_tsa_hand_values_for_four_classes(registry):
    linear, log, exp = (make(registry, name, num_classes=K) for name in ("tsa_linear", "tsa_log", "tsa_exp"))
    assert [linear(t) for t in (25, 50, 100)] == pytest.approx([0.25 + 0.1875, 0.625, 1.0])
    assert log(50) == pytest.approx(0.25 + 0.75 * (1 - math.exp(-2.5)))
    assert log(100) == pytest.approx(0.25 + 0.75 * (1 - math.exp(-5)))  # UDA's log schedule ends just below 1
    assert exp(25) == pytest.approx(0.25 + 0.75 * math.exp(-3.75))
    assert exp(100) == pytest.approx(1.0)
    # the order UDA describes: log releases examples earliest, exp latest
    assert exp(50) < linear(50) < log(50)


# --------------------------------------------------------------------------- in the loop

EXPECTED_WEIGHT = {  # T = 6 and ramp = 1: x = t / 6 at the evaluations t = 3, 6
    "linear": lambda t: t / 6,
    "sigmoid": lambda t: math.exp(-5 * (1 - t / 6) ** 2),
    "cosine": lambda t: (1 - math.cos(math.pi * t / 6)) / 2,
    "decreasing": lambda t: 0.1 + 0.9 * (1 - t / 6),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_WEIGHT))
def test_schedules_drive_the_consistency_weight_in_a_run(registry, tmp_path, name):
    extra = ["schedule.ramp=1.0"] if name != "decreasing" else []
    overrides = ["method=fixmatch", *FAST, "selector.threshold=0.3", f"schedule.name={name}", *extra]
    cfg = resolve(parse_overrides(overrides), registry)
    run_dir, result, ran = execute(cfg, registry, tmp_path, progress=False)
    assert ran and result["steps"] == 6
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert m["consistency_weight"] == pytest.approx(EXPECTED_WEIGHT[name](m["step"]), rel=1e-9)
        assert m["mask_rate"] is not None  # λ > 0: the unlabeled batch was drawn


def test_tsa_threshold_in_a_run(registry, tmp_path):
    cfg = resolve(parse_overrides(["method=fixmatch", *FAST, "tsa.name=tsa_linear"]), registry)
    run_dir, _, _ = execute(cfg, registry, tmp_path, progress=False)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    k = 6  # TREC's classes
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert m["tsa_threshold"] == pytest.approx(m["step"] / 6 * (1 - 1 / k) + 1 / k)
        assert 0 < m["tsa_kept"] <= 1
