"""What the model-zoo backbones share (torchvision/<name>, timm/<name>): the features wrapper,
weight files, and the check of `model.pretrained` before any work.

A zoo builder is a MODELS builder that also takes `pretrained` (None, "imagenet" or a path)
and `resize_to` (model.image_size), and carries `builder.locate_weights(pretrained) -> Path`,
which refuses, in one line, weights that are not on this machine. Its features module is a
ZooFeatures: `.input_stats` is the (mean, std) the weights were trained with (the run then
normalises with those instead of the training split's), None without pretrained weights.
imbal never downloads weights: the refusal names the file and the folder it belongs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imbal.errors import UserError
from imbal.models.base import MODELS, check_probability

# Arguments build_model passes to a builder only when the config sets them.
ZOO_ARGS = {"pretrained": "model.pretrained", "resize_to": "model.image_size"}
ZOO_HINT = "the torchvision/<name> and timm/<name> backbones take it"


class Resize(nn.Module):
    """Bilinearly resize every batch to size×size on the device (the weights' input size)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


# Manifold mixup's mix points in the zoo's families, shallow to deep: the outputs of the first two
# stages (torchvision and timm ResNets/ResNeXts, torchvision RegNet and ShuffleNet, timm's
# ConvNeXt/RegNet/EfficientNet-style `stages`/`blocks`). A network with none of them lists no mix
# points (manifold_mixup is then refused for it in one line).
ZOO_MIX_POINTS = (("layer1", "layer2"), ("trunk_output.block1", "trunk_output.block2"),
                  ("stage2", "stage3"), ("stages.0", "stages.1"), ("blocks.0", "blocks.1"))


class ZooFeatures(nn.Module):
    """resize (optional) - a zoo network without its classifier - dropout -> N×feature_dim."""

    def __init__(self, net: nn.Module, feature_dim: int, *, resize_to: int | None,
                 input_stats: tuple[list[float], list[float]] | None, dropout: float):
        super().__init__()
        self.resize = Resize(resize_to) if resize_to else nn.Identity()
        self.net = net
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = feature_dim
        self.input_stats = input_stats
        names = dict(net.named_modules())
        self.mix_points = next((tuple(f"net.{n}" for n in pair) for pair in ZOO_MIX_POINTS
                                if all(n in names for n in pair)), ())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.net(self.resize(x)), 1))


def make_features(net: nn.Module, feature_dim: int, *, resize_to: int | None,
                  input_stats: Any, in_channels: int, dropout: float) -> ZooFeatures:
    """ZooFeatures with the weights' statistics fitted to the data's channel count (a grey image
    takes the mean of the three colour statistics, as timm's conv adaptation sums them)."""
    check_probability("dropout", dropout)
    if input_stats is not None:
        mean, std = (list(map(float, s)) for s in input_stats)
        if len(mean) != in_channels:
            mean, std = [sum(mean) / len(mean)] * in_channels, [sum(std) / len(std)] * in_channels
        input_stats = (mean, std)
    return ZooFeatures(net, feature_dim, resize_to=resize_to, input_stats=input_stats,
                       dropout=dropout)


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub keeps the file of `url`: TORCH_HOME/hub/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1].split("?")[0]


def user_file(pretrained: str) -> Path:
    """model.pretrained given as a path: it must be a file."""
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained: no file {path} (give imagenet or a state-dict file)")
    return path


def load_state_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a file, loaded as data (weights_only); {"state_dict": ...} and
    {"model": ...} wrappers are unwrapped."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or not plain data
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot load {what} weights {path}: {first[:200]}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return sd


def check_model(model_cfg: dict) -> None:
    """The backbone name, and the zoo options it is given, before any data is read: an
    unknown name, model.pretrained on a backbone without weights, weights not on this machine."""
    builder = MODELS.get(model_cfg["backbone"])
    for key, where in ZOO_ARGS.items():
        value = model_cfg.get(where.split(".")[1])
        if value is not None and not getattr(builder, "takes_zoo_args", False):
            raise UserError(f"backbone '{model_cfg['backbone']}' takes no {where} ({ZOO_HINT}, "
                            f"e.g. torchvision/resnet18; model.init_from starts from an imbal run)")
        if key == "pretrained" and value is not None:
            builder.locate_weights(value)
