"""Packing a sweep's runs onto GPUs (imbal.study.placement, imbal.study.devices), on the CPU with a
fake device list: exact slots and assignments, K respected, one device per run, refusals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from imbal.errors import UserError
from imbal.study import devices, placement, sweep
from imbal.study import executors as sweep_exec
from imbal.study.placement import GPU, Footprint, GiB, Slot

FAKE_GPUS = [GPU(0, "Fake H200", 100 * GiB, 140 * GiB), GPU(1, "Fake H200", 10 * GiB, 140 * GiB)]
FAKE_TRAIN = "test_placement:fake_gpu_train"


def fake_gpu_train(cfg: dict, *, out_dir: str, overwrite: bool = False, quiet: bool = True) -> dict:
    """Records what the worker saw: its GPU, the run's device and threads, when it ran."""
    t0 = time.time()
    time.sleep(cfg["fake"]["sleep"])
    res = {"name": cfg["name"], "complete": True, "config": cfg, "seeds": cfg["seeds"],
           "test": {"top1": 50.0}, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "device": cfg["train"]["device"], "threads": cfg["train"]["threads"],
           "omp": os.environ.get("OMP_NUM_THREADS"), "start": t0, "end": time.time()}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "results.json").write_text(json.dumps(res))
    return res


def test_parse_devices():
    assert placement.parse_devices("0,1") == [0, 1]
    assert placement.parse_devices(" 1 , 0 ") == [1, 0]
    assert placement.parse_devices([2]) == [2]
    assert placement.parse_devices(3) == [3]
    assert placement.parse_devices("CPU") == "cpu"
    assert placement.parse_devices(None) is None
    with pytest.raises(UserError, match=r"^--devices: 'a' is not a GPU number; give e\.g\. 0,1 "
                                        r"\(or cpu\)$"):
        placement.parse_devices("0,a")
    with pytest.raises(UserError, match=r"^--devices: GPU 1 is listed twice$"):
        placement.parse_devices("1,0,1")
    with pytest.raises(UserError, match="'-1' is not a GPU number"):
        placement.parse_devices("-1")


def test_unknown_device_ids_are_refused_in_one_line():
    assert [g.index for g in placement.check_devices([1, 0], FAKE_GPUS)] == [1, 0]
    with pytest.raises(UserError, match=r"^--devices: there is no GPU 2 here \(visible: 0, 1\)$"):
        placement.check_devices([0, 2], FAKE_GPUS)
    with pytest.raises(UserError, match=r"^--devices 0,1: no GPU is visible here \(CUDA not "
                                        r"available\); leave it out to run on the CPU$"):
        placement.check_devices([0, 1], [])


def test_gpu_slots_exact():
    slots = placement.gpu_slots(FAKE_GPUS, 2, cores=16)
    assert slots == [Slot(0, 0, 4, "0"), Slot(1, 1, 4, "1"), Slot(2, 0, 4, "0"),
                     Slot(3, 1, 4, "1")]
    # Under CUDA_VISIBLE_DEVICES=5,7 the sweep's GPU 1 is the machine's 7.
    assert [s.visible for s in placement.gpu_slots(FAKE_GPUS, 1, 2, "5,7")] == ["5", "7"]
    assert [s.threads for s in placement.gpu_slots(FAKE_GPUS, 3, 2)] == [1] * 6
    assert placement.cpu_slots(2, 5) == [Slot(0, None, 2), Slot(1, None, 2)]
    with pytest.raises(UserError, match=r"^--per-device must be at least 1 \(got 0\)$"):
        placement.gpu_slots(FAKE_GPUS, 0, 16)


