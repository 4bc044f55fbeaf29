"""A loss remedy as a plugin: Poly-1 (Leng et al., "PolyLoss", ICLR 2022), CE + epsilon (1 - p_t).

    imports: [poly_loss.py]                    # in a config, relative to it (poly_loss.yaml)
    remedy: [{name: poly, epsilon: 1.0}]

epsilon > 0 keeps pushing on examples already classified right (p_t near 1), epsilon < 0
(down to -1) pushes less; epsilon 0 is plain cross-entropy. The remedy supplies a whole loss
of its own (ctx.loss), so it claims every slot of the composed loss (OWN_LOSS): it combines
with oversample / copy / undersample and is refused next to focal, class_weights and the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from imbal import OWN_LOSS, Params, PlanContext, Remedy, remedy


class PolyLoss(nn.Module):
    """mean_i [-log p_t + epsilon (1 - p_t)] over float32 logits N×C and int64 targets N."""

    def __init__(self, epsilon: float):
        super().__init__()
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp_t = F.log_softmax(logits.float(), dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        return (-logp_t + self.epsilon * (1.0 - logp_t.exp())).mean()


class PolyParams(Params):
    epsilon: float = Field(1.0, ge=-1.0, description="a number >= -1")


@remedy("poly")
class Poly(Remedy):
    Params = PolyParams
    soft_targets_ok = False  # p_t needs one class per image

    def slots(self) -> set[str]:
        return set(OWN_LOSS)

    def apply(self, ctx: PlanContext) -> str:
        ctx.loss = PolyLoss(self.p.epsilon)
        return f"poly: cross-entropy + {self.p.epsilon:g} (1 - p_t)"
