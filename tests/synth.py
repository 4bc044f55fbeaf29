"""Synthetic data sets written in the real on-disk formats, for tests (no real data needed).

Every image is dark noise (0..63) with one bright block (200..255) whose position depends on
the class: class k sits in cell k of a ceil(sqrt(num_classes))-wide grid. A tiny model learns
that in a few steps, so the same helpers serve loader tests and "training beats chance" tests.

All writers return the exact arrays they wrote, so tests can compare pixels and label order:
``{"train_images", "train_labels", "test_images", "test_labels"}`` (images uint8 N×C×H×W,
labels int64 N, in file order). Labels are shuffled with ``seed``, so label order matters.

    write_mnist_idx(root, 3, 2)           -> root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    write_idx(path, uint8_array)          -> one IDX file (for damaged-file tests)
    write_fashion_mnist_idx(root, 3, 2)   -> root/FashionMNIST/raw/...
    write_mnist_idx(root, 3, 2, folder="KMNIST")  -> root/KMNIST/raw/...
    write_cifar10_batches(root, 3, 2)     -> root/cifar-10-batches-py/data_batch_1..5, test_batch,
                                             batches.meta
    write_cifar100(root, 2, 1)            -> root/cifar-100-python/train, test, meta
    write_svhn(root, 3, 2)                -> root/train_32x32.mat, root/test_32x32.mat
    write_image_folder(root, ["a", "b"], 4, size=16, fmt="png")
                                          -> root/train/<class>/NNNN.png, root/test/<class>/NNNN.png
"""

from __future__ import annotations

import math
import os
import pickle
import struct

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def class_images(labels: np.ndarray, num_classes: int, channels: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 N×C×size×size: noise 0..63 plus a bright block at the class's grid cell."""
    grid = math.ceil(math.sqrt(num_classes))
    cell = size // grid
    images = rng.integers(0, 64, size=(len(labels), channels, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), grid)
        block = rng.integers(200, 256, size=(channels, cell, cell), dtype=np.uint8)
        images[i, :, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = block
    return images


def _labels(n_per_class: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), n_per_class)
    return labels[rng.permutation(len(labels))]


def _split_arrays(n_train: int, n_test: int, num_classes: int, channels: int, size: int,
                  seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _labels(n, num_classes, rng)
        out[f"{split}_labels"] = labels
        out[f"{split}_images"] = class_images(labels, num_classes, channels, size, rng)
    return out


def write_mnist_idx(root: str, n_train_per_class: int, n_test_per_class: int,
                    num_classes: int = 10, seed: int = 0, *, folder: str = "MNIST",
                    size: int = 28) -> dict[str, np.ndarray]:
    """The four uncompressed IDX files under root/<folder>/raw/, names as torchvision expects.

    IDX: big-endian int32 magic (0x0803 images, 0x0801 labels), the dimensions, then uint8 data.
    """
    data = _split_arrays(n_train_per_class, n_test_per_class, num_classes, 1, size, seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), data[f"{split}_images"][:, 0])
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), data[f"{split}_labels"])
    return data


def write_idx(path: str, array: np.ndarray) -> None:
    """One uncompressed IDX file of unsigned bytes: 0x00 0x00 0x08 ndim, the sizes, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist_idx(root: str, n_train_per_class: int, n_test_per_class: int,
                            num_classes: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Same as write_mnist_idx, under root/FashionMNIST/raw/."""
    return write_mnist_idx(root, n_train_per_class, n_test_per_class, num_classes, seed,
                           folder="FashionMNIST")


def write_cifar10_batches(root: str, n_train_per_class: int, n_test_per_class: int,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """root/cifar-10-batches-py/: data_batch_1..5 (train split evenly), test_batch, batches.meta.

    Each batch is a pickled dict with "data" (uint8 N×3072, channel-major rows), "labels",
    "batch_label" and "filenames", as in the official archive.
    """
    data = _split_arrays(n_train_per_class, n_test_per_class, 10, 3, 32, seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_parts = np.array_split(np.arange(len(data["train_labels"])), 5)
    batches = [(f"data_batch_{i + 1}", "train", idx) for i, idx in enumerate(train_parts)]
    batches.append(("test_batch", "test", np.arange(len(data["test_labels"]))))
    for name, split, idx in batches:
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in data[f"{split}_labels"][idx]],
            "data": data[f"{split}_images"][idx].reshape(len(idx), -1),
            "filenames": [f"{name}_{i}.png" for i in idx],
        }
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return data


