"""Sampling remedies: per-epoch class-aware resampling, and copy / undersample of the data set."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from imbal.errors import UserError
from imbal.input_checks import check_allocation
from imbal.registry import did_you_mean
from imbal.remedies.base import (
    CLASS_SET_TEXT,
    ClassSet,
    Int,
    Params,
    PlanContext,
    Real,
    Remedy,
    remedy,
)
from imbal.remedies.samplers import ClassSampler, EpochSampler, class_probabilities
from imbal.remedies.transforms import (
    COPY_TRANSFORMS,
    Strength,
    class_counts,
    copy_indices,
    transform_copies,
    undersample_indices,
)


class OversampleParams(Params):
    mode: Literal["balanced", "sqrt", "progressive"] = Field(
        "balanced", description="'balanced', 'sqrt' or 'progressive'")
    epoch_size: Int | None = Field(
        None, ge=1, description="null (the training set size) or an integer >= 1"
    )
    start_epoch: Int | Real = Field(
        0, description="an epoch number >= 0 (0-based, int) or a fraction of the epochs in "
        "(0, 1): re-sampling starts there (deferred re-sampling), before it plain epochs")

    @model_validator(mode="after")
    def _check(self) -> OversampleParams:
        d = self.start_epoch
        if isinstance(d, float) and not 0 < d < 1 or isinstance(d, int) and d < 0:
            raise ValueError(f"start_epoch must be an epoch number >= 0 (int) or a fraction in "
                             f"(0, 1), got {d!r}")
        return self


@remedy("oversample")
class Oversample(Remedy):
    """Each epoch draws epoch_size indices with replacement: a class (uniform over non-empty
    classes, proportional to sqrt(N_j), or progressively balanced: Kang et al.'s
    p_j(t) = (1 - t/T) N_j/N + (t/T) / C at epoch t of the stage's T), then a uniformly random
    image of it. start_epoch defers the re-sampling (DRS, Cao et al. 2019): plain epochs first."""

    Params = OversampleParams

    def slots(self) -> set[str]:
        return {"sampling"}

    def start(self, epochs: int) -> int:
        d = self.p.start_epoch
        start = int(d * epochs + 0.5) if isinstance(d, float) else d
        if start >= epochs:
            raise UserError(f"remedy 'oversample': start_epoch {d} starts re-sampling at epoch "
                            f"{start} but the stage has {epochs} epochs (0-based)")
        return start

    def apply(self, ctx: PlanContext) -> str:
        counts, mode, epochs = torch.tensor(ctx.counts), self.p.mode, ctx.epochs
        size = self.p.epoch_size or ctx.targets.numel()
        check_allocation(16 * size, f"remedy 'oversample': epoch_size={size}")  # int64 draws
        start = self.start(epochs)
        if mode != "progressive" and start == 0:
            ctx.sampler = ClassSampler(ctx.targets, class_probabilities(counts, mode), size)
            return f"oversample: {mode}, {ctx.sampler.describe()}"
        label = f"epoch t of {epochs}: (1 - t/T) N_j/N + (t/T)/C; at t={start}: " \
            if mode == "progressive" else ""
        ctx.sampler = EpochSampler(
            ctx.targets, lambda e: class_probabilities(counts, mode, e, epochs), size, start,
            label)
        return f"oversample: {mode}, {ctx.sampler.describe()}"


class CopyParams(Params):
    k: Annotated[Int, Field(ge=1)] | Literal["balance"] = Field(
        "balance", description="an integer >= 1 (extra copies per image) or 'balance'"
    )
    classes: ClassSet = Field("minority", description=CLASS_SET_TEXT)
    transforms: list[str] = Field(
        default_factory=list, description="a list of copy-transform names (COPY_TRANSFORMS)"
    )
    flip_p: Real = Field(0.5, ge=0, le=1, description="a probability in [0, 1]")
    brightness: Real = Field(0.2, ge=0, le=1, description="a number in [0, 1]")
    contrast: Real = Field(0.2, ge=0, le=1, description="a number in [0, 1]")


@remedy("copy")
class Copy(Remedy):
    """S2 "copy" / "aug": append copies of the images of `classes` (k extra copies each, or up
    to the largest class), each copy passed through `transforms` in order with its own random
    flip (probability flip_p) and factors (uniform in [1 - b, 1 + b])."""

    Params = CopyParams
    dataset_stage = True

    def __init__(self, **params: Any):
        super().__init__(**params)
        for name in self.p.transforms:  # registry names: built-ins and plugins alike
            if name not in COPY_TRANSFORMS:
                valid = ", ".join(repr(n) for n in COPY_TRANSFORMS.names())
                raise UserError(f"remedy 'copy': unknown transform {name!r}"
                                f"{did_you_mean(name, COPY_TRANSFORMS.names())}; valid: {valid}")

    def slots(self) -> set[str]:
        return {"sampling"}

    def apply(self, ctx: PlanContext) -> str:
        p = self.p
        classes = ctx.resolve_classes(self.name, p.classes)
        if p.k != "balance":  # k extra copies of each image of those classes, then a cat
            image = ctx.images[:1].element_size() * ctx.images[:1].numel()
            check_allocation(2 * p.k * sum(ctx.counts[c] for c in classes) * image,
                             f"remedy 'copy': k={p.k}")
        src = copy_indices(ctx.targets, ctx.num_classes, classes, p.k, ctx.generator)
        strength = Strength(p.flip_p, p.brightness, p.contrast)
        copies = transform_copies(ctx.images[src], p.transforms, strength, ctx.generator)
        before = ctx.counts
        ctx.images = torch.cat([ctx.images, copies])
        ctx.targets = torch.cat([ctx.targets, ctx.targets[src]])
        ctx.counts = class_counts(ctx.targets, ctx.num_classes)
        how = "to balance" if p.k == "balance" else f"{p.k} extra copies per image"
        tf = f", transforms {p.transforms}" if p.transforms else ""
        return f"copy: classes {classes} {how}{tf}; counts {before} -> {ctx.counts}"


class UndersampleParams(Params):
    target: Annotated[Int, Field(ge=1)] | Literal["min"] = Field(
        "min", description="an integer >= 1 or 'min' (the smallest non-empty class)"
    )


@remedy("undersample")
class Undersample(Remedy):
    """Cut every class larger than `target` to `target` randomly chosen images."""

    Params = UndersampleParams
    dataset_stage = True

    def slots(self) -> set[str]:
        return {"sampling"}

    def apply(self, ctx: PlanContext) -> str:
        target = self.p.target
        if target == "min":
            target = min(n for n in ctx.counts if n > 0)
        keep = undersample_indices(ctx.targets, ctx.num_classes, target, ctx.generator)
        before = ctx.counts
        ctx.images = ctx.images[keep]
        ctx.targets = ctx.targets[keep]
        ctx.counts = class_counts(ctx.targets, ctx.num_classes)
        return f"undersample: classes cut to {target}; counts {before} -> {ctx.counts}"
