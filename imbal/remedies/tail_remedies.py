"""Long-tail loss remedies from the "bag of tricks" families: class-dependent temperatures
(CDT) and label-aware smoothing (MiSLAS). Each sets one slot of the composed loss (losses.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from imbal.remedies.base import Params, PlanContext, Real, Remedy, remedy


def cdt_temperatures(counts: torch.Tensor, gamma: float) -> torch.Tensor:
    """CDT (Ye et al. 2020, eq. 6): a_j = (N_max / N_j)^gamma; the largest class gets 1, rarer
    classes larger temperatures. Counts clamped to >= 1 (an empty class never is a target)."""
    n = counts.to(torch.float64).clamp_min(1.0)
    return (n.max() / n).pow(gamma).to(torch.float32)


SHAPES = ("linear", "concave", "convex")


def label_aware_eps(counts: torch.Tensor, head: float, tail: float, shape: str) -> torch.Tensor:
    """MiSLAS (Zhong et al. 2021, eq. 5 and their code): with x_j = (N_j - N_min) / (N_max -
    N_min) in [0, 1] (0: the rarest class, 1: the most frequent),
        linear:  eps_j = tail + (head - tail) x_j
        concave: eps_j = tail + (head - tail) sin(pi x_j / 2)
        convex:  eps_j = head + (head - tail) sin(3 pi / 2 + pi x_j / 2)
    so eps runs from `tail` (rarest) to `head` (most frequent). All counts equal: eps = head."""
    n = counts.to(torch.float64)
    span = float(n.max() - n.min())
    if span == 0:
        return torch.full_like(n, head, dtype=torch.float32)
    x = (n - n.min()) / span
    if shape == "linear":
        eps = tail + (head - tail) * x
    elif shape == "concave":
        eps = tail + (head - tail) * torch.sin(x * math.pi / 2)
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + x * math.pi / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return eps.to(torch.float32)


def _fmt(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values.tolist()) + "]"


class CDTParams(Params):
    gamma: Real = Field(0.1, ge=0, description="a number >= 0")


@remedy("cdt")
class CDT(Remedy):
    """Class-dependent temperatures (Ye et al. 2020): training logits z_j / a_j with
    a_j = (N_max / N_j)^gamma; plain logits at evaluation. Takes the logits slot."""

    Params = CDTParams

    def slots(self) -> set[str]:
        return {"logits"}

    def apply(self, ctx: PlanContext) -> str:
        a = cdt_temperatures(ctx.counts_tensor(), self.p.gamma).to(ctx.device)
        ctx.loss_kwargs["temperatures"] = a
        return f"cdt: training logits / a_j, a_j = (N_max/N_j)^{self.p.gamma} = {_fmt(a)}"


class LabelAwareParams(Params):
    head: Real = Field(0.3, ge=0, lt=1, description="a number in [0, 1)")  # MiSLAS, CIFAR-10-LT
    tail: Real = Field(0.0, ge=0, lt=1, description="a number in [0, 1)")
    shape: Literal["linear", "concave", "convex"] = Field(
        "concave", description="'linear', 'concave' or 'convex'")

    @model_validator(mode="after")
    def _check(self) -> LabelAwareParams:
        if self.tail > self.head:
            raise ValueError(f"tail ({self.tail}) must not exceed head ({self.head}): the most "
                             f"frequent classes are smoothed most")
        return self


@remedy("label_aware_smoothing")
class LabelAwareSmoothing(Remedy):
    """MiSLAS label-aware smoothing: a sample of class y is trained on the target
    (1 - eps_y) one-hot + eps_y uniform, eps_y from `head` (most frequent class) to `tail`
    (rarest) by label_aware_eps. Takes the targets slot (not with label_smoothing)."""

    Params = LabelAwareParams

    def slots(self) -> set[str]:
        return {"targets"}

    def apply(self, ctx: PlanContext) -> str:
        p = self.p
        eps = label_aware_eps(ctx.counts_tensor(), p.head, p.tail, p.shape).to(ctx.device)
        ctx.loss_kwargs["class_smooth"] = eps
        return (f"label_aware_smoothing: {p.shape}, head {p.head} -> tail {p.tail}, "
                f"eps={_fmt(eps)}")
