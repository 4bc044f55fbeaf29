"""Batch transforms: per-batch operations on the training device that may return soft targets.

The registry contract. A batch transform is a class registered with
`@BATCH_TRANSFORMS.register("name")`. It is built from its own config item only:

    cls(params: dict, *, num_classes: int, class_counts: list[int]) -> BatchTransform

(`params` is the item without its `name`; `class_counts` are the per-class counts of the set
the stage trains on). Building validates the params and raises UserError with one line for
any mistake. A built transform is called once per training step:

    x, y = transform(x, y, generator)

x: normalised float images N×C×H×W on the device (after the data's own augmentation);
y: int64 class ids (N) or soft targets (N×num_classes float, each row a probability
distribution); generator: the run's torch.Generator on that device, the only source of
randomness (per-sample parameters are drawn from it, never one draw for the whole batch
unless the method says so). It returns images of the same shape and either int64 ids or
N×num_classes soft targets. `soft_targets` says whether it may return soft ones (the loss
remedies are then checked to accept them before any work starts). `pixels = True` asks for
pixel values instead: x in [0, 1] (the normalisation undone, clamped), and the transform
returns values in [0, 1] that the Compose normalises again (augment.py's photometric ops).

A transform that mixes inside the network (manifold mixup) also has `bind(model)`: the stage
calls it with the classifier before training, and the transform may arm a one-shot forward hook
on one of the backbone's mix points (imbal.models.base.mix_modules) for the step's forward.
`hard_targets_only` transforms read one class per image (remix: the classes' counts) and must
not follow a transform that makes soft targets.

Config: a list of names or mappings with `name` (like `remedy:`), e.g.
`batch_transforms: [{name: mixup, alpha: 0.2}]`; they are applied in order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from imbal.errors import UserError
from imbal.registry import Registry

BATCH_TRANSFORMS = Registry("batch transform")


class BatchTransform:
    """Base class of registered batch transforms (subclasses set `soft_targets`)."""

    name: ClassVar[str] = ""
    soft_targets: ClassVar[bool] = False
    pixels: ClassVar[bool] = False  # True: takes and returns pixel values in [0, 1]
    hard_targets_only: ClassVar[bool] = False

    def bind(self, model: torch.nn.Module) -> None:
        """Called with the classifier before the stage trains (a no-op unless overridden)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def split_item(item: Any, where: str = "batch_transforms") -> tuple[str, dict[str, Any]]:
    """A config item -> (name, params): `mixup` or `{name: mixup, alpha: 0.2}`."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        params = dict(item)
        return params.pop("name"), params
    raise UserError(f"{where} entry {item!r} must be a name or a mapping with 'name', "
                    f"e.g. {{name: mixup, alpha: 0.2}}")


class Compose(BatchTransform):
    """Several transforms applied in order. `normalizer` (imbal.data.batches.Normalizer) maps
    between normalised and pixel values around the parts with `pixels = True`; consecutive
    pixel parts share one round trip."""

    def __init__(self, parts: list[BatchTransform], normalizer: Any = None):
        if normalizer is None and any(p.pixels for p in parts):
            raise ValueError("pixel-space batch transforms need the run's normalizer")
        self.parts, self.normalizer = parts, normalizer
        self.soft_targets = any(p.soft_targets for p in parts)  # type: ignore[misc]

    def bind(self, model: torch.nn.Module) -> None:
        for part in self.parts:
            part.bind(model)

    def __call__(self, x, y, generator):
        in_pixels = False
        for part in self.parts:
            if part.pixels != in_pixels:
                x = (self.normalizer.to_pixels(x) if part.pixels
                     else self.normalizer.from_pixels(x))
                in_pixels = part.pixels
            x, y = part(x, y, generator)
        return (self.normalizer.from_pixels(x) if in_pixels else x), y

    def describe(self) -> str:
        return " -> ".join(p.describe() for p in self.parts)


def build_batch_transforms(items: list[Any] | None, *, num_classes: int,
                           class_counts: list[int], normalizer: Any = None) -> Compose | None:
    """The stage's batch transforms, or None when the list is empty. `normalizer`: the run's
    (needed by pixel-space transforms)."""
    if not items:
        return None
    parts = []
    for item in items:
        name, params = split_item(item)
        parts.append(BATCH_TRANSFORMS.get(name)(params, num_classes=num_classes,
                                                class_counts=list(class_counts)))
    return Compose(parts, normalizer)


def soft_target_transforms(items: list[Any] | None) -> list[str]:
    """Names (known without data) of the listed transforms that may return soft targets."""
    names = [split_item(item)[0] for item in items or []]
    soft = [n for n in names if BATCH_TRANSFORMS.get(n).soft_targets]
    for i, n in enumerate(names):
        before = [m for m in names[:i] if BATCH_TRANSFORMS.get(m).soft_targets]
        if BATCH_TRANSFORMS.get(n).hard_targets_only and before:
            raise UserError(f"batch transform '{n}' needs one class per image, but '{before[0]}' "
                            f"before it gives soft targets; list '{n}' first")
    return soft
