"""`data.imbalance.apply: per_batch` — S3's in-loop imbalance, reproduced on purpose.

S3 made its imbalance inside the training loop: a batch kept the images of classes 0-4 only
when batch_id % 10 == 0. The data set itself stays balanced, so over an epoch about a tenth of
the minority images are seen, but a different tenth every epoch: over the run the model sees
all of them (the pitfall S2 describes). imbal applies an imbalance once, to the data set; this
mode exists to show in numbers what the per-batch method changes.

With a step imbalance of keep 1/k (or ratio k), a batch of step s (0-based, counted within the
epoch, as S3's batch_id) keeps the step's classes when s % k == 0 and drops them otherwise, so
its batches are shorter (S3's too). Everything else about the data is as for kind none.
"""

from __future__ import annotations

import torch

from imbal.data.imbalance import imbalance_params, step_classes
from imbal.errors import UserError

WARNING = ("data.imbalance.apply: per_batch masks classes {classes} out of every batch but one in "
           "{k} inside the training loop (S3's method, the pitfall S2 describes): the data set "
           "stays balanced and over the epochs the model sees every minority image")


def per_batch_period(imb: dict) -> int:
    """k of a step imbalance with keep 1/k (or ratio k); refused for anything else."""
    kind = imb["kind"]
    if kind != "step":
        raise UserError(f"data.imbalance.apply: per_batch reproduces S3's masking of a step "
                        f"imbalance; kind {kind} cannot be applied per batch")
    if imb.get("ratio") is not None:
        k = float(imb["ratio"])
    else:
        keep = imb.get("keep")
        k = 1 / (0.1 if keep is None else float(keep))
    if k < 1 or abs(k - round(k)) > 1e-9:
        raise UserError("data.imbalance.apply: per_batch keeps the step's classes in one batch of "
                        f"every k: keep must be 1/k for an integer k (or ratio k), got 1/{k:g}")
    return round(k)


class PerBatchMask:
    """Drops the masked classes from every batch whose step is not a multiple of `period`."""

    def __init__(self, classes: list[int], period: int, num_classes: int, device: torch.device):
        self.classes, self.period = sorted(classes), period
        self.masked = torch.zeros(num_classes, dtype=torch.bool, device=device)
        self.masked[self.classes] = True

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        if step % self.period == 0:
            return idx
        return idx[~self.masked[targets[idx]]]

    def describe(self) -> str:
        return WARNING.format(classes=self.classes, k=self.period)


def per_batch_mask(imb: dict, num_classes: int, device: torch.device) -> PerBatchMask | None:
    """The mask of a data.imbalance section with apply: per_batch, else None."""
    if imb.get("apply", "once") != "per_batch":
        return None
    return PerBatchMask(step_classes(num_classes, imbalance_params(imb)), per_batch_period(imb), num_classes,
                        device)
