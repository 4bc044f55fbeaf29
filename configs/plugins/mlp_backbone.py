"""A backbone as a plugin: a multilayer perceptron on the flattened image.

    imports: [mlp_backbone.py]
    model: {backbone: mlp, params: {hidden: 128, depth: 2}}

A backbone builder takes keyword-only in_channels and image_size plus its own params (with
defaults: they are what model.params may set, unknown ones are refused) and returns a module
mapping N×C×H×W to N×feature_dim, with an int `.feature_dim`; imbal adds the head.
"""

from __future__ import annotations

import torch
from torch import nn

from imbal import MODELS, UserError


class MLPFeatures(nn.Module):
    def __init__(self, in_features: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("mlp")
def mlp(*, in_channels: int, image_size: int, hidden: int = 128, depth: int = 2,
        dropout: float = 0.0) -> nn.Module:
    if not isinstance(hidden, int) or hidden < 1 or not isinstance(depth, int) or depth < 0:
        raise UserError(f"backbone mlp: hidden must be >= 1 and depth >= 0, got {hidden}, {depth}")
    return MLPFeatures(in_channels * image_size * image_size, hidden, depth, dropout)
