"""ResNets written out (not wrapped from torchvision) so the stem can follow the image size.

- resnet32: He et al.'s CIFAR ResNet (3×3 conv 16, three stages of 5 BasicBlocks with 16/32/64
  channels, strides 1/2/2, global average pool, 64-d features), the long-tail standard.
- resnet18/34/50, resnext18/50: ImageNet layouts (64/128/256/512 planes, strides 1/2/2/2).
  Stem: CIFAR style (3×3 conv stride 1, no max-pool) when the image is at most 64 pixels,
  ImageNet style (7×7 conv stride 2 + 3×3 max-pool stride 2) otherwise. With the ImageNet stem
  the parameter counts equal torchvision's (the tests check it).

Params of every ResNet here: norm = batch | group, dropout (on the pooled features, i.e.
directly before the head; identity at evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imbal.models.base import MODELS, MinSize, check_probability, choose

MIN_SIZE = 32  # smaller inputs are bilinearly upsampled to 32 on the device
CIFAR_STEM_MAX = 64  # image_size <= 64: 3×3 stride-1 stem, no max-pool

NormFn = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.Module:
    """GroupNorm with 32 groups, fewer when channels are few: groups halve until each holds
    at least 2 channels (16 channels -> 8 groups), so no group degenerates to InstanceNorm."""
    groups = 32
    while groups > 1 and (channels % groups or channels // groups < 2):
        groups //= 2
    return nn.GroupNorm(groups, channels)


NORMS: dict[str, NormFn] = {"batch": nn.BatchNorm2d, "group": group_norm}


def conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def projection(c_in: int, c_out: int, stride: int, norm: NormFn) -> nn.Module:
    """Shortcut of a block that changes shape: 1×1 conv + norm (option B), else identity.

    resnet32 uses this projection too rather than option A's zero-padding; it adds 2,752
    parameters to the 0.46M model (0.6%).
    """
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        norm: NormFn,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(c_in, planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class GroupedBasicBlock(nn.Module):
    """ResNeXt-18's block: a BasicBlock whose two 3×3 convs are grouped.

    Inner width = planes/64 * groups * base_width = 2×planes for 32×4 (128 at stage 1, the same
    32 groups × 4 channels as ResNeXt-50's first stage); output = planes, as ResNet-18. Because
    both convs are grouped, channel group g would otherwise only ever feed group g until the next
    stage's projection; a channel shuffle between the convs (ShuffleNet) lets groups mix.
    """

    expansion = 1

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        norm: NormFn,
        groups: int = 32,
        base_width: int = 4,
    ):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.groups = groups
        self.conv1 = conv3x3(c_in, width, stride, groups=groups)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, planes, groups=groups)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(c_in, planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        # channel shuffle: (groups, per-group) -> (per-group, groups)
        out = out.unflatten(1, (self.groups, -1)).transpose(1, 2).flatten(1, 2)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce - 3×3 (stride here, as torchvision's v1.5; grouped for ResNeXt) - 1×1 expand."""

    expansion = 4

    def __init__(
        self,
        c_in: int,
        planes: int,
        stride: int,
        norm: NormFn,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups=groups)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(c_in, out, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def make_stem(in_channels: int, channels: int, cifar: bool, norm: NormFn) -> nn.Sequential:
    if cifar:
        return nn.Sequential(conv3x3(in_channels, channels), norm(channels), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False),
        norm(channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class ResNetFeatures(nn.Module):
    """resize - stem - stages - global average pool - flatten - dropout -> N×feature_dim."""

    # manifold mixup (Verma et al.: the input or after the first or second residual stage)
    mix_points = ("stages.0", "stages.1")

    def __init__(
        self,
        *,
        in_channels: int,
        block: type[nn.Module],
        layers: list[int],
        planes: list[int],
        cifar_stem: bool,
        norm: NormFn,
        dropout: float,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        self.resize = MinSize(MIN_SIZE)
        self.stem = make_stem(in_channels, planes[0], cifar_stem, norm)
        c_in = planes[0]
        stages = []
        for i, (n_blocks, p) in enumerate(zip(layers, planes, strict=True)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(c_in, p, stride, norm, groups=groups, base_width=base_width))
                c_in = p * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = c_in
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(self.resize(x)))
        return self.dropout(torch.flatten(self.pool(x), 1))


def _register(name: str, *, cifar_only: bool = False, **arch) -> None:
    """Register a ResNet variant; `arch` holds block, layers, planes, groups, base_width."""

    def build(
        *, in_channels: int, image_size: int, norm: str = "batch", dropout: float = 0.0
    ) -> nn.Module:
        # The stem is chosen from the size the convs see (small inputs are upsampled first).
        cifar = cifar_only or max(image_size, MIN_SIZE) <= CIFAR_STEM_MAX
        return ResNetFeatures(
            in_channels=in_channels,
            cifar_stem=cifar,
            norm=choose("norm", norm, NORMS),
            dropout=check_probability("dropout", dropout),
            **arch,
        )

    build.__name__ = name
    MODELS.register(name)(build)


_IMAGENET_PLANES = [64, 128, 256, 512]

# resnet32 is a CIFAR network at any image size (its published numbers use the 3×3 stem).
_register("resnet32", cifar_only=True, block=BasicBlock, layers=[5, 5, 5], planes=[16, 32, 64])
_register("resnet18", block=BasicBlock, layers=[2, 2, 2, 2], planes=_IMAGENET_PLANES)
_register("resnet34", block=BasicBlock, layers=[3, 4, 6, 3], planes=_IMAGENET_PLANES)
_register("resnet50", block=Bottleneck, layers=[3, 4, 6, 3], planes=_IMAGENET_PLANES)
_register(
    "resnext18",
    block=GroupedBasicBlock,
    layers=[2, 2, 2, 2],
    planes=_IMAGENET_PLANES,
    groups=32,
    base_width=4,
)
_register(
    "resnext50",
    block=Bottleneck,
    layers=[3, 4, 6, 3],
    planes=_IMAGENET_PLANES,
    groups=32,
    base_width=4,
)