def write_image_folder(root: str, classes: list[str], n_per_class: int, size: int = 16, *,
                       n_test_per_class: int | None = None, fmt: str = "png",
                       seed: int = 0) -> dict[str, np.ndarray]:
    """RGB files root/{train,test}/<class>/NNNN.<ext>; fmt "png", "jpg" or "mixed" (alternating).

    Labels are the positions of the classes in sorted(classes), the order load_source uses;
    images and labels are returned in the order the loader reads them (class, then file name).
    JPEG is lossy: compare JPEG pixels with a tolerance, PNG pixels exactly.
    """
    from PIL import Image

    order = sorted(classes)
    n_test = n_per_class if n_test_per_class is None else n_test_per_class
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_per_class), ("test", n_test)):
        labels = np.repeat(np.arange(len(order), dtype=np.int64), n)
        images = class_images(labels, len(order), 3, size, rng)
        for i, (img, k) in enumerate(zip(images, labels, strict=True)):
            j = i % n
            ext = {"png": "png", "jpg": "jpg", "mixed": ("png", "jpg")[j % 2]}[fmt]
            folder = os.path.join(root, split, order[k])
            os.makedirs(folder, exist_ok=True)
            pil = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), "RGB")
            pil.save(os.path.join(folder, f"{j:04d}.{ext}"), quality=95)
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


CIFAR100_CLASSES = [f"fine{k:02d}" for k in range(100)]  # synthetic names, read from meta


def write_cifar100(root: str, n_train_per_class: int, n_test_per_class: int,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """root/cifar-100-python/: "train" and "test" (pickled dicts with "data" uint8 N×3072,
    "fine_labels", "coarse_labels", "filenames", "batch_label") and "meta" (with
    "fine_label_names" and "coarse_label_names"), as in the official archive."""
    data = _split_arrays(n_train_per_class, n_test_per_class, 100, 3, 32, seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "test"):
        labels = [int(v) for v in data[f"{split}_labels"]]
        entry = {
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [k // 5 for k in labels],
            "data": data[f"{split}_images"].reshape(len(labels), -1),
            "filenames": [f"{split}_{i}.png" for i in range(len(labels))],
        }
        with open(os.path.join(folder, split), "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"fine_label_names": CIFAR100_CLASSES,
            "coarse_label_names": [f"coarse{k:02d}" for k in range(20)]}
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return data


def write_svhn(root: str, n_train_per_class: int, n_test_per_class: int,
               seed: int = 0) -> dict[str, np.ndarray]:
    """root/train_32x32.mat and root/test_32x32.mat as the official files: "X" uint8
    32×32×3×N (H, W, C, N), "y" uint8 N×1 with 10 standing for the digit 0. The returned labels
    are the digits (0..9)."""
    from scipy.io import savemat

    data = _split_arrays(n_train_per_class, n_test_per_class, 10, 3, 32, seed)
    os.makedirs(root, exist_ok=True)
    for split in ("train", "test"):
        digits = data[f"{split}_labels"]
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        x = np.ascontiguousarray(data[f"{split}_images"].transpose(2, 3, 1, 0))
        savemat(os.path.join(root, f"{split}_32x32.mat"), {"X": x, "y": y})
    return data


def md5_of(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def poison_training_batch(monkeypatch, at_call: int) -> None:
    """Make the at_call-th training batch (1-based, counted over the whole run) NaN."""
    from imbal.training.trainer import Trainer

    real = Trainer.prepare
    calls = {"n": 0}

    def poisoned(self, images, train):
        x = real(self, images, train)
        if train:
            calls["n"] += 1
            if calls["n"] == at_call:
                x = x * float("nan")
        return x

    monkeypatch.setattr(Trainer, "prepare", poisoned)
