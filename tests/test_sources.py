"""Data sources on synthetic files in the real formats: shapes, dtypes, label order, refusals."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from urllib.error import URLError

import numpy as np
import pytest
import torch
from synth import (
    CIFAR10_CLASSES,
    write_cifar10_batches,
    write_fashion_mnist_idx,
    write_idx,
    write_image_folder,
    write_mnist_idx,
)

from imbal.data import imagefolder
from imbal.data.sources import SOURCES, load_source, resolve_root
from imbal.errors import UserError

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


def _check_split(split, images: np.ndarray, labels: np.ndarray) -> None:
    assert split.images.dtype == torch.uint8 and split.targets.dtype == torch.int64
    assert split.images.is_contiguous() and split.images.device.type == "cpu"
    assert tuple(split.images.shape) == images.shape
    assert torch.equal(split.targets, torch.from_numpy(labels))
    assert torch.equal(split.images, torch.from_numpy(images))


def test_registered_names():
    assert SOURCES.names() == ["cifar10", "digits", "fashion_mnist", "imagefolder", "mnist"]
    with pytest.raises(UserError, match="unknown dataset 'mnst'.*did you mean 'mnist'"):
        load_source("mnst")


def test_mnist_idx(tmp_path):
    data = write_mnist_idx(str(tmp_path), 3, 2, seed=1)
    ds = load_source("mnist", root=str(tmp_path), download=False, image_size=None)
    assert ds.name == "mnist" and len(ds.classes) == 10 and ds.classes[3] == "3 - three"
    assert tuple(ds.train.images.shape) == (30, 1, 28, 28) and len(ds.test) == 20
    _check_split(ds.train, data["train_images"], data["train_labels"])
    _check_split(ds.test, data["test_images"], data["test_labels"])


def test_mnist_resized(tmp_path):
    write_mnist_idx(str(tmp_path), 2, 1)
    ds = load_source("mnist", root=str(tmp_path), image_size=32)
    assert tuple(ds.train.images.shape) == (20, 1, 32, 32) and ds.train.images.dtype == torch.uint8
    with pytest.raises(UserError, match="data.image_size must be a positive integer"):
        load_source("mnist", root=str(tmp_path), image_size=0)


def test_fashion_mnist_idx(tmp_path):
    data = write_fashion_mnist_idx(str(tmp_path), 2, 1, seed=2)
    ds = load_source("fashion_mnist", root=str(tmp_path))
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    _check_split(ds.train, data["train_images"], data["train_labels"])
    _check_split(ds.test, data["test_images"], data["test_labels"])


def test_cifar10_batches(tmp_path):
    data = write_cifar10_batches(str(tmp_path), 3, 2, seed=3)
    ds = load_source("cifar10", root=str(tmp_path))
    assert ds.classes == CIFAR10_CLASSES
    assert tuple(ds.train.images.shape) == (30, 3, 32, 32) and tuple(ds.test.images.shape) == (
        20, 3, 32, 32)
    _check_split(ds.train, data["train_images"], data["train_labels"])
    _check_split(ds.test, data["test_images"], data["test_labels"])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_missing_files_say_where(tmp_path, name, expected):
    with pytest.raises(UserError) as err:
        load_source(name, root=str(tmp_path), download=False)
    msg = str(err.value)
    assert os.path.join(str(tmp_path), expected) in msg and "\n" not in msg
    assert "data.download: true" in msg and "IMBAL_DATA" in msg


def test_download_failure_is_a_user_error(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no internet")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match="mnist: download into .*MNIST/raw failed"):
        load_source("mnist", root=str(tmp_path), download=True)
    with pytest.raises(UserError, match="cifar10: download into .*cifar-10-batches-py failed"):
        load_source("cifar10", root=str(tmp_path), download=True)


def _cifar10_without_md5() -> type:
    """torchvision's CIFAR10 with its md5 checks reduced to "file exists" (synthetic batches)."""
    from torchvision.datasets import CIFAR10

    class _CIFAR10(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return _CIFAR10


@pytest.mark.parametrize("name, tv_name, write", [
    ("mnist", "MNIST", write_mnist_idx),
    ("fashion_mnist", "FashionMNIST", write_fashion_mnist_idx),
    ("cifar10", "CIFAR10", write_cifar10_batches),
])
def test_same_as_torchvision(tmp_path, name, tv_name, write):
    """imbal's readers give exactly torchvision's tensors and class names on the same files."""
    import torchvision.datasets as tvd

    write(str(tmp_path), 4, 3, seed=5)
    ds = load_source(name, root=str(tmp_path))
    make = _cifar10_without_md5() if name == "cifar10" else getattr(tvd, tv_name)
    for split, train in ((ds.train, True), (ds.test, False)):
        tv = make(root=str(tmp_path), train=train)
        images = torch.as_tensor(tv.data)  # MNIST: N×H×W tensor; CIFAR10: N×H×W×C numpy
        images = images.permute(0, 3, 1, 2) if name == "cifar10" else images.unsqueeze(1)
        assert torch.equal(split.images, images.contiguous())
        assert torch.equal(split.targets, torch.as_tensor(tv.targets, dtype=torch.int64))
        assert ds.classes == list(tv.classes)  # MNIST's: the class attribute, pinned here


def _idx_error(tmp_path, name: str, content: bytes) -> str:
    """The one-line UserError for MNIST whose file ``name`` holds ``content``; checks the path."""
    write_mnist_idx(str(tmp_path), 2, 1)
    path = tmp_path / "MNIST" / "raw" / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_source("mnist", root=str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"mnist: could not read {path}: ") and "\n" not in msg
    return msg


def test_idx_truncated_or_over_long(tmp_path):
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    write_mnist_idx(str(tmp_path), 2, 1)
    good = path.read_bytes()
    assert "truncated: 100 bytes, but a 20×28×28 header needs 15696" in _idx_error(
        tmp_path, path.name, good[:100])
    assert "over-long: 15697 bytes" in _idx_error(tmp_path, path.name, good + b"\0")
    assert "truncated: 10 bytes, shorter than its 16-byte header" in _idx_error(
        tmp_path, path.name, good[:10])


def test_idx_bad_header(tmp_path):
    good = struct.pack(">BBBBI", 0, 0, 8, 1, 20) + bytes(20)
    name = "train-labels-idx1-ubyte"
    assert "not an IDX file" in _idx_error(tmp_path, name, b"\x1f\x8b" + good[2:])  # gzip
    assert "not an IDX file" in _idx_error(tmp_path, name, b"")
    assert "data type byte is 0x0D, expected 0x08" in _idx_error(  # float32
        tmp_path, name, good[:2] + b"\x0d" + good[3:])
    three_dims = struct.pack(">BBBBIII", 0, 0, 8, 3, 20, 1, 1) + bytes(20)
    assert "it has 3 dimensions, expected 1" in _idx_error(tmp_path, name, three_dims)
    bad_label = struct.pack(">BBBBI", 0, 0, 8, 1, 20) + bytes([10] + [0] * 19)
    assert "label 10 is outside 0..9" in _idx_error(tmp_path, name, bad_label)


def test_idx_count_mismatch(tmp_path):
    write_mnist_idx(str(tmp_path), 2, 1)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(str(raw / "t10k-labels-idx1-ubyte"), np.zeros(9, dtype=np.uint8))
    with pytest.raises(UserError) as err:
        load_source("mnist", root=str(tmp_path))
    assert str(err.value) == (f"mnist: {raw / 't10k-images-idx3-ubyte'} holds 10 images but "
                              f"{raw / 't10k-labels-idx1-ubyte'} holds 9 labels")


def test_cifar10_damaged_batch(tmp_path):
    write_cifar10_batches(str(tmp_path), 2, 1)
    folder = tmp_path / "cifar-10-batches-py"
    path = folder / "data_batch_3"
    good = path.read_bytes()

    def error() -> str:
        with pytest.raises(UserError) as err:
            load_source("cifar10", root=str(tmp_path))
        msg = str(err.value)
        assert msg.startswith(f"cifar10: could not read {path}: ") and "\n" not in msg
        return msg

    path.write_bytes(good[: len(good) // 2])
    assert "not a readable pickle" in error()
    path.write_bytes(b"garbage")
    assert "not a readable pickle" in error()
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((4, 1024), np.uint8), "labels": [0] * 4}, f)
    assert "'data' is a uint8 N×3072 array, got uint8 (4, 1024)" in error()
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}, f)
    assert "expected 4 integer 'labels'" in error()
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]}, f)
    assert "label 10 is outside 0..9" in error()
    path.write_bytes(good)
    (folder / "batches.meta").write_bytes(pickle.dumps(["not", "a", "dict"]))
    with pytest.raises(UserError, match=r"cifar10: could not read .*batches\.meta: expected a dict"):
        load_source("cifar10", root=str(tmp_path))


