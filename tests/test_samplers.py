"""ClassSampler's two draws: the one-uniform draw for equal class probabilities and the alias
draw for any others. Each image i must come out with probability p_class(i) / N_class(i)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2

from imbal.remedies import samplers
from imbal.remedies.samplers import ClassSampler, class_probabilities

DRAWS = 200_000  # > 6 CPU chunks of 2^15, with a partial last chunk


def shuffled_targets(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with the given class counts, in a random order (images of a class not adjacent)."""
    t = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return t[torch.randperm(t.numel(), generator=torch.Generator().manual_seed(seed))]


def sampler_for(counts: list[int], mode: str, size=DRAWS) -> tuple[torch.Tensor, ClassSampler]:
    t = shuffled_targets(counts)
    return t, ClassSampler(t, class_probabilities(torch.tensor(counts), mode), size)


def image_probabilities(t: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """What each image's share of the draws must be: p_class / N_class."""
    counts = torch.bincount(t, minlength=probs.numel()).double()
    return probs[t] / counts[t]


def check_draws(t: torch.Tensor, probs: torch.Tensor, idx: torch.Tensor) -> None:
    n, c = idx.numel(), probs.numel()
    assert idx.dtype == torch.long and idx.shape == (n,)
    assert int(idx.min()) >= 0 and int(idx.max()) < t.numel()
    # every class within 5 standard errors of its probability; a class of p = 0 never drawn
    freq = torch.bincount(t[idx], minlength=c).double() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert torch.all((freq - probs).abs() <= 5 * se + 1e-12), (freq, probs)
    assert torch.all(freq[probs == 0] == 0)
    # every image at its share p_class / N_class: chi-square over all drawable images
    expected = image_probabilities(t, probs) * n
    seen = torch.bincount(idx, minlength=t.numel()).double()
    drawable = expected > 0
    assert torch.all(seen[~drawable] == 0)
    stat = float(((seen - expected)[drawable] ** 2 / expected[drawable]).sum())
    assert chi2.sf(stat, int(drawable.sum()) - 1) > 1e-4, stat
    # within each class on its own too (a draw biased inside a class, fair across them)
    for j in torch.nonzero(probs > 0).flatten().tolist():
        mine = t == j
        if int(mine.sum()) > 1:
            e, s = expected[mine], seen[mine]
            e = e / e.sum() * s.sum()
            stat = float(((s - e) ** 2 / e).sum())
            assert chi2.sf(stat, int(mine.sum()) - 1) > 1e-4, (j, stat)


def draw_with(s: ClassSampler, seed: int) -> torch.Tensor:
    return s.epoch_indices(0, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("counts", [[300, 30, 3, 40], [300, 0, 7, 25, 0, 60], [1, 1], [90]])
def test_equal_probabilities_take_the_one_uniform_draw(counts):
    t, s = sampler_for(counts, "balanced")
    assert s.equal
    s._draw_alias = None  # taking the alias draw would fail
    check_draws(t, s.class_probs, draw_with(s, 1))


@pytest.mark.parametrize(("counts", "mode"), [([300, 30, 3, 40], "sqrt"),
                                              ([300, 0, 7, 25, 0, 60], "sqrt")])
def test_unequal_probabilities_take_the_alias_draw(counts, mode):
    t, s = sampler_for(counts, mode)
    assert not s.equal
    s._draw_equal = None  # taking the one-uniform draw would fail
    check_draws(t, s.class_probs, draw_with(s, 2))


def test_equal_counts_in_sqrt_mode_are_equal_probabilities():
    t, s = sampler_for([20, 20, 20], "sqrt")
    assert s.equal
    check_draws(t, s.class_probs, draw_with(s, 3))


def test_more_than_1024_classes_take_the_alias_draw_even_when_balanced():
    counts = [2] * 1025 + [0]
    t, s = sampler_for(counts, "balanced", 100_000)
    assert not s.equal and samplers._EQUAL_MAX_CLASSES == 1024
    check_draws(t, s.class_probs, draw_with(s, 4))
    _, s = sampler_for([2] * 1024 + [0], "balanced", 10)
    assert s.equal  # 1024 drawable classes: the one-uniform draw


def test_given_probabilities_are_followed_not_the_counts():
    t = shuffled_targets([50, 50, 50])
    probs = torch.tensor([0.6, 0.0, 0.4], dtype=torch.float64)
    s = ClassSampler(t, probs, DRAWS)
    assert not s.equal
    check_draws(t, probs, draw_with(s, 5))
    probs = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    s = ClassSampler(t, probs, DRAWS)
    assert s.equal  # equal over the drawable classes; class 1 left out
    check_draws(t, probs, draw_with(s, 6))


@pytest.mark.parametrize("mode", ["balanced", "sqrt"])
def test_chunk_edges_and_small_epochs(mode, monkeypatch):
    monkeypatch.setattr(samplers, "_CHUNK", 1000)  # 200 chunks and a partial one
    t, s = sampler_for([300, 30, 3, 40], mode, DRAWS + 7)
    check_draws(t, s.class_probs, draw_with(s, 7))
    for size in (0, 1, 999, 1000, 1001):
        _, s = sampler_for([300, 30, 3, 40], mode, size)
        idx = draw_with(s, 8)
        assert idx.shape == (size,) and idx.dtype == torch.long
        assert size == 0 or int(idx.max()) < t.numel()


@pytest.mark.parametrize("mode", ["balanced", "sqrt"])
def test_same_seed_same_indices_other_seed_other_indices(mode):
    _, s = sampler_for([300, 30, 3, 40], mode, 70_000)
    a, b, c = draw_with(s, 11), draw_with(s, 11), draw_with(s, 12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a == c).double().mean()) < 0.05  # not a shifted or mostly shared stream
    g = torch.Generator().manual_seed(11)
    assert not torch.equal(s.epoch_indices(0, g), s.epoch_indices(1, g))  # epochs differ


def test_one_uniform_draw_class_and_image_are_independent():
    # 2 classes of 2 images: the four (class, image) pairs each 1/4 -- a draw taking the image
    # from u itself rather than frac(u * C) would give images 0 of class 0 and 1 of class 1 only
    # half the time each and never the other two.
    t = torch.tensor([0, 0, 1, 1])
    s = ClassSampler(t, class_probabilities(torch.tensor([2, 2]), "balanced"), DRAWS)
    assert s.equal
    check_draws(t, s.class_probs, draw_with(s, 13))
