"""Batch augmentations: shape, range, reproducibility, a draw per image and the spread of those
draws, the kernels against torchvision's functional ops, the normalisation round trip."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from imbal.data.batches import Normalizer
from imbal.errors import UserError
from imbal.remedies.augment_ops import CIFAR10_POLICY, OPS, SIGNED
from imbal.remedies.batch import BATCH_TRANSFORMS, BatchTransform, Compose, build_batch_transforms

AUGMENTS = ["autoaugment", "colour_jitter", "cutout", "gridmask", "randaugment"]
CPU = torch.device("cpu")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pixels(n: int, size: int = 32, lo: float = 0.0, hi: float = 1.0, seed: int = 0,
            channels: int = 3) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, channels, size, size, generator=_gen(seed))


def _norm(p: torch.Tensor) -> Normalizer:
    return Normalizer.fit((p * 255).round(), CPU)


def _build(item, norm: Normalizer) -> Compose:
    return build_batch_transforms([item], num_classes=10, class_counts=[5] * 10, normalizer=norm)


def test_registered():
    assert set(AUGMENTS) <= set(BATCH_TRANSFORMS.names())
    assert all(not BATCH_TRANSFORMS.get(n).soft_targets for n in AUGMENTS)


@pytest.mark.parametrize("name", AUGMENTS)
@pytest.mark.parametrize("channels", [3, 1])
def test_shape_range_targets_and_reproducibility(name, channels):
    p = _pixels(64, 16, channels=channels)
    norm = _norm(p)
    x, y = norm.from_pixels(p), torch.arange(64) % 10
    t = _build(name, norm)
    out, y2 = t(x, y, _gen(1))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.equal(y2, y)
    back = norm.to_pixels(out)  # every value a pixel value in [0, 1] after normalisation
    torch.testing.assert_close(norm.from_pixels(back), out, atol=1e-4, rtol=0)
    assert (out != x).any()
    assert torch.equal(t(x, y, _gen(1))[0], out)  # the same seed: the same batch
    assert not torch.equal(t(x, y, _gen(2))[0], out)
    soft = torch.softmax(torch.randn(64, 10, generator=_gen(3)), 1)
    assert torch.equal(t(x, soft, _gen(1))[1], soft)  # soft targets pass through


@pytest.mark.parametrize("name", AUGMENTS)
def test_each_image_draws_its_own_parameters(name):
    """64 copies of one image: one draw for the whole batch would give 64 equal outputs."""
    p = _pixels(1, 16, 0.2, 0.8).expand(64, -1, -1, -1).contiguous()
    norm = _norm(_pixels(8, 16))
    out = _build(name, norm)(norm.from_pixels(p), torch.zeros(64, dtype=torch.long), _gen(0))[0]
    assert len({o.numpy().tobytes() for o in out}) >= 20


def _filled(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """N×H×W: pixels set to 0 (the mean colour) in every channel; x has no zeros."""
    assert (x != 0).all()
    assert torch.equal(out[out != 0], x[out != 0])  # the others are untouched
    return (out == 0).all(dim=1)


def test_cutout_squares():
    n, s = 400, 16
    x = _pixels(n, 32, 0.3, 0.9) - 0.1  # plays the normalised batch: no exact zeros
    cut = _filled(x, _build({"name": "cutout", "size": s}, _norm(x))(x, torch.zeros(n), _gen(0))[0])
    area = cut.sum(dim=(1, 2)).float()
    rows, cols = cut.any(dim=2), cut.any(dim=1)
    # a size×size square clipped by the border: 8..16 rows and columns, never empty
    assert ((rows.sum(1) >= s // 2) & (rows.sum(1) <= s)).all()
    assert torch.equal(area, (rows.sum(1) * cols.sum(1)).float())  # a rectangle
    assert (area >= (s // 2) ** 2).all() and (area <= s * s).all()
    top = rows.float().argmax(1)
    centre_rows = torch.where(top > 0, top + s // 2, rows.sum(1) - s // 2)
    assert len(set(centre_rows.tolist())) == 32  # every row drawn as a centre in 400 images
    # centre uniform on the 32 rows: the mean centre near 15.5 (std of the mean ~0.46)
    assert abs(centre_rows.float().mean().item() - 15.5) < 2.0
    off = _build({"name": "cutout", "size": s, "p": 0.25}, _norm(x))(x, torch.zeros(n), _gen(0))[0]
    share = (off != x).flatten(1).any(1).float().mean().item()
    assert abs(share - 0.25) < 0.09  # Bernoulli(0.25) per image, 400 images: std 0.022


def test_gridmask_grid():
    n = 300
    x = _pixels(n, 32, 0.3, 0.9) - 0.1
    t = _build({"name": "gridmask", "d_min": 6, "d_max": 12, "ratio": 0.5}, _norm(x))
    drop = _filled(x, t(x, torch.zeros(n), _gen(0))[0])
    periods = []
    for m in drop:
        rows, cols = m.any(1), m.any(0)
        assert torch.equal(m, rows[:, None] & cols[None, :])  # a grid: rows × columns
        starts = [i for i in range(1, 32) if rows[i] and not rows[i - 1]]
        if len(starts) >= 2:
            d = starts[1] - starts[0]
            assert 6 <= d <= 12
            block = int(rows[starts[0]:starts[0] + d].sum())
            assert block == round(0.5 * d)  # l = round(ratio d) dropped rows per unit
            periods.append(d)
    assert set(periods) == set(range(6, 13))  # every unit size drawn
    share = drop.float().mean().item()
    assert 0.18 < share < 0.32  # about ratio² = 0.25 of the pixels


def test_gridmask_refuses_d_min_above_d_max():
    with pytest.raises(UserError, match=r"^batch transform 'gridmask': d_min \(9\) must not "
                                        r"exceed d_max \(8\)$"):
        _build({"name": "gridmask", "d_min": 9, "d_max": 8}, None)


@pytest.mark.parametrize("item, fragment", [
    ({"name": "randaugment", "m": 31}, "m"),
    ({"name": "randaugment", "n": 0}, "n"),
    ({"name": "autoaugment", "policy": "imagenet"}, "policy"),
    ({"name": "colour_jitter", "hue": 0.6}, "hue"),
    ({"name": "cutout", "sizes": 3}, "sizes"),
])
def test_bad_params_are_refused(item, fragment):
    with pytest.raises(UserError, match=f"batch transform '{item['name']}'.*{fragment}"):
        _build(item, None)


def test_colour_jitter_brightness_factor_per_image():
    n = 500
    p = _pixels(n, 8, 0.1, 0.5)
    norm = _norm(_pixels(8, 8))
    t = _build({"name": "colour_jitter", "brightness": 0.4, "contrast": 0, "saturation": 0,
                "hue": 0}, norm)
    out = norm.to_pixels(t(norm.from_pixels(p), torch.zeros(n), _gen(0))[0])
    factor = (out / p).flatten(1)
    torch.testing.assert_close(factor.min(1).values, factor.max(1).values, atol=1e-4, rtol=0)
    f = factor[:, 0]
    assert f.min() >= 0.6 - 1e-4 and f.max() <= 1.4 + 1e-4
    assert abs(f.mean().item() - 1.0) < 0.03  # uniform on [0.6, 1.4]: std of the mean 0.010
    assert abs(f.std().item() - 0.8 / 12 ** 0.5) < 0.02
    assert len(set(f.round(decimals=4).tolist())) > 450


def _applied_share_autoaugment() -> float:
    """P(at least one op of the drawn sub-policy changes the image) for the test image: ops at
    a signed magnitude 0 (color bin 0) change nothing."""
    total = 0.0
    for sub in CIFAR10_POLICY:
        none = 1.0
        for op, prob, b in sub:
            if not (op in SIGNED and b == 0):
                none *= 1 - prob
        total += (1 - none) / len(CIFAR10_POLICY)
    return total


def test_autoaugment_applies_the_policy_probabilities():
    n = 1000
    p = _pixels(1, 16, 0.2, 0.8).expand(n, -1, -1, -1).contiguous()
    norm = _norm(_pixels(8, 16))
    out = norm.to_pixels(_build("autoaugment", norm)(norm.from_pixels(p), torch.zeros(n),
                                                      _gen(0))[0])
    changed = ((out - p).abs() > 1e-4).flatten(1).any(1).float().mean().item()
    assert abs(changed - _applied_share_autoaugment()) < 0.06  # binomial std 0.015


def test_randaugment_at_magnitude_zero_changes_only_by_autocontrast_and_equalize():
    """At bin 0 every op but autocontrast and equalize is the identity (posterize keeps 8 bits,
    solarize's threshold is 1.0): P(changed) = 1 - (12/14)^2 for n = 2."""
    n = 1000
    p = _pixels(1, 16, 0.2, 0.8).expand(n, -1, -1, -1).contiguous()
    norm = _norm(_pixels(8, 16))
    out = _build({"name": "randaugment", "n": 2, "m": 0}, norm)(norm.from_pixels(p),
                                                                torch.zeros(n), _gen(0))[0]
    changed = ((norm.to_pixels(out) - p).abs() > 1e-4).flatten(1).any(1).float().mean().item()
    assert abs(changed - (1 - (12 / 14) ** 2)) < 0.05  # binomial std 0.011


# op -> (torchvision functional on one image with the scalar magnitude, tolerance); colour and
# contrast differ by float rounding of the grayscale weights (~1e-4)
TV = {
    "brightness": (lambda img, m: TF.adjust_brightness(img, 1 + m), 1e-5),
    "color": (lambda img, m: TF.adjust_saturation(img, 1 + m), 2e-4),  # grayscale rounding
    "contrast": (lambda img, m: TF.adjust_contrast(img, 1 + m), 2e-4),
    "sharpness": (lambda img, m: TF.adjust_sharpness(img, 1 + m), 1e-5),
    # PIL's posterize on 8-bit values (torchvision's uint8 path; its float path differs)
    "posterize": (lambda img, m: TF.posterize((img * 255).round().byte(), int(m)) / 255, 1e-6),
    "solarize": (lambda img, m: TF.solarize(img, m), 0),
    "autocontrast": (lambda img, m: TF.autocontrast(img), 1e-5),
    "equalize": (lambda img, m: TF.equalize(img), 1 / 255 + 1e-5),
    "invert": (lambda img, m: TF.invert(img), 0),
}


@pytest.mark.parametrize("op", sorted(TV))
def test_pixel_kernels_match_torchvision_image_by_image(op):
    x = (_pixels(6, 16, 0.1, 0.9) * 255).round() / 255  # 8-bit levels
    m = {"posterize": torch.tensor([8.0, 7, 6, 5, 4, 4]),
         "solarize": torch.tensor([1.0, 0.8, 0.6, 0.5, 0.3, 0.2])}.get(
        op, torch.tensor([-0.9, -0.5, -0.1, 0.2, 0.6, 0.9]))
    fn, tol = TV[op]
    out = OPS[op](x, m)
    for i in range(x.shape[0]):
        torch.testing.assert_close(out[i], fn(x[i], m[i].item()), atol=tol, rtol=0)


def test_geometric_kernels():
    x = _pixels(3, 16, 0.1, 0.9)
    zero = torch.zeros(3)
    for op in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        torch.testing.assert_close(OPS[op](x, zero), x, atol=1e-6, rtol=0)
    shift = torch.tensor([3.0, -2.0, 0.0])
    out = OPS["translate_x"](x, shift)
    torch.testing.assert_close(out[0, ..., 3:], x[0, ..., :-3])
    assert (out[0, ..., :3] == 0).all()  # zero fill: black
    torch.testing.assert_close(out[1, ..., :-2], x[1, ..., 2:])
    out = OPS["translate_y"](x, shift)
    torch.testing.assert_close(out[0, :, 3:], x[0, :, :-3])
    turned = OPS["rotate"](x, torch.tensor([90.0, 180.0, 0.0]))
    torch.testing.assert_close(turned[1], x[1].flip(-1, -2), atol=1e-6, rtol=0)


class Probe(BatchTransform):
    """A pixel-space transform that records what it is given and returns it as it came."""

    name, pixels = "probe", True

    def __call__(self, x, y, generator):
        self.seen = x.clone()
        return x, y


def test_pixel_transforms_get_pixel_values_and_the_batch_comes_back_normalised():
    p = _pixels(8, 8, seed=4)
    norm = _norm(p)
    x = norm.from_pixels(p)
    probe = Probe()
    out, _ = Compose([probe], norm)(x, torch.zeros(8), _gen(0))
    torch.testing.assert_close(probe.seen, p, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="normalizer"):
        Compose([probe])


def test_a_run_with_every_augmentation_trains_and_beats_chance(tmp_path):
    import json

    from imbal.config import load_config
    from imbal.training.run import train

    chain = ("[{name: cutout, size: 3}, {name: gridmask, d_min: 4, d_max: 6, p: 0.5}, "
             "{name: randaugment, n: 1, m: 5}, autoaugment, {name: colour_jitter, p: 0.5}]")
    cfg = load_config(None, [
        "data.source=digits", "model.params={activation: relu}", "train.batch_size=32",
        "train.optimizer={name: adam, lr: 0.003}", "logging.progress=false",
        "logging.tensorboard=false", "data.subset.per_class=60", "data.subset.test_per_class=30",
        "train.epochs=3", f"train.batch_transforms={chain}"])
    train(cfg, out_dir=str(tmp_path / "r"), quiet=True)
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["test"]["balanced_acc"] > 0.3  # chance: 0.1
