"""The standard data sets (MNIST, Fashion-MNIST, KMNIST, CIFAR-10/100, SVHN), read by
torchvision.datasets and turned once into the uint8 N×C×H×W tensors + int64 targets imbal holds.

Each is a Spec: the torchvision class, the files each split reads under the root (checked before
any work, and the cache key), how the class lays out ``.data`` and where it keeps labels and
class names. The tensors of both splits are one cache entry (imbal/data/cache.py): a run whose
files are unchanged never imports torchvision, never hashes or unpickles anything.

Damaged files: torchvision's readers fail without saying which file (an assertion, a pickle
error, "Dataset not found or corrupted"), so on failure each file is checked on its own with
torchvision's tools (the md5 it records for the official CIFAR/SVHN files; its IDX reader in
strict mode for the MNIST family) and the first bad one is named.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imbal.data import cache
from imbal.data.split import Dataset, Split, resize_images
from imbal.errors import UserError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Spec:
    dataset: str  # the torchvision.datasets class
    folder: str  # where its files sit under the root ("" = the root itself)
    files: dict[str, tuple[str, ...]]  # split -> the files torchvision reads for it
    split_kwargs: dict[str, dict[str, Any]]  # split -> the class's arguments that select it
    layout: str  # axes of the class's .data: NHW, NHWC or NCHW
    official_md5: Callable[[type], dict[str, str]] | None = None  # None: IDX files, no md5
    labels: str = "targets"  # the attribute holding the labels
    classes: tuple[str, ...] | None = None  # None: the class's own .classes


def _cifar_md5(cls: type) -> dict[str, str]:
    return {**dict(cls.train_list + cls.test_list), cls.meta["filename"]: cls.meta["md5"]}


def _svhn_md5(cls: type) -> dict[str, str]:
    return {name: md5 for _, name, md5 in cls.split_list.values()}


_TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}


def _idx_spec(dataset: str) -> Spec:
    """MNIST and its look-alikes: four uncompressed IDX files under ROOT/<Class>/raw/."""
    files = {split: (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    return Spec(dataset, f"{dataset}/raw", files, _TRAIN_TEST, "NHW")


SPECS: dict[str, Spec] = {
    "mnist": _idx_spec("MNIST"),
    "fashion_mnist": _idx_spec("FashionMNIST"),
    "kmnist": _idx_spec("KMNIST"),
    "cifar10": Spec("CIFAR10", "cifar-10-batches-py",
                    {"train": (*(f"data_batch_{i}" for i in range(1, 6)), "batches.meta"),
                     "test": ("test_batch", "batches.meta")},
                    _TRAIN_TEST, "NHWC", official_md5=_cifar_md5),
    "cifar100": Spec("CIFAR100", "cifar-100-python",
                     {"train": ("train", "meta"), "test": ("test", "meta")},
                     _TRAIN_TEST, "NHWC", official_md5=_cifar_md5),
    # SVHN's .mat files sit in the root itself; its labels are `.labels` (10 already mapped to
    # digit 0 by torchvision) and it has no `.classes`.
    "svhn": Spec("SVHN", "", {"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
                 {"train": {"split": "train"}, "test": {"split": "test"}}, "NCHW",
                 official_md5=_svhn_md5, labels="labels", classes=tuple("0123456789")),
}


def load_standard(key: str, root: str, download: bool, image_size: int | None) -> Dataset:
    """Data set ``key`` of SPECS under ``root``: from the cache, else read by torchvision."""
    spec = SPECS[key]
    root = os.path.abspath(root)
    where = os.path.join(root, spec.folder)
    paths = {s: [os.path.join(where, f) for f in spec.files[s]] for s in SPLITS}
    every = list(dict.fromkeys(paths["train"] + paths["test"]))
    if _missing(every):
        if not download:
            raise UserError(_not_found(key, spec, _missing(every)))
        _download(key, spec, root)

    def build() -> dict:
        blob: dict[str, Any] = {}
        for split in SPLITS:
            images, targets, classes = _read_split(key, spec, root, split, every, image_size)
            blob[f"{split}_images"], blob[f"{split}_targets"] = images, targets
            blob["classes"] = classes
        return blob

    blob = cache.cached(key, {"root": root, "image_size": image_size}, cache.stamp(every), build,
                        what=f"read {where or root} with torchvision.datasets.{spec.dataset}")
    return Dataset(name=key, classes=list(blob["classes"]),
                   train=Split(blob["train_images"], blob["train_targets"]),
                   test=Split(blob["test_images"], blob["test_targets"]))


def _missing(paths: list[str]) -> list[str]:
    return [p for p in paths if not os.path.isfile(p)]


def _holding(spec: Spec) -> str:
    if spec.folder:
        return f"{spec.folder}/"
    return " and ".join(dict.fromkeys(f for s in SPLITS for f in spec.files[s]))


def _not_found(key: str, spec: Spec, missing: list[str]) -> str:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return (f"{key}: files not found, expected {missing[0]}{more}; set data.download: true "
            f"(needs internet) or set data.root / IMBAL_DATA to a directory holding "
            f"{_holding(spec)}")


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _tv_class(spec: Spec) -> type:
    import torchvision.datasets

    return getattr(torchvision.datasets, spec.dataset)


def _remove_empty(fresh: list[str]) -> None:
    """Folders a failed download created and left empty (root/MNIST/raw/...): removed, so an
    offline `download: true` leaves nothing behind."""
    for top in fresh:
        if not os.path.isdir(top):
            continue
        for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(folder)  # only if empty
            except OSError:
                pass


def _download(key: str, spec: Spec, root: str) -> None:
    """torchvision fetches what is missing (MNIST: all four files at once; SVHN: per split)."""
    cls = _tv_class(spec)
    where = os.path.join(root, spec.folder)
    every = [os.path.join(where, f) for s in SPLITS for f in spec.files[s]]
    for split in SPLITS:
        if not _missing(every):
            break
        fresh = [d for d in (root, where) if not os.path.exists(d)]
        try:
            cls(root=root, download=True, **spec.split_kwargs[split])
        except Exception as e:  # no internet, unwritable root, bad archive: all user-fixable
            _remove_empty(fresh)
            raise UserError(
                f"{key}: download into {where} failed ({_first_line(e)}); without internet "
                f"put the files there yourself, or set data.root / IMBAL_DATA to a directory "
                f"holding {_holding(spec)}") from e
    if _missing(every):
        raise UserError(_not_found(key, spec, _missing(every)))


def _read_split(key: str, spec: Spec, root: str, split: str, every: list[str],
                image_size: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    cls = _tv_class(spec)
    try:
        ds = cls(root=root, download=False, **spec.split_kwargs[split])
    except Exception as e:  # torchvision's readers raise many kinds; find the file instead
        raise UserError(_unreadable(key, spec, split, every, e)) from e
    files = ", ".join(os.path.join(spec.folder, f) for f in spec.files[split])
    images = _nchw(key, split, files, ds.data, spec.layout)
    targets = torch.as_tensor(np.asarray(getattr(ds, spec.labels)), dtype=torch.int64).flatten()
    classes = [str(c) for c in (spec.classes or ds.classes)]
    if len(images) != len(targets):
        raise UserError(f"{key}: the {split} files ({files}) hold {len(images)} images but "
                        f"{len(targets)} labels")
    bad = targets[(targets < 0) | (targets >= len(classes))]
    if bad.numel():
        raise UserError(f"{key}: the {split} files ({files}) hold label {int(bad[0])}, outside "
                        f"0..{len(classes) - 1}")
    if image_size is not None:
        images = resize_images(images, image_size)
    return images.contiguous(), targets, classes


def _nchw(key: str, split: str, files: str, data: Any, layout: str) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(data))
    if images.dtype != torch.uint8 or images.ndim != len(layout):
        raise UserError(f"{key}: the {split} files ({files}) hold {images.dtype} images of "
                        f"shape {tuple(images.shape)}, expected uint8 {layout}")
    if layout == "NHW":
        return images.unsqueeze(1)
    return images.permute(0, 3, 1, 2) if layout == "NHWC" else images


def _unreadable(key: str, spec: Spec, split: str, every: list[str], e: Exception) -> str:
    """One line naming the damaged file, found by checking each file on its own."""
    fix = "put the original file there, or delete it and set data.download: true"
    if spec.official_md5 is None:
        from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

        for path in every:
            try:  # strict: the data must be exactly as long as the header says
                read_sn3_pascalvincent_tensor(path, strict=True)
            except Exception as bad:
                return f"{key}: could not read {path}: not a valid IDX file ({_first_line(bad)}); {fix}"
    else:
        from torchvision.datasets.utils import check_integrity

        md5 = spec.official_md5(_tv_class(spec))
        for path in every:
            if not check_integrity(path, md5.get(os.path.basename(path))):
                return (f"{key}: could not read {path}: its md5 differs from the official "
                        f"file's (damaged or not the original); {fix}")
    where = os.path.join(os.path.dirname(every[0]), "")
    return f"{key}: could not read the {split} files under {where} ({_first_line(e)}); {fix}"
