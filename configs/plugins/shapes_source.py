"""A data source as a plugin: "shapes", small grey images of six line-drawn shapes, generated.

    imports: [shapes_source.py]
    data: {source: shapes}

Offline and fast (~0.1 s): 6 classes (hbar, vbar, plus, square, disc, x) of 16×16 images,
300 training and 60 test images a class, each shape at a random place, size and stroke width
over faint noise. The images are the same on every call (their own fixed seed; which of them a
run keeps is chosen by imbal from seeds.data).

A source builder takes root, download and image_size (data.root resolved, data.download,
data.image_size; imbal resizes to image_size itself) and returns an imbal.Dataset of uint8
N×C×H×W images and integer class ids, train and test.
"""

from __future__ import annotations

import numpy as np
import torch

from imbal import SOURCES, Dataset, Split

CLASSES = ["hbar", "vbar", "plus", "square", "disc", "x"]
SIZE, TRAIN_PER_CLASS, TEST_PER_CLASS, SEED = 16, 300, 60, 20240601


def _mask(kind: int, dy: np.ndarray, dx: np.ndarray, s: int, t: int) -> np.ndarray:
    ay, ax = np.abs(dy), np.abs(dx)
    hbar, vbar = (ay <= t) & (ax <= s), (ax <= t) & (ay <= s)
    return [hbar, vbar, hbar | vbar, (np.maximum(ay, ax) <= s) & (np.maximum(ay, ax) >= s - t),
            dy * dy + dx * dx <= s * s, (np.abs(ay - ax) <= t) & (np.maximum(ay, ax) <= s)][kind]


def make_split(per_class: int, rng: np.random.Generator) -> Split:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    images = rng.integers(0, 48, size=(labels.size, 1, SIZE, SIZE)).astype(np.uint8)
    for i, kind in enumerate(labels):
        cy, cx = rng.integers(6, SIZE - 6, size=2)
        s, t = int(rng.integers(3, 6)), int(rng.integers(0, 2))
        mask = _mask(int(kind), yy - cy, xx - cx, s, t)
        images[i, 0][mask] = rng.integers(170, 256, size=int(mask.sum()))
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


@SOURCES.register("shapes")
def shapes(root: str, download: bool, image_size: int | None) -> Dataset:
    del root, download, image_size  # generated in memory; imbal resizes if data.image_size is set
    rng = np.random.default_rng(SEED)
    train = make_split(TRAIN_PER_CLASS, rng)
    return Dataset(name="shapes", train=train, test=make_split(TEST_PER_CLASS, rng),
                   classes=list(CLASSES))
