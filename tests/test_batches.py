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
