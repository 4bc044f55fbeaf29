"""Data sources: every source returns whole splits as uint8 tensors (N×C×H×W) plus int64 targets.

Registered sources (``SOURCES.names()``):

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 real images, no download).
- ``mnist``, ``fashion_mnist``: torchvision's IDX readers, files under ROOT/MNIST/raw/ and
  ROOT/FashionMNIST/raw/.
- ``cifar10``: torchvision's pickle-batch reader, files under ROOT/cifar-10-batches-py/.
- ``imagefolder``: ROOT/train/<class>/* and ROOT/test/<class>/* (see imbal/data/imagefolder.py).

Every builder takes ``root: str, download: bool, image_size: int | None``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imbal.errors import UserError
from imbal.registry import Registry

SOURCES = Registry("dataset")


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


def resolve_root(root: str | None) -> str:
    """The data root: the explicit ``root``, else $IMBAL_DATA, else "./data" (``~`` expanded).

    A relative explicit root that does not exist here but does under $IMBAL_DATA resolves there.
    """
    env = os.environ.get("IMBAL_DATA")
    chosen = os.path.expanduser(str(root if root else env or "./data"))
    # A relative root that is not here but is under $IMBAL_DATA (configs say `root: cifar10-jpeg`)
    if root and env and not os.path.isabs(chosen) and not os.path.exists(chosen):
        under = os.path.join(os.path.expanduser(env), chosen)
        if os.path.exists(under):
            return under
    return chosen


def check_image_size(image_size: Any) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise UserError(f"data.image_size must be a positive integer or null, got {image_size!r}")
    return image_size


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


def load_source(
    name: str, *, root: str | None = None, download: bool = False, image_size: int | None = None
) -> Dataset:
    """Load data set ``name`` (a registered source) into memory; bad input raises UserError."""
    builder = SOURCES.get(name)
    size = check_image_size(image_size)
    ds = builder(root=resolve_root(root), download=bool(download), image_size=size)
    for split in (ds.train, ds.test):
        if size is not None:
            split.images = resize_images(split.images, size)
        split.images = split.images.contiguous()
        split.targets = split.targets.to(torch.int64).contiguous()
    return ds


# ---------------------------------------------------------------- digits (scikit-learn)


@SOURCES.register("digits")
def _digits(root: str, download: bool, image_size: int | None) -> Dataset:
    """scikit-learn's 1,797 8×8 digits; pixel values 0..16 are scaled to 0..255.

    Split without randomness: within each class, in the bundled order, every 5th image
    (positions 4, 9, 14, ... counted from 0) goes to test and the rest to train. That gives
    355 test and 1,442 train images; both splits keep the bundled order.
    """
    del root, download, image_size  # bundled with scikit-learn; resizing is done by load_source
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    targets = torch.from_numpy(bunch.target.astype(np.int64))
    rank = torch.zeros_like(targets)  # position of each image within its class
    for c in range(10):
        idx = (targets == c).nonzero().squeeze(1)
        rank[idx] = torch.arange(idx.numel())
    is_test = rank % 5 == 4
    images = images.unsqueeze(1)
    return Dataset(
        name="digits",
        train=Split(images[~is_test].contiguous(), targets[~is_test]),
        test=Split(images[is_test].contiguous(), targets[is_test]),
        classes=[str(c) for c in range(10)],
    )


# ---------------------------------------------------------------- torchvision formats

_IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def _cifar10_class() -> type:
    """torchvision's CIFAR10 reader with the md5 checks reduced to "file exists".

    torchvision refuses any batch whose md5 differs from the official archive, which would
    refuse re-packed or synthetic batches that are in the right format. A damaged file still
    fails when it is unpickled, and that failure becomes a UserError in _read_torchvision.
    """
    from torchvision.datasets import CIFAR10

    class _CIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return _CIFAR10


def _read_torchvision(
    key: str, make: Any, root: str, download: bool, folder: str, files: list[str]
) -> tuple[Split, Split, list[str]]:
    """Run a torchvision reader for both splits, turning every failure into one UserError line."""
    where = os.path.join(root, folder)
    missing = [os.path.join(where, f) for f in files if not os.path.isfile(os.path.join(where, f))]
    if missing and not download:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"{key}: files not found, expected {missing[0]}{more}; set data.download: true "
            f"(needs internet) or set data.root / IMBAL_DATA to a directory holding {folder}/"
        )
    if missing:
        try:
            make(root=root, train=True, download=True)
        except Exception as e:  # no internet, unwritable root, bad archive: all user-fixable
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"{key}: download into {where} failed ({first}); without internet put the "
                f"files there yourself, or set data.root / IMBAL_DATA to a directory holding "
                f"{folder}/"
            ) from e
    splits = []
    try:
        for train in (True, False):
            ds = make(root=root, train=train, download=False)
            images = torch.as_tensor(np.asarray(ds.data))
            targets = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
            splits.append((images, targets))
        classes = [str(c) for c in ds.classes]
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, AssertionError,
            pickle.UnpicklingError) as e:
        raise UserError(f"{key}: could not read the files under {where}: {e}") from e
    return Split(*splits[0]), Split(*splits[1]), classes


def _idx_source(key: str, tv_name: str) -> None:
    def build(root: str, download: bool, image_size: int | None) -> Dataset:
        import torchvision.datasets as tvd

        make = getattr(tvd, tv_name)
        train, test, classes = _read_torchvision(
            key, make, root, download, os.path.join(tv_name, "raw"), _IDX_FILES
        )
        for split in (train, test):  # N×H×W grey -> N×1×H×W
            split.images = split.images.unsqueeze(1).contiguous()
        return Dataset(name=key, train=train, test=test, classes=classes)

    build.__doc__ = f"torchvision.datasets.{tv_name}: ROOT/{tv_name}/raw/ holding the IDX files."
    SOURCES.register(key)(build)


_idx_source("mnist", "MNIST")
_idx_source("fashion_mnist", "FashionMNIST")


@SOURCES.register("cifar10")
def _cifar10(root: str, download: bool, image_size: int | None) -> Dataset:
    """torchvision.datasets.CIFAR10: ROOT/cifar-10-batches-py/ with the pickle batches."""
    train, test, classes = _read_torchvision(
        "cifar10", _cifar10_class(), root, download, _CIFAR_FOLDER, _CIFAR_FILES
    )
    for split in (train, test):  # torchvision keeps N×H×W×C numpy arrays
        split.images = split.images.permute(0, 3, 1, 2).contiguous()
    return Dataset(name="cifar10", train=train, test=test, classes=classes)


@SOURCES.register("imagefolder")
def _imagefolder(root: str, download: bool, image_size: int | None) -> Dataset:
    """ROOT/train/<class>/* and ROOT/test/<class>/*; decoded once, then cached.

    ``download`` is ignored: there is nothing to download for a local folder.
    """
    from imbal.data.imagefolder import load_image_folder

    return load_image_folder(root, image_size=image_size)
