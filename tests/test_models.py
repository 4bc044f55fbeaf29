"""Backbone registry: shapes, gradients, heads, exact parameter counts, refused inputs, stems."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from imbal.errors import UserError
from imbal.models import MODELS, Classifier, NormedLinear, build_model

RESNETS = ["resnet18", "resnet34", "resnet50", "resnext18", "resnext50"]  # adaptive stem
NUM_CLASSES = 5
GEN = torch.Generator().manual_seed(0)  # inputs only; weights use the default init


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_backbone():
    assert MODELS.names() == [
        "lenet",
        "resnet18",
        "resnet32",
        "resnet34",
        "resnet50",
        "resnext18",
        "resnext50",
        "small_cnn",
    ]


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 8)])
def test_forward_backward(name, channels, size):
    g = torch.Generator().manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=NUM_CLASSES, image_size=size)
    assert isinstance(model, Classifier)
    x = torch.randn(2, channels, size, size, generator=g)
    feats = model.features(x)
    assert feats.shape == (2, model.feature_dim)
    out = model.head(feats)  # = model(x) (checked below); one forward keeps the file fast
    assert out.shape == (2, NUM_CLASSES)
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    assert first_conv(model).weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["lenet", "small_cnn", "resnet32"])
def test_normed_head_is_cosine(name):
    model = build_model(name, in_channels=1, num_classes=7, image_size=28, head="normed").eval()
    assert isinstance(model.head, NormedLinear)
    assert not any(n.endswith("bias") for n, _ in model.head.named_parameters())
    x = torch.randn(4, 1, 28, 28, generator=GEN) * 5
    with torch.no_grad():
        out = model(x)
        feats = model.features(x)
    assert out.shape == (4, 7)
    assert out.abs().max() <= 1 + 1e-6
    w = model.head.weight
    expected = (feats / feats.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(out, expected)
    # Cosine is invariant to the scale of the features.
    torch.testing.assert_close(model.head(feats * 3.0), out)


def test_linear_head_is_plain_linear():
    model = build_model("small_cnn", in_channels=3, num_classes=4, image_size=32)
    assert type(model.head) is nn.Linear
    assert (model.head.in_features, model.head.out_features) == (64, 4)
    x = torch.randn(2, 3, 32, 32, generator=GEN)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_lenet_param_count_by_hand():
    # 28x28 -> conv5 24 -> pool 12 -> conv5 8 -> pool 4 -> conv4 1: 120 values into the fc.
    conv1 = 6 * 1 * 5 * 5 + 6
    conv2 = 16 * 6 * 5 * 5 + 16
    conv3 = 120 * 16 * 4 * 4 + 120
    fc = 120 * 64 + 64
    head = 64 * 10 + 10
    model = build_model("lenet", in_channels=1, num_classes=10, image_size=28)
    assert n_params(model) == conv1 + conv2 + conv3 + fc + head == 41806
    assert model.features.fc[0].in_features == 120


def test_small_cnn_flatten_and_param_count():
    model = build_model("small_cnn", in_channels=3, num_classes=10, image_size=32)
    assert model.features.fc[0].in_features == 1024  # 64 channels x 4 x 4, as S2
    convs = (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
    assert n_params(model) == convs + 2 * 64 + (1024 * 64 + 64) + (64 * 10 + 10) == 122698


def test_larger_inputs_flatten_what_comes_out():
    # LeNet at 32: conv5 28 - pool 14 - conv5 10 - pool 5 - conv4 2 -> 120*2*2.
    assert (
        build_model("lenet", in_channels=3, num_classes=10, image_size=32)
        .features.fc[0]
        .in_features
        == 480
    )
    small = build_model("small_cnn", in_channels=3, num_classes=10, image_size=64)
    assert small.features.fc[0].in_features == 64 * 8 * 8
    assert small(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_resnet32_param_count():
    # He et al. report 0.46M for ResNet-32 with option-A (zero-padding) shortcuts; exactly
    # 464,154 with 10 classes. We use option-B 1x1 conv + BN projections at the two stage
    # changes: (16*32 + 2*32) + (32*64 + 2*64) = 2,752 more -> 466,906, +0.59% (within 1%).
    model = build_model("resnet32", in_channels=3, num_classes=10, image_size=32)
    assert n_params(model) == 466906
    assert abs(n_params(model) - 2752 - 464154) == 0
    assert model.feature_dim == 64
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 15


@pytest.mark.parametrize(
    "name,reference",
    [
        ("resnet18", torchvision.models.resnet18),
        ("resnet34", torchvision.models.resnet34),
        ("resnet50", torchvision.models.resnet50),
        ("resnext50", torchvision.models.resnext50_32x4d),
    ],
)
def test_imagenet_layout_matches_torchvision_param_count(name, reference):
    ours = build_model(name, in_channels=3, num_classes=10, image_size=224)
    assert n_params(ours) == n_params(reference(weights=None, num_classes=10))


def test_resnext18_convs_are_grouped():
    model = build_model("resnext18", in_channels=3, num_classes=10, image_size=32)
    grouped = [
        m
        for m in model.features.stages.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert len(grouped) == 16 and all(m.groups == 32 for m in grouped)
    assert grouped[0].out_channels == 128  # 32 groups x 4 channels in stage 1


def test_small_inputs_are_bilinearly_upsampled():
    x = torch.randn(3, 1, 8, 8, generator=GEN)
    for name, size in [("lenet", 28), ("small_cnn", 32), ("resnet18", 32)]:
        model = build_model(name, in_channels=1, num_classes=10, image_size=8).eval()
        big = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            torch.testing.assert_close(model(x), model(big))


def test_jigsaw_tile_encoder_shares_shapes_with_classifier():
    tile = build_model("small_cnn", in_channels=3, num_classes=16, image_size=16)
    full = build_model("small_cnn", in_channels=3, num_classes=10, image_size=32)
    full.features.load_state_dict(tile.features.state_dict())  # strict: identical shapes


def test_build_does_not_touch_batchnorm_statistics():
    model = build_model("small_cnn", in_channels=3, num_classes=10, image_size=32)
    bn = model.features.convs[-2]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.num_batches_tracked.item() == 0 and (bn.running_var == 1).all()
    assert model.training


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UserError) as e:
        build_model("resnet19", in_channels=3, num_classes=10, image_size=32)
    msg = str(e.value)
    assert "\n" not in msg and "resnet19" in msg
    assert all(n in msg for n in MODELS.names())


@pytest.mark.parametrize(
    "name,params,valid",
    [
        ("lenet", {"depth": 3}, ["activation", "dropout"]),
        ("small_cnn", {"depth": 3}, ["dropout"]),
        ("resnet18", {"activation": "relu"}, ["dropout", "norm"]),
    ],
)
def test_unknown_param_is_refused(name, params, valid):
    with pytest.raises(UserError) as e:
        build_model(name, in_channels=3, num_classes=10, image_size=32, **params)
    msg = str(e.value)
    assert "\n" not in msg and next(iter(params)) in msg and name in msg
    assert all(v in msg for v in valid)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"name": "lenet", "activation": "gelu"}, "relu"),
        ({"name": "resnet18", "norm": "layer"}, "group"),
        ({"name": "resnet18", "dropout": 1.5}, "dropout"),
        ({"name": "resnet32", "dropout": "a lot"}, "dropout"),
        ({"name": "lenet", "head": "cosine"}, "normed"),
        ({"name": "lenet", "num_classes": 0}, "num_classes"),
        ({"name": "lenet", "image_size": None}, "image_size"),
        ({"name": "lenet", "in_channels": 1.5}, "in_channels"),
    ],
)
def test_bad_values_are_refused(kwargs, fragment):
    args = {"in_channels": 1, "num_classes": 10, "image_size": 28} | kwargs
    with pytest.raises(UserError, match=fragment):
        build_model(args.pop("name"), **args)


@pytest.mark.parametrize("name", ["resnet32", *RESNETS])
def test_group_norm_variant_has_no_batchnorm(name):
    model = build_model(name, in_channels=3, num_classes=10, image_size=32, norm="group")
    kinds = {type(m) for m in model.modules()}
    assert nn.GroupNorm in kinds
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert max(m.num_groups for m in gns) == 32
    assert all(m.num_channels // m.num_groups >= 2 for m in gns)


def test_group_norm_resnet32_trains():
    model = build_model("resnet32", in_channels=3, num_classes=10, image_size=32, norm="group")
    assert model.features.stem[1].num_groups == 8  # 16 channels: 8 groups of 2
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([1, 2])).backward()
    assert torch.isfinite(first_conv(model).weight.grad).all()


@pytest.mark.parametrize("name", RESNETS)
def test_stem_follows_image_size(name):
    imagenet = build_model(name, in_channels=3, num_classes=10, image_size=224).features.stem
    assert imagenet[0].kernel_size == (7, 7) and imagenet[0].stride == (2, 2)
    assert isinstance(imagenet[-1], nn.MaxPool2d)
    cifar = build_model(name, in_channels=3, num_classes=10, image_size=32).features.stem
    assert cifar[0].kernel_size == (3, 3) and cifar[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar)


def test_stem_threshold_and_resnet32_stays_cifar():
    def stem_kernel(name, size):
        return (
            build_model(name, in_channels=3, num_classes=10, image_size=size)
            .features.stem[0]
            .kernel_size
        )

    assert stem_kernel("resnet18", 64) == (3, 3)
    assert stem_kernel("resnet18", 65) == (7, 7)
    assert stem_kernel("resnet32", 224) == (3, 3)


def test_dropout_sits_before_the_head():
    model = build_model("resnet18", in_channels=3, num_classes=10, image_size=32, dropout=0.5)
    assert isinstance(model.features.dropout, nn.Dropout) and model.features.dropout.p == 0.5
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    assert isinstance(
        build_model("resnet18", in_channels=3, num_classes=10, image_size=32).features.dropout,
        nn.Identity,
    )


def _dropout_only_trains(model: nn.Module) -> None:
    """Evaluation mode everywhere (BatchNorm uses its running statistics) but the dropouts."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train()