def _max_concurrent(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, d in events:  # an end at t sorts before a start at t
        now += d
        peak = max(peak, now)
    return peak


def test_schedule_assigns_lowest_free_slot_and_respects_k():
    slots = placement.gpu_slots(FAKE_GPUS, 2, cores=4)
    # By hand: runs 0-3 fill slots 0-3 at t=0 (ends 5, 1, 3, 2); run 4 takes slot 1 at t=1;
    # run 5 takes slot 3 at t=2.
    got = placement.schedule([5, 1, 3, 2, 4, 1], slots)
    assert got == [(0, 0, 5), (1, 0, 1), (2, 0, 3), (3, 0, 2), (1, 1, 5), (3, 2, 3)]
    gpus = [slots[k].gpu for k, _, _ in got]
    assert gpus == [0, 1, 0, 1, 1, 1]
    for g in (0, 1):
        assert _max_concurrent([(s, e) for (k, s, e) in got if slots[k].gpu == g]) <= 2
    # Fewer runs than slots: spread over the GPUs first.
    assert [slots[k].gpu for k, _, _ in placement.schedule([1, 1], slots)] == [0, 1]


def test_auto_per_device_from_memory_cores_and_cap():
    f = Footprint("resnet32", 472_756, 546_949_120)
    need = 1.5 * GiB + 16 * 472_756 + 546_949_120  # overhead + params x 16 + activations
    assert f.run_bytes() == int(need)
    k, reason = placement.auto_per_device([f], FAKE_GPUS, cores=16)
    assert k == int(0.9 * 10 * GiB // need) == 4  # the smaller free memory (GPU 1) decides
    assert reason.endswith("limited by memory")
    assert "2.0 GiB per run (resnet32: 0.47M params" in reason
    big = [GPU(0, "H200", 140 * GiB, 141 * GiB)]
    assert placement.auto_per_device([f], big, cores=16) == (8, placement.auto_per_device(
        [f], big, 16)[1])
    assert placement.auto_per_device([f], big, cores=16)[1].endswith("limited by the cap of 8")
    assert placement.auto_per_device([f], big, cores=3)[0] == 3
    # The largest run decides; a run larger than the memory still gets one slot.
    huge = Footprint("resnet50", 23_705_252, 200 * GiB)
    assert placement.auto_per_device([f, huge], big, cores=16)[0] == 1


def test_footprint_counts_the_real_model_on_meta():
    from imbal.models import build_model

    cfg = {"model": {"backbone": "resnet32", "params": {}}, "data": {}, "train": {"batch_size": 64}}
    fp = devices.footprint(cfg)
    real = build_model("resnet32", in_channels=3, num_classes=100, image_size=32)
    assert fp.params == sum(p.numel() for p in real.parameters())
    cfg["train"]["batch_size"] = 128
    assert devices.footprint(cfg).activation_bytes == 2 * fp.activation_bytes
    cfgs = [cfg, json.loads(json.dumps(cfg)), {**cfg, "model": {"backbone": "lenet"}}]
    assert [f.backbone for f in devices.footprints(cfgs)] == ["resnet32", "lenet"]


def _cfg(device: str = "auto") -> dict:
    return {"model": {"backbone": "lenet", "params": {}}, "data": {},
            "train": {"batch_size": 100, "device": device}}


def test_choose_slots(monkeypatch):
    monkeypatch.setattr(devices, "probe_gpus", lambda: FAKE_GPUS)
    slots, line = devices.choose_slots([_cfg()], devices=None, per_device=None, workers=None,
                                       cores=16)
    # lenet: 1.5 GiB a run; GPU 1's 10 GiB free -> 5 per GPU, 16 cores / 10 -> 1 thread each
    assert [(s.gpu, s.threads) for s in slots] == [(0, 1), (1, 1)] * 5
    assert line.startswith("placement: 2 GPUs [0 (Fake H200, 100.0 of 140.0 GiB free), "
                           "1 (Fake H200, 10.0 of 140.0 GiB free)], 5 runs per GPU, "
                           "10 workers x 1 thread (auto: estimate 1.5 GiB per run (lenet")
    slots, line = devices.choose_slots([_cfg()], devices=[1], per_device=3, workers=None,
                                       cores=16)
    assert [(s.gpu, s.threads) for s in slots] == [(1, 5)] * 3
    assert line == ("placement: 1 GPU [1 (Fake H200, 10.0 of 140.0 GiB free)], 3 runs per GPU, "
                    "3 workers x 5 threads")
    slots, line = devices.choose_slots([_cfg("cpu")], devices=None, per_device=None, workers=2,
                                       cores=16)
    assert slots == placement.cpu_slots(2, 16) and line == "placement: CPU, 2 workers x 8 threads"
    assert devices.choose_slots([_cfg()], devices="cpu", per_device=None, workers=None,
                                cores=4)[0] == [Slot(0, None, 4)]
    # --workers on GPUs: that many slots, dealt over the GPUs in turn.
    slots, line = devices.choose_slots([_cfg()], devices=None, per_device=None, workers=3,
                                       cores=16)
    assert [(s.gpu, s.threads) for s in slots] == [(0, 5), (1, 5), (0, 5)]
    assert line.endswith("], 2 runs per GPU, 3 workers x 5 threads")
    with pytest.raises(UserError, match=r"^give one of --workers \(runs at a time in all\) and "
                                        r"--per-device \(runs at a time per GPU\)$"):
        devices.choose_slots([_cfg()], devices=None, per_device=2, workers=2, cores=16)
    with pytest.raises(UserError, match=r"^--devices places runs on GPUs, but the runs set "
                                        r"train.device=cpu; drop one of them$"):
        devices.choose_slots([_cfg("cpu")], devices=[0], per_device=None, workers=None, cores=4)
    with pytest.raises(UserError, match="^--devices: there is no GPU 4 here"):
        devices.choose_slots([_cfg()], devices=[0, 4], per_device=1, workers=None, cores=4)
    monkeypatch.setattr(devices, "probe_gpus", lambda: [])
    with pytest.raises(UserError, match=r"^--per-device places runs on GPUs, but no GPU is "
                                        r"visible here; use --workers N$"):
        devices.choose_slots([_cfg()], devices=None, per_device=2, workers=None, cores=4)
    assert devices.choose_slots([_cfg()], devices=None, per_device=None, workers=None,
                                cores=4)[1] == "placement: CPU, 1 worker x 4 threads"


def _write(tmp: Path, extra: dict | None = None, sleep: float = 1.0,
           name: str = "sweep.yaml") -> Path:
    base = {"name": "x", "train": {"epochs": 1, "device": "auto", "threads": None,
                                   "batch_size": 100},
            "model": {"backbone": "lenet", "params": {}}, "data": {}, "fake": {"sleep": sleep}}
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    spec = {"name": "pack", "base": "base.yaml", "out": str(tmp / "out"),
            "runs": [{"name": "a", "set": {}}, {"name": "b", "set": {}}, {"name": "c", "set": {}}],
            "seeds": {"train": [0, 1]}, **(extra or {})}
    path = tmp / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def fake_machine(monkeypatch):
    from test_sweep import fake_load_config

    monkeypatch.setattr(sweep_exec, "_load_config", fake_load_config)
    monkeypatch.setattr(sweep_exec, "_check_config", lambda cfg: None)
    monkeypatch.setattr(devices, "probe_gpus", lambda: FAKE_GPUS)
    monkeypatch.setattr(sweep, "_cores", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_sweep_packs_runs_k_per_gpu(tmp_path, fake_machine):
    lines: list[str] = []
    path = _write(tmp_path, {"devices": [0, 1], "per_device": 3})
    # The command line wins over the file: 2 per GPU.
    assert sweep.run_sweep(path, per_device=2, train_fn=FAKE_TRAIN, say=lines.append) == 0
    assert lines[0] == ("placement: 2 GPUs [0 (Fake H200, 100.0 of 140.0 GiB free), 1 (Fake "
                        "H200, 10.0 of 140.0 GiB free)], 2 runs per GPU, 4 workers x 2 threads")
    out = tmp_path / "out"
    res = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/results.json")}
    assert len(res) == 6
    summary = json.loads((out / "summary.json").read_text())
    for name, r in res.items():  # one device per run, the one the sweep says, pinned
        assert summary["slots"][name] == f"gpu {r['visible']}"
        assert (r["device"], r["threads"], r["omp"]) == ("cuda", 2, "2")
    # Seed-major order; the first four take slots 0-3: GPUs 0, 1, 0, 1.
    first = ["a__d0_s0", "b__d0_s0", "c__d0_s0", "a__d0_s1"]
    assert [res[n]["visible"] for n in first] == ["0", "1", "0", "1"]
    for g in ("0", "1"):
        spans = [(r["start"], r["end"]) for r in res.values() if r["visible"] == g]
        assert _max_concurrent(spans) <= 2
    assert _max_concurrent([(r["start"], r["end"]) for r in res.values()]) <= 4


def test_sweep_refuses_bad_placement_before_any_work(tmp_path, fake_machine):
    path = _write(tmp_path, sleep=0)
    with pytest.raises(UserError, match=r"^--devices: there is no GPU 3 here \(visible: 0, 1\)$"):
        sweep.run_sweep(path, devices="0,3", train_fn=FAKE_TRAIN, say=lambda s: None)
    with pytest.raises(UserError, match=r"^--devices/--per-device place runs of the local "
                                        r"executor; on Slurm give --gpus per job$"):
        sweep.run_sweep(path, devices="0", executor="slurm", train_fn=FAKE_TRAIN,
                        say=lambda s: None)
    bad = _write(tmp_path, {"devices": "0,x"}, sleep=0, name="bad1.yaml")
    with pytest.raises(UserError, match=r"sweep file .*bad1.yaml: devices: 'x' is not a GPU"):
        sweep.run_sweep(bad, train_fn=FAKE_TRAIN, say=lambda s: None)
    bad = _write(tmp_path, {"per_device": 0}, sleep=0, name="bad2.yaml")
    with pytest.raises(UserError, match=r"bad value for 'per_device'"):
        sweep.run_sweep(bad, train_fn=FAKE_TRAIN, say=lambda s: None)
    assert not (tmp_path / "out").exists()
    # A dry run says where the runs would go.
    lines: list[str] = []
    assert sweep.run_sweep(path, devices="1", per_device=2, dry_run=True, train_fn=FAKE_TRAIN,
                           say=lines.append) == 0
    assert lines[0].startswith("placement: 1 GPU [1 (Fake H200") and "6 to run" in lines[-1]


def test_a_run_records_the_gpu_it_was_pinned_to(monkeypatch):
    import torch

    from imbal.training.runs import provenance

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert provenance(torch.device("cpu"))["cuda_visible_devices"] == "1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert provenance(torch.device("cpu"))["cuda_visible_devices"] is None


def test_placed_job_gets_its_slots_device_and_threads():
    job = {"name": "r", "cfg": {"train": {"device": "auto", "threads": None}}, "threads_set": False}
    got = sweep_exec.placed(job, Slot(0, 1, 3, "1"))
    assert got["cfg"]["train"] == {"device": "cuda", "threads": 3} and got["slot"] == "gpu 1"
    assert job["cfg"]["train"] == {"device": "auto", "threads": None}  # the job is not changed
    fixed = {**job, "cfg": {"train": {"device": "cpu", "threads": 8}}, "threads_set": True}
    assert sweep_exec.placed(fixed, Slot(0, 1, 3, "1"))["cfg"]["train"] == {"device": "cpu",
                                                                           "threads": 8}
    assert sweep_exec.placed(job, Slot(2, None, 4))["cfg"]["train"] == {"device": "auto",
                                                                       "threads": 4}
