"""Device batches: normalisation, augmentation shapes and randomness, slicing."""

import torch

from imbal.data.batches import BatchAugment, Normalizer, batch_slices, num_batches, random_crop


def test_normalizer_statistics():
    imgs = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    norm = Normalizer.fit(imgs, torch.device("cpu"))
    x = norm(imgs)
    assert x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):  # every non-zero value of the crop is a contiguous window of the image
        nz = out[i, 0][out[i, 0] > 0]
        assert set(nz.tolist()) <= set(x[i, 0].flatten().tolist())


def test_augment_depends_only_on_generator():
    x = torch.randn(16, 3, 8, 8)
    aug = BatchAugment(crop_padding=2, hflip=True)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_slices_cover_the_order():
    order = torch.randperm(10)
    parts = list(batch_slices(order, 4))
    assert [p.numel() for p in parts] == [4, 4, 2]
    assert torch.equal(torch.cat(parts), order)
    assert [p.numel() for p in batch_slices(order, 3, drop_last=True)] == [3, 3, 3]
    assert num_batches(10, 4) == 3 and num_batches(10, 3, drop_last=True) == 3


def test_random_crop_pads_with_black_before_normalisation():
    """The border of a padded crop is what a black (0) pixel normalises to, per channel, as
    the long-tail codebases pad the uint8 image before normalising; the rest is the image."""
    n, p = 8, 4
    images = torch.tensor([100, 150, 200], dtype=torch.uint8).view(1, 3, 1, 1).expand(n, 3, 8, 8)
    norm = Normalizer([0.3, 0.4, 0.5], [0.2, 0.25, 0.3], torch.device("cpu"))
    black = torch.tensor([-0.3 / 0.2, -0.4 / 0.25, -0.5 / 0.3])
    assert torch.allclose(norm.black, black) and torch.allclose(norm(torch.zeros(1, 3, 1, 1, dtype=torch.uint8)).flatten(), norm.black)
    x = norm(images)
    out = BatchAugment(crop_padding=p, fill=norm.black)(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws as random_crop: dx, then dy
    dx, dy = (torch.randint(0, 2 * p + 1, (n,), generator=g) for _ in range(2))
    r = torch.arange(8)
    borders = 0
    for i in range(n):
        inside = (((r + dy[i] >= p) & (r + dy[i] < p + 8)).view(8, 1)
                  & ((r + dx[i] >= p) & (r + dx[i] < p + 8)).view(1, 8))
        for ch in range(3):
            assert torch.equal(out[i, ch][~inside], norm.black[ch].expand(int((~inside).sum())))
            assert torch.equal(out[i, ch][inside], x[i, ch][inside])
        borders += int((~inside).sum())
    assert borders > 0
    # undone, the border is 0 in every channel: black, not the mean colour
    raw = out * torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1) * 255 + torch.tensor(
        [0.3, 0.4, 0.5]).view(1, 3, 1, 1) * 255
    assert set(raw[:, 0].round().unique().tolist()) == {0.0, 100.0}


def test_a_run_pads_its_crops_with_black():
    from imbal.config import load_config
    from imbal.training.setup import build_setup

    cfg = load_config({"data": {"source": "digits", "augment": {"crop_padding": 2}},
                       "train": {"device": "cpu"}})
    setup = build_setup(cfg, quiet=True)
    assert torch.equal(setup.augment.fill, setup.trainer.normalizer.black)
    assert setup.trainer.normalizer.black.item() < 0  # digits' black lies below their mean
