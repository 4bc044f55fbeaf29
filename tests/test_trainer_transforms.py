"""Batch transforms on the Trainer side: built from train.batch_transforms (or a stage's own
list), called in the step after the data's augmentation, their targets (int64 N or float N×C)
handed to the loss, training accuracy counted against the argmax of soft targets, and the
soft-target check on the remedies made before any work."""

import json

import pytest
import torch
import torch.nn.functional as F

from imbal.cli import main
from imbal.config import load_config
from imbal.remedies.base import REMEDIES
from imbal.remedies.batch import BATCH_TRANSFORMS, BatchTransform
from imbal.remedies.losses import ComposedLoss
from imbal.training.objective import SupervisedObjective
from imbal.training.run import train

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "logging.tensorboard=false", "data.imbalance={kind: step, keep: 0.3}",
        "data.subset.per_class=80", "data.subset.test_per_class=30", "train.epochs=2"]


class OneHot(BatchTransform):
    """Soft targets that say the same as the labels: one-hot rows. Any loss that accepts soft
    targets must give cross-entropy's value for them."""

    name = "onehot_test"
    soft_targets = True

    def __init__(self, params, *, num_classes, class_counts):
        self.num_classes = num_classes
        self.calls = 0

    def __call__(self, x, y, generator):
        assert x.dtype == torch.float32 and y.dtype == torch.long  # after normalisation
        OneHot.last = self
        self.calls += 1
        return x, F.one_hot(y, self.num_classes).float()


@pytest.fixture
def onehot(monkeypatch):
    monkeypatch.setitem(BATCH_TRANSFORMS._items, "onehot_test", OneHot)


@pytest.fixture
def loss_targets(monkeypatch):
    """(shape, dtype) of the targets every training loss call received."""
    seen = []
    real = ComposedLoss.forward

    def forward(self, logits, targets):
        if torch.is_grad_enabled():
            seen.append((tuple(targets.shape), targets.dtype))
        return real(self, logits, targets)

    monkeypatch.setattr(ComposedLoss, "forward", forward)
    return seen


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_soft_targets_reach_the_loss_and_train_like_the_labels(tmp_path, onehot, loss_targets):
    plain = train(load_config(None, FAST), out_dir=str(tmp_path / "plain"), quiet=True)
    n_plain = len(loss_targets)
    soft = train(load_config(None, [*FAST, "train.batch_transforms=[onehot_test]"]),
                 out_dir=str(tmp_path / "soft"), quiet=True)
    hard_calls, soft_calls = loss_targets[:n_plain], loss_targets[n_plain:]
    assert len(soft_calls) == n_plain == OneHot.last.calls  # one transform call per step
    assert all(len(shape) == 1 and dtype == torch.long for shape, dtype in hard_calls)
    assert all(shape == (hard[0][0], 10) and dtype == torch.float32
               for (shape, dtype), hard in zip(soft_calls, hard_calls, strict=True))
    a, b = rows(tmp_path / "plain"), rows(tmp_path / "soft")
    for ra, rb in zip(a, b, strict=True):  # same training up to float rounding of the loss
        assert rb["train"]["loss"] == pytest.approx(ra["train"]["loss"], rel=1e-4)
        assert rb["train"]["acc"] == pytest.approx(ra["train"]["acc"], abs=1.0)
    assert b[-1]["train"]["acc"] > 50 and soft["test"]["top1"] == pytest.approx(plain["test"]["top1"], abs=3)


def test_a_stage_overrides_the_transforms_of_the_main_config(tmp_path, onehot, loss_targets):
    train(load_config(None, [*FAST, "train.batch_transforms=[onehot_test]",
                             "stages=[{name: a, epochs: 1, batch_transforms: []}, {name: b, epochs: 1}]"]),
          out_dir=str(tmp_path / "r"), quiet=True)
    dims = [len(shape) for shape, _ in loss_targets]
    half = len(dims) // 2
    assert dims == [1] * half + [2] * half  # stage a: labels; stage b: the main config's list


def test_training_accuracy_counts_the_argmax_of_soft_targets():
    obj = SupervisedObjective(torch.nn.Identity(), ComposedLoss(3))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.5, 0.1, 0.4], [0.2, 0.8, 0.0]])
    assert obj.correct(logits, soft).item() == 2  # rows 0 and 1 agree with the argmax
    assert obj.correct(logits, torch.tensor([0, 1, 2, 0])).item() == 4


def test_a_remedy_that_needs_hard_labels_is_refused_with_a_soft_transform(tmp_path, capsys, onehot,
                                                                          monkeypatch):
    monkeypatch.setattr(REMEDIES.get("label_smoothing"), "soft_targets_ok", False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: refused\n")
    for sets in (["train.batch_transforms=[onehot_test]", "remedy=[label_smoothing]"],
                 ["stages=[{name: a}, {name: b, batch_transforms: [onehot_test], "
                  "remedy: [label_smoothing]}]"]):
        code = main(["train", str(cfg), "--out", str(tmp_path / "x"), "--quiet",
                     *[a for s in [*FAST, *sets] for a in ("--set", s)]])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "remedy 'label_smoothing' needs one class per image" in err and "onehot_test" in err
        assert not (tmp_path / "x").exists()
    assert main(["train", str(cfg), "--out", str(tmp_path / "y"), "--quiet", "--set",
                 "train.batch_transforms=[nope]", *[a for s in FAST for a in ("--set", s)]]) == 2
    assert "unknown batch transform 'nope'" in capsys.readouterr().err
