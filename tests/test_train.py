"""End to end on CPU: a short run must beat chance by far and leave a complete run directory."""

import json

import pytest
import yaml

from imbal.cli import main
from imbal.config import load_config
from imbal.training.run import train

FAST = ["data.source=digits", "model.backbone=lenet", "model.params={activation: relu}",
        "train.optimizer={name: adam, lr: 0.003}", "train.batch_size=64", "logging.progress=false"]


def run(tmp_path, extra=(), name="r"):
    cfg = load_config(None, [*FAST, *extra])
    return train(cfg, out_dir=str(tmp_path / name), quiet=True), tmp_path / name


def test_short_run_beats_chance_and_writes_everything(tmp_path):
    res, d = run(tmp_path, ["train.epochs=6", "data.imbalance={kind: step, keep: 0.3}"])
    assert res["complete"] and res["test"]["top1"] > 70  # chance is 10%
    for f in ("config.yaml", "meta.json", "counts.json", "metrics.jsonl", "results.json",
              "confusion.csv", "confusion.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    assert any((d / "tb").iterdir())
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    counts = json.loads((d / "counts.json").read_text())
    assert res["minority_classes"] == [0, 1, 2, 3, 4] and res["majority_classes"] == [5, 6, 7, 8, 9]
    assert sum(counts["test"]) == res["test"]["n"]
    conf = (d / "confusion.csv").read_text().splitlines()
    assert len(conf) == 11 and sum(int(v) for row in conf[1:] for v in row.split(",")[1:]) == res["test"]["n"]
    # best.pt was chosen on validation: its epoch has the highest validation balanced accuracy
    best = max(rows, key=lambda r: r["val"]["balanced_acc"])
    assert res["best_epoch"] == best["epoch"]
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "complete" and "torch" in meta["versions"]


def test_resolved_config_reproduces_the_run(tmp_path):
    res1, d = run(tmp_path, ["train.epochs=2"], "a")
    cfg = load_config(d / "config.yaml")
    # every argument the optimizer was built with, and how it ran (foreach on the CPU)
    assert cfg["train"]["optimizer"] == {
        "name": "adam", "lr": 0.003, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0,
        "amsgrad": False, "maximize": False, "decoupled_weight_decay": False}
    assert json.loads((d / "meta.json").read_text())["optimizer"] == (
        "torch.optim.Adam (foreach): lr 0.003, betas [0.9, 0.999], eps 1e-08, weight_decay 0.0, "
        "amsgrad False, maximize False, decoupled_weight_decay False")
    res2 = train(cfg, out_dir=str(tmp_path / "b"), quiet=True)
    for key in ("top1", "balanced_acc", "per_class_acc"):
        assert res1["test"][key] == res2["test"][key]


def test_no_validation_split_selects_last_epoch(tmp_path):
    res, _ = run(tmp_path, ["train.epochs=2", "data.val_fraction=0"])
    assert res["best_epoch"] == 2 and res["val"] is None
    assert res["test"] == res["test_last"]


def test_cli_train_and_eval(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"name": "cli"}))
    sets = [a for s in [*FAST, "train.epochs=1"] for a in ("--set", s)]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", *sets]) == 0
    assert main(["eval", str(tmp_path / "run")]) == 0
    out = json.loads((tmp_path / "run" / "eval_best.json").read_text())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert out["test"]["top1"] == res["test"]["top1"]
    # the same directory again is refused without --overwrite
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", *sets]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", "--overwrite", *sets]) == 0


