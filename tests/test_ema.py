"""train.ema: the moving average of the weights follows its recurrence, is what evaluation and
best.pt see, and resumes exactly."""

import pytest
import torch

from imbal.config import load_config
from imbal.errors import UserError
from imbal.training.run import train
from imbal.training.runs import load_checkpoint
from imbal.training.trainer import Interrupted, Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=64",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "data.imbalance={kind: step, keep: 0.3}", "train.ema={decay: 0.9}"]


def test_the_average_after_k_steps_is_the_hand_computed_recurrence(tmp_path, monkeypatch):
    """ema_1 = w_1 (the first update copies), ema_t = d * ema_(t-1) + (1 - d) * w_t, for every
    weight and BatchNorm statistic; best.pt (one epoch: the last) holds the average."""
    seen = []
    real = Trainer._step

    def spy(self, idx, s):
        real(self, idx, s)
        seen.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})

    monkeypatch.setattr(Trainer, "_step", spy)
    train(load_config(None, [*FAST, "train.epochs=1", "model.backbone=small_cnn", "model.params={}"]),
          out_dir=str(tmp_path / "r"), quiet=True)
    assert len(seen) == 14  # 14 steps an epoch
    expect = dict(seen[0])
    for w in seen[1:]:
        for k, v in w.items():
            if v.is_floating_point():
                expect[k] = 0.9 * expect[k] + 0.1 * v
    last = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k != "n_averaged"}
    assert int(last["ema"]["n_averaged"]) == 14
    floats = [k for k in expect if expect[k].is_floating_point()]
    assert any("running_mean" in k for k in floats)  # the BatchNorm statistics are averaged too
    for k in floats:
        torch.testing.assert_close(ema[k], expect[k], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(ema[k], seen[-1][k])  # not the trained weights
    best = load_checkpoint(tmp_path / "r" / "checkpoints" / "best.pt")
    for k in floats:
        assert torch.equal(best["model"][k], ema[k])


def test_a_run_stopped_mid_epoch_with_ema_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    sets = [*FAST, "train.epochs=2", "data.augment={crop_padding: 1}"]
    full = train(load_config(None, sets), out_dir=str(tmp_path / "full"), quiet=True)
    real, count = Trainer._step, {"n": 0}

    def step(self, idx, s):
        real(self, idx, s)
        count["n"] += 1
        if count["n"] == 17:
            self.stop.signum = 15

    monkeypatch.setattr(Trainer, "_step", step)
    with pytest.raises(Interrupted):
        train(load_config(None, sets), out_dir=str(tmp_path / "cut"), quiet=True)
    monkeypatch.undo()
    resumed = train(load_config(tmp_path / "cut" / "config.yaml"), out_dir=str(tmp_path / "cut"),
                    quiet=True, resume=True)
    for key in ("val", "test", "test_last", "best_epoch"):
        assert resumed[key] == full[key], key
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["ema"] for d in ("cut", "full"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_evaluated_model_differs_from_the_trained_one(tmp_path):
    on = train(load_config(None, [*FAST, "train.epochs=1"]), out_dir=str(tmp_path / "on"), quiet=True)
    off = train(load_config(None, [*FAST, "train.epochs=1", "train.ema=null"]),
                out_dir=str(tmp_path / "off"), quiet=True)
    assert on["test"]["per_class_acc"] != off["test"]["per_class_acc"]
    assert on["test_last"] == on["test"]  # one epoch: best.pt is the last epoch's average


@pytest.mark.parametrize("decay", [0, 1, 1.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(UserError, match=r"bad value for 'train.ema.decay'"):
        load_config(None, [f"train.ema={{decay: {decay}}}"])
