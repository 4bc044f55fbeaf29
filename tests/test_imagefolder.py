"""The image folder: exact pixels and label order, refusals, and decoding only what is kept
(counted decode calls): a subset decodes its own files, a cached split or subset decodes none."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from synth import write_image_folder

from imbal.config import load_config
from imbal.data import imagefolder
from imbal.data.imbalance import subset_indices
from imbal.data.prepare import prepare_data
from imbal.data.sources import load_source
from imbal.errors import UserError

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBAL_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """Paths decoded from now on, in order."""
    calls: list[str] = []
    real = imagefolder._decode_file

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(imagefolder, "_decode_file", counting)
    return calls


def test_png_exact_and_non_images_skipped(tmp_path, capsys):
    root = tmp_path / "data"
    data = write_image_folder(str(root), ["cat", "ant", "bee"], 4, size=12, n_test_per_class=2)
    (root / "train" / "bee" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"\0\1")
    (root / "test" / "cat" / "labels.csv").write_text("x")
    os.makedirs(root / "train" / "cat" / "more")
    os.replace(root / "train" / "cat" / "0003.png", root / "train" / "cat" / "more" / "0003.PNG")
    ds = load_source("imagefolder", root=str(root))
    assert ds.classes == ["ant", "bee", "cat"]
    assert tuple(ds.train.images.shape) == (12, 3, 12, 12) and tuple(ds.test.images.shape) == (
        6, 3, 12, 12)
    for split in ("train", "test"):
        assert torch.equal(getattr(ds, split).images, torch.from_numpy(data[f"{split}_images"]))
        assert torch.equal(getattr(ds, split).targets, torch.from_numpy(data[f"{split}_labels"]))
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert err == [f"warning: imagefolder: skipped 2 file(s) under {root} that are not images "
                   "(jpg, jpeg, png, gif, webp) (e.g. train/bee/notes.txt)"]
    load_source("imagefolder", root=str(root))  # from the cache: the same single warning
    assert capsys.readouterr().err.splitlines() == err


def test_a_file_that_does_not_decode_is_named(tmp_path):
    root = tmp_path / "d"
    write_image_folder(str(root), ["a", "b"], 2, size=8)
    (root / "train" / "b" / "empty.png").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_source("imagefolder", root=str(root))
    assert str(err.value) == (f"imagefolder: cannot decode {root / 'train' / 'b' / 'empty.png'} "
                              "(empty file); replace it, or remove it from the class folder")
    (root / "train" / "b" / "empty.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=r"cannot decode .*empty\.png \(.+\); replace it"):
        load_source("imagefolder", root=str(root))
    os.unlink(root / "train" / "b" / "empty.png")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(root / "test" / "a" / "moving.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match=r"cannot decode .*/test/a/moving\.gif \(an animated "
                                        r"image of 2 frames\)"):
        load_source("imagefolder", root=str(root))
    # the train split's entry only: the test split failed and left no (temporary) file
    assert [p.name.startswith("imagefolder-") for p in (tmp_path / "cache").iterdir()] == [True]


def test_jpeg_and_mixed(tmp_path):
    data = write_image_folder(str(tmp_path / "j"), ["a", "b", "c", "d"], 3, size=16, fmt="mixed")
    ds = load_source("imagefolder", root=str(tmp_path / "j"))
    assert torch.equal(ds.train.targets, torch.from_numpy(data["train_labels"]))
    diff = (ds.train.images.int() - torch.from_numpy(data["train_images"]).int()).abs()
    assert diff.float().mean() < 12  # JPEG is lossy; the PNG half is exact
    assert torch.equal(ds.train.images[0], torch.from_numpy(data["train_images"][0]))  # 0000.png


def test_sizes(tmp_path):
    write_image_folder(str(tmp_path / "a"), ["x", "y"], 2, size=16)
    write_image_folder(str(tmp_path / "b"), ["x", "y"], 2, size=20)
    os.replace(tmp_path / "b" / "train" / "y" / "0001.png", tmp_path / "a" / "train" / "y" / "big.png")
    with pytest.raises(UserError, match=r"differ in size \(16x16 .* vs 20x20 train/y/big.png\).*"
                                        "data.image_size"):
        load_source("imagefolder", root=str(tmp_path / "a"))
    ds = load_source("imagefolder", root=str(tmp_path / "a"), image_size=8)
    assert tuple(ds.train.images.shape) == (5, 3, 8, 8)
    write_image_folder(str(tmp_path / "c"), ["x", "y"], 2, size=16)
    for f in (tmp_path / "c" / "test").rglob("*.png"):
        os.replace(tmp_path / "b" / "test" / f.parent.name / f.name, f)
    with pytest.raises(UserError, match="train images are 3x16x16 but test images are 3x20x20"):
        load_source("imagefolder", root=str(tmp_path / "c"))


def test_refusals(tmp_path):
    root = tmp_path / "r"
    write_image_folder(str(root), ["a", "b"], 2, size=8)
    os.makedirs(root / "train" / "c")
    os.makedirs(root / "test" / "c")
    (root / "train" / "c" / "readme.md").write_text("x")
    with pytest.raises(UserError) as err:
        load_source("imagefolder", root=str(root))
    assert str(err.value) == (f"imagefolder: class folder {root / 'train' / 'c'} holds no "
                              "images (.jpg, .jpeg, .png, .gif, .webp)")
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


def test_cache_hit_and_invalidation(tmp_path, monkeypatch, decoded):
    root = tmp_path / "d"
    write_image_folder(str(root), ["a", "b"], 3, size=8)
    before = sorted(p for p, _, _ in os.walk(root))
    first = load_source("imagefolder", root=str(root))
    assert len(decoded) == 12 and len(os.listdir(tmp_path / "cache")) == 2  # train, test
    second = load_source("imagefolder", root=str(root))
    assert len(decoded) == 12  # nothing decoded again
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.images, second.test.images) and second.classes == ["a", "b"]
    assert sorted(p for p, _, _ in os.walk(root)) == before  # nothing written under the root

    write_image_folder(str(tmp_path / "more"), ["a", "b"], 1, size=8)
    os.replace(tmp_path / "more" / "train" / "b" / "0000.png", root / "train" / "b" / "new.png")
    third = load_source("imagefolder", root=str(root))
    assert len(decoded) == 12 + 7  # the train split again; test is still cached
    assert len(third.train) == 7 and third.train.targets.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert len(os.listdir(tmp_path / "cache")) == 2  # the stale train entry was replaced
    os.utime(root / "test" / "a" / "0000.png", ns=(1, 1))  # a touched file counts as changed
    load_source("imagefolder", root=str(root))
    assert len(decoded) == 12 + 7 + 6


def _prepare(root, *sets, seed=0):
    cfg = load_config(None, ["data.source=imagefolder", f"data.root={root}",
                             "data.val_fraction=0", *sets])
    return prepare_data(cfg["data"], data_seed=seed)


def test_a_subset_decodes_only_the_files_it_keeps(tmp_path, decoded):
    root = tmp_path / "d"
    write_image_folder(str(root), ["a", "b", "c"], 10, size=8, n_test_per_class=6)
    prep = _prepare(root, "data.subset.per_class=3", "data.subset.test_per_class=2")
    assert len(decoded) == 9 + 6 and len(set(decoded)) == 15
    assert sum("/train/" in p for p in decoded) == 9
    full = load_source("imagefolder", root=str(root))  # decodes the rest, whole splits
    assert len(decoded) == 15 + 30 + 18
    gen = torch.Generator().manual_seed(0)
    idx = subset_indices(full.train.targets, per_class=3, generator=gen)
    assert torch.equal(prep.pool.images, full.train.images[idx])
    assert [os.path.relpath(p, root) for p in decoded[:9]] == [
        f"train/{'abc'[int(i) // 10]}/{int(i) % 10:04d}.png" for i in idx]

    again = _prepare(root, "data.subset.per_class=3", "data.subset.test_per_class=2")
    other = _prepare(root, "data.subset.per_class=4", seed=1)  # sliced from the cached split
    assert len(decoded) == 63
    assert torch.equal(again.pool.images, prep.pool.images) and len(other.pool) == 12


def test_a_cached_subset_is_not_decoded_again(tmp_path, decoded):
    root = tmp_path / "d"
    write_image_folder(str(root), ["a", "b"], 8, size=8, n_test_per_class=3)
    first = _prepare(root, "data.subset.total=6", "data.subset.test_per_class=1", seed=3)
    assert len(decoded) == 6 + 2
    second = _prepare(root, "data.subset.total=6", "data.subset.test_per_class=1", seed=3)
    assert len(decoded) == 8 and torch.equal(first.pool.images, second.pool.images)
    _prepare(root, "data.subset.total=6", "data.subset.test_per_class=1", seed=4)
    assert len(decoded) > 8  # another seed, other files
