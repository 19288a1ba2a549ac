"""train.device and train.precision: resolution and errors, the run id, autocast runs (bf16, fp16 with
its GradScaler) end to end and resumed from checkpoints, every state tensor on the run's device, the
warning for emulated bf16, grids over several devices, the dask GPU resource and the GPU check script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST, TIME_FIELDS
from testbed.config import parse_overrides, resolve, run_id
from testbed.errors import UserError
from testbed.grid import Grid, claim_device, expand, parse_devices, release_device, run_grid
from testbed.loop import misplaced_tensors, prepare, train
from testbed.model import check_precision, resolve_device
from testbed.runs import execute

ROOT = Path(__file__).resolve().parents[1]
TWELVE_STEPS = [*(o for o in FAST if not o.startswith(("train.steps", "train.eval_every"))), "train.steps=12", "train.eval_every=3"]
TIMES = {"wall_seconds", "train_seconds", "eval_seconds", "augment_seconds"}


def cfg_of(registry, *overrides):
    return resolve(parse_overrides([*FAST, *overrides]), registry)


def untimed(trained) -> tuple[dict, dict]:
    return ({k: v for k, v in trained.result.items() if k not in TIMES},
            {k: np.asarray(v).tolist() for k, v in trained.predictions.items()})


@pytest.fixture
def no_accelerator(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --------------------------------------------------------------------------- resolution and validation


def test_auto_and_cpu_resolve_to_the_cpu_without_an_accelerator(no_accelerator):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("asked", ["cuda", "cuda:1", "mps"])
def test_an_absent_device_is_an_error_naming_what_is_available(no_accelerator, asked):
    with pytest.raises(UserError, match=rf"train.device={asked} but torch .* sees no .* Available: cpu\."):
        resolve_device(asked)


def test_a_cuda_index_beyond_the_devices_is_an_error_listing_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Fake GPU")
    with pytest.raises(UserError, match=r"sees no cuda:2 here\. Available: cpu, cuda:0 \(Fake GPU\), cuda:1 \(Fake GPU\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda") == resolve_device("auto") == "cuda:0"


@pytest.mark.parametrize("key, value, message", [
    ("train.device", "gpu", "train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("train.device", "cuda:x", "train.device must be auto"),
    ("train.precision", "fp8", "train.precision must be one of fp32, bf16, fp16, got 'fp8'"),
    ("train.precision", "float16", "train.precision must be one of"),
])
def test_bad_device_and_precision_values_are_config_errors(registry, key, value, message):
    with pytest.raises(UserError, match=message):
        cfg_of(registry, f"{key}={value}")


def test_a_run_on_an_absent_device_stops_in_prepare_before_any_run_directory(registry, tmp_path, no_accelerator):
    cfg = cfg_of(registry, "method=fixmatch", "train.device=cuda")
    with pytest.raises(UserError, match="sees no CUDA device"):
        execute(cfg, registry, tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / cfg.run_id).exists()


def test_precision_and_device_kind_are_in_the_run_id_the_gpu_index_and_the_defaults_are_not(registry):
    base = cfg_of(registry, "method=fixmatch")
    spelt = cfg_of(registry, "method=fixmatch", "train.device=auto", "train.precision=fp32")
    assert base.resolved["train"]["device"] == "auto" and base.resolved["train"]["precision"] == "fp32"
    assert spelt.run_id == base.run_id
    without = json.loads(json.dumps(base.resolved))  # a run id from before the keys existed stays that run's id
    del without["train"]["device"], without["train"]["precision"]
    assert run_id(without) == base.run_id
    bf16 = cfg_of(registry, "method=fixmatch", "train.precision=bf16")
    fp16 = cfg_of(registry, "method=fixmatch", "train.precision=fp16")
    assert len({base.run_id, bf16.run_id, fp16.run_id}) == 3
    gpus = {cfg_of(registry, "method=fixmatch", f"train.device={d}").run_id for d in ("cuda", "cuda:0", "cuda:3")}
    assert len(gpus) == 1 and gpus.isdisjoint({base.run_id, cfg_of(registry, "method=fixmatch", "train.device=cpu").run_id})


# --------------------------------------------------------------------------- precision


def test_bf16_on_the_cpu_runs_end_to_end_reproducibly_and_records_device_and_precision(registry, tmp_path):
    cfg = cfg_of(registry, "method=fixmatch", "train.precision=bf16", "selector.threshold=0.0")
    records = []
    first = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False)
    again = train(cfg, prepare(cfg, registry), progress=False)
    assert untimed(first) == untimed(again)
    assert first.result["device"] == "cpu" and first.result["precision"] == "bf16"
    assert records[-1]["pseudo_labels_selected"] > 0  # the unlabeled (teacher, student) passes ran under autocast too
    fp32 = cfg_of(registry, "method=fixmatch", "selector.threshold=0.0")
    plain = train(fp32, prepare(fp32, registry), progress=False)
    assert not np.array_equal(plain.predictions["test_probs_last"], first.predictions["test_probs_last"])  # autocast did act
    assert first.predictions["test_probs_last"].dtype == np.float32  # probabilities come back in fp32
    run_dir, result, ran = execute(cfg, registry, tmp_path / "runs", progress=False)
    assert ran and json.loads((run_dir / "result.json").read_text())["precision"] == "bf16" and result["device"] == "cpu"


def test_fp32_with_autocast_machinery_keeps_the_numbers_of_a_run_that_never_moves(registry):
    """The CPU path runs the same .to(device) calls: fp32 on 'cpu' and 'auto' (here the CPU) agree bit for bit."""
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("auto is not the CPU on this machine")
    a = cfg_of(registry, "method=fixmatch", "train.device=cpu")
    b = cfg_of(registry, "method=fixmatch")
    assert untimed(train(a, prepare(a, registry), progress=False)) == untimed(train(b, prepare(b, registry), progress=False))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", [["method=fixmatch"], ["method=flexmatch", "teacher.name=ema"]], ids=lambda m: " ".join(m))
def test_a_half_precision_run_resumed_from_a_checkpoint_ends_with_the_numbers_of_an_uninterrupted_one(registry, precision, method):
    import io

    def saved(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=True, map_location="cpu")

    cfg = resolve(parse_overrides([*TWELVE_STEPS, "train.checkpoint_every=3", f"train.precision={precision}", *method]), registry)
    states, records = [], []
    full = train(cfg, prepare(cfg, registry), on_evaluation=records.append, progress=False,
                 checkpoint=lambda state: states.append(saved(state)))
    if precision == "fp16":  # the GradScaler's state travels with the checkpoint
        assert states[1]["scaler"]["scale"] > 0 and "_growth_tracker" in states[1]["scaler"]
    else:
        assert states[1]["scaler"] == {}
    resumed_records = []
    resumed = train(cfg, prepare(cfg, registry), on_evaluation=resumed_records.append, progress=False, resume=states[1])
    assert untimed(resumed) == untimed(full)
    drop = lambda rs: [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rs]  # noqa: E731
    assert drop(resumed_records) == drop(records)[2:]


def test_the_grad_scaler_state_is_restored_not_started_afresh(registry):
    """A scale that moved (an overflow halved it) must come back as it was, or the resumed steps differ."""
    import testbed.loop as loop

    cfg = resolve(parse_overrides([*TWELVE_STEPS, "train.checkpoint_every=3", "train.precision=fp16", "method=fixmatch"]), registry)
    states = []
    train(cfg, prepare(cfg, registry), progress=False, checkpoint=lambda state: states.append(dict(state)))
    state = {**states[0], "scaler": {**states[0]["scaler"], "scale": 1024.0}}
    seen = {}
    original = loop.restore

    def spy(state, *args):
        out = original(state, *args)
        seen["scale"] = args[-1].get_scale()
        return out

    loop.restore = spy
    try:
        train(cfg, prepare(cfg, registry), progress=False, resume=state)
    finally:
        loop.restore = original
    assert seen["scale"] == 1024.0


def test_bf16_without_native_cpu_support_warns_once_and_says_why(monkeypatch):
    import testbed.model as model

    monkeypatch.setattr(model, "_WARNED", set())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_precision("cpu", "bf16")
        check_precision("cpu", "bf16")
        check_precision("cpu", "fp32")
    assert len(caught) == 1
    assert "without native bf16 (AVX512-BF16 or AMX)" in str(caught[0].message) and "0.3-0.4x" in str(caught[0].message)


def test_bf16_with_native_cpu_support_or_off_the_cpu_does_not_warn(monkeypatch):
    import testbed.model as model

    monkeypatch.setattr(model, "_WARNED", set())
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision("cpu", "bf16")
        check_precision("cuda:0", "bf16")


# --------------------------------------------------------------------------- state on the device


@pytest.mark.parametrize("method", [
    ["method=flexmatch", "teacher.name=ema"], ["method=freematch", "teacher.name=snapshot"], ["method=softmatch"],
    ["method=fixmatch", "selector.name=curriculum"], ["method=fixmatch", "selector.name=topk", "selector.scope=round"],
    ["method=cotraining"], ["method=fixmatch", "backbone.name=frozen", "backbone.encoder=tiny"],
    ["method=fixmatch", "regulariser=mlm"],  # a regulariser's own parameters (freematch's saf reads the selector's)
], ids=lambda m: " ".join(m))
def test_every_state_tensor_is_on_the_run_device(registry, method):
    """The assertion scripts/gpu_check.py makes on a GPU; here the device is the CPU, and the same
    check against another device finds every tensor (so it can fail)."""
    frozen = "backbone.name=frozen" in method
    base = [o for o in TWELVE_STEPS if not (frozen and o.split("=")[0] in ("backbone.layers", "backbone.hidden", "backbone.heads",
                                                                          "backbone.intermediate", "backbone.name"))]
    cfg = resolve(parse_overrides([*base, "train.checkpoint_every=3", "train.precision=bf16", *method]), registry)
    parts = prepare(cfg, registry)
    found = {}

    def look(state):
        found.setdefault("here", misplaced_tensors(parts, state, parts.device))
        found.setdefault("elsewhere", misplaced_tensors(parts, state, "meta"))

    train(cfg, parts, progress=False, checkpoint=look)
    assert parts.device == "cpu" and found["here"] == []
    if frozen:  # the frozen encoder follows the head; its features stay numpy on the CPU
        assert {p.device.type for p in parts.student.store.encoder.parameters()} == {"cpu"} and parts.student.store.table
    assert any(line.startswith("student.") for line in found["elsewhere"])
    assert any(line.startswith("optimizer.") for line in found["elsewhere"])
    if "regulariser=mlm" in method:
        assert any(line.startswith("regulariser.") for line in found["elsewhere"])


def test_the_gpu_check_script_runs_on_the_cpu_as_a_smoke_test(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESTBED_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--steps", "4",
                           "--backbones", "tiny"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny     fixmatch       cpu" in done.stdout and "tiny     flexmatch+ema  cpu" in done.stdout
    assert "gpu check: every state tensor on the device" in done.stdout


def test_the_gpu_check_script_without_cuda_says_so(tmp_path, no_accelerator):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESTBED_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--steps", "2", "--backbones", "tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "train.device=cuda but torch" in done.stdout


# --------------------------------------------------------------------------- grids over devices


def test_devices_parse_to_one_kind_each_once():
    assert parse_devices("0,1,2,3") == ("cuda:0", "cuda:1", "cuda:2", "cuda:3")
    assert parse_devices("cuda:2, 5") == ("cuda:2", "cuda:5") and parse_devices("cpu") == ("cpu",)
    for bad, message in (("0,0", "twice"), ("0,cpu", "mixes kinds"), ("auto", "device numbers"), ("gpu1", "device numbers")):
        with pytest.raises(UserError, match=message):
            parse_devices(bad)


def test_cells_without_a_device_run_on_the_devices_kind_and_keep_one_run_id_per_cell(registry):
    grid = Grid(base=parse_overrides([*FAST, "method=fixmatch"]), axes={"seed": [0, 1]})
    cells = expand(grid, registry, parse_devices("0,1"))
    assert [c.user["train"]["device"] for c in cells] == ["cuda", "cuda"]
    for cell in cells:  # wherever a worker puts it, the cell is the same run
        for device in ("cuda:0", "cuda:1"):
            user = json.loads(json.dumps(cell.user))
            user["train"]["device"] = device
            assert resolve(user, registry).run_id == cell.run_id
    pinned = Grid(base=parse_overrides([*FAST, "method=fixmatch", "train.device=cpu"]), axes={"seed": [0]})
    assert expand(pinned, registry, parse_devices("0,1"))[0].user["train"]["device"] == "cpu"  # the cell sets it


def test_a_worker_claims_a_free_device_and_keeps_it(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("TESTBED_DEVICE_LOCKS", str(tmp_path / "locks"))
    release_device()
    try:
        (tmp_path / "locks").mkdir()
        taken = os.open(tmp_path / "locks" / "cuda-0.lock", os.O_RDWR | os.O_CREAT)  # another worker holds cuda:0
        fcntl.flock(taken, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert claim_device(("cuda:0", "cuda:1")) == "cuda:1"
        os.close(taken)
        assert claim_device(("cuda:0", "cuda:1")) == "cuda:1"  # kept for the worker's life, though cuda:0 is free now
        assert claim_device(("cuda:2",)) == "cuda:2"  # another grid's devices: the old one is given back
    finally:
        release_device()


def test_a_grid_over_two_devices_gives_each_worker_its_own(registry, tmp_path, monkeypatch):
    """Without CUDA the cells fail in prepare, and their errors name the device each worker gave them."""
    monkeypatch.setenv("TESTBED_DEVICE_LOCKS", str(tmp_path / "locks"))
    devices = parse_devices("0,1")
    grid = Grid(base=parse_overrides([*FAST, "method=supervised"]), axes={"seed": [0, 1, 2, 3]})
    report = run_grid(expand(grid, registry, devices), registry, tmp_path / "runs", workers=2, devices=devices, progress=False)
    assert len(report.outcomes) == 4 and {o["status"] for o in report.outcomes} == ({"failed"} if not torch.cuda.is_available() else {"ran"})
    by_worker = {}
    for outcome in report.outcomes:
        by_worker.setdefault(outcome["pid"], set()).add(outcome["device"])
        if outcome["status"] == "failed":
            assert f"train.device={outcome['device']} but torch" in outcome["error"]
    assert all(len(held) == 1 for held in by_worker.values())  # a worker keeps its device
    held = [next(iter(h)) for h in by_worker.values()]
    assert len(set(held)) == len(held) and set(held) <= set(devices)  # no two workers share one


def test_a_grid_on_cpu_devices_runs_its_cells_there(registry, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from testbed.cli import main

    monkeypatch.setenv("TESTBED_DEVICE_LOCKS", str(tmp_path / "locks"))
    result = CliRunner().invoke(main, ["grid", *FAST, "method=supervised", "seed=0,1", "--devices", "cpu", "--executor", "serial",
                                       "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json")]
    configs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/config.json")]
    assert len(results) == 2 and {r["device"] for r in results} == {"cpu"} and {c["train"]["device"] for c in configs} == {"cpu"}
    too_many = CliRunner().invoke(main, ["grid", *FAST, "seed=0,1", "--devices", "cpu", "--workers", "2", "--out", str(tmp_path / "x")])
    assert too_many.exit_code != 0 and "at most 1 workers" in too_many.output


def test_the_dask_gpu_resource_option_is_checked(registry):
    from testbed.config import build_section

    record = registry.get("executor", "dask")
    assert build_section("executor", None, {"gpus_per_cell": 1}, record)[1].gpus_per_cell == 1.0
    with pytest.raises(UserError, match="gpus_per_cell must be 0 or more"):
        build_section("executor", None, {"gpus_per_cell": -1}, record)


@pytest.mark.slow
def test_dask_cells_request_a_gpu_resource_and_run_on_workers_that_have_one(tmp_path):
    """A LocalCluster whose workers have GPU=1 runs the cells (one per worker at a time); the
    resource is what schedules them: cells asking for 2 GPUs would wait forever on such workers."""
    from click.testing import CliRunner

    from testbed.cli import main

    result = CliRunner().invoke(main, ["grid", *FAST, "method=supervised", "seed=0,1", "--executor", "dask", "--workers", "1",
                                       "-X", "gpus_per_cell=1", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 cells: 2 ran" in result.output
