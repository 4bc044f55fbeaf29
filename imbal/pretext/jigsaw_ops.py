"""The pure pieces of the jigsaw task: tiles, permutation sets, Sinkhorn, assignment decoding.

Conventions (used by the task, the loss and the tests):
- tiles are numbered row-major: tile p = row * grid + col, so `to_tiles` gives N×n×C×h×w.
- a permutation `perm` (N×n) puts original tile perm[i] at position i:
  shuffled[:, i] = tiles[:, perm[i]].
- a score matrix S (N×n×n) has S[b, i, j] = "position i holds tile j"; the target is the
  permutation matrix T[b, i, j] = (perm[b, i] == j).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

# Up to 7! permutations are kept as a table: sampling indexes it and decoding scores every
# entry on the device. Larger sets sample with argsort and decode with the Hungarian method.
MAX_TABLE = 5040
MAX_ENUMERATE = math.factorial(9)  # all 9! permutations of a 3x3 grid fit in memory (3.3 MB)


def crop_to_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Centre crop so height and width are multiples of `grid` (a no-op for 28/2, 32/2)."""
    h, w = x.shape[-2:]
    dh, dw = h % grid, w % grid
    return x[..., dh // 2:h - (dh - dh // 2), dw // 2:w - (dw - dw // 2)]


def to_tiles(x: torch.Tensor, grid: int) -> torch.Tensor:
    """N×C×H×W (H, W multiples of grid) -> N×(grid*grid)×C×(H/grid)×(W/grid), row-major."""
    n, c, h, w = x.shape
    th, tw = h // grid, w // grid
    t = x.reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(n, grid * grid, c, th, tw)


def from_tiles(tiles: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of to_tiles."""
    n, _, c, th, tw = tiles.shape
    x = tiles.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, grid * th, grid * tw)


def shuffle_tiles(tiles: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """shuffled[b, i] = tiles[b, perm[b, i]]."""
    rows = torch.arange(tiles.shape[0], device=tiles.device).view(-1, 1)
    return tiles[rows, perm]


def unshuffle_tiles(shuffled: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Inverse of shuffle_tiles: tiles[b, perm[b, i]] = shuffled[b, i]."""
    rows = torch.arange(shuffled.shape[0], device=shuffled.device).view(-1, 1)
    out = torch.empty_like(shuffled)
    out[rows, perm] = shuffled
    return out


def all_permutations(n: int) -> torch.Tensor:
    """n!×n int64, in lexicographic order (row 0 is the identity)."""
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.int64)


def permutation_set(n: int, count: int | None, generator: torch.Generator,
                    max_hamming: bool = False) -> torch.Tensor | None:
    """The permutations the task draws from: K×n int64, or None for "all n!, not tabled".

    count None: all n! (as a table when n! <= MAX_TABLE). Otherwise a fixed subset chosen with
    `generator`: uniformly at random, or (max_hamming) greedily so that each new permutation
    has the largest minimum Hamming distance to those chosen (Noroozi & Favaro's selection;
    ties go to the first in lexicographic order). The caller checks count <= n!.
    """
    total = math.factorial(n)
    if count is None:
        return all_permutations(n) if total <= MAX_TABLE else None
    if total <= MAX_ENUMERATE:
        table = all_permutations(n)
        if not max_hamming:
            return table[torch.randperm(total, generator=generator)[:count]]
        chosen = [int(torch.randint(0, total, (1,), generator=generator))]
        dist = (table != table[chosen[0]]).sum(1)
        for _ in range(count - 1):
            nxt = int(dist.argmax())
            chosen.append(nxt)
            dist = torch.minimum(dist, (table != table[nxt]).sum(1))
        return table[chosen]
    # n >= 10 (grid 4): too many to list; draw random permutations until `count` distinct.
    found = torch.empty(0, n, dtype=torch.int64)
    while found.shape[0] < count:
        draw = torch.rand(2 * count, n, generator=generator).argsort(1)
        found = torch.unique(torch.cat([found, draw]), dim=0)
    return found[torch.randperm(found.shape[0], generator=generator)[:count]]


def sample_permutations(table: torch.Tensor | None, batch: int, n: int,
                        generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """batch×n permutations, uniform over the table (or over all n! when table is None)."""
    if table is None:
        return torch.rand(batch, n, device=device, generator=generator).argsort(1)
    idx = torch.randint(0, table.shape[0], (batch,), device=device, generator=generator)
    return table[idx]


def sinkhorn(scores: torch.Tensor, iters: int) -> torch.Tensor:
    """Log-space Sinkhorn: alternately normalise rows and columns of exp(scores) (N×n×n).

    Returns log P. Each iteration ends with the columns, so columns sum to 1 to rounding and
    rows converge geometrically with the iterations.
    """
    log_p = scores
    for _ in range(iters):
        log_p = log_p - torch.logsumexp(log_p, dim=2, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
    return log_p


def log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate at both ends (Maechler's switch at -log 2)."""
    a = log_p.clamp(max=-1e-7)
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def permutation_bce(log_p: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of P = exp(log_p) against the permutation matrix of perm."""
    target = torch.zeros_like(log_p).scatter_(2, perm.unsqueeze(2), 1.0)
    return -(target * log_p + (1.0 - target) * log1mexp(log_p)).mean()


def decode_table(log_p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The permutation in `table` with the largest sum of log P over its cells (on the device)."""
    n = log_p.shape[1]
    pos = torch.arange(n, device=log_p.device)
    # log_p[b, pos, table[k, pos]] -> N×K×n, summed over positions
    score = log_p[:, pos.view(1, -1), table].sum(-1)
    return table[score.argmax(1)]


def decode_hungarian(log_p: torch.Tensor) -> torch.Tensor:
    """Maximum-weight assignment per sample (scipy, on the CPU: one copy per call)."""
    from scipy.optimize import linear_sum_assignment

    cost = (-log_p).detach().cpu().double().numpy()
    cols = np.stack([linear_sum_assignment(c)[1] for c in cost]) if len(cost) else np.zeros(
        (0, log_p.shape[1]))
    return torch.as_tensor(cols, dtype=torch.int64).to(log_p.device)


def decode(log_p: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """A valid permutation per sample (never a row-wise argmax, which can repeat a tile)."""
    if table is not None and table.shape[0] <= MAX_TABLE:
        return decode_table(log_p, table)
    return decode_hungarian(log_p)
