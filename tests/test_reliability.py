"""Interruption and resume, non-finite losses, safe checkpoints, disk full, determinism."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from synth import poison_training_batch

from imbal.cli import main
from imbal.config import load_config
from imbal.errors import UserError
from imbal.training import runs
from imbal.training.run import train
from imbal.training.runs import load_checkpoint
from imbal.training.trainer import Interrupted, Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "data.imbalance={kind: step, keep: 0.3}"]


def comparable(res: dict) -> dict:
    return {k: res[k] for k in ("val", "test", "test_last", "best_epoch", "train_counts")}


def stop_at(monkeypatch, global_step: int, signum=signal.SIGTERM):
    """Make the trainer see a signal after `global_step` steps (as a real signal would set it)."""
    real = Trainer._step
    count = {"n": 0}

    def step(self, idx, s):
        real(self, idx, s)
        count["n"] += 1
        if count["n"] == global_step:
            self.stop.signum = signum

    monkeypatch.setattr(Trainer, "_step", step)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    sets = [*FAST, "train.epochs=3", "remedy=[{name: oversample}]", "data.augment={crop_padding: 1, hflip: true}",
            "train.schedule={name: multistep, milestones: [2], gamma: 0.5, warmup_epochs: 1}"]
    full = train(load_config(None, sets), out_dir=str(tmp_path / "full"), quiet=True)
    stop_at(monkeypatch, 17)  # inside epoch 2
    with pytest.raises(Interrupted):
        train(load_config(None, sets), out_dir=str(tmp_path / "cut"), quiet=True)
    assert not (tmp_path / "cut" / "results.json").exists()
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["cursor"]["epoch"] == 1 and ckpt["cursor"]["step"] == 3  # 14 steps an epoch
    monkeypatch.undo()
    resumed = train(load_config(tmp_path / "cut" / "config.yaml"), out_dir=str(tmp_path / "cut"),
                    quiet=True, resume=True)
    assert comparable(resumed) == comparable(full)
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_same_seeds_give_identical_results(tmp_path):
    a = train(load_config(None, [*FAST, "train.epochs=2"]), out_dir=str(tmp_path / "a"), quiet=True)
    b = train(load_config(None, [*FAST, "train.epochs=2"]), out_dir=str(tmp_path / "b"), quiet=True)
    c = train(load_config(None, [*FAST, "train.epochs=2", "seeds.train=1"]), out_dir=str(tmp_path / "c"), quiet=True)
    assert comparable(a) == comparable(b)
    assert a["test"]["per_class_acc"] != c["test"]["per_class_acc"]
    assert a["train_counts"] == c["train_counts"]  # the training seed never changes the data


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, monkeypatch, capsys):
    poison_training_batch(monkeypatch, 14 + 3)  # 14 steps an epoch: epoch 2, step 3
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: nan\n")
    code = main(["train", str(cfg), "--out", str(tmp_path / "r"), "--quiet",
                 *[a for s in [*FAST, "train.epochs=3"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 3
    assert "non-finite loss at epoch 2, step 3" in err and "Traceback" not in err
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["cursor"]["epoch"] == 1  # the last good checkpoint is kept
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "r" / "results.json").exists()


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch, capsys):
    real = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **k):
        if "last.pt" in str(f):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(runs.torch, "save", full_disk)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: full\n")
    code = main(["train", str(cfg), "--out", str(tmp_path / "r"), "--quiet",
                 *[a for s in [*FAST, "train.epochs=3"] for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("imbal: error: disk full") and "Traceback" not in err
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["cursor"]["epoch"] == 1
    assert not list((tmp_path / "r" / "checkpoints").glob(".*tmp"))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint at all", "cannot load checkpoint"),
    ("truncated", "cannot load checkpoint"),
    ("evil", "cannot load checkpoint"),
    ("foreign", "is not an imbal checkpoint"),
])
def test_bad_checkpoints_are_refused(tmp_path, content, message):
    p = tmp_path / "x.pt"
    if content == "truncated":
        torch.save({"format": "imbal", "model": {"w": torch.zeros(1000)}}, p)
        p.write_bytes(p.read_bytes()[:200])
    elif content == "evil":
        torch.save({"format": "imbal", "model": Evil()}, p)
    elif content == "foreign":
        torch.save({"state_dict": {}}, p)
    else:
        p.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_checkpoint(p)


def _spawn(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "imbal.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epoch(run: Path, proc, epochs: int = 1, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        m = run / "metrics.jsonl"
        if m.exists() and len(m.read_text().splitlines()) >= epochs:
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        time.sleep(0.05)
    raise AssertionError("run did not reach its first epoch")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_real_signals_leave_a_resumable_run(tmp_path, sig, code):
    run = tmp_path / "run"
    sets = [*FAST, "train.epochs=40", "train.batch_size=16"]
    (tmp_path / "c.yaml").write_text("name: sig\n")
    proc = _spawn(["train", "c.yaml", "--out", str(run), *[a for s in sets for a in ("--set", s)]], tmp_path)
    _wait_for_epoch(run, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    if sig == signal.SIGTERM:
        assert f"Resume with: imbal train --resume {run}" in err and "Traceback" not in err
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["cursor"]["epoch"] >= 1
    # resume, shortening the run so the test ends soon (overrides apply to the saved config)
    done = subprocess.run([sys.executable, "-m", "imbal.cli", "train", "--resume", str(run),
                           "--quiet", "--set", "train.epochs=" + str(ckpt["cursor"]["epoch"] + 1)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "results.json").read_text())["complete"]


def _older_imbal(run: Path) -> Path:
    """Make a run directory look like one an older imbal wrote: last.pt without a version and
    with its epoch-function schedule state; config.yaml with momentum and nesterov for adam."""
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["version"] == runs.CHECKPOINT_VERSION
    del ckpt["version"]
    ckpt["scheduler"] = {"last_epoch": 1, "base_lrs": [0.003]}
    torch.save(ckpt, last)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["optimizer"] = {"name": "adam", "lr": 0.003, "momentum": 0.9,
                                 "nesterov": False, "weight_decay": 0.0}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return last


def test_an_older_imbals_checkpoint_is_refused_on_resume_but_its_best_pt_evaluates(tmp_path, capsys):
    run = tmp_path / "old"
    res = train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(run), quiet=True)
    last = _older_imbal(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"imbal: error: {last} was written by an older imbal (its optimizer and "
                   "schedule state are in a layout this version cannot load): the run cannot be "
                   "resumed, start it again (imbal train CONFIG --overwrite)\n")
    with pytest.raises(UserError, match="written by an older imbal"):
        load_checkpoint(last, resume=True)
    assert load_checkpoint(last)["cursor"]["epoch"] == 1  # as data it still loads
    # best.pt holds weights only: `imbal eval` scores it, with the older config.yaml
    assert main(["eval", str(run)]) == 0
    capsys.readouterr()
    assert json.loads((run / "eval_best.json").read_text())["test"]["top1"] == res["test"]["top1"]


def test_a_newer_imbals_checkpoint_is_refused_on_resume(tmp_path):
    p = tmp_path / "last.pt"
    torch.save({"format": "imbal", "version": runs.CHECKPOINT_VERSION + 1, "model": {}}, p)
    with pytest.raises(UserError, match=f"written by a newer imbal \\(checkpoint version "
                                        f"{runs.CHECKPOINT_VERSION + 1}, this one reads"):
        load_checkpoint(p, resume=True)
