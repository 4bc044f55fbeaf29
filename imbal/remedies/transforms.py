"""Data-set transforms applied once, before training: copy (S2 "copy"/"aug") and undersample.

S2's pitfall is why these change the stored training tensors rather than batches: the
imbalance, or its remedy, must be a property of the data set, not of the loop.

Random draws are made on the generator's device and moved to the data's device, so a CPU
generator works with CUDA data and a device generator with data on that device.

COPY_TRANSFORMS holds what `copy`'s `transforms:` list may name. A copy transform is registered
as `@COPY_TRANSFORMS.register("name")` on a function

    fn(x: float32 N×C×H×W (pixel values 0..255), generator: torch.Generator,
       strength: Strength) -> float32 N×C×H×W

that alters each image with its own random draw from `generator` (on the generator's device:
use _rand); the result is rounded and clamped to uint8 afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imbal.registry import Registry

COPY_TRANSFORMS = Registry("copy transform")
_CHUNK = 4096  # images transformed at a time: bounds the float32 working copy


def _rand(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _randperm(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def class_counts(targets: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(targets, minlength=num_classes).tolist()


def class_members(targets: torch.Tensor, c: int) -> torch.Tensor:
    return torch.nonzero(targets == c).squeeze(1)


def copy_indices(
    targets: torch.Tensor,
    num_classes: int,
    classes: list[int],
    k: int | str,
    generator: torch.Generator,
) -> torch.Tensor:
    """Indices of the images to append as copies.

    k (int): every image of `classes` is copied k times (its class ends with (1 + k) N_j).
    k = "balance": each class of `classes` is filled up to the largest class count: all its
    images copied floor(extra / N_j) times, plus extra mod N_j distinct images drawn at random,
    so the class ends with exactly max_j N_j images. An empty class stays empty.
    """
    n_max = max(class_counts(targets, num_classes))
    parts = []
    for c in classes:
        members = class_members(targets, c)
        n = members.numel()
        if n == 0:
            continue
        if k == "balance":
            full, rest = divmod(n_max - n, n)
            parts.append(members.repeat(full))
            parts.append(members[_randperm(n, generator, targets.device)[:rest]])
        else:
            parts.append(members.repeat(int(k)))
    if not parts:
        return torch.zeros(0, dtype=torch.long, device=targets.device)
    return torch.cat(parts)


def undersample_indices(
    targets: torch.Tensor, num_classes: int, target: int, generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices kept when every class with more than `target` images is cut to `target`
    images chosen at random (without replacement); smaller classes are kept whole."""
    parts = []
    for c in range(num_classes):
        members = class_members(targets, c)
        if members.numel() > target:
            members = members[_randperm(members.numel(), generator, targets.device)[:target]]
        parts.append(members)
    return torch.sort(torch.cat(parts)).values


@dataclass(frozen=True)
class Strength:
    flip_p: float = 0.5  # probability that a copy is flipped (per flip transform)
    brightness: float = 0.2  # brightness factor uniform in [1 - b, 1 + b]
    contrast: float = 0.2  # contrast factor uniform in [1 - c, 1 + c]


@COPY_TRANSFORMS.register("hflip")
def _hflip(x: torch.Tensor, g: torch.Generator, s: Strength) -> torch.Tensor:
    flip = (_rand(x.shape[0], g, x.device) < s.flip_p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


@COPY_TRANSFORMS.register("vflip")
def _vflip(x: torch.Tensor, g: torch.Generator, s: Strength) -> torch.Tensor:
    flip = (_rand(x.shape[0], g, x.device) < s.flip_p).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-2), x)


@COPY_TRANSFORMS.register("brightness")
def _brightness(x: torch.Tensor, g: torch.Generator, s: Strength) -> torch.Tensor:
    f = 1.0 + s.brightness * (2.0 * _rand(x.shape[0], g, x.device) - 1.0)
    return x * f.view(-1, 1, 1, 1)


@COPY_TRANSFORMS.register("contrast")
def _contrast(x: torch.Tensor, g: torch.Generator, s: Strength) -> torch.Tensor:
    # Blend with each image's mean intensity (over channels and pixels; torchvision uses the
    # grayscale mean, which differs only for colour images and only slightly).
    f = (1.0 + s.contrast * (2.0 * _rand(x.shape[0], g, x.device) - 1.0)).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * f + mean


def transform_copies(
    images: torch.Tensor, names: list[str], strength: Strength, generator: torch.Generator
) -> torch.Tensor:
    """Apply the named transforms, in order, to uint8 images; each image draws its own random
    flip / factor. Returns uint8 (values rounded and clamped to [0, 255])."""
    if not names or images.shape[0] == 0:
        return images
    fns = [COPY_TRANSFORMS.get(name) for name in names]
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], _CHUNK):
        x = images[start : start + _CHUNK].float()
        for fn in fns:
            x = fn(x, generator, strength)
        out[start : start + _CHUNK] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out
