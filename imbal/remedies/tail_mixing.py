"""Manifold mixup and remix: batch transforms for the long tail (see batch.py's contract).

Manifold mixup (Verma et al. 2019): per batch, a layer k is drawn uniformly from `layers`
(0: the input; k >= 1: the backbone's k-th mix point, imbal.models.base.mix_modules), and the
hidden representations are mixed there, h_i' = lambda_i h_i + (1 - lambda_i) h_partner(i), with
the targets mixed by the same lambda_i (lambda_i ~ Beta(alpha, alpha) per sample, as mixup.py).
k >= 1 arms a one-shot forward hook on that module: it fires in the step's forward (the next
forward of the classifier) and removes itself, so evaluation is never mixed. Draw order from
the run's generator: lambda, partner, mixed (as mixup), then the layer.

Remix (Chou et al. 2020, eq. 4): images mixed as mixup, x' = lambda x_i + (1 - lambda) x_j,
but the label weight is
    lambda_y = 0        if n_i / n_j >= kappa and lambda < tau
    lambda_y = 1        if n_i / n_j <= 1 / kappa and 1 - lambda < tau
    lambda_y = lambda   otherwise
(n the training counts of the two images' classes), y' = lambda_y y_i + (1 - lambda_y) y_j:
the label leans to the minority class when the counts differ by kappa or more.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, StrictInt

from imbal.errors import UserError
from imbal.remedies.base import Real, parse_params
from imbal.remedies.batch import BATCH_TRANSFORMS
from imbal.remedies.mixing import Mixing, MixParams, mix_targets, mixup_images


class ManifoldParams(MixParams):
    alpha: Real = Field(2.0, gt=0, description="a number > 0")  # Verma et al.'s CIFAR setting
    layers: list[StrictInt] | None = Field(
        None, description="null (the input and every mix point) or a list of layer numbers "
        "(0: the input, k: the backbone's k-th mix point)")


def mix_hook(lam: torch.Tensor, partner: torch.Tensor):
    """A one-shot forward hook: the module's output mixed with its partner's; then removed."""
    handle = None

    def hook(module, args, out):
        handle.remove()
        w = lam.to(out.dtype).view(-1, *([1] * (out.dim() - 1)))
        return out * w + out[partner] * (1.0 - w)

    def arm(module: torch.nn.Module) -> None:
        nonlocal handle
        handle = module.register_forward_hook(hook)

    return arm


@BATCH_TRANSFORMS.register("manifold_mixup")
class ManifoldMixup(Mixing):
    name = "manifold_mixup"

    def __init__(self, params: dict[str, Any], *, num_classes: int, class_counts: list[int]):
        self.p: Any = parse_params(self.name, ManifoldParams, params, kind="batch transform")
        self.num_classes = num_classes
        self.points: list[torch.nn.Module] | None = None
        self.layers: list[int] = []

    def bind(self, model: torch.nn.Module) -> None:
        from imbal.models.base import mix_modules  # models import nothing from remedies

        self.points = mix_modules(model.features, f"batch transform '{self.name}'")
        valid = list(range(len(self.points) + 1))
        layers = valid if self.p.layers is None else list(self.p.layers)
        bad = [k for k in layers if k not in valid]
        if bad or not layers:
            raise UserError(f"batch transform '{self.name}': layers {self.p.layers} must be a "
                            f"non-empty list from {valid} (0: the input, then the backbone's "
                            f"{len(self.points)} mix points)")
        self.layers = layers

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.points is None:
            raise RuntimeError("manifold_mixup used before bind(model)")
        if self.p.p == 0:
            return x, y
        lam, partner = self.draw(x.shape[0], generator, x.device)
        pick = torch.randint(len(self.layers), (1,), generator=generator, device=x.device)
        k = self.layers[int(pick)]  # one small read per step: which module to arm
        if k == 0:
            x = mixup_images(x, lam, partner)
        else:
            mix_hook(lam, partner)(self.points[k - 1])
        return x, mix_targets(y, lam, partner, self.num_classes)

    def describe(self) -> str:
        return f"{self.name}(alpha={self.p.alpha}, p={self.p.p}, layers={self.layers})"


class RemixParams(MixParams):
    kappa: Real = Field(3.0, ge=1, description="a number >= 1")
    tau: Real = Field(0.5, ge=0, le=1, description="a number in [0, 1]")


def remix_label_weights(lam: torch.Tensor, n_i: torch.Tensor, n_j: torch.Tensor,
                        kappa: float, tau: float) -> torch.Tensor:
    """lambda_y of remix (module docstring), elementwise."""
    ratio = n_i / n_j
    out = torch.where((ratio >= kappa) & (lam < tau), torch.zeros_like(lam), lam)
    return torch.where((ratio <= 1.0 / kappa) & (1.0 - lam < tau), torch.ones_like(lam), out)


@BATCH_TRANSFORMS.register("remix")
class Remix(Mixing):
    name = "remix"
    hard_targets_only = True

    def __init__(self, params: dict[str, Any], *, num_classes: int, class_counts: list[int]):
        self.p: Any = parse_params(self.name, RemixParams, params, kind="batch transform")
        self.num_classes = num_classes
        self.counts = torch.tensor(class_counts, dtype=torch.float32).clamp_min(1.0)

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if y.dim() != 1:
            raise ValueError("remix needs int64 class ids (list it before soft-target transforms)")
        if self.p.p == 0:
            return x, y
        lam, partner = self.draw(x.shape[0], generator, x.device)
        counts = self.counts.to(x.device)
        lam_y = remix_label_weights(lam, counts[y], counts[y[partner]], self.p.kappa, self.p.tau)
        return mixup_images(x, lam, partner), mix_targets(y, lam_y, partner, self.num_classes)

    def describe(self) -> str:
        return f"{self.name}(alpha={self.p.alpha}, p={self.p.p}, kappa={self.p.kappa}, " \
            f"tau={self.p.tau})"
