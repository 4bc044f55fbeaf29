"""model.init: the INITS registry, exact statistics of each scheme, zero biases, and the order
with model.init_from (loaded weights are never re-drawn)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from imbal.config import load_config
from imbal.errors import UserError
from imbal.models import build_model
from imbal.models.init import INITS, apply_init
from imbal.training.setup import build_setup, check_names


def fans(w: torch.Tensor) -> tuple[int, int]:
    """By hand: fan_in = in_channels x kernel area, fan_out = out_channels x kernel area."""
    area = math.prod(w.shape[2:])
    return w.shape[1] * area, w.shape[0] * area


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_registered():
    assert INITS.names() == ["default", "kaiming_normal", "xavier_normal", "xavier_uniform"]


def test_xavier_uniform_bound_and_zero_biases():
    torch.manual_seed(0)
    model = build_model("resnet32", in_channels=3, num_classes=10, image_size=32)
    apply_init(model, "xavier_uniform")
    for m in layers(model):
        fan_in, fan_out = fans(m.weight)
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = m.weight.detach()
        assert w.abs().max() <= bound
        if w.numel() >= 2000:  # a uniform sample reaches near its bound, std a / sqrt(3)
            assert w.abs().max() > 0.98 * bound
            assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        if m.bias is not None:
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bn)


@pytest.mark.parametrize("name, std", [
    ("xavier_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("kaiming_normal", lambda fi, fo: math.sqrt(2 / fi)),
])
def test_normal_schemes_have_their_std(name, std):
    torch.manual_seed(0)
    model = build_model("lenet", in_channels=1, num_classes=10, image_size=28,
                        activation="sigmoid")
    apply_init(model, name)
    for m in layers(model):
        w = m.weight.detach()
        want = std(*fans(w))
        if w.numel() >= 2000:
            assert w.std().item() == pytest.approx(want, rel=0.05)
            assert w.mean().item() == pytest.approx(0, abs=3 * want / math.sqrt(w.numel()) * 2)
        assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_default_keeps_the_built_weights_and_the_head_bias():
    torch.manual_seed(1)
    a = build_model("lenet", in_channels=1, num_classes=10, image_size=28, activation="relu")
    torch.manual_seed(1)
    b = build_model("lenet", in_channels=1, num_classes=10, image_size=28, activation="relu")
    apply_init(b, "default")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert b.head.bias.abs().sum() > 0  # PyTorch's default Linear bias, not zeroed


def test_unknown_init_is_refused_before_any_work():
    with pytest.raises(UserError, match=r"^unknown init 'xavier'.*valid: default, kaiming_normal, "
                                        r"xavier_normal, xavier_uniform$"):
        check_names(load_config(None, ["model.init=xavier"]))


def test_a_run_draws_the_head_with_the_scheme_and_keeps_init_from_weights(tmp_path):
    from imbal.pretext.transfer import load_backbone, save_pretrained

    cfg = load_config(None, ["data.source=digits", "data.subset.total=200",
                             "model.init=xavier_uniform", "train.device=cpu"])
    setup = build_setup(cfg, quiet=True)
    head = setup.trainer.model.head
    fan_in, fan_out = head.weight.shape[1], head.weight.shape[0]
    assert head.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    assert torch.equal(head.bias, torch.zeros_like(head.bias))
    # init_from is loaded over the drawn backbone (fit does this after build_setup)
    torch.manual_seed(5)
    donor = build_model("lenet", in_channels=1, num_classes=10, image_size=8, activation="sigmoid")
    save_pretrained(tmp_path / "p.pt", donor.features, task="rotation", epoch=1)
    load_backbone(setup.trainer.model, tmp_path / "p.pt")
    for k, v in donor.features.state_dict().items():
        assert torch.equal(setup.trainer.model.features.state_dict()[k], v)
