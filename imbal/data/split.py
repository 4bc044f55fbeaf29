"""What every data source returns: whole splits held in memory as tensors, or splits whose
labels are known before their images are read (so that a subset decodes only what it keeps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Split:
    """One split held in memory: images uint8 N×C×H×W (CPU, contiguous), targets int64 N."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class LazySplit:
    """A split whose labels are known before any image is read.

    ``load(indices)`` gets int64 indices into ``targets`` (ascending, no repeats) and returns the
    images at those positions, in that order, as uint8 K×C×H×W. It is called once per split,
    with only the indices that a subset keeps (all of them when there is no subset).
    """

    targets: torch.Tensor
    load: Callable[[torch.Tensor], torch.Tensor]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class Dataset:
    name: str
    train: Split | LazySplit
    test: Split | LazySplit
    classes: list[str]


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize (antialiased) of uint8 N×C×H×W to N×C×size×size, in chunks to bound memory."""
    if images.shape[-2:] == (size, size):
        return images
    from torchvision.transforms.v2 import functional as F

    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk]
        out[start : start + chunk] = F.resize(part, [size, size], antialias=True)
    return out
