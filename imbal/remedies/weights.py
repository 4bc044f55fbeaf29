"""Pure functions from class counts to weights, priors and margins.

Counts are clamped to at least 1 wherever they are inverted or logged, so a class with no
training image yields finite numbers (it never appears as a target, so its value never acts).
All functions return float32 tensors on the device of their input.
"""

from __future__ import annotations

import torch

NORMALIZATIONS = ("none", "sum_to_C", "sample_mean")


def _counts(counts: torch.Tensor) -> torch.Tensor:
    return counts.to(torch.float64).clamp_min(1.0)


def normalize_weights(w: torch.Tensor, counts: torch.Tensor, how: str) -> torch.Tensor:
    """Rescale per-class weights.

    none:        as computed.
    sum_to_C:    sum_j w_j = C, i.e. the weights average 1 over classes (Cui et al.).
    sample_mean: sum_j N_j w_j = N, i.e. the weights average 1 over training samples, so a
                 plain-mean loss keeps the scale of unweighted CE (for inverse frequency this is
                 sklearn's class_weight="balanced", N / (C N_j)).
    """
    if how == "none":
        return w
    if how == "sum_to_C":
        return w * (w.numel() / w.sum())
    if how == "sample_mean":
        n = counts.to(w.dtype)
        return w * (n.sum() / (n * w).sum())
    raise ValueError(f"unknown normalisation {how!r}")


def inverse_frequency_weights(counts: torch.Tensor, normalize: str = "none") -> torch.Tensor:
    """w_j = N / N_j (S2: sum_i N_i / N_j), then `normalize`."""
    n = _counts(counts)
    w = n.sum() / n
    return normalize_weights(w, counts, normalize).to(torch.float32)


def effective_number_weights(
    counts: torch.Tensor, beta: float, normalize: str = "sum_to_C"
) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): w_j = (1 - beta) / (1 - beta^N_j).

    Computed in float64 because 1 - 0.9999^N loses most of its digits in float32.
    beta = 0 gives equal weights.
    """
    n = _counts(counts)
    w = (1.0 - beta) / (1.0 - beta**n)
    return normalize_weights(w, counts, normalize).to(torch.float32)


def batch_inverse_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights of one batch (S1): w_i = C * (1/N_i) / sum_j (1/N_j).

    N_i is the count of class i in the batch and the sum runs over the classes present;
    an absent class gets weight 0. Uses scatter_add (not bincount / one_hot, which read the
    maximum label back to the host) so that it never synchronises with the device.
    """
    ones = torch.ones_like(targets, dtype=torch.float32)
    n = torch.zeros(num_classes, device=targets.device).scatter_add_(0, targets, ones)
    inv = torch.where(n > 0, 1.0 / n.clamp_min(1.0), torch.zeros_like(n))
    return num_classes * inv / inv.sum()


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    """log(N_j / N), the log class prior of the training set."""
    n = _counts(counts)
    return torch.log(n / n.sum()).to(torch.float32)


def log_counts(counts: torch.Tensor) -> torch.Tensor:
    """log N_j, balanced softmax's offset (S5)."""
    return torch.log(_counts(counts)).to(torch.float32)


def ldam_margins(counts: torch.Tensor, max_margin: float) -> torch.Tensor:
    """LDAM margins (Cao et al. 2019): m_j proportional to N_j^(-1/4), the largest = max_margin."""
    m = _counts(counts).pow(-0.25)
    return (m * (max_margin / m.max())).to(torch.float32)
