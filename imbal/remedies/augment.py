"""Augmentations as batch transforms: cutout, gridmask, autoaugment, randaugment, colour_jitter.

Every parameter is drawn per image from the run's generator (never one draw for the whole
batch), so a seed gives the same augmented batch on every run. Targets pass through
unchanged (int64 ids stay ids; soft rows from an earlier mixup stay as they are).

Where they sit relative to normalisation (`pixels` below):
- cutout and gridmask work on the normalised batch and fill with 0, i.e. the training set's
  mean colour (DeVries & Taylor's reference code cuts out after normalising, too).
- autoaugment, randaugment and colour_jitter are pixel ops (`pixels = True`): the Compose hands
  them the batch as pixel values in [0, 1] (the normalisation undone exactly, clamped to
  [0, 1]: a crop's zero padding is the mean colour, inside that range) and normalises what
  they return. Consecutive pixel ops share one round trip. Their kernels are kornia's batched
  functions with a magnitude per image (augment_ops.py; scripts/bench_augment.py measures them
  against torchvision.transforms.v2 and kornia.augmentation).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from imbal.errors import UserError
from imbal.remedies.augment_ops import (
    CIFAR10_POLICY,
    RANDAUGMENT_OPS,
    SIGNED,
    apply_per_sample,
    kornia_module,
    magnitude,
)
from imbal.remedies.base import Int, Params, Real, parse_params
from imbal.remedies.batch import BATCH_TRANSFORMS, BatchTransform


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device)


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device,
             low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=generator, device=device)


class _Aug(BatchTransform):
    """Params parsed from the item; subclasses set Params and implement `augment`."""

    Params: type[Params] = Params

    def __init__(self, params: dict[str, Any], *, num_classes: int, class_counts: list[int]):
        self.p: Any = parse_params(self.name, self.Params, params, kind="batch transform")

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x, y, generator):
        return self.augment(x, generator), y

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.p.model_dump().items())
        return f"{self.name}({args})"


class CutoutParams(Params):
    size: Int = Field(16, ge=1, description="side of the square in pixels")
    p: Real = Field(1.0, ge=0, le=1, description="a probability in [0, 1]")


@BATCH_TRANSFORMS.register("cutout")
class Cutout(_Aug):
    """Cutout (DeVries & Taylor 2017): a size×size square, centred on a uniformly drawn pixel
    and clipped at the border, set to 0 (the mean colour), with probability p per image."""

    name = "cutout"
    Params = CutoutParams

    def augment(self, x, generator):
        n, (h, w), s = x.shape[0], x.shape[-2:], self.p.size
        cy = _randint(h, n, generator, x.device).view(n, 1)
        cx = _randint(w, n, generator, x.device).view(n, 1)
        on = (_rand(n, generator, x.device) < self.p.p).view(n, 1, 1, 1)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        top, left = cy - s // 2, cx - s // 2
        in_rows = (rows >= top) & (rows < top + s)  # N×H
        in_cols = (cols >= left) & (cols < left + s)  # N×W
        cut = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w) & on
        return x.masked_fill(cut, 0.0)


class GridMaskParams(Params):
    d_min: Int = Field(8, ge=2, description="smallest grid unit in pixels")
    d_max: Int = Field(16, ge=2, description="largest grid unit in pixels")
    ratio: Real = Field(0.5, gt=0, lt=1, description="a number in (0, 1)")
    p: Real = Field(1.0, ge=0, le=1, description="a probability in [0, 1]")


@BATCH_TRANSFORMS.register("gridmask")
class GridMask(_Aug):
    """GridMask (Chen et al. 2020), without rotation: each image draws a unit d uniform on
    d_min..d_max and offsets dy, dx uniform on 0..d-1; pixel (r, c) is set to 0 (the mean
    colour) where (r + dy) mod d < l and (c + dx) mod d < l, l = round(ratio d), so about
    ratio² of the image is dropped. With probability p per image."""

    name = "gridmask"
    Params = GridMaskParams

    def __init__(self, params, *, num_classes, class_counts):
        super().__init__(params, num_classes=num_classes, class_counts=class_counts)
        if self.p.d_min > self.p.d_max:
            raise UserError(f"batch transform 'gridmask': d_min ({self.p.d_min}) must not exceed "
                            f"d_max ({self.p.d_max})")

    def augment(self, x, generator):
        n, (h, w) = x.shape[0], x.shape[-2:]
        d = _randint(self.p.d_max + 1, n, generator, x.device, low=self.p.d_min).view(n, 1)
        dy = (_rand(n, generator, x.device).view(n, 1) * d).long()
        dx = (_rand(n, generator, x.device).view(n, 1) * d).long()
        on = (_rand(n, generator, x.device) < self.p.p).view(n, 1, 1, 1)
        size = (self.p.ratio * d.float()).round().long()
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (rows + dy) % d < size  # N×H
        in_cols = (cols + dx) % d < size  # N×W
        drop = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w) & on
        return x.masked_fill(drop, 0.0)


class _PixelAug(_Aug):
    pixels = True


class AutoAugmentParams(Params):
    policy: Literal["cifar10"] = Field("cifar10", description="cifar10")


@BATCH_TRANSFORMS.register("autoaugment")
class AutoAugment(_PixelAug):
    """AutoAugment's CIFAR-10 policy (Cubuk et al. 2019): each image draws one of the 25
    sub-policies, then each of its two ops is applied with the op's probability, the sign of
    a signed magnitude drawn per image (magnitude bins of 10, as torchvision)."""

    name = "autoaugment"
    Params = AutoAugmentParams
    BINS = 10

    def augment(self, x, generator):
        n, size, dev = x.shape[0], x.shape[-1], x.device
        table = CIFAR10_POLICY
        names = sorted({op for sub in table for op, _, _ in sub})
        which = _randint(len(table), n, generator, dev)
        for slot in range(2):
            ops = torch.tensor([names.index(sub[slot][0]) for sub in table], device=dev)
            prob = torch.tensor([sub[slot][1] for sub in table], device=dev)
            mag = torch.tensor([magnitude(sub[slot][0], sub[slot][2], self.BINS, size)
                                for sub in table], device=dev)
            signed = torch.tensor([sub[slot][0] in SIGNED for sub in table], device=dev)
            applied = _rand(n, generator, dev) < prob[which]
            flip = (_rand(n, generator, dev) < 0.5) & signed[which]
            m = torch.where(flip, -mag[which], mag[which])
            x = apply_per_sample(x, names, torch.where(applied, ops[which], -1), m)
        return x


class RandAugmentParams(Params):
    n: Int = Field(2, ge=1, description="ops per image")
    m: Int = Field(9, ge=0, le=30, description="magnitude bin, 0..30 (of 31, as torchvision)")


@BATCH_TRANSFORMS.register("randaugment")
class RandAugment(_PixelAug):
    """RandAugment (Cubuk et al. 2020): each image draws n ops uniformly (with replacement)
    from RANDAUGMENT_OPS, each at magnitude bin m of 31 with its own random sign."""

    name = "randaugment"
    Params = RandAugmentParams
    BINS = 31

    def augment(self, x, generator):
        n, size, dev = x.shape[0], x.shape[-1], x.device
        names = RANDAUGMENT_OPS
        mag = torch.tensor([magnitude(op, self.p.m, self.BINS, size) for op in names], device=dev)
        signed = torch.tensor([op in SIGNED for op in names], device=dev)
        for _ in range(self.p.n):
            op = _randint(len(names), n, generator, dev)
            flip = (_rand(n, generator, dev) < 0.5) & signed[op]
            x = apply_per_sample(x, names, op, torch.where(flip, -mag[op], mag[op]))
        return x


class ColourJitterParams(Params):
    brightness: Real = Field(0.4, ge=0, description="a number >= 0")
    contrast: Real = Field(0.4, ge=0, description="a number >= 0")
    saturation: Real = Field(0.4, ge=0, description="a number >= 0")
    hue: Real = Field(0.1, ge=0, le=0.5, description="a number in [0, 0.5]")
    p: Real = Field(1.0, ge=0, le=1, description="a probability in [0, 1]")


@BATCH_TRANSFORMS.register("colour_jitter")
class ColourJitter(_PixelAug):
    """torchvision's ColorJitter with a draw per image: brightness, contrast and saturation
    factors uniform on [max(0, 1 - v), 1 + v], hue shift uniform on [-hue, hue] (a fraction of
    the colour wheel); applied in that fixed order (torchvision shuffles the order per call),
    with probability p per image. 1-channel images get brightness and contrast only."""

    name = "colour_jitter"
    Params = ColourJitterParams

    def _factor(self, v: float, n: int, generator, dev) -> torch.Tensor:
        lo = max(0.0, 1.0 - v)
        return lo + (1.0 + v - lo) * _rand(n, generator, dev)

    def augment(self, x, generator):
        kornia = kornia_module()
        n, dev, q = x.shape[0], x.device, self.p
        b, c, s = (self._factor(v, n, generator, dev) for v in (q.brightness, q.contrast,
                                                                 q.saturation))
        h = (2.0 * _rand(n, generator, dev) - 1.0) * q.hue
        on = (_rand(n, generator, dev) < q.p).view(n, 1, 1, 1)
        out = kornia.enhance.adjust_brightness_accumulative(x, b)
        out = kornia.enhance.adjust_contrast_with_mean_subtraction(out, c)
        if x.shape[1] == 3:
            out = kornia.enhance.adjust_saturation_with_gray_subtraction(out, s).clamp(0, 1)
            out = kornia.enhance.adjust_hue(out, h * 2.0 * torch.pi).clamp(0, 1)
        return torch.where(on, out, x)