def test_loading_idx_does_not_import_torchvision(tmp_path):
    write_mnist_idx(str(tmp_path), 2, 1)
    code = ("import sys; from imbal.data.sources import load_source; "
            f"ds = load_source('mnist', root={str(tmp_path)!r}); assert len(ds.train) == 20; "
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_resolve_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_DATA", "/from/env")
    assert resolve_root("/explicit") == "/explicit"
    assert resolve_root(None) == "/from/env"
    os.makedirs(tmp_path / "cifar10-jpeg")
    monkeypatch.setenv("IMBAL_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "cifar10-jpeg")
    assert resolve_root("cifar10-jpeg") == os.path.join(str(tmp_path), "cifar10-jpeg")
    monkeypatch.delenv("IMBAL_DATA")
    assert resolve_root(None) == "./data"


def test_digits_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ds = load_source("digits")
    assert ds.classes == [str(c) for c in range(10)]
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == 355
    assert tuple(ds.train.images.shape) == (1442, 1, 8, 8)
    assert int(ds.train.images.max()) == 255 and int(ds.train.images.min()) == 0
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        expected = np.rint(bunch.images[idx[4::5]] * 255 / 16).astype(np.uint8)
        assert torch.equal(ds.test.images[ds.test.targets == c, 0], torch.from_numpy(expected))
        assert int((ds.train.targets == c).sum()) == len(idx) - len(idx[4::5])


# ---------------------------------------------------------------- image folder


def test_image_folder_png_exact(tmp_path, capsys):
    root = tmp_path / "data"
    data = write_image_folder(str(root), ["cat", "ant", "bee"], 4, size=12, n_test_per_class=2)
    (root / "train" / "bee" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"\0\1")
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    ds = load_source("imagefolder", root=str(root))
    assert ds.classes == ["ant", "bee", "cat"]
    assert tuple(ds.train.images.shape) == (12, 3, 12, 12) and tuple(ds.test.images.shape) == (
        6, 3, 12, 12)
    _check_split(ds.train, data["train_images"], data["train_labels"])
    _check_split(ds.test, data["test_images"], data["test_labels"])
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "skipped 2 file(s)" in err[0] and "train/bee/notes.txt" in err[0]
    load_source("imagefolder", root=str(root))  # from the cache: the same single warning
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "skipped 2 file(s)" in err[0]


def test_image_folder_jpeg_and_mixed(tmp_path):
    data = write_image_folder(str(tmp_path / "j"), ["a", "b", "c", "d"], 3, size=16, fmt="mixed")
    ds = load_source("imagefolder", root=str(tmp_path / "j"))
    assert torch.equal(ds.train.targets, torch.from_numpy(data["train_labels"]))
    diff = (ds.train.images.int() - torch.from_numpy(data["train_images"]).int()).abs()
    assert diff[:, :, :, :].float().mean() < 12  # JPEG is lossy; the PNG half is exact
    assert torch.equal(ds.train.images[0], torch.from_numpy(data["train_images"][0]))  # 0000.png


def test_image_folder_sizes(tmp_path):
    write_image_folder(str(tmp_path / "a"), ["x", "y"], 2, size=16)
    write_image_folder(str(tmp_path / "b"), ["x", "y"], 2, size=20)
    os.replace(tmp_path / "b" / "train" / "y" / "0001.png", tmp_path / "a" / "train" / "y" / "big.png")
    with pytest.raises(UserError, match=r"differ in size \(16x16 .* vs 20x20 train/y/big.png\).*"
                                        "data.image_size"):
        load_source("imagefolder", root=str(tmp_path / "a"))
    ds = load_source("imagefolder", root=str(tmp_path / "a"), image_size=8)
    assert tuple(ds.train.images.shape) == (5, 3, 8, 8)


def test_image_folder_refusals(tmp_path):
    root = tmp_path / "r"
    write_image_folder(str(root), ["a", "b"], 2, size=8)
    os.makedirs(root / "train" / "c")
    os.makedirs(root / "test" / "c")
    (root / "train" / "c" / "readme.md").write_text("x")
    with pytest.raises(UserError, match=r"class folder .*train/c holds no images"):
        load_source("imagefolder", root=str(root))
    os.rmdir(root / "test" / "c")
    with pytest.raises(UserError, match=r"same class folders.*missing in test: \['c'\]"):
        load_source("imagefolder", root=str(root))
    empty = tmp_path / "e"
    os.makedirs(empty / "train")
    os.makedirs(empty / "test")
    with pytest.raises(UserError, match="has no class sub-folders"):
        load_source("imagefolder", root=str(empty))
    with pytest.raises(UserError, match="must hold train/ and test/"):
        load_source("imagefolder", root=str(tmp_path))
    with pytest.raises(UserError, match="is not a directory"):
        load_source("imagefolder", root=str(tmp_path / "nowhere"))


def test_image_folder_cache_hit_and_invalidation(tmp_path, monkeypatch):
    root = tmp_path / "d"
    write_image_folder(str(root), ["a", "b"], 3, size=8)
    before = sorted(p for p, _, _ in os.walk(root))
    calls = []
    real = imagefolder._decode_file

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(imagefolder, "_decode_file", counting)
    first = load_source("imagefolder", root=str(root))
    assert len(calls) == 12 and len(os.listdir(tmp_path / "cache")) == 1

    def broken(path, size):
        raise AssertionError("decoded although the cache should have answered")

    monkeypatch.setattr(imagefolder, "_decode_file", broken)
    second = load_source("imagefolder", root=str(root))
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.targets, second.test.targets) and second.classes == ["a", "b"]
    assert sorted(p for p, _, _ in os.walk(root)) == before  # nothing written under the root

    monkeypatch.setattr(imagefolder, "_decode_file", counting)
    write_image_folder(str(tmp_path / "more"), ["a", "b"], 1, size=8)
    os.replace(tmp_path / "more" / "train" / "b" / "0000.png", root / "train" / "b" / "new.png")
    third = load_source("imagefolder", root=str(root))
    assert len(calls) == 12 + 13 and len(third.train) == 7
    assert len(os.listdir(tmp_path / "cache")) == 1  # the stale version was replaced
    assert third.train.targets.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_image_folder_unreadable_cache_is_rebuilt(tmp_path, capsys):
    write_image_folder(str(tmp_path / "d"), ["a", "b"], 1, size=8)
    load_source("imagefolder", root=str(tmp_path / "d"))
    (cached,) = (tmp_path / "cache").iterdir()
    cached.write_bytes(b"garbage")
    ds = load_source("imagefolder", root=str(tmp_path / "d"))
    assert len(ds.train) == 2 and "ignoring unreadable cache file" in capsys.readouterr().err
    assert cached.stat().st_size > 100
