"""Model-zoo backbones: torchvision/<name> and timm/<name>, model.pretrained and model.image_size.

No test downloads anything: ImageNet weights are stand-ins (a seeded random state dict of the
same architecture) saved where torch.hub / the Hugging Face cache keep the real ones.
"""

from __future__ import annotations

import sys

import pytest
import timm
import torch
import yaml
from torch import nn
from torchvision import models

from imbal.cli import main
from imbal.errors import UserError
from imbal.models import MODELS, build_model, check_model
from imbal.models.zoo import ZooFeatures

R18 = models.ResNet18_Weights.DEFAULT


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _saved_resnet18(path) -> dict:
    torch.manual_seed(7)
    sd = models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


def _imagenet_file(home):
    return home / "hub" / "checkpoints" / R18.url.rsplit("/", 1)[-1]


def test_torchvision_imagenet_weights_load_and_head_is_replaced(torch_home):
    assert _imagenet_file(torch_home).name == "resnet18-f37072fd.pth"
    sd = _saved_resnet18(_imagenet_file(torch_home))
    m = build_model("torchvision/resnet18", in_channels=3, num_classes=7, image_size=32,
                    pretrained="imagenet")
    got = m.features.net.state_dict()
    assert set(got) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(got[k], sd[k]) for k in got)
    assert isinstance(m.features.net.fc, nn.Identity)
    assert isinstance(m.head, nn.Linear) and (m.head.in_features, m.head.out_features) == (512, 7)
    meta = R18.transforms()
    assert m.features.input_stats == (meta.mean, meta.std)
    assert m.features.resize.size == meta.crop_size[0] == 224
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_from_scratch_keeps_the_data_size_and_statistics():
    m = build_model("torchvision/resnext50_32x4d", in_channels=3, num_classes=4, image_size=32)
    assert isinstance(m.features, ZooFeatures) and m.features.input_stats is None
    assert isinstance(m.features.resize, nn.Identity) and m.feature_dim == 2048
    ref = models.resnext50_32x4d(weights=None)
    n_ref = sum(p.numel() for p in ref.parameters()) - sum(p.numel() for p in ref.fc.parameters())
    assert sum(p.numel() for p in m.features.parameters()) == n_ref


def test_state_dict_file_image_size_and_grey_input(tmp_path):
    path = tmp_path / "mine.pt"
    sd = _saved_resnet18(path)
    torch.save({"state_dict": sd}, path)  # a wrapped state dict is unwrapped
    m = build_model("torchvision/resnet18", in_channels=1, num_classes=3, image_size=28,
                    pretrained=str(path), resize_to=40)
    assert m.features.resize.size == 40
    assert torch.equal(m.features.net.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(m.features.net.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    mean, std = R18.transforms().mean, R18.transforms().std
    assert m.features.input_stats == ([sum(mean) / 3], [sum(std) / 3])
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_a_state_dict_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "r34.pt"
    torch.save(models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(UserError) as err:
        build_model("torchvision/resnet18", in_channels=3, num_classes=3, image_size=32,
                    pretrained=str(path))
    assert str(err.value).startswith(f"{path} does not fit torchvision/resnet18: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model, message", [
    ({"backbone": "torchvision/resnet81"}, "unknown torchvision model 'resnet81' (did you mean "
     "'resnet18'?); torchvision/<name> takes one with an fc head, e.g. resnet18, resnext50_32x4d"),
    ({"backbone": "torchvision/vit_b_16"}, "torchvision model 'vit_b_16' has no single fc head; "
     "torchvision/<name> takes ResNet, ResNeXt, Wide ResNet, RegNet or ShuffleNet models"),
    ({"backbone": "resnet18", "pretrained": "imagenet"}, "backbone 'resnet18' takes no "
     "model.pretrained (the torchvision/<name> and timm/<name> backbones take it, e.g. "
     "torchvision/resnet18; model.init_from starts from an imbal run)"),
    ({"backbone": "lenet", "image_size": 64}, "backbone 'lenet' takes no model.image_size (the "
     "torchvision/<name> and timm/<name> backbones take it, e.g. torchvision/resnet18; "
     "model.init_from starts from an imbal run)"),
    ({"backbone": "torchvision/resnet18", "pretrained": "/no/such.pth"},
     "model.pretrained: no file /no/such.pth (give imagenet or a state-dict file)"),
    ({"backbone": "timm/resnet10tt"}, "unknown timm model 'resnet10tt' (did you mean "
     "'resnet10t'?); the names are timm.list_models()"),
])
def test_refusals(model, message):
    with pytest.raises(UserError) as err:
        check_model(model)
    assert str(err.value) == message


def test_unknown_backbone_names_the_families():
    with pytest.raises(UserError) as err:
        MODELS.get("resnet19")
    assert str(err.value).endswith(", timm/<name>, torchvision/<name>")
    assert not any("/" in n for n in MODELS.names())


def test_offline_without_weights_is_one_line_before_any_work(tmp_path, torch_home, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"source": "imagefolder", "root": str(tmp_path / "not_there")},
        "model": {"backbone": "torchvision/resnet18", "pretrained": "imagenet"}}))
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 2
    target = _imagenet_file(torch_home)
    assert capsys.readouterr().err == (
        f"imbal: error: ImageNet weights for torchvision/resnet18 are not on this machine: put "
        f"{target.name} (from {R18.url}) in {target.parent} (TORCH_HOME/hub/checkpoints), or "
        f"set model.pretrained to a state-dict file\n")
    assert not out.exists()


