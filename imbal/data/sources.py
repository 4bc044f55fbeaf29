"""Data sources: every source returns whole splits as uint8 tensors (N×C×H×W) plus int64 targets.

Registered sources (``SOURCES.names()``):

- ``digits``: scikit-learn's bundled 8×8 digits (1,797 real images, no download).
- ``mnist``, ``fashion_mnist``: uncompressed IDX files under ROOT/MNIST/raw/ and
  ROOT/FashionMNIST/raw/, read by imbal (same tensors and class names as torchvision's readers).
- ``cifar10``: the pickled batches under ROOT/cifar-10-batches-py/, read by imbal likewise.
- ``imagefolder``: ROOT/train/<class>/* and ROOT/test/<class>/* (see imbal/data/imagefolder.py).

mnist, fashion_mnist and cifar10 keep torchvision's file layouts, but torchvision is imported
only to download missing files (``data.download: true``) or to resize (``data.image_size``):
loading files already there at their own size never imports it.

Every builder takes ``root: str, download: bool, image_size: int | None``.

The contract for a plugin source, ``@SOURCES.register("name")`` (``from imbal import SOURCES``)::

    builder(root: str, download: bool, image_size: int | None) -> Dataset(
        name, train=Split(images, targets), test=Split(images, targets), classes)

``root`` is ``data.root`` resolved (``$IMBAL_DATA``, else ./data), ``download`` is
``data.download``; images are uint8 N×C×H×W (any square size: ``load_source`` resizes to
``data.image_size`` when it is set), targets are class ids 0..len(classes)-1 (any integer
dtype; made int64). A missing or unreadable file is a UserError naming it, not a traceback.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from typing import Any

import numpy as np
import torch

from imbal.data.split import Dataset, Split
from imbal.errors import UserError
from imbal.registry import Registry

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


# ---------------------------------------------------------------- IDX and CIFAR-10 files

_IDX_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
_MNIST_CLASSES = [
    "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
    "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine",
]
_FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_FILES = _CIFAR_TRAIN + ["test_batch", "batches.meta"]


def _find_files(key: str, root: str, download: bool, folder: str, files: list[str],
                tv_name: str) -> str:
    """ROOT/folder, checked to hold ``files``. Missing files are a UserError, or with
    ``download`` are fetched by torchvision.datasets.<tv_name>: the only import of torchvision."""
    where = os.path.join(root, folder)
    missing = [os.path.join(where, f) for f in files if not os.path.isfile(os.path.join(where, f))]
    if missing and not download:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"{key}: files not found, expected {missing[0]}{more}; set data.download: true "
            f"(needs internet) or set data.root / IMBAL_DATA to a directory holding {folder}/"
        )
    if missing:
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, tv_name)(root=root, train=True, download=True)
        except Exception as e:  # no internet, unwritable root, bad archive: all user-fixable
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(
                f"{key}: download into {where} failed ({first}); without internet put the "
                f"files there yourself, or set data.root / IMBAL_DATA to a directory holding "
                f"{folder}/"
            ) from e
    return where


def _read(key: str, path: str, reader: Any, *args: Any) -> Any:
    """``reader(path, *args)``, with a missing or malformed file (OSError, ValueError) turned
    into one UserError line naming the file."""
    try:
        return reader(path, *args)
    except (OSError, ValueError) as e:
        raise UserError(f"{key}: could not read {path}: {e}") from e


def _check_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if bad.numel():
        raise ValueError(f"label {int(bad[0])} is outside 0..{n_classes - 1}")
    return labels


def _read_idx(path: str, ndim: int) -> torch.Tensor:
    """An uncompressed IDX file of unsigned bytes with ``ndim`` dimensions, in one read.

    Layout: two zero bytes, the type byte (0x08 = unsigned byte, the only type MNIST-style
    files use; others are refused), the number of dimensions, one big-endian uint32 size per
    dimension, then exactly prod(sizes) bytes of data.
    """
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        del buf[f.readinto(buf):]
    header = 4 + 4 * ndim
    if len(buf) < 4 or buf[:2] != b"\0\0":
        raise ValueError("not an IDX file (it must start with two zero bytes)")
    if buf[2] != 0x08:
        raise ValueError(f"data type byte is 0x{buf[2]:02X}, expected 0x08 (unsigned bytes)")
    if buf[3] != ndim:
        raise ValueError(f"it has {buf[3]} dimensions, expected {ndim}")
    if len(buf) < header:
        raise ValueError(f"truncated: {len(buf)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack_from(f">{ndim}I", buf, 4)
    size = header + math.prod(shape)
    if len(buf) != size:
        what = "truncated" if len(buf) < size else "over-long"
        raise ValueError(f"{what}: {len(buf)} bytes, but a {'×'.join(map(str, shape))} "
                         f"header needs {size}")
    return torch.from_numpy(np.frombuffer(buf, np.uint8, offset=header)).view(shape)


def _idx_split(key: str, raw: str, prefix: str, n_classes: int) -> Split:
    images_path = os.path.join(raw, f"{prefix}-images-idx3-ubyte")
    labels_path = os.path.join(raw, f"{prefix}-labels-idx1-ubyte")
    images = _read(key, images_path, _read_idx, 3)
    labels = _read(key, labels_path, lambda p: _check_labels(_read_idx(p, 1).long(), n_classes))
    if len(images) != len(labels):
        raise UserError(f"{key}: {images_path} holds {len(images)} images but {labels_path} "
                        f"holds {len(labels)} labels")
    return Split(images.unsqueeze(1), labels)  # N×H×W grey -> N×1×H×W


def _idx_source(key: str, folder: str, classes: list[str]) -> None:
    def build(root: str, download: bool, image_size: int | None) -> Dataset:
        raw = _find_files(key, root, download, os.path.join(folder, "raw"), _IDX_FILES, folder)
        train, test = (_idx_split(key, raw, prefix, len(classes)) for prefix in ("train", "t10k"))
        return Dataset(name=key, train=train, test=test, classes=list(classes))

    build.__doc__ = f"IDX files under ROOT/{folder}/raw/ (torchvision.datasets.{folder}'s layout)."
    SOURCES.register(key)(build)


_idx_source("mnist", "MNIST", _MNIST_CLASSES)
_idx_source("fashion_mnist", "FashionMNIST", _FASHION_MNIST_CLASSES)


def _unpickle(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as e:  # a damaged pickle fails in many ways (EOFError, KeyError, ...)
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(f"not a readable pickle ({type(e).__name__}: {first})") from e


def _cifar_meta(path: str) -> list[str]:
    meta = _unpickle(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError("expected a dict whose 'label_names' is a list of class names")
    return names


def _cifar_batch(path: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: "data" uint8 N×3072 (rows are 3×32×32, channel-major), "labels"."""
    batch = _unpickle(path)
    data = batch.get("data") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"expected a dict whose 'data' is a uint8 N×3072 array, got {got}")
    labels = np.asarray(batch.get("labels"))
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ValueError(f"expected {len(data)} integer 'labels' to match 'data'")
    labels = _check_labels(torch.from_numpy(labels.astype(np.int64)), n_classes)
    return torch.from_numpy(data).reshape(-1, 3, 32, 32), labels


@SOURCES.register("cifar10")
def _cifar10(root: str, download: bool, image_size: int | None) -> Dataset:
    """Pickled batches under ROOT/cifar-10-batches-py/ (torchvision.datasets.CIFAR10's layout)."""
    where = _find_files("cifar10", root, download, _CIFAR_FOLDER, _CIFAR_FILES, "CIFAR10")
    classes = _read("cifar10", os.path.join(where, "batches.meta"), _cifar_meta)

    def split(names: list[str]) -> Split:
        parts = [_read("cifar10", os.path.join(where, n), _cifar_batch, len(classes))
                 for n in names]
        return Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    return Dataset(name="cifar10", train=split(_CIFAR_TRAIN), test=split(["test_batch"]),
                   classes=classes)


@SOURCES.register("imagefolder")
def _imagefolder(root: str, download: bool, image_size: int | None) -> Dataset:
    """ROOT/train/<class>/* and ROOT/test/<class>/*; decoded once, then cached.

    ``download`` is ignored: there is nothing to download for a local folder.
    """
    from imbal.data.imagefolder import load_image_folder

    return load_image_folder(root, image_size=image_size)
