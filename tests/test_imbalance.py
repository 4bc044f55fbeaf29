"""Imbalance profiles and index selection: exact counts, determinism, refused inputs."""

from __future__ import annotations

import pytest
import torch

from imbal.data.imbalance import (
    IMBALANCES,
    floor_count,
    minority_classes,
    stratified_split,
    subsample,
    subset_indices,
    target_counts,
)
from imbal.errors import UserError

MNIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
CIFAR = [5000] * 10
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _targets(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with exactly counts[c] of class c, in shuffled order."""
    t = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return t[torch.randperm(len(t), generator=_gen(seed))]


def test_registered():
    assert IMBALANCES.names() == ["explicit", "longtail", "none", "random", "step"]


def test_none_and_step_on_mnist():
    assert target_counts("none", MNIST) == MNIST
    assert target_counts("step", MNIST) == [592, 674, 595, 613, 584] + MNIST[5:]
    assert target_counts("step", MNIST, classes=[9], keep=0.5) == MNIST[:9] + [2974]
    assert target_counts("step", [100] * 3, classes=[1], keep=0.29) == [100, 29, 100]
    assert target_counts("step", MNIST, keep=1) == MNIST


def test_step_ratio_the_published_form():
    """ratio = n_max / n_min: the last half of the classes keep 1/ratio (step-imbalanced
    CIFAR-10 at ratio 10: 5 x 5000 + 5 x 500 = 27,500 images)."""
    counts = target_counts("step", CIFAR, ratio=10)
    assert counts == [5000] * 5 + [500] * 5 and sum(counts) == 27500
    assert target_counts("step", CIFAR, ratio=100) == [5000] * 5 + [50] * 5
    assert target_counts("step", [90, 90, 90, 90, 90], ratio=3) == [90, 90, 90, 30, 30]
    assert target_counts("step", MNIST, ratio=10)[5:] == [m // 10 for m in MNIST[5:]]
    assert minority_classes("step", {"ratio": 10}, counts) == [5, 6, 7, 8, 9]
    assert minority_classes("step", {"ratio": 3}, [90] * 5) == [3, 4]


def test_longtail_exact():
    assert target_counts("longtail", CIFAR, ratio=100) == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(target_counts("longtail", CIFAR, ratio=100)) == 12406
    assert target_counts("longtail", CIFAR, ratio=10) == [
        5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert target_counts("longtail", CIFAR, ratio=1) == CIFAR


def test_longtail_order_and_n_max():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert target_counts("longtail", CIFAR, ratio=100, order=order) == [
        50, 83, 139, 232, 387, 645, 1077, 1796, 2997, 5000]
    # default n_max = the smallest class (5421 on MNIST), so no class is clipped
    assert target_counts("longtail", MNIST, ratio=100)[0] == 5421
    # explicit n_max above what class 0 has: clipped to its 5923
    counts = target_counts("longtail", MNIST, ratio=10, n_max=6000)
    assert counts[0] == 5923 and counts[1] == floor_count(6000 * 10 ** (-1 / 9)) == 4645


def test_explicit():
    assert target_counts("explicit", [10, 20, 30], counts=[1, 20, 7]) == [1, 20, 7]
    with pytest.raises(UserError, match="class 1 asks for 21 images but must get between 1 and "
                                        "the 20 it has"):
        target_counts("explicit", [10, 20, 30], counts=[1, 21, 7])
    with pytest.raises(UserError, match="class 0 asks for 0 images"):
        target_counts("explicit", [10, 20, 30], counts=[0, 1, 1])


@pytest.mark.parametrize(
    "kind, params, message",
    [
        ("step", {"keep": 0}, r"step: keep must be a number in \(0, 1\], got 0"),
        ("step", {"keep": 1.5}, r"step: keep must be a number in \(0, 1\], got 1.5"),
        ("step", {"classes": [3, 10]}, "class id 10 in classes is out of range; valid ids are "
                                       r"0..9 \(10 classes\)"),
        ("step", {"classes": [1, 1]}, "classes lists a class twice"),
        ("step", {"fraction": 0.1}, "step: unknown parameter.*fraction; valid: classes, keep, ratio"),
        ("step", {"ratio": 10, "keep": 0.1}, r"^imbalance step: give ratio \(the last half of the "
                                             r"classes keep 1/ratio\) or classes and keep, not both$"),
        ("step", {"ratio": 10, "classes": [0]}, "step: give ratio .* or classes and keep, not both"),
        ("step", {"ratio": 0.5}, r"^imbalance step: ratio must be a number >= 1, got 0.5$"),
        ("longtail", {"ratio": 0.5}, "longtail: ratio must be a number >= 1, got 0.5"),
        ("longtail", {}, "longtail: missing required parameter.*ratio"),
        ("longtail", {"ratio": 10, "order": [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]},
         "order must be a permutation of the class ids 0..9"),
        ("longtail", {"ratio": 10, "order": [0, 1]}, "order must be a permutation"),
        ("longtail", {"ratio": 10, "n_max": 0}, "n_max must be a positive integer"),
        ("explicit", {"counts": [5] * 9}, "counts has 9 entries but the data set has 10 classes"),
        ("stepp", {}, "unknown imbalance 'stepp'.*did you mean 'step'"),
    ],
)
def test_refused(kind, params, message):
    with pytest.raises(UserError, match=message):
        target_counts(kind, CIFAR, **params)


def _uniform_counts(low: int, high: int, classes: int, seed: int) -> list[int]:
    """The documented rule: one torch.randint(low, high + 1, (C,)) on a fresh CPU generator
    seeded with the data seed."""
    return torch.randint(low, high + 1, (classes,), generator=_gen(seed)).tolist()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_counts_exact_for_a_seed(seed):
    counts = target_counts("random", CIFAR, low=500, high=1000, generator=_gen(seed))
    assert counts == _uniform_counts(500, 1000, 10, seed)
    assert all(500 <= n <= 1000 for n in counts)
    # the same seed draws the same counts; the draw uses only the generator it is given
    torch.manual_seed(123)
    assert target_counts("random", CIFAR, low=500, high=1000, generator=_gen(seed)) == counts


def test_random_counts_differ_between_seeds_and_cover_both_bounds():
    draws = {tuple(target_counts("random", CIFAR, low=500, high=1000, generator=_gen(s)))
             for s in range(5)}
    assert len(draws) == 5
    # both ends are included and every value equally likely: 3,000 classes, low=1, high=3
    counts = torch.tensor(target_counts("random", [3] * 3000, low=1, high=3, generator=_gen(0)))
    share = torch.bincount(counts, minlength=4)[1:].float() / 3000
    assert counts.min() == 1 and counts.max() == 3
    assert ((share - 1 / 3).abs() < 0.04).all(), share
    assert target_counts("random", [9, 9], low=4, high=4, generator=_gen(0)) == [4, 4]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"low": 800, "high": 700},
         r"^imbalance random: low \(800\) must not exceed high \(700\)$"),
        ({"low": 500, "high": 5001},
         r"^imbalance random: high \(5001\) exceeds the 5000 images class 0 has; high must be "
         r"at most 5000 \(the smallest class\)$"),
        ({"low": 0, "high": 10}, r"^imbalance random: low must be a positive integer, got 0$"),
        ({"low": 1, "high": 2.5}, r"^imbalance random: high must be a positive integer, got 2.5$"),
        ({"low": 1}, r"^imbalance random: missing required parameter\(s\) high$"),
        ({"low": 1, "high": 2, "ratio": 3},
         r"^imbalance random: unknown parameter\(s\) ratio; valid: low, high$"),
    ],
)
def test_random_refused(params, message):
    with pytest.raises(UserError, match=message):
        target_counts("random", CIFAR, generator=_gen(0), **params)


def test_random_in_prepare_data_uses_the_data_seed():
    from imbal.config import load_config
    from imbal.data.prepare import prepare_data

    sets = ["data.source=digits", "data.imbalance.kind=random", "data.imbalance.low=20",
            "data.imbalance.high=60", "data.val_fraction=0.2"]
    data = load_config(None, sets)["data"]
    for seed in (0, 3):
        counts = prepare_data(data, data_seed=seed).counts()
        kept = [t + v for t, v in zip(counts["train"], counts["val"], strict=True)]
        assert kept == _uniform_counts(20, 60, 10, seed)  # no subset: the generator's first draw
        median = sorted(kept)[4:6]
        assert counts["minority_classes"] == [c for c, n in enumerate(kept) if n < sum(median) / 2]


def test_random_names_the_short_class():
    with pytest.raises(UserError, match="exceeds the 600 images class 2 has; high must be at "
                                        "most 600"):
        target_counts("random", [5000, 5000, 600], low=500, high=1000, generator=_gen(0))


def test_profile_leaving_a_class_empty_is_refused():
    with pytest.raises(UserError, match=r"^imbalance leaves class 9 \('truck'\) with no training"):
        target_counts("longtail", [50] * 10, ratio=60, class_names=NAMES)
    with pytest.raises(UserError, match=r"^imbalance leaves class 2 with no training images"):
        target_counts("step", [100, 100, 5], classes=[2], keep=0.1)


def test_minority_classes():
    assert minority_classes("none", {}, MNIST) == []
    assert minority_classes("step", {}, MNIST) == [0, 1, 2, 3, 4]
    assert minority_classes("step", {"classes": [7, 2]}, MNIST) == [2, 7]
    lt = target_counts("longtail", CIFAR, ratio=100)
    assert minority_classes("longtail", {"ratio": 100}, lt) == [5, 6, 7, 8, 9]
    assert minority_classes("explicit", {}, [10, 10, 10, 1]) == [3]


def test_subsample_exact_and_deterministic():
    targets = _targets(MNIST)
    images = targets.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8)  # pixel = label
    counts = target_counts("step", MNIST)
    idx = subsample(targets, counts, _gen(3))
    assert idx.dtype == torch.long and bool((idx[1:] > idx[:-1]).all())
    assert torch.bincount(targets[idx], minlength=10).tolist() == counts
    assert torch.equal(images[idx][:, 0, 0, 0].long(), targets[idx])  # labels stay with images
    assert torch.equal(idx, subsample(targets, counts, _gen(3)))
    assert not torch.equal(idx, subsample(targets, counts, _gen(4)))
    # one seed: a smaller profile keeps a subset of a larger one, class by class
    small = subsample(targets, target_counts("longtail", MNIST, ratio=100), _gen(3))
    large = subsample(targets, target_counts("longtail", MNIST, ratio=10), _gen(3))
    assert bool(torch.isin(small, large).all())
    with pytest.raises(UserError, match="class 1 has 6742 images, asked for 7000"):
        subsample(targets, [1, 7000] + [1] * 8, _gen(0))


def test_stratified_split():
    targets = _targets([100, 45, 10, 5])
    train, val = stratified_split(targets, 0.1, _gen(1))
    assert torch.bincount(targets[val]).tolist() == [10, 5, 1, 1]  # 4.5 and 0.5 round half up
    assert torch.bincount(targets[train]).tolist() == [90, 40, 9, 4]
    assert bool((train[1:] > train[:-1]).all()) and bool((val[1:] > val[:-1]).all())
    assert len(set(train.tolist()) | set(val.tolist())) == len(targets)
    again = stratified_split(targets, 0.1, _gen(1))
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    train0, val0 = stratified_split(targets, 0.0, _gen(1))
    assert val0.numel() == 0 and torch.equal(train0, torch.arange(len(targets)))


def test_stratified_split_refusals():
    targets = _targets([100, 4])
    with pytest.raises(UserError, match=r"fraction 0.1 leaves class 1 \('b'\) \(4 training "
                                        "images\\) with no validation images"):
        stratified_split(targets, 0.1, _gen(0), class_names=["a", "b"])
    with pytest.raises(UserError, match=r"fraction 0.9 leaves class 1 \(4 training images\) "
                                        "with no training images"):
        stratified_split(targets, 0.9, _gen(0))
    with pytest.raises(UserError, match=r"validation fraction must be in \[0, 1\), got 1"):
        stratified_split(targets, 1, _gen(0))


def test_subset_indices():
    targets = _targets([50, 30, 15, 5])
    idx = subset_indices(targets, per_class=10, generator=_gen(0))
    assert torch.bincount(targets[idx]).tolist() == [10, 10, 10, 5]
    idx = subset_indices(targets, total=20, generator=_gen(0))
    assert len(idx) == 20 and torch.bincount(targets[idx]).tolist() == [10, 6, 3, 1]
    idx = subset_indices(targets, total=4, generator=_gen(0))
    assert torch.bincount(targets[idx]).tolist() == [1, 1, 1, 1]  # every class kept
    assert bool((idx[1:] > idx[:-1]).all())
    assert len(subset_indices(targets, total=1000, generator=_gen(0))) == 100
    assert torch.equal(subset_indices(targets, generator=_gen(0)), torch.arange(100))
    with pytest.raises(UserError, match="per_class or total, not both"):
        subset_indices(targets, per_class=1, total=2, generator=_gen(0))
    with pytest.raises(UserError, match="total must be a positive integer, got 0"):
        subset_indices(targets, total=0, generator=_gen(0))
