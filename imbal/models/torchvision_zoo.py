"""`torchvision/<name>`: torchvision's classification models with an `fc` head (ResNet-18/34/50/
101/152, ResNeXt-50/101, Wide ResNet, RegNet, ShuffleNet), built with torchvision.models.get_model.

The fc layer is replaced by identity (the features end at the pooled vector) and imbal's head
takes num_classes. Params: dropout (before the head). model.pretrained:
- imagenet: the model's DEFAULT weights enum (e.g. ResNet18_Weights.IMAGENET1K_V1), read from
  torch.hub's cache, TORCH_HOME/hub/checkpoints/<file> (never downloaded here);
- a path: a state dict of the same torchvision architecture (its fc entries are dropped).
With weights, inputs are normalised with the weights' statistics and resized on the device to
their crop size (224), or to model.image_size. A grey image (1 channel) gets a first conv whose
pretrained kernel is the sum over the three colour channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from imbal.errors import UserError
from imbal.models.base import MODELS
from imbal.models.zoo import hub_checkpoint, load_state_file, make_features, user_file
from imbal.registry import did_you_mean

PREFIX = "torchvision/"


def _models():
    from torchvision import models

    return models


def _default_weights(name: str) -> Any:
    try:
        weights = _models().get_model_weights(name)
    except (ValueError, KeyError):
        return None
    return getattr(weights, "DEFAULT", None)


def locate_weights(name: str, pretrained: str) -> Path:
    """The file the weights are read from; a one-line refusal when it is not on this machine."""
    if pretrained != "imagenet":
        return user_file(pretrained)
    weights = _default_weights(name)
    if weights is None:
        raise UserError(f"torchvision has no ImageNet weights for {name}; give model.pretrained "
                        f"a state-dict file")
    path = hub_checkpoint(weights.url)
    if not path.is_file():
        raise UserError(f"ImageNet weights for {PREFIX}{name} are not on this machine: put "
                        f"{path.name} (from {weights.url}) in {path.parent} (TORCH_HOME/hub/"
                        f"checkpoints), or set model.pretrained to a state-dict file")
    return path


def _first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))


def _adapt_channels(net: nn.Module, in_channels: int, sd: dict | None) -> None:
    """Give the first conv `in_channels` inputs; a 1-channel kernel is the colour kernels' sum."""
    full, conv = _first_conv(net)
    if conv.in_channels == in_channels:
        return
    if sd is not None and in_channels != 1:
        raise UserError(f"pretrained torchvision weights take 3-channel or grey images, "
                        f"not {in_channels} channels")
    parent, _, attr = full.rpartition(".")
    setattr(net.get_submodule(parent), attr, nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, groups=conv.groups, bias=conv.bias is not None))
    if sd is not None and f"{full}.weight" in sd:
        sd[f"{full}.weight"] = sd[f"{full}.weight"].sum(dim=1, keepdim=True)


def _load(net: nn.Module, sd: dict, name: str, path: Path) -> None:
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path} does not fit {PREFIX}{name}: {first[:200]}") from None


def resolve(name: str):
    """The builder of torchvision/<name>; unknown names and models without an fc are refused."""
    models = _models()
    known = models.list_models(module=models)
    if name not in known:
        raise UserError(f"unknown torchvision model '{name}'{did_you_mean(name, known)}; "
                        f"{PREFIX}<name> takes one with an fc head, e.g. resnet18, resnext50_32x4d")
    with torch.device("meta"):  # the layout only: no memory, no init cost
        probe = models.get_model(name, weights=None)
    if not isinstance(getattr(probe, "fc", None), nn.Linear) or hasattr(probe, "aux_logits"):
        raise UserError(f"torchvision model '{name}' has no single fc head; {PREFIX}<name> "
                        f"takes ResNet, ResNeXt, Wide ResNet, RegNet or ShuffleNet models")

    def build(*, in_channels: int, image_size: int, pretrained: str | None = None,
              resize_to: int | None = None, dropout: float = 0.0) -> nn.Module:
        net = models.get_model(name, weights=None)
        feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        stats = None
        sd = None
        if pretrained is not None:
            path = locate_weights(name, pretrained)
            sd = load_state_file(path, f"{PREFIX}{name}")
            weights = _default_weights(name)
            if weights is not None:
                meta = weights.transforms()
                stats = (meta.mean, meta.std)
                resize_to = resize_to or meta.crop_size[0]
        _adapt_channels(net, in_channels, sd)
        if sd is not None:
            _load(net, sd, name, path)
        return make_features(net, feature_dim, resize_to=resize_to, input_stats=stats,
                             in_channels=in_channels, dropout=dropout)

    build.takes_zoo_args = True
    build.locate_weights = lambda pretrained: locate_weights(name, pretrained)
    return build


MODELS.register_family(PREFIX, resolve)
