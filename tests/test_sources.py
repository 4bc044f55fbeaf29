"""The source registry and its contract: plugin sources (whole tensors or lazy), the checks on
what a builder returns, prepare_data's selection (pinned to the figures of the readers it
replaced), digits, the data root. The standard sets, the image folder and the cache have their
own files (test_standard_sources.py, test_imagefolder.py, test_data_cache.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synth import write_image_folder, write_mnist_idx

from imbal.config import load_config
from imbal.data.imbalance import imbalance_params, target_counts
from imbal.data.prepare import prepare_data
from imbal.data.sources import (
    SOURCES,
    Dataset,
    LazySplit,
    Split,
    load_source,
    open_source,
    resolve_root,
)
from imbal.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


def register(monkeypatch, name, builder):
    """A source for this test only (the registry has no unregister; monkeypatch restores it)."""
    monkeypatch.setitem(SOURCES._items, name, builder)


def _data(sets: list[str]) -> dict:
    return load_config(None, sets)["data"]


def test_registered_names():
    assert SOURCES.names() == ["cifar10", "cifar100", "digits", "fashion_mnist", "imagefolder",
                               "kmnist", "mnist", "svhn"]
    with pytest.raises(UserError, match="unknown dataset 'mnst'.*did you mean 'mnist'"):
        load_source("mnst")


def test_bundled_configs_name_registered_sources():
    """Every data.source a bundled config names (read raw: one that extends another inherits a
    source named in a file checked here too)."""
    named = set()
    for p in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")):
        named.add((yaml.safe_load(p.read_text()).get("data") or {}).get("source", "digits"))
    assert {"cifar100", "digits", "imagefolder", "mnist"} <= named
    for name in named:
        SOURCES.get(name)


@pytest.mark.parametrize("name, total, tail", [
    ("lt_cifar100_resnet32", 10847, 5),
    ("lt_cifar100_resnet32_ratio10", 19573, 50),
    ("cifar100_resnet32_balanced", 50000, 500),
])
def test_cifar100_configs(name, total, tail):
    """CIFAR-100 (500 training images a class) with the CIFAR-10-LT recipe."""
    root = Path(__file__).resolve().parents[1] / "configs"
    cfg, lt10 = load_config(root / f"{name}.yaml"), load_config(root / "lt_cifar_resnet32.yaml")
    assert cfg["data"]["source"] == "cifar100" and cfg["model"] == lt10["model"]
    assert cfg["train"] == lt10["train"] and cfg["data"]["augment"] == lt10["data"]["augment"]
    imb = cfg["data"]["imbalance"]
    counts = target_counts(imb["kind"], [500] * 100, **imbalance_params(imb))
    assert sum(counts) == total and counts[0] == 500 and counts[-1] == tail


def _tensor_source(root, download, image_size):
    """The simple path: whole uint8 tensors, targets as a plain list of ints."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 6, 6), generator=gen, dtype=torch.uint8)
    return Dataset("plain", Split(images, [i % 3 for i in range(30)]),
                   Split(images[:9].clone(), np.arange(9, dtype=np.int32) % 3), ["x", "y", "z"])


def test_a_plugin_source_of_whole_tensors_needs_no_extra_code(monkeypatch):
    register(monkeypatch, "plain", _tensor_source)
    ds = load_source("plain", image_size=8)
    assert ds.classes == ["x", "y", "z"] and tuple(ds.train.images.shape) == (30, 1, 8, 8)
    assert ds.train.targets.dtype == torch.int64 and ds.test.targets.tolist() == [0, 1, 2] * 3
    prep = prepare_data(_data(["data.source=plain", "data.subset.per_class=4",
                               "data.val_fraction=0.25"]), data_seed=0)
    assert prep.counts()["train"] == [3, 3, 3] and prep.counts()["val"] == [1, 1, 1]
    assert prep.counts()["test"] == [3, 3, 3] and prep.image_size == 6


