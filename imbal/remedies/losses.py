"""One cross-entropy family that every loss remedy is a setting of.

For a batch of logits z (N×C) and targets y:

    z    = z / a                              CDT: a_j = (N_max / N_j)^gamma (else a = 1)
    z'   = s * (z - m_y e_y)                  LDAM: margin at the target, then scale (else z' = z)
    z''  = z' + b                             b = log N_j (balanced softmax) or tau log prior
                                              (logit adjustment, loss form); else 0
    logp = log_softmax(z'')
    l_i  = -sum_k q_ik logp_ik                q one-hot, or S1 label smoothing for the samples
                                              whose class is in the chosen set:
                                              q_target = 1 - eps, q_other = eps / K,
                                              or label-aware smoothing (MiSLAS): eps_y per
                                              class, l_i = (1 - eps_y) (-logp_y)
                                              + eps_y mean_k (-logp_k)
    l_i *= (1 - p_t)^gamma                    focal modulation, p_t = exp(logp_i,y_i)
    loss = sum_i w_i l_i / sum_i w_i          "weighted_mean" (torch's F.cross_entropy(weight=))
        or mean_i w_i l_i                     "mean" (Keras/TF style: the weights' scale matters)
        or mean_i l_i                         no weights

with w_i = class_weight[y_i] (static or switched on by an epoch hook: LDAM-DRW) or the S1
batch-inverse weight of y_i in this batch. Each remedy sets one slot; plan.py says which
slots may be combined. Everything is computed in float32 whatever the logits' dtype.

S1's smoothing is taken literally: q_target = 1 - eps and eps/K on each of the other K-1
classes, so a smoothed row sums to 1 - eps/K (torch's label_smoothing puts 1 - eps + eps/K on
the target instead, making the row sum to 1).

Soft targets (N×C float rows q_i, e.g. from mixup or cutmix) take one rule: the loss of a soft
target is the q-weighted mixture of the hard-target losses, exactly as the mixup paper's
criterion lam * L(y_a) + (1 - lam) * L(y_b), with the weights mixed the same way:

    L_it = l_i above with y_i = t                 (the N×C matrix of hard-target losses)
    l_i  = sum_t q_it L_it
    loss = sum_i sum_t q_it w_t L_it / sum_i sum_t q_it w_t      "weighted_mean"
        or mean_i sum_t q_it w_t L_it                            "mean"

For one-hot q every line is today's hard-target value. Spelled out per remedy:
    cross-entropy   -sum_k q_k logp_k (F.cross_entropy with probability targets)
    offsets         z + b as above: independent of the target (balanced softmax, logit adjust)
    smoothing       CE against q' = the same mixture of the S1-smoothed one-hot rows:
                    q'_k = q_k - eps q_k [k in S] + (eps / K) (sum_{t in S} q_t - q_k [k in S]),
                    i.e. smoothing commutes with mixing (smooth-then-mix = mix-then-smooth)
    focal           -sum_t q_t (1 - p_t)^gamma log p_t (per-class modulator: Keras'
                    CategoricalFocalCrossentropy), times the smoothed CE when smoothing is on
    class weights   sum_i sum_t q_it w_t L_it / sum_i (q_i . w): the numerator is
                    F.cross_entropy(weight=w, reduction="sum") with probability targets
LDAM's margin (at one target class) and batch_inverse (counts of the classes in a batch) need
hard labels: plan.check_soft_targets refuses them with a soft-target batch transform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbal.remedies.weights import batch_inverse_weights

# 1 - p_t is clamped here before the focal power: (1 - p)^gamma has an infinite derivative at
# p = 1 when gamma < 1, and p_t rounds to exactly 1 for confident float32 predictions.
_FOCAL_FLOOR = 1e-12

REDUCTIONS = ("weighted_mean", "mean")


class ComposedLoss(nn.Module):
    """The composed loss. Slots left at their defaults give plain cross-entropy.

    Mutable per-epoch state (set by epoch hooks, never per step): `gamma`, `weights_on`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        offset: torch.Tensor | None = None,
        margins: torch.Tensor | None = None,
        scale: float = 1.0,
        smooth_eps: float = 0.0,
        smooth_classes: torch.Tensor | None = None,
        class_smooth: torch.Tensor | None = None,
        temperatures: torch.Tensor | None = None,
        gamma: float = 0.0,
        class_weight: torch.Tensor | None = None,
        weights_on: bool = True,
        batch_inverse: bool = False,
        reduction: str = "weighted_mean",
    ):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}")
        if batch_inverse and class_weight is not None:
            raise ValueError("batch_inverse and class_weight both given")
        self.num_classes = num_classes
        self.register_buffer("offset", offset)
        self.register_buffer("margins", margins)
        self.scale = float(scale)
        self.smooth_eps = float(smooth_eps)
        # Boolean mask over classes: which classes' samples are smoothed.
        self.register_buffer("smooth_classes", smooth_classes)
        self.register_buffer("class_smooth", class_smooth)  # eps_j per class (label-aware)
        self.register_buffer("temperatures", temperatures)  # CDT's a_j
        self.gamma = float(gamma)
        self.register_buffer("class_weight", class_weight)
        self.weights_on = weights_on
        self.batch_inverse = batch_inverse
        self.reduction = reduction

    def adjusted_logits(self, logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """z'' of the module docstring: margin, scale and offset applied (float32)."""
        z = logits.float()
        if self.temperatures is not None:
            z = z / self.temperatures
        if self.margins is not None:
            if targets is None:
                raise ValueError("LDAM margins need the class targets")
            m = self.margins[targets].unsqueeze(1)
            at_target = torch.zeros_like(z).scatter_(1, targets.unsqueeze(1), 1.0)
            z = z - m * at_target
        if self.scale != 1.0:
            z = z * self.scale
        if self.offset is not None:
            z = z + self.offset
        return z

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """l_i before weighting and reduction."""
        logp = F.log_softmax(self.adjusted_logits(logits, targets), dim=1)
        logp_t = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        loss = -logp_t
        if self.smooth_eps > 0 and self.smooth_classes is not None:
            eps, k = self.smooth_eps, self.num_classes
            smoothed = self.smooth_classes[targets].to(logp.dtype)
            # -(1-eps) logp_t - eps/K * sum_{k != t} logp_k, written as a correction to -logp_t.
            other = logp.sum(dim=1) - logp_t
            loss = loss + smoothed * (eps * logp_t - (eps / k) * other)
        if self.class_smooth is not None:
            loss = loss + self.class_smooth[targets] * (logp_t - logp.mean(dim=1))
        if self.gamma != 0.0:
            one_minus_p = (-torch.expm1(logp_t)).clamp_min(_FOCAL_FLOOR)
            loss = loss * one_minus_p.pow(self.gamma)
        return loss

    @property
    def smoothing(self) -> bool:
        return self.smooth_eps > 0 and self.smooth_classes is not None \
            or self.class_smooth is not None

    def sample_weights(self, targets: torch.Tensor) -> torch.Tensor | None:
        w = self.class_weights(targets)
        return None if w is None else w[targets]

    def class_weights(self, targets: torch.Tensor) -> torch.Tensor | None:
        """The per-class weight vector in force for this batch (None: unweighted)."""
        if self.batch_inverse:
            return batch_inverse_weights(targets, self.num_classes)
        if self.class_weight is not None and self.weights_on:
            return self.class_weight
        return None

    def per_class(self, logits: torch.Tensor) -> torch.Tensor:
        """L (N×C): L_it = l_i as if sample i's class were t (no margins: they need one class)."""
        logp = F.log_softmax(self.adjusted_logits(logits, None), dim=1)
        loss = -logp
        if self.smooth_eps > 0 and self.smooth_classes is not None:
            eps, k = self.smooth_eps, self.num_classes
            smoothed = self.smooth_classes.to(logp.dtype)
            other = logp.sum(dim=1, keepdim=True) - logp
            loss = loss + smoothed * (eps * logp - (eps / k) * other)
        if self.class_smooth is not None:
            loss = loss + self.class_smooth * (logp - logp.mean(dim=1, keepdim=True))
        if self.gamma != 0.0:
            loss = loss * (-torch.expm1(logp)).clamp_min(_FOCAL_FLOOR).pow(self.gamma)
        return loss

    def soft_forward(self, logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The loss for soft targets q (N×C rows of probabilities): see the module docstring."""
        if self.margins is not None or self.batch_inverse:
            raise ValueError("LDAM margins and batch_inverse weights need int64 class targets, "
                             "not soft ones")
        if q.shape != logits.shape:
            raise ValueError(f"soft targets {tuple(q.shape)} do not match logits "
                             f"{tuple(logits.shape)}")
        q = q.float()
        w = self.class_weights(q)
        if not self.smoothing and self.gamma == 0.0:
            z = self.adjusted_logits(logits, None)
            if w is None:
                return F.cross_entropy(z, q)
            if self.reduction == "mean":
                return F.cross_entropy(z, q, weight=w)
            return F.cross_entropy(z, q, weight=w, reduction="sum") / (q @ w).sum()
        loss = self.per_class(logits)
        if w is None:
            return (q * loss).sum(dim=1).mean()
        qw = q * w
        total = (qw * loss).sum()
        return total / qw.sum() if self.reduction == "weighted_mean" else total / q.shape[0]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of logits (N×C) for int64 class ids (N) or soft targets (N×C float)."""
        if targets.dim() == 2:
            return self.soft_forward(logits, targets)
        w = self.class_weights(targets)
        if not self.smoothing and self.gamma == 0.0 and (w is None or self.reduction == "weighted_mean"):
            # Plain, offset, LDAM or class-weighted cross-entropy: torch's fused loss gives the
            # same value in ~half the ops of the general path (one node forward, one backward;
            # measured 48 vs 105 us per LeNet/MNIST step on this CPU).
            return F.cross_entropy(self.adjusted_logits(logits, targets), targets, weight=w)
        loss = self.per_sample(logits, targets)
        if w is None:
            return loss.mean()
        w = w[targets]
        if self.reduction == "weighted_mean":
            return (w * loss).sum() / w.sum()
        return (w * loss).mean()

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}"]
        if self.offset is not None:
            parts.append("offset")
        if self.temperatures is not None:
            parts.append("temperatures")
        if self.class_smooth is not None:
            parts.append("class_smooth")
        if self.margins is not None:
            parts.append(f"margins, scale={self.scale}")
        if self.smooth_eps > 0:
            parts.append(f"smooth_eps={self.smooth_eps}")
        if self.gamma != 0.0:
            parts.append(f"gamma={self.gamma}")
        if self.batch_inverse:
            parts.append("batch_inverse")
        if self.class_weight is not None:
            parts.append(f"class_weight(on={self.weights_on})")
        if self.batch_inverse or self.class_weight is not None:
            parts.append(f"reduction={self.reduction}")
        return ", ".join(parts)


def schedule_value(values: list[float], epoch: int, epochs: int) -> float:
    """Value of a list schedule at a 0-based epoch: L values spread evenly over E epochs.

    index = round(epoch * (L - 1) / (E - 1)) (halves round up), so the first epoch takes the
    first value and the last epoch the last one; with L == E it is values[epoch]. Epochs past
    the end keep the last value. Integer arithmetic: no float rounding surprises.
    """
    n = len(values)
    if epochs <= 1 or n == 1:
        return float(values[0])
    e = min(max(epoch, 0), epochs - 1)
    index = (2 * e * (n - 1) + (epochs - 1)) // (2 * (epochs - 1))
    return float(values[index])


def linear_value(start: float, end: float, epoch: int, epochs: int) -> float:
    """start at epoch 0, end at the last epoch (epochs - 1), linear in between."""
    if epochs <= 1:
        return float(start)
    t = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return float(start + (end - start) * t)
