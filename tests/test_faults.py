"""Issue 17, faults: divergence, locked run directories, disk full, read-only folders, the
logged loss independent of the progress bar, run files' modes."""

import csv
import json
import os
import stat
import tempfile

import pytest
import torch
from synth import poison_training_batch

from imbal.cli import main
from imbal.config import load_config
from imbal.data import cache
from imbal.errors import NonFiniteLoss, UserError
from imbal.locks import FolderLock
from imbal.training import runs
from imbal.training.run import train
from imbal.training.runs import load_checkpoint
from imbal.training.trainer import Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "data.imbalance={kind: step, keep: 0.3}", "logging.tensorboard=false", "train.threads=1"]


def strict_rows(path):
    def refuse(name):
        raise AssertionError(f"{name} in {path}: not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def cli_train(tmp_path, sets, *extra):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: f\n")
    return main(["train", str(cfg), "--quiet", *extra, *[a for s in sets for a in ("--set", s)]])


def test_huge_finite_losses_are_summed_in_float64_and_never_logged_as_infinity(tmp_path, monkeypatch):
    real = Trainer._step

    def step(self, idx, s):  # every step's loss finite, near float32's largest value
        real(self, idx, s)
        self._losses[s] = 3e38

    monkeypatch.setattr(Trainer, "_step", step)
    train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(tmp_path / "r"), quiet=True)
    rows = strict_rows(tmp_path / "r" / "metrics.jsonl")
    assert rows[0]["train"]["loss"] == pytest.approx(3e38, rel=1e-6)


def test_a_non_finite_epoch_sum_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = Trainer._fold
    calls = {"epoch": 0}

    def fold(self):
        sums = real(self)
        if self.cursor.epoch == 1 and self.cursor.step == self._losses.numel():
            calls["epoch"] += 1
            sums[0] = float("inf")  # as a diverged sum would be
        return sums

    monkeypatch.setattr(Trainer, "_fold", fold)
    code = cli_train(tmp_path, [*FAST, "train.epochs=3"], "--out", str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert code == 3 and calls["epoch"] == 1
    assert err == (f"imbal: error: the training loss summed over epoch 2 is not finite (the run "
                   f"diverged); the last good checkpoint is kept ({tmp_path / 'r' / 'checkpoints' / 'last.pt'})\n")
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["cursor"]["epoch"] == 1
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["status"] == "failed: non-finite loss"
    strict_rows(tmp_path / "r" / "metrics.jsonl")


def test_nan_in_the_first_epoch_promises_no_checkpoint(tmp_path, monkeypatch, capsys):
    poison_training_batch(monkeypatch, 3)
    code = cli_train(tmp_path, [*FAST, "train.epochs=2"], "--out", str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert code == 3
    assert err.endswith("no epoch had ended, so there is no checkpoint to keep\n")
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_json_run_files_refuse_nan_and_infinity(tmp_path):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            runs.atomic_write_json(tmp_path / "x.json", {"loss": bad})
    assert not (tmp_path / "x.json").exists() and os.listdir(tmp_path) == []


def test_a_run_directory_in_use_refuses_a_second_writer(tmp_path, capsys):
    run = tmp_path / "r"
    train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(run), quiet=True)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with FolderLock(run, "run directory"):  # another process training into it
        code = cli_train(tmp_path, [*FAST, "train.epochs=1"], "--out", str(run), "--overwrite")
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"imbal: error: run directory {run} is in use by another imbal process "
                   f"(pid {os.getpid()}); wait for it to end or stop it first\n")
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    # once released (the process ended), the directory is free again
    assert cli_train(tmp_path, [*FAST, "train.epochs=1"], "--out", str(run), "--overwrite") == 0


def test_the_run_lock_is_taken_before_an_overwrite_clears_the_directory(tmp_path, monkeypatch):
    run = tmp_path / "r"
    train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(run), quiet=True)
    real = runs.check_run_dir

    def late_lock(path, **kw):  # the other process locks after our early check passed
        real(path, **kw)
        if not hasattr(late_lock, "held"):
            late_lock.held = FolderLock(run, "run directory").acquire()

    monkeypatch.setattr(runs, "check_run_dir", late_lock)
    with pytest.raises(UserError, match="is in use by another imbal process"):
        train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(run), quiet=True, overwrite=True)
    late_lock.held.release()
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "results.json").is_file()


def _torch_save_fails_on(monkeypatch, module, name: str, at: int):  # noqa: ARG001
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        if name in str(getattr(f, "name", f)):
            calls["n"] += 1
            if calls["n"] == at:
                raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                                   "8384 vs 8320\nPytorchStreamWriter failed writing file data/0")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(module.torch, "save", save)


