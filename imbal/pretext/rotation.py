"""Rotation pretext (S1): predict how many quarter turns k in {0,1,2,3} an image was rotated.

Rotation convention: k quarter turns counter-clockwise as displayed, `torch.rot90(x, k,
dims=(-2, -1))`. Training draws one k per image per step with the stage's generator (each epoch
sees every image once, in one random orientation; `all_rotations: true` instead feeds all four
orientations of every image, a 4x larger batch). Evaluation always uses all four orientations of
every image, so the figure needs no random draw and is the same set each epoch.

Classes listed in `symmetric_classes` look (nearly) the same after a half turn (MNIST 6 and 9
swap), so their target is soft: 0.5 on k and 0.5 on (k+2) mod 4. That rule needs the image's
class; the stage passes the true labels of the training images and, with `use_removed`, of the
removed images too (their labels are used for this rule only, never as a class target).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from imbal.errors import UserError
from imbal.pretext.base import TASKS, PretextTask, TaskParams, parse_params, soft_cross_entropy


class RotationParams(TaskParams):
    symmetric_classes: list[int] = Field(default_factory=list)
    all_rotations: bool = False


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate image i of the batch by k[i] quarter turns (counter-clockwise); square images."""
    out = x
    for r in range(1, 4):
        out = torch.where((k == r).view(-1, 1, 1, 1), torch.rot90(x, r, dims=(-2, -1)), out)
    return out


def rotation_targets(k: torch.Tensor, labels: torch.Tensor | None,
                     symmetric: torch.Tensor) -> torch.Tensor:
    """N×4 float targets: one-hot k, or 0.5/0.5 on k and (k+2)%4 where symmetric[label]."""
    hard = F.one_hot(k, 4).float()
    if labels is None or not symmetric.numel():
        return hard
    half = 0.5 * (hard + F.one_hot((k + 2) % 4, 4).float())
    return torch.where(symmetric[labels].view(-1, 1), half, hard)


class RotationTask(PretextTask):
    name = "rotation"
    stat_names = ("loss", "correct", "correct_sym", "n")

    def __init__(self, feature_dim: int, symmetric_classes: list[int], num_classes: int,
                 all_rotations: bool):
        super().__init__()
        self.head = nn.Linear(feature_dim, 4)
        mask = torch.zeros(num_classes if symmetric_classes else 0, dtype=torch.bool)
        mask[symmetric_classes] = True
        self.register_buffer("symmetric", mask, persistent=False)
        self.symmetric_classes = list(symmetric_classes)
        self.all_rotations = all_rotations

    def make_batch(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator,
                   train: bool) -> tuple[torch.Tensor, Any]:
        if x.shape[-1] != x.shape[-2]:
            raise UserError(f"rotation needs square images, got {x.shape[-2]}x{x.shape[-1]}; "
                            f"set data.image_size")
        n = x.shape[0]
        if self.all_rotations or not train:
            k = torch.arange(4, device=x.device).repeat_interleave(n)
            x = torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])
            y = None if y is None else y.repeat(4)
        else:
            k = torch.randint(0, 4, (n,), device=x.device, generator=generator)
            x = rotate(x, k)
        return x, (rotation_targets(k, y, self.symmetric), k)

    def forward(self, features: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.head(features(x))

    def log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(scores, dim=1)

    def loss(self, logp: torch.Tensor, target: Any) -> torch.Tensor:
        return soft_cross_entropy(logp, target[0])

    def accuracy(self, scores: torch.Tensor, target: Any) -> torch.Tensor:
        return (scores.argmax(1) == target[1]).float().mean()

    def stats(self, logp: torch.Tensor, target: Any, loss: torch.Tensor) -> torch.Tensor:
        soft, k = target
        pred = logp.argmax(1)
        n = k.numel()
        # acc_sym counts a half turn of a symmetric class as right (the target allows both)
        return torch.stack([loss.detach() * n, (pred == k).sum().float(),
                            (soft.gather(1, pred.view(-1, 1)) > 0).sum().float(),
                            torch.tensor(float(n), device=logp.device)])

    def summarize(self, sums: list[float]) -> dict[str, float]:
        loss, correct, correct_sym, n = sums
        n = max(n, 1.0)
        return {"loss": loss / n, "acc": 100.0 * correct / n, "acc_sym": 100.0 * correct_sym / n}

    def describe(self) -> str:
        sym = self.symmetric_classes or "none"
        how = "all 4 per image" if self.all_rotations else "one random k per image"
        return f"rotation: 4-way head, {how}, symmetric classes {sym}"


@TASKS.register("rotation")
def rotation(params: Any, *, feature_dim: int, in_channels: int, image_size: int,
             num_classes: int, generator: torch.Generator) -> RotationTask:
    p = parse_params(RotationParams, params, "rotation")
    bad = [c for c in p.symmetric_classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"pretrain.params.symmetric_classes {bad} out of range for "
                        f"{num_classes} classes")
    return RotationTask(feature_dim, sorted(set(p.symmetric_classes)), num_classes,
                        p.all_rotations)


rotation.params_model = RotationParams
