"""A folder of image files as a data set: ROOT/train/<class>/* and ROOT/test/<class>/*.

Classes are the sorted names of the sub-folders of ROOT/train (ROOT/test must hold the same
ones). The images of a class are its non-hidden files, at any depth, whose names end in a format
torchvision.io.decode_image reads (IMAGE_EXTENSIONS, any case), in sorted path order; other
files are skipped with one warning. Labels therefore come from the listing, before anything is
decoded, and each split is a LazySplit: a subset decodes only the files it keeps.

Files are decoded with torchvision.io into RGB uint8, resized to image_size×image_size when
asked; a file that does not decode is an error naming it (dropping it would shift the labels
already handed out). Decoded tensors go to the data cache (imbal/data/cache.py), keyed by the
(path, size, mtime_ns) of the decoded files and image_size: one entry per split, plus one per
subset. A subset whose whole split is already cached is sliced from it instead. Nothing is
ever written under ROOT (it may be read-only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from imbal.data import cache
from imbal.data.split import Dataset, LazySplit
from imbal.errors import UserError

SPLITS = ("train", "test")
TAG = "imagefolder"
# What torchvision.io.decode_image reads without extra libraries (it sniffs the bytes; the
# names only decide which files are images, as torchvision.datasets.ImageFolder does).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")

# torchvision 0.29 warns on every decode call that its decoders will move to TorchCodec (not
# installed here); they still work, and 60k identical warnings help nobody.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

Entry = tuple[str, int, int, int]  # path relative to root, size, mtime_ns, label


def open_image_folder(root: str, image_size: int | None = None) -> Dataset:
    """List ROOT/train and ROOT/test; images are decoded (or read from the cache) on load."""
    root = os.path.abspath(os.path.expanduser(root))
    classes, files, skipped = _scan(root)
    if skipped:
        cache.warn(f"imagefolder: skipped {len(skipped)} file(s) under {root} that are not "
                   f"images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) (e.g. {skipped[0]})")

    def lazy(split: str) -> LazySplit:
        entries = files[split]
        targets = torch.tensor([e[3] for e in entries], dtype=torch.int64)
        return LazySplit(targets, functools.partial(_load, root, split, entries, image_size))

    return Dataset(name="imagefolder", train=lazy("train"), test=lazy("test"), classes=classes)


def _list_files(root: str, rel: str) -> list[tuple[str, int, int]]:
    """(path relative to root, size, mtime_ns) of every non-hidden file below root/rel, sorted.

    os.scandir rather than os.walk + os.stat: on a cache hit this listing is most of the time
    spent (60k files), and DirEntry avoids re-joining and re-resolving every path.
    """
    return sorted(_walk(root, rel, ()))


def _walk(root: str, rel: str, above: tuple[tuple[int, int], ...]) -> list[tuple[str, int, int]]:
    """_list_files' recursion; `above`: (device, inode) of the folders it is inside, so a
    symbolic link back up (a loop) is refused instead of recursing until the path is too long."""
    here = os.stat(os.path.join(root, rel))
    key = (here.st_dev, here.st_ino)
    if key in above:
        raise UserError(f"imagefolder: {os.path.join(root, rel)} is a link back to a folder "
                        "that contains it (a symbolic-link loop); remove that link")
    found = []
    with os.scandir(os.path.join(root, rel)) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            sub = f"{rel}/{entry.name}"
            if entry.is_dir():
                found += _walk(root, sub, (*above, key))
            elif entry.is_file():
                st = entry.stat()
                found.append((sub, st.st_size, st.st_mtime_ns))
    return found


def _class_folders(root: str, split: str) -> list[str]:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise UserError(
            f"imagefolder: {folder} is not a directory; the data root (data.root, else "
            "$IMBAL_DATA, else ./data) must hold train/ and test/, each with one sub-folder per class"
        )
    return sorted(
        e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
    )


def _scan(root: str) -> tuple[list[str], dict[str, list[Entry]], list[str]]:
    """Classes; per split the entries of every image file; the files skipped as non-images."""
    if not os.path.isdir(root):
        raise UserError(f"imagefolder: data root {root} is not a directory (the root is "
                        "data.root, else $IMBAL_DATA, else ./data)")
    classes = _class_folders(root, "train")
    if not classes:
        raise UserError(f"imagefolder: {os.path.join(root, 'train')} has no class sub-folders")
    test_classes = _class_folders(root, "test")
    if test_classes != classes:
        lacking = sorted(set(classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(classes))
        raise UserError(
            f"imagefolder: {os.path.join(root, 'test')} must have the same class folders as "
            f"train/ (missing in test: {lacking or 'none'}; only in test: {extra or 'none'})"
        )
    files: dict[str, list[Entry]] = {split: [] for split in SPLITS}
    skipped: list[str] = []
    for split in SPLITS:
        for label, name in enumerate(classes):
            n_before = len(files[split])
            for p, s, m in _list_files(root, f"{split}/{name}"):
                if p.lower().endswith(IMAGE_EXTENSIONS):
                    files[split].append((p, s, m, label))
                else:
                    skipped.append(p)
            if len(files[split]) == n_before:
                raise UserError(f"imagefolder: class folder {os.path.join(root, split, name)} "
                                f"holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes, files, skipped


def _load(root: str, split: str, entries: list[Entry], image_size: int | None,
          indices: torch.Tensor) -> torch.Tensor:
    """The images of ``entries[indices]``: from the cache (the split's entry, sliced, or this
    subset's), else decoded and cached."""
    identity = {"root": root, "split": split, "image_size": image_size}
    chosen = entries
    if len(indices) != len(entries):  # ascending without repeats: anything shorter is a subset
        whole = cache.lookup(TAG, identity, [e[:3] for e in entries])
        if whole is not None:
            return whole["images"][indices]
        chosen = [entries[i] for i in indices.tolist()]
        names = hashlib.sha256(json.dumps([e[0] for e in chosen]).encode()).hexdigest()
        identity = {**identity, "subset": names[:24]}
    blob = cache.cached(TAG, identity, [e[:3] for e in chosen],
                        lambda: {"images": _decode_split(root, chosen, image_size)},
                        what=f"decoded {len(chosen)} images under {os.path.join(root, split)}")
    return blob["images"]


def _decode_file(path: str, image_size: int | None) -> torch.Tensor:
    """RGB uint8 C×H×W of one file; a file that is not a decodable image is a UserError."""
    from torchvision.io import ImageReadMode, decode_image

    def refuse(why: str) -> UserError:
        return UserError(f"imagefolder: cannot decode {path} ({why}); replace it, or remove it "
                         "from the class folder")

    try:
        with open(path, "rb") as f:  # plain Python reads beat torchvision.io.read_file here
            raw = f.read()
    except OSError as e:
        raise UserError(f"imagefolder: cannot read {path} ({e.strerror or e})") from e
    if not raw:
        raise refuse("empty file")
    try:
        img = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:  # not an image, or a damaged one
        raise refuse((str(e).strip().splitlines() or [type(e).__name__])[0]) from e
    if img.ndim != 3:  # an animated GIF or WebP decodes to frames×C×H×W
        raise refuse(f"an animated image of {img.shape[0]} frames")
    if image_size is not None and img.shape[-2:] != (image_size, image_size):
        from torchvision.transforms.v2 import functional as F

        img = F.resize(img, [image_size, image_size], antialias=True)
    return img


def _decode_all(paths: list[str], image_size: int | None) -> list[torch.Tensor]:
    """Decode in chunks of 256 files on up to 4 threads.

    Measured on CIFAR-10 jpeg: with files in the page cache threads neither help nor hurt much
    (the decoders are short calls that keep retaking the GIL), but on a cold disk they overlap
    the reads (about 1.7x faster). One task per file, in contrast, was 3x slower than a plain
    loop, hence the chunks.
    """
    chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]
    workers = max(2, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda ps: [_decode_file(p, image_size) for p in ps], chunks)
        return [img for chunk in done for img in chunk]


def _decode_split(root: str, entries: list[Entry], image_size: int | None) -> torch.Tensor:
    """uint8 N×3×H×W of the entries' files; without image_size they must share one size."""
    decoded = _decode_all([os.path.join(root, e[0]) for e in entries], image_size)
    first = decoded[0]
    for img, e in zip(decoded, entries, strict=True):
        if img.shape != first.shape:
            raise UserError(
                f"imagefolder: images under {root} differ in size ({_hw(first)} {entries[0][0]} "
                f"vs {_hw(img)} {e[0]}); set data.image_size to resize them all to one size"
            )
    return torch.stack(decoded)


def _hw(img: torch.Tensor) -> str:
    return f"{img.shape[-2]}x{img.shape[-1]}"