def test_timm_backbone_trains_a_step():
    m = build_model("timm/test_resnet", in_channels=3, num_classes=5, image_size=32,
                    dropout=0.2)
    assert m.feature_dim == timm.create_model("test_resnet", num_classes=0).num_features
    assert m.features.input_stats is None and isinstance(m.features.dropout, nn.Dropout)
    loss = nn.functional.cross_entropy(m(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_timm_kwargs_reach_create_model():
    m = build_model("timm/test_vit", in_channels=3, num_classes=2, image_size=32,
                    kwargs={"img_size": 32})
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(UserError) as err:
        build_model("timm/test_resnet", in_channels=3, num_classes=2, image_size=32,
                    kwargs={"no_such_arg": 1})
    assert str(err.value).startswith("timm/test_resnet: ") and "no_such_arg" in str(err.value)


def _timm_state(name: str) -> dict:
    torch.manual_seed(3)
    return timm.create_model(name).state_dict()  # with its 1000-class classifier


def test_timm_weights_file_loads_without_the_classifier(tmp_path):
    sd = _timm_state("test_resnet")
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    m = build_model("timm/test_resnet", in_channels=3, num_classes=4, image_size=32,
                    pretrained=str(path))
    got = m.features.net.state_dict()
    assert got and all(torch.equal(got[k], sd[k]) for k in got)
    assert not any(k.startswith("fc.") for k in got) and m.head.out_features == 4
    cfg = m.features.net.pretrained_cfg
    assert m.features.input_stats == (list(cfg["mean"]), list(cfg["std"]))
    assert m.features.resize.size == cfg["input_size"][-1]


def test_timm_imagenet_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    with pytest.raises(UserError) as err:
        check_model({"backbone": "timm/test_resnet", "pretrained": "imagenet"})
    assert str(err.value) == (
        f"ImageNet weights for timm/test_resnet are not on this machine: fetch "
        f"https://huggingface.co/{repo} into the Hugging Face cache {tmp_path / 'hf'} (hf "
        f"download {repo}), or set model.pretrained to the weights file")
    folder = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc")
    (folder / "snapshots" / "abc").mkdir(parents=True)
    sd = _timm_state("test_resnet")
    save_file(sd, str(folder / "snapshots" / "abc" / "model.safetensors"))
    m = build_model("timm/test_resnet", in_channels=3, num_classes=2, image_size=32,
                    pretrained="imagenet", resize_to=32)
    got = m.features.net.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in got) and m.features.resize.size == 32


def test_without_timm_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(UserError) as err:
        MODELS.get("timm/resnet10t")
    assert str(err.value) == "the timm/<name> backbones need timm: pip install 'imbal[timm]'"


def test_pretrained_run_normalises_with_the_weights_statistics(tmp_path, torch_home):
    from imbal.config import load_config
    from imbal.training.setup import build_setup

    _saved_resnet18(_imagenet_file(torch_home))
    cfg = load_config({"data": {"source": "digits", "subset": {"per_class": 5}},
                       "model": {"backbone": "torchvision/resnet18", "pretrained": "imagenet",
                                 "image_size": 32}, "train": {"device": "cpu"}})
    setup = build_setup(cfg, quiet=True)
    mean, std = R18.transforms().mean, R18.transforms().std
    state = setup.trainer.normalizer.state()
    assert state["mean"] == pytest.approx([sum(mean) / 3]) and state["std"] == pytest.approx(
        [sum(std) / 3])


def test_registry_family_contract():
    from imbal.registry import RegistrationError, Registry, restore, snapshot

    reg = Registry("widget")
    before = snapshot()
    reg.register_family("fam/", lambda rest: (lambda: rest.upper()))
    assert reg.get("fam/abc")() == "ABC" and reg.names() == []
    with pytest.raises(RegistrationError):
        reg.register_family("fam/", lambda rest: None)
    with pytest.raises(RegistrationError):
        reg.register_family("nofam", lambda rest: None)
    with pytest.raises(UserError) as err:
        reg.get("other")
    assert str(err.value) == "unknown widget 'other'; valid: fam/<name>"
    restore(before)
    with pytest.raises(UserError):
        reg.get("fam/abc")


@pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/resnet10t"])
def test_zoo_backbones_offer_mix_points_for_manifold_mixup(name):
    """The first two stages' outputs are the mix points; a step mixing at the deepest one gives
    the same logits as mixing that stage's output by hand."""
    from imbal.models.base import mix_modules
    from imbal.remedies.batch import build_batch_transforms

    torch.manual_seed(0)
    model = build_model(name, in_channels=3, num_classes=4, image_size=32).eval()
    assert model.features.mix_points == ("net.layer1", "net.layer2")
    points = mix_modules(model.features)
    t = build_batch_transforms([{"name": "manifold_mixup", "layers": [2]}], num_classes=4,
                               class_counts=[5] * 4)
    t.bind(model)
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 4
    g = torch.Generator().manual_seed(1)
    _, soft = t(x, y, g)
    mixed = model(x)  # the armed hook mixes layer2's output once
    g = torch.Generator().manual_seed(1)
    lam, partner = t.parts[0].draw(6, g, x.device)
    h = points[1].register_forward_hook(
        lambda m, i, out: out * lam.view(-1, 1, 1, 1) + out[partner] * (1 - lam.view(-1, 1, 1, 1)))
    try:
        expected = model(x)
    finally:
        h.remove()
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert torch.allclose(soft.sum(1), torch.ones(6))


def test_model_init_draws_only_the_head_of_a_pretrained_backbone(torch_home):
    """model.init never overwrites pretrained weights: the backbone keeps the file's, the new
    head is drawn by the scheme (Xavier-uniform bounds, zero bias)."""
    from imbal.config import load_config
    from imbal.training.setup import build_setup

    sd = _saved_resnet18(_imagenet_file(torch_home))
    cfg = load_config({"data": {"source": "digits", "subset": {"per_class": 5}},
                       "model": {"backbone": "torchvision/resnet18", "pretrained": "imagenet",
                                 "image_size": 32, "init": "xavier_uniform"},
                       "train": {"device": "cpu", "channels_last": False}})
    model = build_setup(cfg, quiet=True).trainer.model
    got = model.features.net.state_dict()  # grey digits: conv1 is the sum of the colour kernels
    assert torch.allclose(got.pop("conv1.weight"), sd["conv1.weight"].sum(1, keepdim=True))
    assert all(torch.equal(got[k], sd[k]) for k in got)
    head = model.head
    bound = (6 / (head.in_features + head.out_features)) ** 0.5
    assert head.weight.abs().max() <= bound and torch.count_nonzero(head.bias) == 0
