"""Confusion matrix (one bincount on the device) and every figure derived from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def confusion_update(conf: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor) -> None:
    """Add a batch to `conf` (C×C, rows = true class, columns = predicted) without a host sync."""
    c = conf.shape[0]
    conf += torch.bincount(targets * c + preds, minlength=c * c).view(c, c)


@dataclass(frozen=True)
class Groups:
    """Which classes count as minority/majority and as many/medium/few-shot."""

    minority: list[int]
    majority: list[int]
    many: list[int]
    medium: list[int]
    few: list[int]

    @classmethod
    def make(cls, train_counts: list[int], minority: list[int], many_shot: int, few_shot: int) -> Groups:
        c = len(train_counts)
        return cls(
            minority=sorted(minority),
            majority=[i for i in range(c) if i not in set(minority)] if minority else [],
            many=[i for i in range(c) if train_counts[i] > many_shot],
            medium=[i for i in range(c) if few_shot <= train_counts[i] <= many_shot],
            few=[i for i in range(c) if train_counts[i] < few_shot],
        )


def _pct(x: float) -> float:
    return round(float(x) * 100.0, 4)


def _group_mean(per_class: np.ndarray, idx: list[int]) -> float | None:
    return _pct(per_class[idx].mean()) if idx else None


def summarize(conf: torch.Tensor | np.ndarray, groups: Groups) -> dict:
    """Top-1, balanced accuracy, macro-F1, per-class and group accuracies, in percent."""
    m = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    support = m.sum(axis=1)
    predicted = m.sum(axis=0)
    tp = np.diag(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    n = int(m.sum())
    return {
        "n": n,
        "top1": _pct(tp.sum() / n) if n else 0.0,
        "balanced_acc": _pct(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": _pct(f1[present].mean()) if present.any() else 0.0,
        "minority_acc": _group_mean(recall, groups.minority),
        "majority_acc": _group_mean(recall, groups.majority),
        "many_acc": _group_mean(recall, groups.many),
        "medium_acc": _group_mean(recall, groups.medium),
        "few_acc": _group_mean(recall, groups.few),
        "per_class_acc": [_pct(r) for r in recall],
    }
