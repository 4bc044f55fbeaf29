"""Two-stage classifier tricks that act on the classifier head: learnable weight scaling and
the MaxNorm constraint.

- LWS (Kang et al. 2020, "Decoupling representation and classifier"): a stage with
  `trains: scales` learns one scale f_c per class on the frozen classifier's logits,
  z_c' = f_c z_c (f initialised to 1), backbone and classifier weights frozen. A run with such a
  stage gets a ScaledHead from the start (the scales stay 1 and untrained in the other stages),
  so every checkpoint of the run has the same parameters.
- MaxNorm (Alshammari et al. 2022, "Long-tailed recognition via weight balancing", stage two):
  with a stage's `max_norm: t`, after every optimizer step each classifier row w_c with
  ||w_c|| > t is scaled back to norm t (projected gradient descent onto the norm ball;
  torch.renorm), rows already inside are kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imbal.errors import UserError


class ScaledHead(nn.Module):
    """A classifier head followed by a learnable per-class scale: logits inner(x) * scale."""

    def __init__(self, inner: nn.Module, num_classes: int):
        super().__init__()
        self.inner = inner
        self.scale = nn.Parameter(torch.ones(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def add_lws_scales(model: nn.Module, stages, num_classes: int) -> None:
    """Wrap the head in a ScaledHead when a stage trains scales (module docstring)."""
    if any(s.trains == "scales" for s in stages):
        model.head = ScaledHead(model.head, num_classes).to(next(model.parameters()).device)


def stage_parameters(model: nn.Module, trains: str) -> list[nn.Parameter]:
    """The parameters a supervised stage's optimizer updates, with requires_grad set to match:
    scales -> only the LWS scales; otherwise everything but them (the trainer freezes the
    backbone itself for trains: head)."""
    scale = getattr(model.head, "scale", None)
    if trains == "scales":
        for p in model.head.inner.parameters():
            p.requires_grad_(False)
        scale.requires_grad_(True)
        return [scale]
    for p in model.head.parameters():
        p.requires_grad_(True)
    if scale is None:
        return list(model.parameters())
    scale.requires_grad_(False)
    return [p for p in model.parameters() if p is not scale]


def classifier_weight(head: nn.Module) -> torch.Tensor:
    inner = getattr(head, "inner", head)
    weight = getattr(inner, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise UserError(f"max_norm needs a classifier head with a 2-D weight; this run's is "
                        f"{type(inner).__name__}")
    return weight


def max_norm_hook(head: nn.Module, threshold: float) -> Callable[[], None]:
    """The per-step projection: rows of the classifier weight to norm <= threshold."""
    weight = classifier_weight(head)

    @torch.no_grad()
    def project() -> None:
        weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=threshold))

    return project
