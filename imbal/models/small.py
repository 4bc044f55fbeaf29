"""Small convnets of the reference studies: LeNet (S3) and the small CNN (S2).

Both compute their fc input size from the actual image size with a dummy forward at build
time, so inputs larger than the design size work (the extra spatial positions are flattened).
Both take `dropout` (as the ResNets): dropout on the 64-d features, directly before the head;
0 (the default) adds no module at all, so the network is exactly the one without the param.
"""

from __future__ import annotations

import torch
from torch import nn

from imbal.models.base import MODELS, MinSize, check_probability, choose, flat_size

ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def head_dropout(rate: float) -> list[nn.Module]:
    """[Dropout(rate)] for a rate in (0, 1), [] for 0 (no module: today's network exactly)."""
    rate = check_probability("dropout", rate)
    return [nn.Dropout(rate)] if rate > 0 else []


class LeNetFeatures(nn.Module):
    """S3's LeNet up to the 64-d layer: conv 6@5x5 - act - maxpool/2 - act - conv 16@5x5 -
    maxpool/2 - conv 120@4x4 - flatten - fc 120->64 - act.

    The layer order (an activation on both sides of the first pool, none after conv16 and
    conv120) is the study's, kept as written so its numbers can be reproduced.
    At 28×28 the conv120 output is 1×1 (120 values); at 32×32 it is 2×2 (480).
    """

    min_size = 28
    mix_points = ("convs.2", "convs")  # manifold mixup: after the first pool, the conv120 map

    def __init__(self, in_channels: int, image_size: int, activation: str, dropout: float = 0.0):
        super().__init__()
        act = choose("activation", activation, ACTIVATIONS)
        self.resize = MinSize(self.min_size)
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            act(),
            nn.MaxPool2d(2),
            act(),
            nn.Conv2d(6, 16, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 120, 4),
            nn.Flatten(),
        )
        flat = flat_size([self.resize, self.convs], in_channels, image_size)
        self.fc = nn.Sequential(nn.Linear(flat, 64), act(), *head_dropout(dropout))
        self.feature_dim = 64
        # Xavier init, as in the d2l LeNet this one follows: with PyTorch's default init the
        # sigmoid LeNet sits at chance for epochs under SGD lr 0.01 (measured on real MNIST).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(self.resize(x)))


class SmallCNNFeatures(nn.Module):
    """S2's network up to the 64-d layer: three (conv3x3 'same' - relu - maxpool/2) with
    32/64/64 channels, BatchNorm2d, flatten (1024 at 32×32), fc 1024->64 - relu.

    S2 transfers "the conv layers and the first fc" from the jigsaw pretext: exactly this module.
    A 16×16 jigsaw tile is upsampled to 32×32, so a tile encoder built at image_size 16 has the
    same weight shapes as the classifier built at 32.
    """

    min_size = 32
    mix_points = ("convs.2", "convs.5")  # manifold mixup: after the first and second blocks

    def __init__(self, in_channels: int, image_size: int, dropout: float = 0.0):
        super().__init__()
        self.resize = MinSize(self.min_size)
        layers: list[nn.Module] = []
        for c_in, c_out in ((in_channels, 32), (32, 64), (64, 64)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.convs = nn.Sequential(*layers, nn.BatchNorm2d(64), nn.Flatten())
        flat = flat_size([self.resize, self.convs], in_channels, image_size)
        self.fc = nn.Sequential(nn.Linear(flat, 64), nn.ReLU(inplace=True), *head_dropout(dropout))
        self.feature_dim = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(self.resize(x)))


@MODELS.register("lenet")
def lenet(*, in_channels: int, image_size: int, activation: str = "sigmoid",
          dropout: float = 0.0) -> nn.Module:
    return LeNetFeatures(in_channels, image_size, activation, dropout)


@MODELS.register("small_cnn")
def small_cnn(*, in_channels: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    return SmallCNNFeatures(in_channels, image_size, dropout)
