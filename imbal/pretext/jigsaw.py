"""Jigsaw pretext (S2): put the shuffled tiles of an image back in order.

Each image is centre-cropped to a multiple of `grid`, cut into grid×grid tiles, and the tiles are
shuffled by a permutation drawn per image (from all n! orders, or from a fixed subset of
`permutations` chosen once with the seeded build generator). Every tile goes through the shared
backbone (the classifier's `.features`; tiles smaller than the backbone's minimum input are
upsampled inside it), then fc -> `hidden` + ReLU per tile; the n tile vectors are concatenated ->
fc `hidden` + ReLU -> fc n*n scores, reshaped n×n (row = position, column = tile),
Sinkhorn-normalised in log space (`sinkhorn_iters` iterations) into a doubly-stochastic P, and
trained with binary cross-entropy against the permutation matrix.

Reported: per-position accuracy and whole-permutation accuracy of the decoded permutation (an
assignment, see jigsaw_ops.decode), and confidence = mean probability P on the true cells.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn

from imbal.errors import UserError
from imbal.pretext.base import TASKS, PretextTask, TaskParams, parse_params
from imbal.pretext.jigsaw_ops import (
    crop_to_grid,
    decode,
    permutation_bce,
    permutation_set,
    sample_permutations,
    shuffle_tiles,
    sinkhorn,
    to_tiles,
)


class JigsawParams(TaskParams):
    grid: int = Field(2, ge=2, le=4)
    permutations: int | None = Field(None, ge=2)
    max_hamming: bool = False
    sinkhorn_iters: int = Field(10, ge=1, le=1000)
    hidden: int = Field(256, ge=1)


class JigsawTask(PretextTask):
    name = "jigsaw"
    stat_names = ("loss", "position_correct", "permutation_correct", "confidence", "n")

    def __init__(self, feature_dim: int, grid: int, table: torch.Tensor | None,
                 sinkhorn_iters: int, hidden: int):
        super().__init__()
        self.grid, self.tiles = grid, grid * grid
        self.sinkhorn_iters = sinkhorn_iters
        # A buffer so it follows the task to the device; not part of any saved state.
        self.register_buffer("table", table, persistent=False)
        n = self.tiles
        self.tile_fc = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Linear(n * hidden, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, n * n))

    def make_batch(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator,
                   train: bool) -> tuple[torch.Tensor, Any]:
        tiles = to_tiles(crop_to_grid(x, self.grid), self.grid)
        perm = sample_permutations(self.table, x.shape[0], self.tiles, generator, x.device)
        return shuffle_tiles(tiles, perm), perm

    def forward(self, features: nn.Module, tiles: torch.Tensor) -> torch.Tensor:
        b, n = tiles.shape[:2]
        f = self.tile_fc(features(tiles.flatten(0, 1)))  # (b*n)×hidden, one backbone call
        return self.head(f.reshape(b, -1)).view(b, n, n)

    def log_probs(self, scores: torch.Tensor) -> torch.Tensor:
        return sinkhorn(scores, self.sinkhorn_iters)

    def loss(self, logp: torch.Tensor, target: Any) -> torch.Tensor:
        return permutation_bce(logp, target)

    def accuracy(self, scores: torch.Tensor, target: Any) -> torch.Tensor:
        """Per-position accuracy of the row-wise argmax of P (not decoded into a permutation:
        the assignment is for evaluation, where it may copy to the CPU)."""
        return (self.log_probs(scores.float()).argmax(2) == target).float().mean()

    def stats(self, logp: torch.Tensor, target: Any, loss: torch.Tensor) -> torch.Tensor:
        b = target.shape[0]
        with torch.no_grad():
            hit = decode(logp, self.table) == target
            conf = logp.gather(2, target.unsqueeze(2)).exp().mean(dim=(1, 2)).sum()
            return torch.stack([loss.detach() * b, hit.float().mean(1).sum(),
                                hit.all(1).sum().float(), conf,
                                torch.tensor(float(b), device=logp.device)])

    def summarize(self, sums: list[float]) -> dict[str, float]:
        loss, pos, whole, conf, n = sums
        n = max(n, 1.0)
        return {"loss": loss / n, "position_acc": 100.0 * pos / n,
                "permutation_acc": 100.0 * whole / n, "confidence": 100.0 * conf / n}

    def describe(self) -> str:
        perms = (f"{self.table.shape[0]} permutations" if self.table is not None
                 else f"all {math.factorial(self.tiles)} permutations")
        return (f"jigsaw: {self.grid}x{self.grid} tiles, {perms}, "
                f"Sinkhorn {self.sinkhorn_iters} iterations")


@TASKS.register("jigsaw")
def jigsaw(params: Any, *, feature_dim: int, in_channels: int, image_size: int,
           num_classes: int, generator: torch.Generator) -> JigsawTask:
    p = parse_params(JigsawParams, params, "jigsaw")
    n = p.grid * p.grid
    if p.permutations is not None and p.permutations > math.factorial(n):
        raise UserError(f"pretrain.params.permutations {p.permutations} exceeds the "
                        f"{math.factorial(n)} orders of a {p.grid}x{p.grid} grid")
    if p.max_hamming and (p.permutations is None or p.grid > 3):
        raise UserError("pretrain.params.max_hamming needs permutations: K and grid 2 or 3")
    if image_size // p.grid < 2:
        raise UserError(f"images of {image_size} pixels are too small for a {p.grid}x{p.grid} "
                        f"jigsaw (tiles under 2 pixels)")
    table = permutation_set(n, p.permutations, generator, p.max_hamming)
    return JigsawTask(feature_dim, p.grid, table, p.sinkhorn_iters, p.hidden)


jigsaw.params_model = JigsawParams
