"""Mixup and CutMix: batch transforms that blend pairs of training images and their targets.

Both draw, per sample i and from the run's generator only (in this order):
    lambda_i ~ Beta(alpha, alpha)        (sample_beta below)
    partner  = a random permutation of the batch (torch.randperm)
    mixed_i  ~ Bernoulli(p)              (lambda_i = 1 for an unmixed sample)
Mixup (Zhang et al. 2018):  x_i' = lambda_i x_i + (1 - lambda_i) x_partner(i).
CutMix (Yun et al. 2019):   a box of area fraction 1 - lambda_i (sides sqrt(1 - lambda_i) H and
    sqrt(1 - lambda_i) W, rounded to pixels), centred on a uniformly drawn pixel and clipped to
    the image, is pasted from the partner; its label weight is the area actually pasted after
    clipping, lambda_i' = 1 - box area / (H W).
Targets: q_i' = lambda_i q_i + (1 - lambda_i) q_partner(i), q the one-hot rows of int64 targets
or the incoming soft rows; an unmixed sample keeps its (one-hot) row exactly. With p = 0 the
transform returns its inputs untouched. Vectorised over the batch; nothing reads back to the
host.

Beta sampling. torch.distributions' Beta/Gamma take no generator, so Gamma is drawn here by
Marsaglia & Tsang's method (ACM TOMS 26(3), 2000) from the generator's normals and uniforms:
Gamma(a) = Gamma(a + 1) U^(1/a) (their section 6), so the rejection step always runs at shape
a + 1 >= 1, where it accepts over 95% of candidates. Each sample gets TRIES candidates at once
and keeps the first accepted one; all TRIES rejected has probability below 0.05^16 < 1e-20 (then
the draw is d, the rejection step's centre). Work is in log space (U^(1/a) underflows float32 for small
a) and Beta(a, a) = G1 / (G1 + G2) = sigmoid(log G1 - log G2). float32 throughout: any device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from imbal.remedies.base import Params, Real, parse_params
from imbal.remedies.batch import BATCH_TRANSFORMS, BatchTransform

TRIES = 16  # rejection candidates per Gamma draw (see the module docstring)


def sample_log_gamma(shape: float, n: int, generator: torch.Generator,
                     device: torch.device | str) -> torch.Tensor:
    """log of n independent Gamma(shape, 1) draws (float32), from `generator` only."""
    d = shape + 1.0 - 1.0 / 3.0  # Marsaglia-Tsang at shape + 1
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(n, TRIES, generator=generator, device=device)
    u = torch.rand(n, TRIES, generator=generator, device=device)
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(1e-30))
    ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    first = ok.to(torch.int32).argmax(dim=1, keepdim=True)  # index of the first accepted
    log_v = torch.where(ok.any(dim=1), log_v.gather(1, first).squeeze(1), 0.0)
    boost = 1.0 - torch.rand(n, generator=generator, device=device)  # in (0, 1]: log finite
    return math.log(d) + log_v + torch.log(boost) / shape


def sample_beta(alpha: float, n: int, generator: torch.Generator,
                device: torch.device | str) -> torch.Tensor:
    """n independent Beta(alpha, alpha) draws (float32) from `generator` only."""
    g = sample_log_gamma(alpha, 2 * n, generator, device)
    return torch.sigmoid(g[:n] - g[n:])


def soft_rows(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 N×C target rows: one-hot of int64 ids, or the soft rows as given."""
    if y.dim() == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"soft targets have {y.shape[1]} columns, expected {num_classes}")
        return y.float()
    # scatter_ rather than F.one_hot, which checks the labels' range on the host (a sync)
    rows = torch.zeros(y.shape[0], num_classes, device=y.device)
    return rows.scatter_(1, y.unsqueeze(1), 1.0)


def mix_targets(y: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor,
                num_classes: int) -> torch.Tensor:
    """q_i' = lam_i q_i + (1 - lam_i) q_partner(i); lam_i = 1 keeps q_i exactly."""
    q = soft_rows(y, num_classes)
    w = lam.unsqueeze(1)
    return q * w + q[partner] * (1.0 - w)


def mixup_images(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """x_i' = lam_i x_i + (1 - lam_i) x_partner(i) (lam_i = 1 keeps x_i exactly)."""
    w = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return x * w + x[partner] * (1.0 - w)


def cutmix_images(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of area fraction 1 - lam_i from the partner (module docstring).

    Returns the images and the label weights 1 - pasted area / (H W), per sample.
    """
    n, (h, w) = x.shape[0], x.shape[-2:]
    side = torch.sqrt(1.0 - lam)
    box_h, box_w = (side * h).round().long(), (side * w).round().long()
    centre = torch.rand(2, n, generator=generator, device=x.device)
    cy = (centre[0] * h).long().clamp_max(h - 1)
    cx = (centre[1] * w).long().clamp_max(w - 1)
    top, left = cy - box_h // 2, cx - box_w // 2
    y1, y2 = top.clamp(0, h), (top + box_h).clamp(0, h)
    x1, x2 = left.clamp(0, w), (left + box_w).clamp(0, w)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= y1.unsqueeze(1)) & (rows < y2.unsqueeze(1))  # N×H
    in_cols = (cols >= x1.unsqueeze(1)) & (cols < x2.unsqueeze(1))  # N×W
    inside = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)
    pasted = ((y2 - y1) * (x2 - x1)).float() / (h * w)
    return torch.where(inside, x[partner], x), 1.0 - pasted


class MixParams(Params):
    alpha: Real = Field(1.0, gt=0, description="a number > 0")  # Beta(alpha, alpha)
    p: Real = Field(1.0, ge=0, le=1, description="a probability in [0, 1]")


class Mixing(BatchTransform):
    """What mixup and cutmix share: params, the per-sample draws, the target mixing."""

    soft_targets = True

    def __init__(self, params: dict[str, Any], *, num_classes: int, class_counts: list[int]):
        self.p: Any = parse_params(self.name, MixParams, params, kind="batch transform")
        self.num_classes = num_classes

    def draw(self, n: int, generator: torch.Generator,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda, partner): lambda_i ~ Beta(alpha, alpha), or 1 where not mixed."""
        lam = sample_beta(self.p.alpha, n, generator, device)
        partner = torch.randperm(n, generator=generator, device=device)
        mixed = torch.rand(n, generator=generator, device=device) < self.p.p
        return torch.where(mixed, lam, 1.0), partner

    def mix(self, x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.p.p == 0:
            return x, y
        lam, partner = self.draw(x.shape[0], generator, x.device)
        x, lam = self.mix(x, lam, partner, generator)
        return x, mix_targets(y, lam, partner, self.num_classes)

    def describe(self) -> str:
        return f"{self.name}(alpha={self.p.alpha}, p={self.p.p})"


@BATCH_TRANSFORMS.register("mixup")
class Mixup(Mixing):
    name = "mixup"

    def mix(self, x, lam, partner, generator):
        return mixup_images(x, lam, partner), lam


@BATCH_TRANSFORMS.register("cutmix")
class CutMix(Mixing):
    name = "cutmix"

    def mix(self, x, lam, partner, generator):
        return cutmix_images(x, lam, partner, generator)
