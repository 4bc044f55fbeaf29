"""Mixup and CutMix (imbal/remedies/mixing.py): the Beta draws, per-sample parameters, exact
images and targets, CutMix's label weight, reproducibility, parameter refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from imbal.config import read_config_file
from imbal.data.batches import Normalizer
from imbal.errors import UserError
from imbal.remedies.batch import BATCH_TRANSFORMS, build_batch_transforms, split_item
from imbal.remedies.mixing import (
    cutmix_images,
    mix_targets,
    mixup_images,
    sample_beta,
    sample_log_gamma,
)

DRAWS = 100_000
KS_CRITICAL = 1.95 / math.sqrt(DRAWS)  # Kolmogorov-Smirnov at the 0.1% level


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def transform(name: str, num_classes: int = 3, **params):
    return BATCH_TRANSFORMS.get(name)(params, num_classes=num_classes, class_counts=[1] * num_classes)


# ---- the Beta draws --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [0.2, 1.0, 3.0])
def test_gamma_draws_follow_gamma(shape):
    g = sample_log_gamma(shape, DRAWS, gen(), "cpu").double().exp()
    assert g.dtype == torch.float64 and torch.isfinite(g).all() and (g >= 0).all()
    # Gamma(k): mean = variance = k, central fourth moment 3k^2 + 6k; within 5 standard errors
    assert abs(g.mean().item() - shape) < 5 * math.sqrt(shape / DRAWS)
    se_var = math.sqrt((3 * shape**2 + 6 * shape - shape**2) / DRAWS)
    assert abs(g.var().item() - shape) < 5 * se_var
    assert stats.kstest(g.numpy(), "gamma", args=(shape,)).statistic < KS_CRITICAL


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0])
def test_beta_draws_mean_variance_and_distribution(alpha):
    lam = sample_beta(alpha, DRAWS, gen(1), "cpu")
    assert lam.dtype == torch.float32 and lam.shape == (DRAWS,)
    assert (lam >= 0).all() and (lam <= 1).all()
    lam = lam.double()
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lam.mean().item() - 0.5) < 5 * math.sqrt(var / DRAWS)
    assert abs(lam.var().item() - var) < 0.02 * var
    if alpha >= 0.5:  # below, float32 rounds a visible share of the mass to exactly 0 or 1
        assert stats.kstest(lam.numpy(), "beta", args=(alpha, alpha)).statistic < KS_CRITICAL


def test_beta_draws_independent_per_sample_and_from_the_generator_only():
    a, b = sample_beta(1.0, DRAWS, gen(3), "cpu"), sample_beta(1.0, DRAWS, gen(3), "cpu")
    assert torch.equal(a, b) and not torch.equal(a, sample_beta(1.0, DRAWS, gen(4), "cpu"))
    lag = torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1].item()  # neighbours uncorrelated
    assert abs(lag) < 5 / math.sqrt(DRAWS)


# ---- per-sample parameters -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_fraction_mixed_is_p_and_partners_are_a_permutation(name):
    t = transform(name, alpha=1.0, p=0.3)
    lam, partner = t.draw(DRAWS, gen(), torch.device("cpu"))
    mixed = (lam < 1).double().mean().item()
    assert abs(mixed - 0.3) < 5 * math.sqrt(0.3 * 0.7 / DRAWS)
    assert abs(lam[lam < 1].double().mean().item() - 0.5) < 0.01  # Beta(1, 1) where mixed
    assert torch.equal(partner.sort().values, torch.arange(DRAWS))


def test_p_zero_returns_the_inputs_and_lambda_one_changes_nothing():
    x = torch.randn(5, 3, 6, 6, generator=gen())
    y = torch.tensor([0, 1, 2, 1, 0])
    for name in ("mixup", "cutmix"):
        out_x, out_y = transform(name, p=0.0)(x, y, gen())
        assert out_x is x and out_y is y
    ones, partner = torch.ones(5), torch.tensor([4, 2, 0, 1, 3])
    assert torch.equal(mixup_images(x, ones, partner), x)
    pasted, weight = cutmix_images(x, ones, partner, gen())
    assert torch.equal(pasted, x) and torch.equal(weight, ones)
    assert torch.equal(mix_targets(y, ones, partner, 3), F.one_hot(y, 3).float())


def test_mixup_two_samples_by_hand():
    x = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 5.0)])
    lam, partner = torch.tensor([0.25, 0.75]), torch.tensor([1, 0])
    out = mixup_images(x, lam, partner)
    assert torch.equal(out[0], torch.full((1, 2, 2), 4.0))  # 0.25 * 1 + 0.75 * 5
    assert torch.equal(out[1], torch.full((1, 2, 2), 4.0))  # 0.75 * 5 + 0.25 * 1
    q = mix_targets(torch.tensor([0, 2]), lam, partner, 3)
    assert q.tolist() == [[0.25, 0.0, 0.75], [0.25, 0.0, 0.75]]
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])  # already soft: rows are mixed
    q = mix_targets(soft, torch.tensor([0.5, 1.0]), partner, 3)
    assert q.tolist() == [[0.25, 0.25, 0.5], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_transform_draws_in_the_documented_order(name):
    """The transform equals a per-sample loop over draws replayed from the same seed."""
    n, c = 16, 4
    x = torch.randn(n, 2, 5, 7, generator=gen(9))
    y = torch.randint(0, c, (n,), generator=gen(8))
    out_x, q = transform(name, num_classes=c, alpha=0.4, p=0.6)(x, y, gen(5))
    g = gen(5)
    lam = sample_beta(0.4, n, g, "cpu")
    partner = torch.randperm(n, generator=g)
    lam = torch.where(torch.rand(n, generator=g) < 0.6, lam, 1.0)
    if name == "cutmix":
        expect_x, lam = cutmix_images(x, lam, partner, g)
    for i in range(n):
        j = int(partner[i])
        if name == "mixup":
            torch.testing.assert_close(out_x[i], lam[i] * x[i] + (1 - lam[i]) * x[j])
        else:
            assert torch.equal(out_x[i], expect_x[i])
        row = torch.zeros(c)
        row[y[i]] += lam[i]
        row[y[j]] += 1 - lam[i]
        torch.testing.assert_close(q[i], row)
    assert (lam < 1).any() and (lam == 1).any()  # both kinds of sample were exercised


# ---- CutMix boxes ----------------------------------------------------------------------------


def test_cutmix_label_weight_is_the_pasted_area_per_sample():
    n, h, w = 64, 9, 13
    x = torch.arange(1.0, n + 1).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()
    y = torch.arange(n)  # one class per sample: row i holds i's and its partner's weight
    out, q = transform("cutmix", num_classes=n, alpha=1.0)(x, y, gen(2))
    checked = 0
    for i in range(n):
        changed = out[i, 0] != i + 1
        if not changed.any():
            assert q[i, i] == 1 or q[i].max() == 1  # nothing pasted, or pasted from itself
            continue
        j = int(out[i, 0][changed][0]) - 1  # the partner, read from the pasted value
        area = int(changed.sum())
        torch.testing.assert_close(q[i, i], torch.tensor(1 - area / (h * w)), rtol=0, atol=1e-6)
        torch.testing.assert_close(q[i, j], torch.tensor(area / (h * w)), rtol=0, atol=1e-6)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        assert area == rows.numel() * cols.numel()  # a rectangle
        assert rows.max() - rows.min() + 1 == rows.numel() and (out[i, :, changed] == j + 1).all()
        checked += 1
    assert checked > n // 2


def test_cutmix_box_has_the_drawn_area_unless_clipped():
    n, side = 4000, 32
    x = torch.zeros(n, 1, side, side)
    lam = torch.full((n,), 0.75)  # a 16 x 16 box: a quarter of the image
    out, weight = cutmix_images(x, lam, torch.arange(n).roll(1), gen(4))
    pasted = 1 - weight
    assert pasted.max() == 0.25 and pasted.min() == 64 / 1024  # centre in a corner: 8 x 8 kept
    whole = (pasted == 0.25).double().mean().item()  # centre row and column both in [8, 24]
    assert abs(whole - (17 / 32) ** 2) < 0.03


# ---- whole transforms ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_reproducible_under_a_seed_and_keeps_shape_dtype_layout(name):
    x = torch.randn(32, 3, 8, 8, generator=gen()).to(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (32,), generator=gen(1))
    t = transform(name, num_classes=5, alpha=0.2)
    a, b, c = t(x, y, gen(7)), t(x, y, gen(7)), t(x, y, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    out, q = a
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert q.shape == (32, 5) and q.dtype == torch.float32
    torch.testing.assert_close(q.sum(1), torch.ones(32))


def test_compose_passes_soft_targets_on():
    t = build_batch_transforms([{"name": "cutmix"}, "mixup"], num_classes=4, class_counts=[5] * 4)
    assert t.soft_targets and t.describe() == "cutmix(alpha=1.0, p=1.0) -> mixup(alpha=1.0, p=1.0)"
    x, q = t(torch.randn(64, 1, 6, 6), torch.randint(0, 4, (64,), generator=gen()), gen())
    assert (q >= 0).all() and (q.count_nonzero(1) > 2).any()  # rows of up to four classes
    torch.testing.assert_close(q.sum(1), torch.ones(64))


@pytest.mark.parametrize(
    "item,message",
    [
        ({"name": "mixup", "alpah": 1},
         "batch transform 'mixup': unknown parameter 'alpah' (did you mean 'alpha'?)"),
        ({"name": "mixup", "alpha": 0},
         "batch transform 'mixup': parameter 'alpha' must be a number > 0 (got 0)"),
        ({"name": "mixup", "alpha": "1"},
         "batch transform 'mixup': parameter 'alpha' must be a number > 0 (got '1')"),
        ({"name": "cutmix", "p": 1.5},
         "batch transform 'cutmix': parameter 'p' must be a probability in [0, 1] (got 1.5)"),
        ({"name": "cutmix", "p": True},
         "batch transform 'cutmix': parameter 'p' must be a probability in [0, 1] (got True)"),
        ("mixpu", "unknown batch transform 'mixpu' (did you mean 'mixup'?); valid: autoaugment, "
         "colour_jitter, cutmix, cutout, gridmask, manifold_mixup, mixup, randaugment, remix"),
    ],
)
def test_bad_parameters_refused_in_one_line(item, message):
    with pytest.raises(UserError) as e:
        build_batch_transforms([item], num_classes=3, class_counts=[1, 1, 1])
    assert str(e.value) == message


def test_bundled_configs_batch_transforms_build():
    """The configs' train.batch_transforms items are valid transforms (read without the schema,
    which gains the key on the Trainer's side)."""
    found = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        items = read_config_file(path).get("train", {}).get("batch_transforms")
        if items:
            norm = Normalizer([0.5] * 3, [0.25] * 3, torch.device("cpu"))
            t = build_batch_transforms(items, num_classes=10, class_counts=[5] * 10,
                                       normalizer=norm)
            mixing = any(split_item(i)[0] in ("mixup", "cutmix", "manifold_mixup", "remix")
                         for i in items)
            assert t.soft_targets == mixing, path
            found += 1
    assert found >= 3
