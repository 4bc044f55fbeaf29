"""What every data source returns: whole splits held in memory as tensors."""

from __future__ import annotations

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
class Dataset:
    name: str
    train: Split
    test: Split
    classes: list[str]
