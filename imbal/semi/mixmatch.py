"""MixMatch (Berthelot et al., NeurIPS 2019), as the objective of a `semi: {name: mixmatch}` stage.

One step, with B labelled images x (one augmentation each, the data config's) and labels p,
and B_u unlabelled images each prepared K times (the data's augmentation drawn per sample and
per view: Batch.u holds K blocks of B_u, view-major):
    guess   q_b = Sharpen(1/K sum_k softmax(model(u_b,k)), T),  Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T)
            (no gradient through the guess; the model in training mode, as in the paper's code)
    W       = concat(x, u_1..u_K) with targets concat(p, q, ..., q)  (B + K B_u rows)
    MixUp   lambda ~ Beta(alpha, alpha), lambda' = max(lambda, 1 - lambda): one draw per step,
            as the authors' code; a random permutation pi of W:
            W'_i = lambda' W_i + (1 - lambda') W_pi(i), targets the same way
    loss    L_x = mean_i over the B labelled rows of -sum_c t_ic log softmax(z_i)_c
            L_u = mean over the K B_u unlabelled rows and the C classes of (softmax(z_i)_c - t_ic)^2
            L   = L_x + lambda_u * min(1, s / rampup_steps) * L_u, s = steps done in this stage
            (rampup_steps 0: the full weight from the first step)
Randomness: the Beta draw and the permutation come from the step's generator, in that order.

Simplified: the paper's code interleaves labelled and unlabelled images across several forward
passes so that each pass's BatchNorm statistics see both; here W' goes through the model in one
forward pass (its statistics are those of the whole mixed batch, labelled and unlabelled
together), which is what the interleaving approximates. The guessing pass also updates the
BatchNorm running statistics (training mode), as in the paper's code. Evaluation with a moving
average of the weights is the general `train.ema` option.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field

from imbal.config import Section
from imbal.remedies.mixing import sample_beta, soft_rows
from imbal.semi import SEMI


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), normalised over the classes (rows of an N×C probability matrix)."""
    q = p ** (1.0 / temperature)
    return q / q.sum(1, keepdim=True)


def rampup_weight(step: int, lambda_u: float, rampup_steps: int) -> float:
    """lambda_u * min(1, step / rampup_steps); the full weight when rampup_steps is 0."""
    return lambda_u if rampup_steps == 0 else lambda_u * min(1.0, step / rampup_steps)


def mix(w: torch.Tensor, targets: torch.Tensor, alpha: float,
        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W', targets', lambda') with lambda' = max(lambda, 1 - lambda), lambda ~ Beta(alpha, alpha)."""
    lam = sample_beta(alpha, 1, generator, w.device)
    lam = torch.maximum(lam, 1.0 - lam)
    perm = torch.randperm(w.shape[0], generator=generator, device=w.device)
    mixed = torch.lerp(w[perm], w, lam.view(1, 1, 1, 1).to(w.dtype))
    return mixed, torch.lerp(targets[perm], targets, lam.view(1, 1)), lam


@dataclass(slots=True)
class MixedTargets:
    """Soft target rows of the mixed batch; its first n_labelled rows are the labelled ones."""

    soft: torch.Tensor
    n_labelled: int


class MixMatchParams(Section):
    k: int = Field(2, ge=1, description="augmentations of each unlabelled image")
    temperature: float = Field(0.5, gt=0, le=1, description="sharpening temperature T")
    alpha: float = Field(0.75, gt=0, description="MixUp's Beta(alpha, alpha)")
    lambda_u: float = Field(75.0, ge=0, description="weight of the unlabelled loss after the ramp-up")
    rampup_steps: int = Field(0, ge=0, description="steps of the linear ramp-up of lambda_u (0: none)")


@SEMI.register("mixmatch")
class MixMatch:
    Params = MixMatchParams
    uses_unlabelled = True

    def __init__(self, model: torch.nn.Module, *, num_classes: int, k: int = 2,
                 temperature: float = 0.5, alpha: float = 0.75, lambda_u: float = 75.0,
                 rampup_steps: int = 0):
        self.module, self.num_classes = model, num_classes
        self.views, self.temperature, self.alpha = k, temperature, alpha
        self.lambda_u, self.rampup_steps = lambda_u, rampup_steps
        self.step = 0  # steps done in this stage (the ramp-up's clock)

    def describe(self) -> str:
        return (f"mixmatch K={self.views} T={self.temperature} alpha={self.alpha} "
                f"lambda_u={self.lambda_u} ramp-up {self.rampup_steps} steps")

    @torch.no_grad()
    def guess(self, u: torch.Tensor) -> torch.Tensor:
        """Sharpened mean of the softmax over the K views (u: K blocks, view-major)."""
        probs = F.softmax(self.module(u).float(), dim=1)
        return sharpen(probs.view(self.views, -1, self.num_classes).mean(0), self.temperature)

    def inputs(self, batch, generator: torch.Generator) -> tuple[torch.Tensor, MixedTargets]:
        q = self.guess(batch.u)
        targets = torch.cat([soft_rows(batch.y, self.num_classes), q.repeat(self.views, 1)])
        mixed, soft, _ = mix(torch.cat([batch.x, batch.u]), targets, self.alpha, generator)
        return mixed, MixedTargets(soft, batch.x.shape[0])

    def loss(self, logits: torch.Tensor, target: MixedTargets) -> torch.Tensor:
        logits, n, t = logits.float(), target.n_labelled, target.soft
        lx = -(t[:n] * F.log_softmax(logits[:n], dim=1)).sum(1).mean()
        lu = (F.softmax(logits[n:], dim=1) - t[n:]).pow(2).mean()
        weight = rampup_weight(self.step, self.lambda_u, self.rampup_steps)
        self.step += 1
        return lx + weight * lu

    def correct(self, logits: torch.Tensor, target: MixedTargets) -> torch.Tensor:
        n = target.n_labelled
        return (logits[:n].argmax(1) == target.soft[:n].argmax(1)).sum()

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state.get("step", 0))
