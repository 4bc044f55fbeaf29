"""MixMatch (imbal/semi/mixmatch.py): its formulas by hand, its mixing, its stage, a short run
that beats chance and resumes exactly, and its refusals."""

import math

import pytest
import torch

from imbal.config import load_config
from imbal.errors import UserError
from imbal.semi import SEMI, build_semi, check_semi
from imbal.semi.mixmatch import MixedTargets, mix, rampup_weight, sharpen
from imbal.training.objective import Batch
from imbal.training.run import train
from imbal.training.runs import load_checkpoint
from imbal.training.setup import check_names
from imbal.training.trainer import Interrupted, Trainer

FAST = ["data.source=digits", "model.params={activation: relu}", "train.batch_size=32",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "data.labelled_per_class=10", "data.augment={crop_padding: 1}", "logging.tensorboard=false"]
STAGE = ("stages=[{{name: mm, epochs: {epochs}, unlabelled: rest, unlabelled_batch_size: 32, "
         "semi: {{name: mixmatch, k: 2, lambda_u: 10, rampup_steps: 20}}}}]")


def test_sharpening_is_p_to_the_1_over_t_normalised():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    by_hand = torch.tensor([[0.04, 0.09, 0.25], [0.36, 0.09, 0.01]])
    by_hand = by_hand / by_hand.sum(1, keepdim=True)  # T = 0.5: squares, normalised
    torch.testing.assert_close(sharpen(p, 0.5), by_hand)
    torch.testing.assert_close(sharpen(p, 1.0), p)
    assert sharpen(p, 0.01).argmax(1).tolist() == [2, 0] and sharpen(p, 0.01).max() > 0.999


def test_rampup_is_linear_then_flat():
    assert [rampup_weight(s, 75.0, 100) for s in (0, 25, 50, 100, 250)] == [0.0, 18.75, 37.5, 75.0, 75.0]
    assert rampup_weight(0, 75.0, 0) == 75.0  # no ramp-up: the full weight at once


def test_mixing_lambda_is_at_least_one_half_and_mixes_rows_and_targets_alike():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(6, 1, 2, 2)
    t = torch.softmax(torch.randn(6, 4), 1)
    lams = []
    for _ in range(300):
        state = gen.get_state()
        mixed, soft, lam = mix(w, t, 0.75, gen)
        lams.append(float(lam))
        gen2 = torch.Generator().set_state(state)  # the same draws: Beta, then the permutation
        from imbal.remedies.mixing import sample_beta
        raw = float(sample_beta(0.75, 1, gen2, "cpu"))
        perm = torch.randperm(6, generator=gen2)
        assert float(lam) == pytest.approx(max(raw, 1 - raw))
        torch.testing.assert_close(mixed, float(lam) * w + (1 - float(lam)) * w[perm])
        torch.testing.assert_close(soft, float(lam) * t + (1 - float(lam)) * t[perm])
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    assert sum(x < 0.75 for x in lams) > 30 and sum(x > 0.9 for x in lams) > 30  # spread


