"""Two-stage tricks: LWS (learnable per-class scales on the frozen classifier), MaxNorm (weight
balancing's per-step projection), and the post-hoc adjustments of `imbal eval` (logit
adjustment and tau-normalisation, tau chosen on validation), against their formulas by hand."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from imbal.cli import main
from imbal.config import load_config
from imbal.errors import UserError
from imbal.remedies.weights import log_prior
from imbal.training.evaluate import evaluate_run
from imbal.training.run import train
from imbal.training.two_stage import ScaledHead, max_norm_hook

FAST = ["data.source=digits", "model.backbone=lenet", "model.params={activation: relu}",
        "train.optimizer={name: adam, lr: 0.003}", "train.batch_size=64", "logging.progress=false",
        "data.imbalance={kind: longtail, ratio: 10}"]


def run(tmp_path, extra=(), name="r"):
    cfg = load_config(None, [*FAST, *extra])
    return train(cfg, out_dir=str(tmp_path / name), quiet=True), tmp_path / name


def test_max_norm_projection_by_hand():
    head = nn.Linear(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0], [0.1, 0.0], [0.0, -2.0]]))
    max_norm_hook(head, 1.0)()
    # ||(3, 4)|| = 5 > 1 -> (0.6, 0.8); 0.1 <= 1 kept; (0, -2) -> (0, -1)
    assert torch.allclose(head.weight, torch.tensor([[0.6, 0.8], [0.1, 0.0], [0.0, -1.0]]),
                          atol=1e-6)


def test_scaled_head_by_hand():
    head = ScaledHead(nn.Linear(2, 2), 2)
    with torch.no_grad():
        head.inner.weight.copy_(torch.eye(2))
        head.inner.bias.zero_()
        head.scale.copy_(torch.tensor([2.0, 0.5]))
    assert head(torch.tensor([[1.0, 4.0]])).tolist() == [[2.0, 2.0]]


def test_lws_learns_only_the_scales(tmp_path):
    stages = ("stages=[{name: represent, epochs: 1}, {name: lws, epochs: 1, trains: scales, "
              "remedy: [{name: oversample}], optimizer: {name: sgd, lr: 0.5}}]")
    res, d = run(tmp_path, [stages, "train.epochs=1"])
    one, d1 = run(tmp_path, ["train.epochs=1"], "one")  # the same stage one alone
    two = torch.load(d / "checkpoints" / "last.pt", weights_only=False)["model"]
    ref = torch.load(d1 / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert not torch.allclose(two["head.scale"], torch.ones(10))  # the scales learned
    for key, value in ref.items():  # backbone, BatchNorm and classifier: stage one's
        mine = two["head.inner." + key[5:]] if key.startswith("head.") else two[key]
        assert torch.equal(mine, value), key
    assert res["stage"] == "lws"


def test_weight_balancing_rows_stay_in_the_ball(tmp_path):
    stages = ("stages=[{name: wd, epochs: 1, optimizer: {weight_decay: 0.005}}, "
              "{name: maxnorm, epochs: 1, trains: head, max_norm: 0.1, "
              "remedy: [{name: class_weights}]}]")
    _, d = run(tmp_path, [stages, "train.epochs=1"])
    w = torch.load(d / "checkpoints" / "last.pt", weights_only=False)["model"]["head.weight"]
    assert float(w.norm(dim=1).max()) <= 0.1 + 1e-6


def test_posthoc_logit_adjust_and_tau_norm(tmp_path):
    _, d = run(tmp_path, ["train.epochs=2"])
    out = evaluate_run(d, posthoc={"logit_adjust": "auto", "tau_norm": "auto"})
    saved = json.loads((d / "eval_best.json").read_text())
    assert saved["logit_adjust"]["tau"] == out["logit_adjust"]["tau"]
    la, tn = out["logit_adjust"], out["tau_norm"]
    assert la["grid"] == [i * 0.25 for i in range(9)] and len(tn["grid"]) == 21
    for r in (la, tn):  # the chosen tau is the best on validation (ties: the smallest)
        scores = r["val_balanced_acc"]
        assert r["tau"] == r["grid"][scores.index(max(scores))]
    # tau 0 is the plain classifier for both
    plain = evaluate_run(d, posthoc={"logit_adjust": 0, "tau_norm": "0"})
    assert plain["logit_adjust"]["test"]["top1"] == plain["test"]["top1"]
    assert plain["tau_norm"]["test"]["top1"] == plain["test"]["top1"]
    # by hand, at tau 1.5: argmax(W x + b - 1.5 log prior) and argmax((W/||W||^1.5) x + b)
    from imbal.training.posthoc import features
    from imbal.training.setup import build_setup

    setup = build_setup(load_config(d / "config.yaml"), quiet=True)
    setup.trainer.model.load_state_dict(torch.load(d / "checkpoints" / "best.pt",
                                                   weights_only=False)["model"])
    f = features(setup.trainer, setup.data.test.images).clone()
    y = setup.data.test.targets
    w, b = (t.detach() for t in (setup.trainer.model.head.weight, setup.trainer.model.head.bias))
    counts = json.loads((d / "counts.json").read_text())["train"]
    z = f @ w.T + b - 1.5 * log_prior(torch.tensor(counts))
    zt = f @ (w / w.norm(dim=1, keepdim=True) ** 1.5).T + b
    got = evaluate_run(d, posthoc={"logit_adjust": 1.5, "tau_norm": 1.5})
    for r, logits in ((got["logit_adjust"], z), (got["tau_norm"], zt)):
        assert r["tau"] == 1.5 and r["val_balanced_acc"] is not None
        assert r["test"]["top1"] == pytest.approx(100.0 * float((logits.argmax(1) == y).float().mean()))


def test_posthoc_refusals(tmp_path, capsys):
    with pytest.raises(UserError) as e:
        evaluate_run(tmp_path, posthoc={"tau_norm": "x"})
    assert str(e.value) == "--tau-norm takes a number >= 0 or 'auto', got 'x'"
    _, d = run(tmp_path, ["train.epochs=1", "data.val_fraction=0"])
    assert main(["eval", str(d), "--logit-adjust"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--logit-adjust: choosing tau needs a validation split (data.val_fraction > 0); give one "
        "value instead, e.g. --logit-adjust 1.0")
    assert main(["eval", str(d), "--logit-adjust", "1.0"]) == 0


def test_trick_configs_pass_the_checks():
    from pathlib import Path

    from imbal.training.setup import check_names

    names = ["progressive", "drs", "cdt", "las", "manifold_mixup", "remix", "crt", "lws", "wb",
             "drw_mixup", "crt_mixup"]
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in names:
        check_names(load_config(root / f"lt_cifar_resnet32_{name}.yaml"))
