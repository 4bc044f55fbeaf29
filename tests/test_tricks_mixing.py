"""Manifold mixup (mixing at a backbone's mix point through a one-shot hook) and remix (the
label leaning to the minority class), against their papers' formulas computed by hand."""

from __future__ import annotations

import pytest
import torch

from imbal.errors import UserError
from imbal.models import MODELS, build_model
from imbal.models.base import mix_modules
from imbal.remedies.batch import build_batch_transforms, soft_target_transforms
from imbal.remedies.mixing import sample_beta
from imbal.remedies.tail_mixing import remix_label_weights


@pytest.mark.parametrize("name", MODELS.names())
def test_every_backbone_lists_mix_points(name):
    model = build_model(name, in_channels=3, num_classes=4, image_size=32)
    points = mix_modules(model.features)
    assert len(points) >= 1
    hooked = []
    handles = [m.register_forward_hook(lambda m, a, o: hooked.append(o.shape)) for m in points]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert len(hooked) == len(points) and all(s[0] == 2 for s in hooked)


def test_manifold_mixup_mixes_at_the_chosen_layer():
    torch.manual_seed(0)
    model = build_model("lenet", in_channels=1, num_classes=3, image_size=28).eval()
    tf = build_batch_transforms([{"name": "manifold_mixup", "alpha": 1.0, "layers": [2]}],
                                num_classes=3, class_counts=[5, 3, 2])
    tf.bind(model)
    x, y = torch.randn(6, 1, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])
    gen = torch.Generator().manual_seed(3)
    x2, q = tf(x, y, gen)
    assert torch.equal(x2, x)  # mixing happens inside the network
    # the same draws by hand: lambda, partner, mixed, then the layer
    g = torch.Generator().manual_seed(3)
    lam = sample_beta(1.0, 6, g, "cpu")
    partner = torch.randperm(6, generator=g)
    f = model.features
    with torch.no_grad():
        out = model(x2)
        h = f.convs(f.resize(x))  # mix point 2: the conv120 map (flattened)
        hm = lam.view(-1, 1) * h + (1 - lam.view(-1, 1)) * h[partner]
        want = model.head(f.fc(hm))
        assert torch.allclose(out, want, atol=1e-5)
        assert torch.allclose(model(x), model.head(f(x)))  # the hook fired once and is gone
    onehot = torch.eye(3)[y]
    assert torch.allclose(q, lam.view(-1, 1) * onehot + (1 - lam.view(-1, 1)) * onehot[partner])


def test_manifold_mixup_refuses_bad_layers():
    model = build_model("resnet32", in_channels=3, num_classes=3, image_size=32)
    tf = build_batch_transforms([{"name": "manifold_mixup", "layers": [0, 3]}], num_classes=3,
                                class_counts=[5, 3, 2])
    with pytest.raises(UserError) as e:
        tf.bind(model)
    assert str(e.value) == ("batch transform 'manifold_mixup': layers [0, 3] must be a non-empty "
                            "list from [0, 1, 2] (0: the input, then the backbone's 2 mix points)")


def test_remix_label_weights_by_hand():
    lam = torch.tensor([0.3, 0.3, 0.8, 0.8, 0.3, 0.6])
    n_i = torch.tensor([300.0, 300.0, 10.0, 10.0, 100.0, 10.0])
    n_j = torch.tensor([10.0, 200.0, 300.0, 50.0, 100.0, 300.0])
    # kappa 3, tau 0.5: 300/10 >= 3 and 0.3 < 0.5 -> 0; 300/200 < 3 -> lam; 10/300 <= 1/3 and
    # 1 - 0.8 < 0.5 -> 1; 10/50 <= 1/3 and 0.2 < 0.5 -> 1; equal counts -> lam;
    # 10/300 <= 1/3 but 1 - 0.6 = 0.4 < 0.5 -> 1
    got = remix_label_weights(lam, n_i, n_j, 3.0, 0.5)
    assert got.tolist() == pytest.approx([0.0, 0.3, 1.0, 1.0, 0.3, 1.0])
    got = remix_label_weights(lam, n_i, n_j, 3.0, 0.35)  # 1 - 0.6 = 0.4 >= 0.35 -> lam
    assert got.tolist() == pytest.approx([0.0, 0.3, 1.0, 1.0, 0.3, 0.6])


def test_remix_targets_lean_to_the_minority():
    tf = build_batch_transforms([{"name": "remix", "alpha": 1.0}], num_classes=2,
                                class_counts=[90, 10])
    x, y = torch.randn(64, 1, 4, 4), torch.tensor([0, 1] * 32)
    x2, q = tf(x, y, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    lam = sample_beta(1.0, 64, g, "cpu")
    partner = torch.randperm(64, generator=g)
    assert torch.allclose(x2, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner])
    n = torch.tensor([90.0, 10.0])
    lam_y = remix_label_weights(lam, n[y], n[y[partner]], 3.0, 0.5)
    onehot = torch.eye(2)[y]
    assert torch.allclose(q, lam_y.view(-1, 1) * onehot + (1 - lam_y.view(-1, 1)) * onehot[partner])
    assert torch.any(lam_y != lam)  # some labels moved to the minority class


def test_remix_must_come_before_soft_targets():
    with pytest.raises(UserError) as e:
        soft_target_transforms(["mixup", "remix"])
    assert str(e.value) == ("batch transform 'remix' needs one class per image, but 'mixup' "
                            "before it gives soft targets; list 'remix' first")
    assert soft_target_transforms(["remix"]) == ["remix"]