@pytest.mark.parametrize("name", MODELS.names())
def test_every_backbone_has_dropout_before_the_head(name):
    p = 0.5
    torch.manual_seed(0)  # weight init and the dropout masks (torch's own RNG, as in training)
    model = build_model(name, in_channels=3, num_classes=NUM_CLASSES, image_size=32, dropout=p)
    plain = build_model(name, in_channels=3, num_classes=NUM_CLASSES, image_size=32)
    plain.load_state_dict(model.state_dict())  # dropout adds no parameters or buffers
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())  # default 0: no dropout
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = plain.eval().features(x)
        model.eval()
        torch.testing.assert_close(model.features(x), reference, rtol=0, atol=0)  # identity
        _dropout_only_trains(model)
        dropped = model.features(x)
    zero, live = dropped == 0, reference != 0  # (a ReLU may zero features before dropout)
    # Train mode: each feature is zeroed or scaled by 1/(1-p); about half are zeroed.
    torch.testing.assert_close(dropped[~zero], reference[~zero] / (1 - p))
    assert live.sum() >= 200
    assert 0.35 < zero[live].float().mean().item() < 0.65
    logits = model.head(dropped)
    torch.testing.assert_close(logits, model.head.eval()(dropped))  # nothing after the dropout


@pytest.mark.parametrize("name", MODELS.names())
def test_dropout_rate_is_checked_for_every_backbone(name):
    with pytest.raises(UserError, match=r"dropout must be a number in \[0, 1\), got 1"):
        build_model(name, in_channels=3, num_classes=NUM_CLASSES, image_size=32, dropout=1)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_lenet_activation(activation):
    model = build_model(
        "lenet", in_channels=1, num_classes=10, image_size=28, activation=activation
    )
    kinds = {type(m).__name__.lower() for m in model.features.modules()}
    assert activation in kinds
    assert len(kinds & {"sigmoid", "relu", "tanh"}) == 1