def _lazy_source(calls):
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, 5, 5), generator=gen, dtype=torch.uint8)
    targets = torch.arange(40) % 4

    def load(idx):
        calls.append(idx.tolist())
        return images[idx]

    def build(root, download, image_size):
        return Dataset("lazy", LazySplit(targets, load), Split(images[:8], targets[:8]),
                       ["a", "b", "c", "d"])

    return build, images


def test_a_lazy_source_is_asked_only_for_the_subset(monkeypatch):
    calls: list = []
    build, images = _lazy_source(calls)
    register(monkeypatch, "lazy", build)
    prep = prepare_data(_data(["data.source=lazy", "data.subset.per_class=2",
                               "data.val_fraction=0", "seeds.data=4"]), data_seed=4)
    (asked,) = calls
    assert len(asked) == 8 and asked == sorted(asked) and len(set(asked)) == 8
    assert [a % 4 for a in asked].count(0) == 2  # two of every class
    assert torch.equal(prep.pool.images, images[asked])
    # the same seed on the whole tensors picks the same images
    register(monkeypatch, "whole", lambda **kw: Dataset(
        "whole", Split(images, torch.arange(40) % 4), Split(images[:8], torch.arange(8) % 4),
        ["a", "b", "c", "d"]))
    same = prepare_data(_data(["data.source=whole", "data.subset.per_class=2",
                               "data.val_fraction=0"]), data_seed=4)
    assert torch.equal(same.pool.images, prep.pool.images)
    calls.clear()
    load_source("lazy")
    assert calls == [list(range(40))]


@pytest.mark.parametrize("returned, message", [
    ("not a dataset", "returned str, not a Dataset"),
    (Dataset("b", Split(torch.zeros(2, 1, 4, 4), torch.zeros(2)), None, []),
     "classes must be a non-empty list"),
    (Dataset("b", Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)),
             Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
             ["a"]), "train images must be a uint8 N×C×H×W tensor, got torch.float32 (2, 1, 4, 4)"),
    (Dataset("b", Split(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
             Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
             ["a"]), "got torch.uint8 (2, 4, 4)"),
    (Dataset("b", Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2) + 0.5),
             Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
             ["a"]), "train targets must be a 1-D integer tensor, got torch.float32"),
    (Dataset("b", Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)),
             (1, 2), ["a"]), "test is tuple, not a Split or LazySplit"),
])
def test_a_builder_returning_the_wrong_thing_is_a_bug(monkeypatch, returned, message):
    register(monkeypatch, "bad", lambda **kw: returned)
    with pytest.raises(TypeError) as err:
        load_source("bad")
    assert message in str(err.value)


def test_bad_labels_and_counts_are_user_errors(monkeypatch):
    img = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    register(monkeypatch, "labels", lambda **kw: Dataset(
        "labels", Split(img, torch.tensor([0, 1, 2])), Split(img, torch.tensor([0, 1, 1])),
        ["a", "b"]))
    with pytest.raises(UserError) as err:
        load_source("labels")
    assert str(err.value) == "labels: train label 2 is outside 0..1 (2 classes)"
    register(monkeypatch, "count", lambda **kw: Dataset(
        "count", Split(img, torch.tensor([0, 1])), Split(img, torch.tensor([0, 1, 1])),
        ["a", "b"]))
    with pytest.raises(UserError) as err:
        load_source("count")
    assert str(err.value) == "count: the train split has 3 images but 2 labels"


def test_a_lazy_load_of_the_wrong_length_is_a_bug(monkeypatch):
    img = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    targets = torch.tensor([0, 1, 0, 1])
    register(monkeypatch, "short", lambda **kw: Dataset(
        "short", LazySplit(targets, lambda idx: img[:1]), Split(img, targets), ["a", "b"]))
    with pytest.raises(TypeError, match=r"load\(\) returned 1 images for 4 indices"):
        load_source("short")


