"""Class-imbalance remedies, resolved once before training into a Plan (see plan.py)."""

from imbal.remedies import (  # noqa: F401  (registration)
    augment,
    data_remedies,
    loss_remedies,
    mixing,
    tail_mixing,
    tail_remedies,
)
from imbal.remedies.base import REMEDIES, Remedy
from imbal.remedies.batch import BATCH_TRANSFORMS, BatchTransform
from imbal.remedies.losses import ComposedLoss
from imbal.remedies.plan import Plan, build_plan, parse_remedies
from imbal.remedies.samplers import ClassSampler

__all__ = [
    "BATCH_TRANSFORMS",
    "REMEDIES",
    "BatchTransform",
    "ClassSampler",
    "ComposedLoss",
    "Plan",
    "Remedy",
    "build_plan",
    "parse_remedies",
]