def test_the_loss_on_a_hand_made_batch():
    """One labelled row (logits 0, ln 3 -> softmax 1/4, 3/4; target 0.4, 0.6) and one unlabelled
    row (logits 0, 0 -> 1/2, 1/2; guess 1, 0): L_x = -(0.4 ln 1/4 + 0.6 ln 3/4), L_u = 1/4 (mean
    over classes of the squared errors 1/4, 1/4), weight lambda_u * s / rampup_steps."""
    mm = SEMI.get("mixmatch")(torch.nn.Identity(), num_classes=2, lambda_u=2.0, rampup_steps=4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    target = MixedTargets(torch.tensor([[0.4, 0.6], [1.0, 0.0]]), n_labelled=1)
    lx = -(0.4 * math.log(0.25) + 0.6 * math.log(0.75))
    for step in range(6):
        expect = lx + 2.0 * min(1.0, step / 4) * 0.25
        assert float(mm.loss(logits, target)) == pytest.approx(expect, rel=1e-6)
    assert mm.state_dict() == {"step": 6}
    assert int(mm.correct(logits, target)) == 1  # the labelled row only: class 1 both


def test_inputs_guess_from_k_views_and_keep_labelled_rows_first():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    mm = build_semi({"name": "mixmatch", "k": 3, "temperature": 0.5}, model, num_classes=3)
    x, y = torch.randn(2, 1, 2, 2), torch.tensor([0, 2])
    u = torch.randn(3 * 4, 1, 2, 2)  # 4 unlabelled images, 3 views, view-major
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(model(u), 1).detach().view(3, 4, 3).mean(0)
    torch.testing.assert_close(mm.guess(u), sharpen(probs, 0.5))
    mixed, target = mm.inputs(Batch(x, y, u), gen)
    assert mixed.shape == (14, 1, 2, 2) and target.soft.shape == (14, 3) and target.n_labelled == 2
    torch.testing.assert_close(target.soft.sum(1), torch.ones(14))
    gen = torch.Generator().manual_seed(1)
    rows = torch.cat([torch.eye(3)[y], sharpen(probs, 0.5).repeat(3, 1)])
    _, soft, _ = mix(torch.cat([x, u]), rows, 0.75, gen)
    torch.testing.assert_close(target.soft, soft)


def test_a_short_mixmatch_run_beats_chance(tmp_path):
    res = train(load_config(None, [*FAST, STAGE.format(epochs=12)]), out_dir=str(tmp_path / "r"),
                quiet=True)
    assert res["train_counts"] == [10] * 10 and res["stage"] == "mm"
    assert res["test"]["top1"] > 40.0, res["test"]["top1"]  # chance: 10%


def test_a_mixmatch_run_stopped_mid_epoch_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    sets = [*FAST, "train.ema={decay: 0.9}", STAGE.format(epochs=2)]
    full = train(load_config(None, sets), out_dir=str(tmp_path / "full"), quiet=True)
    real, count = Trainer._step, {"n": 0}

    def step(self, idx, s):
        real(self, idx, s)
        count["n"] += 1
        if count["n"] == 6:  # 4 steps an epoch: epoch 2, step 2
            self.stop.signum = 15

    monkeypatch.setattr(Trainer, "_step", step)
    with pytest.raises(Interrupted):
        train(load_config(None, sets), out_dir=str(tmp_path / "cut"), quiet=True)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ckpt["objective"] == {"step": 6} and ckpt["cursor"]["step"] == 2
    monkeypatch.undo()
    resumed = train(load_config(tmp_path / "cut" / "config.yaml"), out_dir=str(tmp_path / "cut"),
                    quiet=True, resume=True)
    for key in ("val", "test", "test_last", "best_epoch"):
        assert resumed[key] == full[key], key


@pytest.mark.parametrize("stage,message", [
    ("{name: mm, semi: {name: mixmatch}}",
     "stage 'mm': semi (mixmatch) needs an unlabelled stream: unlabelled: rest (with "
     "data.labelled_per_class) or removed"),
    ("{name: mm, semi: {name: mixmatch}, unlabelled: rest, remedy: [{name: focal}]}",
     "stage 'mm': remedy does not apply to a semi stage (its method's objective is its loss and "
     "its mixing; options go in semi)"),
    ("{name: mm, semi: {name: mixmatch, tau: 2}, unlabelled: rest}",
     "unknown key 'stages[0].semi.tau'"),
    ("{name: mm, semi: {name: mixmatch, temperature: 0}, unlabelled: rest}",
     "bad value for 'stages[0].semi.temperature': input should be greater than 0 (got 0)"),
    ("{name: mm, semi: {name: mixmach}, unlabelled: rest}",
     "unknown semi-supervised method 'mixmach' (did you mean 'mixmatch'?); valid: mixmatch"),
    ("{name: mm, semi: {name: mixmatch}, task: rotation, unlabelled: rest}",
     "stage 'mm': task and semi are both set; a stage is a pretext stage (task) or a "
     "semi-supervised one (semi), not both"),
])
def test_bad_semi_stages_are_refused_before_any_work(stage, message):
    with pytest.raises(UserError) as err:
        check_names(load_config(None, [*FAST, f"stages=[{stage}]"]))
    assert str(err.value) == message


def test_check_semi_fills_in_the_defaults():
    assert check_semi({"name": "mixmatch"}, "semi") == {
        "k": 2, "temperature": 0.5, "alpha": 0.75, "lambda_u": 75.0, "rampup_steps": 0}