def test_train_and_test_must_share_a_shape(monkeypatch):
    register(monkeypatch, "shapes", lambda **kw: Dataset(
        "shapes", Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])),
        Split(torch.zeros(2, 1, 5, 5, dtype=torch.uint8), torch.tensor([0, 1])), ["a", "b"]))
    with pytest.raises(UserError, match="train images are 1x4x4 but test images are 1x5x5"):
        load_source("shapes")
    assert tuple(load_source("shapes", image_size=6).test.images.shape) == (2, 1, 6, 6)
    with pytest.raises(UserError, match="data.image_size must be a positive integer"):
        load_source("shapes", image_size=0)


def _summary(prep) -> dict:
    return {k: (int(getattr(prep, k).images.long().sum()), getattr(prep, k).targets.tolist()[:12],
                len(getattr(prep, k))) for k in ("train", "val", "test", "pool")}


def test_the_data_seed_selects_what_it_did_before(tmp_path):
    """Figures from the readers this replaced (imbal's own IDX reader, the eager image folder):
    the same seed keeps the same images, with or without lazy decoding."""
    digits = prepare_data(_data(["data.source=digits", "data.subset.per_class=40",
                                 "data.subset.test_per_class=10",
                                 "data.imbalance={kind: step, keep: 0.5}"]), data_seed=3)
    assert _summary(digits) == {
        "train": (1351942, [2, 3, 6, 0, 4, 8, 0, 9, 9, 8, 3, 6], 270),
        "val": (144113, [4, 5, 4, 8, 3, 6, 9, 1, 7, 9, 6, 8], 30),
        "test": (502490, [8, 0, 2, 6, 8, 4, 5, 6, 8, 0, 7, 3], 100),
        "pool": (1990108, [2, 3, 6, 0, 1, 4, 2, 3, 8, 0, 9, 9], 400)}
    root = tmp_path / "folder"
    write_image_folder(str(root), ["a", "b", "c"], 6, size=8, n_test_per_class=4, seed=1)
    folder = prepare_data(_data(["data.source=imagefolder", f"data.root={root}",
                                 "data.subset.per_class=4", "data.subset.test_per_class=2",
                                 "data.val_fraction=0.25"]), data_seed=5)
    assert _summary(folder) == {
        "train": (138324, [0, 0, 0, 1, 1, 1, 2, 2, 2], 9), "val": (46711, [0, 1, 2], 3),
        "test": (92716, [0, 0, 1, 1, 2, 2], 6),
        "pool": (185035, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 12)}
    write_mnist_idx(str(tmp_path / "m"), 20, 5, seed=2)
    mnist = prepare_data(_data(["data.source=mnist", f"data.root={tmp_path / 'm'}",
                                "data.subset.total=120", "data.val_fraction=0.25",
                                "data.imbalance={kind: longtail, ratio: 4}"]), data_seed=7)
    assert _summary(mnist) == {
        "train": (1544074, [9, 7, 0, 6, 7, 1, 1, 8, 2, 3, 0, 5], 45),
        "val": (586912, [1, 3, 8, 6, 2, 1, 3, 0, 5, 7, 9, 4], 17),
        "test": (1714798, [5, 1, 8, 8, 9, 6, 1, 0, 3, 3, 2, 8], 50),
        "pool": (4113264, [1, 9, 4, 3, 2, 4, 8, 2, 3, 9, 7, 5], 120)}


def test_open_source_reads_no_image_folder_pixels(tmp_path, monkeypatch):
    from imbal.data import imagefolder

    write_image_folder(str(tmp_path / "d"), ["a", "b"], 3, size=8)
    monkeypatch.setattr(imagefolder, "_decode_file", lambda *a: pytest.fail("decoded"))
    ds = open_source("imagefolder", root=str(tmp_path / "d"))
    assert isinstance(ds.train, LazySplit) and ds.train.targets.tolist() == [0, 0, 0, 1, 1, 1]


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
