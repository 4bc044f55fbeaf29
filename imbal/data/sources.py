"""Data sources: the SOURCES registry (``data.source``), and how a source's splits are loaded.

Built-in sources (``SOURCES.names()``):

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 real images, no download, not cached).
- ``mnist``, ``fashion_mnist``, ``kmnist``, ``cifar10``, ``cifar100``, ``svhn``: the files of
  torchvision.datasets' own layouts under the root, read by those classes (see
  imbal/data/standard.py); ``data.download: true`` lets torchvision fetch missing files.
- ``imagefolder``: ROOT/train/<class>/* and ROOT/test/<class>/* (see imbal/data/imagefolder.py);
  a subset decodes only the files it keeps.

Decoded tensors are cached in $IMBAL_CACHE (default ~/.cache/imbal) by imbal/data/cache.py.

Writing a source (a plugin registers it the same way)::

    @SOURCES.register("name")
    def build(root: str, download: bool, image_size: int | None) -> Dataset: ...

The builder receives keyword arguments only, never the config:

- ``root``: the data directory (data.root, else $IMBAL_DATA, else ./data; ``~`` expanded);
- ``download``: data.download, whether the builder may fetch missing files;
- ``image_size``: data.image_size, the square size asked for, or None for the native size.

It returns ``Dataset(name, train, test, classes)`` (imbal.data.split): ``classes`` is a list of
class names (label c is ``classes[c]``); ``train`` and ``test`` are each either

- ``Split(images, targets)``, the simple path: the whole split in memory, images uint8
  N×C×H×W, targets integer N with values in 0..len(classes)-1; or
- ``LazySplit(targets, load)``: the labels up front, and ``load(indices)`` returning the
  images at ``indices`` (int64, ascending, no repeats) as uint8 K×C×H×W in that order. imbal
  calls it once per split with only the indices a subset keeps (data.subset), so a source that
  decodes file by file decodes no more than it must.

Images need not be at image_size: whatever is not image_size×image_size is resized afterwards
(bilinear, antialiased); a builder may resize itself, e.g. per image while decoding. Train and
test images must share one C×H×W.

Bad input (a missing or damaged file, an unusable folder) is reported by raising
``imbal.errors.UserError`` with one line that names the file and says how to fix it; the run
stops before anything is written. Labels outside 0..C-1 and image/label count mismatches are
caught here and reported the same way. A returned value of the wrong type, dtype or shape is a
bug in the builder and raises TypeError. To cache decoded tensors, call
``imbal.data.cache.cached`` with the files the source reads (optional).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from imbal.data.imagefolder import open_image_folder
from imbal.data.split import Dataset, LazySplit, Split, resize_images
from imbal.data.standard import SPECS, load_standard
from imbal.errors import UserError
from imbal.registry import Registry

__all__ = ["SOURCES", "Dataset", "LazySplit", "Split", "load_source", "open_source",
           "resolve_root", "take"]

SOURCES = Registry("dataset")


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


def open_source(
    name: str, *, root: str | None = None, download: bool = False, image_size: int | None = None
) -> Dataset:
    """Call source ``name``'s builder and check what it returned; images may not be read yet
    (LazySplit): ``take`` reads them."""
    builder = SOURCES.get(name)
    size = check_image_size(image_size)
    ds = builder(root=resolve_root(root), download=bool(download), image_size=size)
    if not isinstance(ds, Dataset):
        raise TypeError(f"source '{name}' returned {type(ds).__name__}, not a Dataset")
    if not isinstance(ds.classes, (list, tuple)) or not ds.classes:
        raise TypeError(f"source '{name}': classes must be a non-empty list of names")
    ds.classes = [str(c) for c in ds.classes]
    for split in ("train", "test"):
        setattr(ds, split, _checked(name, split, getattr(ds, split), len(ds.classes)))
    return ds


def _checked(name: str, split: str, part: Split | LazySplit, num_classes: int) -> Split | LazySplit:
    """Targets as int64 and in range; for a Split, images uint8 N×C×H×W, one per target."""
    if not isinstance(part, (Split, LazySplit)):
        raise TypeError(f"source '{name}': {split} is {type(part).__name__}, not a Split or "
                        "LazySplit")
    targets = torch.as_tensor(part.targets)  # a tensor, an array or a list of ints
    if targets.ndim != 1 or targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"source '{name}': {split} targets must be a 1-D integer tensor, got "
                        f"{targets.dtype} {tuple(targets.shape)}")
    part.targets = targets.to(torch.int64).contiguous()
    bad = part.targets[(part.targets < 0) | (part.targets >= num_classes)]
    if bad.numel():
        raise UserError(f"{name}: {split} label {int(bad[0])} is outside 0..{num_classes - 1} "
                        f"({num_classes} classes)")
    if isinstance(part, Split):
        _check_images(name, split, part.images)
        if len(part.images) != len(part.targets):
            raise UserError(f"{name}: the {split} split has {len(part.images)} images but "
                            f"{len(part.targets)} labels")
    return part


def _check_images(name: str, split: str, images: Any) -> None:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != 4:
        got = (f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images)
               else type(images).__name__)
        raise TypeError(f"source '{name}': {split} images must be a uint8 N×C×H×W tensor, "
                        f"got {got}")


def take(name: str, part: Split | LazySplit, indices: torch.Tensor | None,
         image_size: int | None) -> Split:
    """The images at ``indices`` (ascending; None: all) as a Split, resized to image_size."""
    if isinstance(part, Split):
        images = part.images if indices is None else part.images[indices]
        targets = part.targets if indices is None else part.targets[indices]
    else:
        indices = torch.arange(len(part)) if indices is None else indices
        images, targets = part.load(indices), part.targets[indices]
        _check_images(name, "loaded", images)
        if len(images) != len(indices):
            raise TypeError(f"source '{name}': load() returned {len(images)} images for "
                            f"{len(indices)} indices")
    if image_size is not None:
        images = resize_images(images, image_size)
    return Split(images.contiguous(), targets)


def same_shape(name: str, train: Split, test: Split) -> None:
    """Train and test images must share C×H×W: one model sees both."""
    a, b = tuple(train.images.shape[1:]), tuple(test.images.shape[1:])
    if a != b:
        raise UserError(f"{name}: train images are {'x'.join(map(str, a))} but test images are "
                        f"{'x'.join(map(str, b))} (C x H x W); set data.image_size to resize "
                        "them all")


def load_source(
    name: str, *, root: str | None = None, download: bool = False, image_size: int | None = None
) -> Dataset:
    """Load data set ``name`` (a registered source) whole into memory; bad input raises
    UserError. prepare_data uses open_source + take instead, so a subset reads only itself."""
    ds = open_source(name, root=root, download=download, image_size=image_size)
    size = check_image_size(image_size)
    train, test = (take(name, s, None, size) for s in (ds.train, ds.test))
    same_shape(name, train, test)
    return Dataset(name=ds.name, train=train, test=test, classes=ds.classes)


# ---------------------------------------------------------------- digits (scikit-learn)


@SOURCES.register("digits")
def _digits(root: str, download: bool, image_size: int | None) -> Dataset:
    """scikit-learn's 1,797 8×8 digits; pixel values 0..16 are scaled to 0..255.

    Split without randomness: within each class, in the bundled order, every 5th image
    (positions 4, 9, 14, ... counted from 0) goes to test and the rest to train. That gives
    355 test and 1,442 train images; both splits keep the bundled order. Not cached: building
    it takes milliseconds.
    """
    del root, download, image_size  # bundled with scikit-learn; resizing is done afterwards
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


# ---------------------------------------------------------------- torchvision.datasets


def _register_standard(key: str) -> None:
    def build(root: str, download: bool, image_size: int | None) -> Dataset:
        return load_standard(key, root, download, image_size)

    spec = SPECS[key]
    build.__doc__ = (f"torchvision.datasets.{spec.dataset} on its files under "
                     f"ROOT/{spec.folder or ''} (cached as tensors).")
    SOURCES.register(key)(build)


for _key in SPECS:
    _register_standard(_key)


@SOURCES.register("imagefolder")
def _imagefolder(root: str, download: bool, image_size: int | None) -> Dataset:
    """ROOT/train/<class>/* and ROOT/test/<class>/*; decoded on demand, then cached.

    ``download`` is ignored: there is nothing to download for a local folder.
    """
    del download
    return open_image_folder(root, image_size=image_size)
