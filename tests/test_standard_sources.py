"""The standard sets read by torchvision.datasets, on synthetic files in the real on-disk
formats: shapes, dtypes, exact pixels and label order, class names, refusals with one line."""

from __future__ import annotations

import os
import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch
from synth import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    md5_of,
    write_cifar10_batches,
    write_cifar100,
    write_idx,
    write_mnist_idx,
    write_svhn,
)

from imbal.data.sources import load_source
from imbal.data.standard import SPECS
from imbal.errors import UserError

MNIST_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                 "7 - seven", "8 - eight", "9 - nine"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
KMNIST = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]

# key -> (writer(root, n_train_per_class, n_test_per_class, seed), classes, C×H×W)
SETS = {
    "mnist": (lambda r, a, b, s: write_mnist_idx(r, a, b, seed=s), MNIST_CLASSES, (1, 28, 28)),
    "fashion_mnist": (lambda r, a, b, s: write_mnist_idx(r, a, b, seed=s, folder="FashionMNIST"),
                      FASHION, (1, 28, 28)),
    "kmnist": (lambda r, a, b, s: write_mnist_idx(r, a, b, seed=s, folder="KMNIST"), KMNIST,
               (1, 28, 28)),
    "cifar10": (lambda r, a, b, s: write_cifar10_batches(r, a, b, seed=s), CIFAR10_CLASSES,
                (3, 32, 32)),
    "cifar100": (lambda r, a, b, s: write_cifar100(r, a, b, seed=s), CIFAR100_CLASSES, (3, 32, 32)),
    "svhn": (lambda r, a, b, s: write_svhn(r, a, b, seed=s), [str(d) for d in range(10)],
             (3, 32, 32)),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


def as_official(monkeypatch, key: str, root) -> None:
    """Record the synthetic files' md5s as torchvision's official ones, so that its integrity
    check passes on them and still fails on a file damaged afterwards."""
    import torchvision.datasets as tvd

    spec = SPECS[key]
    cls = getattr(tvd, spec.dataset)
    folder = os.path.join(str(root), spec.folder)

    def md5(name: str) -> str:
        return md5_of(os.path.join(folder, name))

    if key == "svhn":
        for split in ("train", "test"):
            url, name, _ = cls.split_list[split]
            monkeypatch.setitem(cls.split_list, split, [url, name, md5(name)])
    elif spec.official_md5 is not None:
        monkeypatch.setattr(cls, "train_list", [[n, md5(n)] for n, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[n, md5(n)] for n, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


def write(monkeypatch, key, root, n_train=3, n_test=2, seed=1) -> dict:
    data = SETS[key][0](str(root), n_train, n_test, seed)
    as_official(monkeypatch, key, root)
    return data


@pytest.mark.parametrize("key", sorted(SETS))
def test_standard_set_exact(tmp_path, monkeypatch, key):
    _, classes, chw = SETS[key]
    n_classes = len(classes)
    data = write(monkeypatch, key, tmp_path)
    ds = load_source(key, root=str(tmp_path))
    assert ds.name == key and ds.classes == classes
    for split, n in (("train", 3), ("test", 2)):
        got = getattr(ds, split)
        assert tuple(got.images.shape) == (n * n_classes, *chw)
        assert got.images.dtype == torch.uint8 and got.targets.dtype == torch.int64
        assert got.images.is_contiguous() and got.images.device.type == "cpu"
        assert torch.equal(got.images, torch.from_numpy(data[f"{split}_images"]))
        assert torch.equal(got.targets, torch.from_numpy(data[f"{split}_labels"]))
        assert torch.bincount(got.targets).tolist() == [n] * n_classes


def test_svhn_label_10_is_digit_0(tmp_path, monkeypatch):
    from scipy.io import loadmat

    write(monkeypatch, "svhn", tmp_path)
    raw = loadmat(str(tmp_path / "train_32x32.mat"))["y"].ravel()
    assert sorted(set(raw.tolist())) == list(range(1, 11))  # the file's own convention
    ds = load_source("svhn", root=str(tmp_path))
    assert torch.equal(ds.train.targets, torch.from_numpy(np.where(raw == 10, 0, raw)).long())


def test_resized_once_and_cached(tmp_path, monkeypatch):
    write(monkeypatch, "cifar10", tmp_path)
    ds = load_source("cifar10", root=str(tmp_path), image_size=16)
    assert tuple(ds.train.images.shape) == (30, 3, 16, 16) and ds.train.images.dtype == torch.uint8
    assert len(os.listdir(tmp_path / "cache")) == 1
    load_source("cifar10", root=str(tmp_path))  # another size, another entry beside it
    assert len(os.listdir(tmp_path / "cache")) == 2


@pytest.mark.parametrize("key, expected, holding", [
    ("mnist", "MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/"),
    ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/"),
    ("kmnist", "KMNIST/raw/train-images-idx3-ubyte", "KMNIST/raw/"),
    ("cifar10", "cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/"),
    ("cifar100", "cifar-100-python/train", "cifar-100-python/"),
    ("svhn", "train_32x32.mat", "train_32x32.mat and test_32x32.mat"),
])
def test_missing_files_say_where(tmp_path, key, expected, holding):
    with pytest.raises(UserError) as err:
        load_source(key, root=str(tmp_path), download=False)
    n_files = len({f for files in SPECS[key].files.values() for f in files})
    assert str(err.value) == (
        f"{key}: files not found, expected {tmp_path / expected} (and {n_files - 1} more); set "
        "data.download: true (needs internet) or set data.root / IMBAL_DATA to a directory "
        f"holding {holding}")
    assert not (tmp_path / "cache").exists()


def test_one_missing_file_of_several(tmp_path, monkeypatch):
    write(monkeypatch, "cifar10", tmp_path)
    os.unlink(tmp_path / "cifar-10-batches-py" / "test_batch")
    with pytest.raises(UserError, match=r"expected .*cifar-10-batches-py/test_batch; set"):
        load_source("cifar10", root=str(tmp_path))


def test_download_passes_download_true_to_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    fetched = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        fetched.append(filename)
        write_mnist_idx(str(tmp_path), 2, 1, seed=len(fetched))  # as if extracted

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    ds = load_source("mnist", root=str(tmp_path), download=True)
    assert fetched == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert len(ds.train) == 20 and len(ds.test) == 10
    load_source("mnist", root=str(tmp_path), download=True)  # files there: nothing fetched
    assert len(fetched) == 4


def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist
    import torchvision.datasets.svhn as tv_svhn

    def offline(*args, **kwargs):
        raise URLError("no internet")

    for module, name in ((tv_mnist, "download_and_extract_archive"),
                         (tv_cifar, "download_and_extract_archive"), (tv_svhn, "download_url")):
        monkeypatch.setattr(module, name, offline)
    for key, where in (("mnist", "MNIST/raw"), ("cifar100", "cifar-100-python"), ("svhn", "")):
        with pytest.raises(UserError) as err:
            load_source(key, root=str(tmp_path), download=True)
        msg = str(err.value)
        assert msg.startswith(f"{key}: download into {os.path.join(tmp_path, where)} failed (")
        assert "without internet put the files there yourself" in msg and "\n" not in msg


def _damaged(key: str, root, name: str, content: bytes) -> str:
    """The one-line refusal after file ``name`` (under the set's folder) gets ``content``."""
    path = os.path.join(str(root), SPECS[key].folder, name)
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(UserError) as err:
        load_source(key, root=str(root))
    msg = str(err.value)
    assert "\n" not in msg and "put the original file there" in msg, msg
    return msg


def test_a_damaged_idx_file_is_named(tmp_path, monkeypatch):
    write(monkeypatch, "mnist", tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    good = (raw / "t10k-images-idx3-ubyte").read_bytes()
    for content in (good[:100], good + b"\0", b"\x1f\x8b" + good[2:], b""):
        msg = _damaged("mnist", tmp_path, "t10k-images-idx3-ubyte", content)
        assert msg.startswith(f"mnist: could not read {raw / 't10k-images-idx3-ubyte'}: not a "
                              "valid IDX file (")


def test_idx_counts_and_labels_are_checked(tmp_path, monkeypatch):
    write(monkeypatch, "kmnist", tmp_path)
    raw = tmp_path / "KMNIST" / "raw"
    write_idx(str(raw / "t10k-labels-idx1-ubyte"), np.zeros(19, dtype=np.uint8))
    with pytest.raises(UserError) as err:
        load_source("kmnist", root=str(tmp_path))
    assert str(err.value) == ("kmnist: the test files (KMNIST/raw/t10k-images-idx3-ubyte, "
                              "KMNIST/raw/t10k-labels-idx1-ubyte) hold 20 images but 19 labels")
    write_idx(str(raw / "t10k-labels-idx1-ubyte"), np.array([10] + [0] * 19, dtype=np.uint8))
    with pytest.raises(UserError, match=r"the test files \(.*\) hold label 10, outside 0\.\.9$"):
        load_source("kmnist", root=str(tmp_path))


@pytest.mark.parametrize("key, name", [
    ("cifar10", "data_batch_3"), ("cifar10", "test_batch"), ("cifar10", "batches.meta"),
    ("cifar100", "meta"), ("cifar100", "test"), ("svhn", "test_32x32.mat"),
])
def test_a_damaged_file_is_named_by_its_md5(tmp_path, monkeypatch, key, name):
    write(monkeypatch, key, tmp_path, n_train=1, n_test=1)
    path = os.path.join(str(tmp_path), SPECS[key].folder, name)
    good = open(path, "rb").read()
    msg = _damaged(key, tmp_path, name, good[: len(good) // 2])
    assert msg.startswith(f"{key}: could not read {path}: its md5 differs from the official "
                          "file's (damaged or not the original)")


def test_files_that_are_not_the_official_ones(tmp_path):
    """Without as_official: torchvision refuses CIFAR files whose md5 it does not know."""
    write_cifar10_batches(str(tmp_path), 1, 1)
    with pytest.raises(UserError, match=r"cifar10: could not read .*/data_batch_1: its md5 "):
        load_source("cifar10", root=str(tmp_path))


def test_an_unreadable_file_with_the_right_md5(tmp_path, monkeypatch):
    """torchvision's own error, with the split's folder, when no single file can be blamed."""
    write_cifar10_batches(str(tmp_path), 1, 1)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8)}, f)  # no labels
    as_official(monkeypatch, "cifar10", tmp_path)
    with pytest.raises(UserError) as err:
        load_source("cifar10", root=str(tmp_path))
    assert str(err.value) == (
        f"cifar10: could not read the train files under {tmp_path / 'cifar-10-batches-py'}/ "
        "(KeyError: 'fine_labels'); put the original file there, or delete it and set "
        "data.download: true")