@pytest.mark.parametrize("sets,message", [
    (["model.backbone=lenett"], "unknown backbone 'lenett' (did you mean 'lenet'?); valid:"),
    (["data.source=imagenet"], "unknown dataset 'imagenet'"),
    (["train.optimizer.name=rmsprob"], "unknown optimizer 'rmsprob' (did you mean 'rmsprop'?); "
     "valid: adadelta, adafactor, adagrad, adam, adamax, adamw, asgd, nadam, radam, rmsprop, "
     "rprop, sgd"),
    (["train.optimizer={name: adam, lr: 0.001, momentum: 0.9}"], "adam takes no argument 'momentum'"),
    (["train.optimizer.lr=.nan"], "bad value for 'train.optimizer.lr'"),
    (["train.optimizer={name: sgd, lr: 0.1, momentum: .nan}"],
     "bad value for 'train.optimizer.momentum': value error, must be finite (no nan or inf) "
     "(got nan)"),
    (["train.schedule={name: cosine, t_max: 3}", "train.epochs=5"],
     "train.schedule.t_max (3) is shorter than the run (5 epochs)"),
    (["train.optimizer={name: sgd, lr: 0.1, nesterov: 1}"],
     "bad value for 'train.optimizer.nesterov': expected true or false (got 1)"),
    (["pretrain={task: rotation, optimizer: {name: sgd, lr: 0.1, betas: [0.9, 0.99]}}"],
     "pretrain.optimizer: sgd takes no argument 'betas'"),
    (["train.schedule.name=step"], "unknown schedule 'step'"),
    (["remedy=[nonsense]"], "unknown remedy 'nonsense'"),
    (["train.amp=float16", "train.device=cpu"], "float16 needs CUDA"),
    (["eval.minority_classes=[12]"], "out of range"),
])
def test_cli_refusals_are_one_line(tmp_path, capsys, sets, message):
    args = ["train", "--out", str(tmp_path / "x"), "--quiet"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: refused\n")
    code = main([args[0], str(cfg), *args[1:], *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x" / "results.json").exists()


def test_the_sampler_reaches_the_training_loop(tmp_path, monkeypatch):
    """A resampling remedy must change what the training step sees (not just be built)."""
    import torch

    from imbal.training.trainer import Trainer

    seen = []
    real = Trainer._step

    def spy(self, idx, step):
        seen.append(self.targets[idx].clone())
        real(self, idx, step)

    monkeypatch.setattr(Trainer, "_step", spy)
    res, _ = run(tmp_path, ["train.epochs=2", "data.imbalance={kind: step, keep: 0.2}",
                            "remedy=[{name: oversample, mode: balanced}]"])
    counts = torch.bincount(torch.cat(seen), minlength=10).float()
    share = counts / counts.sum()
    assert res["train_counts"][0] * 4 < res["train_counts"][9]  # the data is imbalanced ...
    assert share.min() > 0.07 and share.max() < 0.13  # ... but batches are balanced (±3 points)
    assert int(counts.sum()) == 2 * sum(res["train_counts"])  # an epoch is the training-set size


@pytest.mark.parametrize("remedy", ["[{name: oversample, mode: balanced}]",
                                    "[{name: copy, k: 2, transforms: [hflip, brightness]}]"])
def test_runs_never_read_memory_they_did_not_write(tmp_path, monkeypatch, remedy):
    """imbal switches off deterministic mode's NaN fill of torch.empty (a speed cost). That is
    safe only if nothing reads an allocation before writing it: with the fill forced back on,
    a run (resampling, batch augmentation, copies) must give exactly the same figures."""
    import torch

    import imbal.training.settings
    from imbal.training.trainer import Trainer

    real = imbal.training.settings.deterministic_algorithms
    real_epoch = Trainer.train_epoch
    fill_seen = []

    def with_fill():
        real()
        torch.utils.deterministic.fill_uninitialized_memory = True

    def spy(self, *a, **k):  # the setting as the training step sees it
        fill_seen.append(torch.utils.deterministic.fill_uninitialized_memory)
        return real_epoch(self, *a, **k)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    extra = ["train.epochs=2", "data.imbalance={kind: step, keep: 0.2}",
             "data.augment={crop_padding: 2, hflip: true}",
             f"remedy={remedy}"]
    before = torch.utils.deterministic.fill_uninitialized_memory
    plain, _ = run(tmp_path, extra, "plain")
    monkeypatch.setattr(imbal.training.settings, "deterministic_algorithms", with_fill)
    filled, _ = run(tmp_path, extra, "filled")
    assert fill_seen == [False, False, True, True]
    assert torch.utils.deterministic.fill_uninitialized_memory == before  # given back
    assert plain["test"]["top1"] > 20  # trained (chance is 10%): no NaN crept in
    for key in ("top1", "balanced_acc", "per_class_acc"):
        assert plain["test"][key] == filled["test"][key]
