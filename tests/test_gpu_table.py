"""`imbal bench --gpu-table`: its refusal without CUDA, the per-run figures and the extrapolation
computed by hand, and the hidden --tiny self-test (2 LeNet runs on the CPU) end to end."""

from __future__ import annotations

import json

import yaml

from imbal.bench import gpu_table
from imbal.cli import main
from imbal.study import devices


def test_refuses_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    assert main(["bench", "--gpu-table", "--out", str(tmp_path / "t.json")]) == 2
    assert capsys.readouterr().err == "imbal: error: --gpu-table needs CUDA, and no GPU is visible here\n"
    assert not (tmp_path / "t.json").exists()


def test_per_run_figures_by_hand(tmp_path):
    rows = [{"train": {"images_per_s": ips, "images": 100}} for ips in (50.0, 300.0, 200.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / gpu_table.TIMES).write_text(json.dumps(
        {"start": 0.0, "epoch_ends": [10.0, 12.0, 14.5], "end": 20.0}))
    got = gpu_table.per_run(tmp_path, 200)
    # epoch: median of the gaps 2.0 and 2.5 = 2.25; fixed: 20 - 3 x 2.25 = 13.25;
    # full run: 13.25 + 200 x 2.25 = 463.25; img/s: the median of the epochs after the first.
    assert got == {"images_per_s": 250.0, "train_images": 300, "epochs": 3, "epoch_s": 2.25,
                   "fixed_s": 13.25, "wall_s": 20.0, "full_run_s": 463.2}


def test_extrapolation_is_the_makespan_on_the_slots():
    runs = {"a": {"full_run_s": 100.0}, "b": {"full_run_s": 50.0}}  # 2 of 18: 9 of each
    # Two slots, each run on the first free one: 4 runs (100, 50, 100, 50) fill both slots to
    # 150 s; four such rounds reach 600 s, then a 100 s and a 50 s run: 700 s.
    got = gpu_table.extrapolate(runs, workers=2, seeds=1)
    assert got == {"runs": 18, "workers": 2, "wall_s": 700.0, "goal_s": 600.0, "met": False}
    assert gpu_table.extrapolate(runs, workers=18, seeds=1)["wall_s"] == 100.0
    six = {str(i): {"full_run_s": 60.0} for i in range(6)}  # 6 methods, measured with 3 seeds
    assert gpu_table.extrapolate(six, workers=6, seeds=3) == {
        "runs": 18, "workers": 6, "wall_s": 180.0, "goal_s": 600.0, "met": True}


def test_sweep_file_is_the_published_table(tmp_path):
    spec = yaml.safe_load(gpu_table.sweep_file(tmp_path, epochs=3, tiny=False).read_text())
    assert [r["name"] for r in spec["runs"]] == ["ce", "focal", "cb", "ldam-drw",
                                                 "balanced_softmax", "logit_adjust"]
    assert spec["seeds"] == {"train": [0, 1, 2]} and spec["set"]["train.epochs"] == 3
    assert spec["base"].endswith("configs/lt_cifar_resnet32.yaml")
    assert spec["runs"][3]["set"]["remedy"] == [{"name": "ldam", "drw_epoch": 0.5}]
    spec = yaml.safe_load(gpu_table.sweep_file(tmp_path, epochs=5, tiny=False).read_text())
    assert spec["runs"][3]["set"]["remedy"] == [{"name": "ldam", "drw_epoch": 0.8}]


def test_tiny_self_test_end_to_end(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["bench", "--gpu-table", "--tiny", "--gpu-table-epochs", "2",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["runs"]) == ["ce__d0_s0", "ldam-drw__d0_s0"]
    for r in doc["runs"].values():
        assert r["slot"] == "cpu" and r["epochs"] == 2 and r["images_per_s"] > 0
        # from the unrounded figures: within the rounding of fixed_s (0.01) and epoch_s (0.001)
        assert abs(r["full_run_s"] - (r["fixed_s"] + 200 * r["epoch_s"])) <= 0.005 + 0.1 + 0.05
    assert doc["sweep"]["how"] == "local, CPU, 2 workers x 1 thread"
    assert doc["full_table"]["runs"] == 18 and doc["full_table"]["workers"] == 2
    text = capsys.readouterr().out
    assert "shortened CIFAR-10-LT-100 table: 2 runs x 2 epochs" in text
    assert "full table (18 runs x 200 epochs on 2 workers), extrapolated:" in text