def test_torch_save_failing_keeps_the_previous_checkpoint_and_records_the_status(tmp_path, monkeypatch, capsys):
    _torch_save_fails_on(monkeypatch, runs, "last.pt", 2)
    code = cli_train(tmp_path, [*FAST, "train.epochs=3"], "--out", str(tmp_path / "r"))
    err = capsys.readouterr().err
    last = tmp_path / "r" / "checkpoints" / "last.pt"
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("imbal: error: cannot write (") and err.endswith(f"{last}\n")
    assert load_checkpoint(last, resume=True)["cursor"]["epoch"] == 1
    assert not list(last.parent.glob(".*tmp"))
    status = json.loads((tmp_path / "r" / "meta.json").read_text())["status"]
    assert status.startswith(f"failed: cannot write {last}")


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch, capsys):
    import types

    def save(*a, **k):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(cache, "torch", types.SimpleNamespace(save=save, load=torch.load))
    blob = cache.cached("t", {"root": "x"}, [], lambda: {"images": torch.zeros(2)}, what="built")
    assert blob["images"].tolist() == [0.0, 0.0]
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"warning: could not write the data cache to {tmp_path / 'cache'} "
                       "(PytorchStreamWriter failed writing file data/0: file write failed); set "
                       "IMBAL_CACHE to a writable directory to avoid decoding again")


def test_a_read_only_run_directory_is_refused_before_the_set_up(tmp_path, monkeypatch, capsys):
    run = tmp_path / "r"
    run.mkdir()
    real = tempfile.TemporaryFile

    def read_only(*a, dir=None, **k):  # root ignores mode bits: simulate a read-only mount
        if dir is not None and os.path.samefile(dir, run):
            raise PermissionError(30, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(runs.tempfile, "TemporaryFile", read_only)
    from imbal.training import run as run_module

    monkeypatch.setattr(run_module, "build_setup", lambda *a, **k: pytest.fail("set-up ran"))
    assert cli_train(tmp_path, [*FAST, "train.epochs=1"], "--out", str(run)) == 2
    assert capsys.readouterr().err == (f"imbal: error: cannot write to output directory {run}: "
                                       f"{run} is not a writable directory\n")


def test_eval_prints_its_metrics_even_when_it_cannot_write(tmp_path, monkeypatch, capsys):
    run = tmp_path / "r"
    train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(run), quiet=True)
    capsys.readouterr()

    def refuse(path, obj):
        raise PermissionError(13, "Permission denied", str(path))

    from imbal.training import evaluate

    monkeypatch.setattr(evaluate, "atomic_write_json", refuse)
    assert main(["eval", str(run)]) == 1
    out, err = capsys.readouterr()
    assert '"top1"' in out and err.startswith("class  test acc\n")  # the per-class table
    assert err.endswith(f"\nimbal: error: Permission denied: {run / 'eval_best.json'}\n")


def test_the_logged_loss_does_not_depend_on_the_progress_bar(tmp_path, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())  # a bar is drawn on a terminal only
    sets = [*FAST, "train.epochs=1", "logging.log_every=1", "train.batch_size=16"]
    train(load_config(None, sets), out_dir=str(tmp_path / "q"), quiet=True)
    train(load_config(None, [*sets, "logging.progress=true"]), out_dir=str(tmp_path / "b"), quiet=False)
    assert "batch/s" in sys.stderr.getvalue() or "it/s" in sys.stderr.getvalue()
    quiet, bar = (strict_rows(tmp_path / d / "metrics.jsonl")[0] for d in ("q", "b"))
    assert quiet["train"]["loss"] == bar["train"]["loss"] and quiet["train"]["acc"] == bar["train"]["acc"]


def test_run_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(tmp_path / "r"), quiet=True)
    finally:
        os.umask(old)
    for name in ("results.json", "config.yaml", "metrics.jsonl", "meta.json", "checkpoints/last.pt"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o644, name


def test_confusion_csv_quotes_class_names(tmp_path):
    from imbal.training.loop import _write_confusion

    class Log:
        writer = None

    import numpy as np

    _write_confusion(tmp_path, np.array([[3, 1], [0, 2]]), ["a,b", 'say "hi"'], Log(), 1)
    rows = list(csv.reader((tmp_path / "confusion.csv").read_text().splitlines()))
    assert rows == [["true\\pred", "a,b", 'say "hi"'], ["a,b", "3", "1"], ['say "hi"', "0", "2"]]


def test_non_finite_loss_is_a_plain_exception():
    assert not issubclass(NonFiniteLoss, UserError)
