"""The one data cache (imbal/data/cache.py): a hit returns identical tensors without reading
the source files, a changed file or setting invalidates, an unwritable cache warns, a damaged
entry is rebuilt, writes are atomic."""

from __future__ import annotations

import os

import pytest
import torch
from synth import write_mnist_idx

from imbal.data import cache
from imbal.data.sources import load_source


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


def _source_files(tmp_path, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(bytes([i]) * (10 + i))
        paths.append(str(p))
    return paths


class Builds:
    """A build function that counts its calls and returns fresh tensors each time."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return {"images": torch.arange(24, dtype=torch.uint8).view(2, 3, 2, 2),
                "classes": ["a", "b"], "n": 2}


def _get(paths, build, identity=None):
    return cache.cached("test", identity or {"root": "/r"}, cache.stamp(paths), build,
                        what="built")


def test_hit_returns_identical_tensors(tmp_path, capsys):
    paths, build = _source_files(tmp_path), Builds()
    first = _get(paths, build)
    assert build.n == 1 and f"test: built in 0.0 s; caching in {tmp_path / 'cache'}" in \
        capsys.readouterr().err
    second = _get(paths, build)
    assert build.n == 1 and capsys.readouterr().err == ""
    assert torch.equal(first["images"], second["images"]) and second["images"].dtype == torch.uint8
    assert second["classes"] == ["a", "b"] and second["n"] == 2 and set(second) == set(first)
    (entry,) = os.listdir(tmp_path / "cache")  # no temp file left behind
    assert entry.startswith("test-") and entry.endswith(".pt")


def test_a_changed_file_or_setting_invalidates(tmp_path, monkeypatch):
    paths, build = _source_files(tmp_path), Builds()
    _get(paths, build)
    with open(paths[1], "ab") as f:  # size and mtime change
        f.write(b"x")
    _get(paths, build)
    assert build.n == 2 and len(os.listdir(tmp_path / "cache")) == 1  # stale entry replaced
    os.utime(paths[2], ns=(5, 5))  # same size, another mtime
    _get(paths, build)
    _get(paths[:2], build)  # a file fewer
    assert build.n == 4
    _get(paths[:2], build, identity={"root": "/r", "image_size": 32})
    assert build.n == 5 and len(os.listdir(tmp_path / "cache")) == 2  # another identity: beside
    monkeypatch.setattr(cache, "VERSION", cache.VERSION + 1)
    _get(paths[:2], build)
    assert build.n == 6


def test_an_unwritable_cache_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "file" / "cache"))
    paths, build = _source_files(tmp_path), Builds()
    got = _get(paths, build)
    assert got["images"].shape == (2, 3, 2, 2)
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == [f"warning: could not write the data cache to {tmp_path / 'file' / 'cache'} "
                   "(Not a directory); set IMBAL_CACHE to a writable directory to avoid "
                   "decoding again"]
    _get(paths, build)
    assert build.n == 2


@pytest.mark.parametrize("content", [b"garbage", "truncated", "foreign"])
def test_a_damaged_entry_is_rebuilt(tmp_path, capsys, content):
    paths, build = _source_files(tmp_path), Builds()
    _get(paths, build)
    (entry,) = (tmp_path / "cache").iterdir()
    good = entry.read_bytes()
    if content == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif content == "foreign":
        torch.save({"images": torch.zeros(1)}, entry)
    else:
        entry.write_bytes(content)
    capsys.readouterr()
    got = _get(paths, build)
    assert build.n == 2 and torch.equal(got["images"], Builds()()["images"])
    assert f"warning: ignoring {'' if content == 'foreign' else 'unreadable '}cache file {entry}" \
        in capsys.readouterr().err
    assert entry.read_bytes() != b"garbage" and len(entry.read_bytes()) > 100
    _get(paths, build)
    assert build.n == 2


def test_a_hit_does_not_read_the_source_files(tmp_path, monkeypatch):
    """Swap a file's bytes but keep its size and mtime: the cache still answers with what it
    read first, so the file was not read again (and torchvision was not asked)."""
    import torchvision.datasets as tvd

    data = write_mnist_idx(str(tmp_path), 2, 1, seed=1)
    first = load_source("mnist", root=str(tmp_path))
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    st = path.stat()
    other = write_mnist_idx(str(tmp_path / "other"), 2, 1, seed=2)
    os.replace(tmp_path / "other" / "MNIST" / "raw" / path.name, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with monkeypatch.context() as m:
        m.setattr(tvd, "MNIST", None)  # any use of torchvision's class would fail
        second = load_source("mnist", root=str(tmp_path))
    assert torch.equal(second.train.images, torch.from_numpy(data["train_images"]))
    assert torch.equal(second.train.images, first.train.images)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    third = load_source("mnist", root=str(tmp_path))
    assert torch.equal(third.train.images, torch.from_numpy(other["train_images"]))
    assert len(os.listdir(tmp_path / "cache")) == 1
