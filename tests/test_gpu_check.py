"""scripts/gpu_check.sh: its one-line refusal without CUDA, and every check's logic through the
hidden `--device cpu --tiny` self-test (LeNet on a few random images; no GPU figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imbal.bench import gpu_check
from imbal.bench.gpu_checks import peak_tflops
from imbal.models import build_model

REPO = Path(__file__).resolve().parents[1]
CHECKS = ["amp_float16", "amp_bfloat16", "layout_compile", "no_sync", "deterministic", "resume",
          "sampler", "flops_resnet32", "flops_resnet18"]


def test_refuses_without_cuda_in_one_line(tmp_path):
    out = tmp_path / "g.json"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, anywhere
    done = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stdout == ""
    assert lines[0].startswith("gpu_check: CUDA is not available here (torch ")
    assert lines[0].endswith("); run it on a machine with an NVIDIA GPU")
    assert not out.exists()


def test_unknown_check_and_budget(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--only", "resume,nope",
                           "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"gpu_check: unknown check(s) nope; choose from {', '.join(CHECKS)}\n"
    assert not (tmp_path / "a.json").exists()
    out = tmp_path / "b.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--only", "resume", "--budget-s", "0",
                           "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["checks"] == {"resume": {"ok": None, "skipped": "past the 0 s budget"}}
    assert doc["summary"] == {"passed": True, "failed": [], "skipped": ["resume"],
                              "memory_high_water_gib": None}


def test_peak_table():
    half, single = torch.float16, None
    assert peak_tflops("NVIDIA H200", half) == 989.4
    assert peak_tflops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", half) == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", half) == 312.0
    assert peak_tflops("NVIDIA A10", half) == 125.0  # not the A100's
    assert peak_tflops("NVIDIA L4", half) == 121.0
    assert peak_tflops("NVIDIA L40S", half) == 362.1  # not the L4's
    assert peak_tflops("NVIDIA H100 80GB HBM3", single) == 66.9
    assert peak_tflops("Some Future GPU", half) is None
    assert peak_tflops(None, half) is None


def _lenet_step_gflop_per_image(batch: int = 16) -> float:
    model = build_model("lenet", in_channels=3, num_classes=10, image_size=16)
    x, y = torch.randn(batch, 3, 16, 16), torch.arange(batch) % 10
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), y).backward()
    return fc.get_total_flops() / batch / 1e9


def test_tiny_self_test_runs_every_check(tmp_path, capsys):
    out = tmp_path / "g.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    checks = doc["checks"]
    assert list(checks) == CHECKS
    assert doc["settings"] == {"device": "cpu", "tiny": True, "budget_s": 420.0}
    assert "gpu" not in doc["machine"]  # the CPU self-test claims no GPU figures
    assert doc["summary"] == {"passed": True, "failed": [], "memory_high_water_gib": None,
                              "skipped": ["amp_float16", "no_sync"]}
    assert checks["amp_float16"]["skipped"] == "float16 autocast needs CUDA"
    assert checks["amp_bfloat16"]["ok"] is True and len(checks["amp_bfloat16"]["losses"]) == 2
    runs = checks["layout_compile"]["runs"]
    assert runs["channels_last=true,compile=false"]["images_per_s"] > 0
    assert "skipped" in runs["channels_last=true,compile=true"]
    # The sync guard wraps every step of the epoch: the long tail 30, 25, ..., 6 (149 images)
    # less the validation split leaves 133 training images, 9 batches of 16.
    amp = checks["no_sync"]["amp"]
    assert amp["off"] == amp["bfloat16"] == {"steps_checked": 9, "synchronising": False}
    det = checks["deterministic"]["runs"]["deterministic=true"]
    assert det["identical"] is True and det["max_abs_diff"] == 0.0
    res = checks["resume"]
    assert res["ok"] is True and res["max_abs_weight_diff"] == 0.0 and res["same_results"]
    assert res["stopped_at"] == {"epoch": 2, "step": 4, "steps_per_epoch": 9}  # after 9 + 4 steps
    s = checks["sampler"]
    assert s["ok"] is True and s["indices_on"] == "cpu" and s["max_class_share_error"] < 0.05
    for key in ("flops_resnet32", "flops_resnet18"):
        f = checks[key]
        assert (f["backbone"], f["autocast"], f["peak_tflops"], f["fraction_of_peak"]) == (
            "lenet", "off", None, None)
        assert f["gflop_per_image"] == pytest.approx(_lenet_step_gflop_per_image(), abs=1e-4)
    assert "passed in" in capsys.readouterr().out
