"""Weight initialisation schemes (`model.init`), a registry applied right after a model is built.

The contract for a scheme, ``@INITS.register("name")``::

    fn(weight: torch.Tensor) -> None      # fills one layer's weight (dim >= 2) in place

`apply_init(module, name)` calls it on the weight of every layer that has one with two or more
dimensions (convolutions, linear layers, the normed head) and sets their biases to zero;
BatchNorm keeps its ones and zeros. `default` leaves the model as PyTorch's layers built it
(and keeps their biases). Draws use torch's global generator, seeded from seeds.train before
the model is built, as the layers' own initialisation does. Weights loaded afterwards
(model.init_from) replace what a scheme drew; the head keeps it.
"""

from __future__ import annotations

import torch
from torch import nn

from imbal.registry import Registry

INITS = Registry("init")


@INITS.register("default")
def _default(weight: torch.Tensor) -> None:
    """Not called: `default` keeps what the layers drew when built (PyTorch's own init)."""


@INITS.register("xavier_uniform")
def _xavier_uniform(weight: torch.Tensor) -> None:
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010; PaddlePaddle's default)."""
    nn.init.xavier_uniform_(weight)


@INITS.register("xavier_normal")
def _xavier_normal(weight: torch.Tensor) -> None:
    """N(0, 2 / (fan_in + fan_out))."""
    nn.init.xavier_normal_(weight)


@INITS.register("kaiming_normal")
def _kaiming_normal(weight: torch.Tensor) -> None:
    """N(0, 2 / fan_in) (He et al. 2015, ReLU gain, fan_in mode)."""
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def apply_init(module: nn.Module, name: str) -> None:
    """Initialise every layer of `module` with scheme `name` (biases zero); `default`: nothing."""
    scheme = INITS.get(name)
    if name == "default":
        return
    with torch.no_grad():
        for layer in module.modules():
            weight = getattr(layer, "weight", None)
            if not isinstance(weight, nn.Parameter) or weight.dim() < 2:
                continue  # BatchNorm/LayerNorm (1-d weights) keep theirs
            scheme(weight)
            bias = getattr(layer, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()


def check_init(name: str) -> None:
    """Refuse an unknown scheme (one line, with the valid names)."""
    INITS.get(name)
