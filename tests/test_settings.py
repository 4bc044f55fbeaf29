"""Process-wide settings: a run (and `imbal eval`) gives back every one it changed, so runs in
one Python process get the figures they get each in a fresh process."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from imbal.config import load_config
from imbal.training.evaluate import evaluate_run
from imbal.training.run import train
from imbal.training.settings import SETTINGS, apply_run_settings, process_settings, snapshot
from imbal.training.trainer import Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: sgd, lr: 0.05}", "logging.progress=false",
        "logging.tensorboard=false", "train.epochs=2", "data.imbalance={kind: step, keep: 0.3}"]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def differences(before: dict, after: dict) -> list[str]:
    return [k for k in before if not same(before[k], after[k])]


def change_everything() -> None:
    torch.set_num_threads(1 if torch.get_num_threads() != 1 else 2)
    torch.use_deterministic_algorithms(not torch.are_deterministic_algorithms_enabled(),
                                       warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory ^= True
    torch.backends.cudnn.benchmark ^= True
    torch.backends.cudnn.deterministic ^= True
    torch.set_float32_matmul_precision(
        "medium" if torch.get_float32_matmul_precision() != "medium" else "high")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)


def test_process_settings_gives_back_every_setting_also_on_error():
    before = snapshot()
    with process_settings():
        change_everything()
        changed = differences(before, snapshot())
    assert differences(before, snapshot()) == []
    # every setting but the CUDA RNG (no CUDA context here) was really changed
    assert set(changed) == {s.name for s in SETTINGS} - {"rng.cuda"}
    with pytest.raises(RuntimeError, match="boom"), process_settings():
        change_everything()
        raise RuntimeError("boom")
    assert differences(before, snapshot()) == []


def test_a_run_and_an_eval_give_back_what_they_changed(tmp_path, monkeypatch):
    seen = []
    real = Trainer.train_epoch

    def spy(self, *a, **k):
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
        return real(self, *a, **k)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    with process_settings():  # this test's own changes stay in it too
        torch.use_deterministic_algorithms(False)
        torch.manual_seed(7)
        before = snapshot()
        train(load_config(None, [*FAST, "train.threads=1", "train.deterministic=true"]),
              out_dir=str(tmp_path / "r"), quiet=True)
        assert seen == [(1, True), (1, True)]  # the run's own settings while it trained ...
        assert differences(before, snapshot()) == []  # ... and the caller's again after it
        evaluate_run(tmp_path / "r")
        assert differences(before, snapshot()) == []


def test_apply_run_settings_changes_only_what_settings_lists():
    before = snapshot()
    with process_settings():
        apply_run_settings(threads=1, deterministic=True, device=torch.device("cuda"))
        after = snapshot()
    assert set(differences(before, after)) <= {s.name for s in SETTINGS}
    assert after["threads"] == 1 and after["deterministic_algorithms"] == (True, True)
    assert after["CUBLAS_WORKSPACE_CONFIG"] == (before["CUBLAS_WORKSPACE_CONFIG"] or ":4096:8")
    assert after["fill_uninitialized_memory"] is False
    with process_settings():
        apply_run_settings(threads=None, deterministic=False, device=torch.device("cpu"))
        assert snapshot()["deterministic_algorithms"] == (False, False)  # never inherited


RUNS = {"a": ["train.threads=1", "train.deterministic=true", "seeds.train=3"],
        "b": ["train.deterministic=false"]}


def figures(run_dir) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    losses = [json.loads(line)["train"]["loss"]
              for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"losses": losses, **{k: res[k] for k in ("val", "test", "test_last", "best_epoch")}}


def test_two_runs_in_one_process_equal_each_in_a_fresh_process(tmp_path):
    for name, sets in RUNS.items():
        train(load_config(None, [*FAST, *sets]), out_dir=str(tmp_path / f"in-{name}"),
              quiet=True)
    (tmp_path / "c.yaml").write_text("name: fresh\n")
    for name, sets in RUNS.items():
        args = [a for s in [*FAST, *sets] for a in ("--set", s)]
        done = subprocess.run([sys.executable, "-m", "imbal.cli", "train", "c.yaml", "--quiet",
                               "--out", str(tmp_path / f"fresh-{name}"), *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    for name in RUNS:
        assert figures(tmp_path / f"in-{name}") == figures(tmp_path / f"fresh-{name}"), name
    assert figures(tmp_path / "in-a") != figures(tmp_path / "in-b")  # two different runs
