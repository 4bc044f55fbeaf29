"""Loss identities, weights, schedules, samplers and data-set transforms of imbal.remedies."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from imbal.remedies import ClassSampler, build_plan
from imbal.remedies.losses import schedule_value
from imbal.remedies.samplers import class_probabilities
from imbal.remedies.weights import (
    batch_inverse_weights,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
)

C = 4


def targets_for(counts: list[int]) -> torch.Tensor:
    return torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])


def labelled_images(targets: torch.Tensor, size: int = 6) -> torch.Tensor:
    """Channel 0 is the label (10 * y + 5) everywhere; channel 1 a left-right and up-down
    asymmetric ramp (flips are visible); channel 2 the image's id (its index, < 256)."""
    n = targets.numel()
    ch0 = (10 * targets + 5).view(n, 1, 1, 1).expand(n, 1, size, size)
    ramp = (torch.arange(size * size) * 3).view(1, 1, size, size).expand(n, 1, size, size)
    ids = torch.arange(n).view(n, 1, 1, 1).expand(n, 1, size, size)
    return torch.cat([ch0, ramp, ids], 1).to(torch.uint8).contiguous()


def plan_for(remedies, counts=(40, 20, 10, 5), minority=(2, 3), epochs=10, seed=0):
    t = targets_for(list(counts))
    return build_plan(
        remedies,
        images=labelled_images(t),
        targets=t,
        num_classes=len(counts),
        minority_classes=list(minority),
        epochs=epochs,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, C, generator=g) * 3
    y = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3, 3, 2, 0, 1])
    return logits, y


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---- loss identities -------------------------------------------------------------------------


def test_no_remedy_is_cross_entropy(batch):
    logits, y = batch
    close(plan_for(None).loss(logits, y), F.cross_entropy(logits, y))
    close(plan_for([]).loss(logits, y), F.cross_entropy(logits, y))


def test_focal_gamma_zero_is_ce_and_gamma_two_by_hand(batch):
    logits, y = batch
    close(plan_for([{"name": "focal", "gamma": 0}]).loss(logits, y), F.cross_entropy(logits, y))
    logp_t = F.log_softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    by_hand = (-((1 - logp_t.exp()) ** 2) * logp_t).mean()
    close(plan_for(["focal"]).loss(logits, y), by_hand)


def test_balanced_softmax_equal_counts_is_ce_and_offsets_log_counts(batch):
    logits, y = batch
    equal = plan_for(["balanced_softmax"], counts=(7, 7, 7, 7))
    close(equal.loss(logits, y), F.cross_entropy(logits, y))
    skewed = plan_for(["balanced_softmax"], counts=(40, 20, 10, 5))
    log_n = torch.log(torch.tensor([40.0, 20, 10, 5]))
    close(skewed.loss(logits, y), F.cross_entropy(logits + log_n, y))
    assert skewed.eval_logit_offset is None


def test_logit_adjust_tau_one_is_balanced_softmax(batch):
    logits, y = batch
    bs = plan_for(["balanced_softmax"]).loss(logits, y)
    close(plan_for([{"name": "logit_adjust", "tau": 1.0}]).loss(logits, y), bs)
    prior = torch.tensor([40.0, 20, 10, 5]) / 75
    half = plan_for([{"name": "logit_adjust", "tau": 0.5}]).loss(logits, y)
    close(half, F.cross_entropy(logits + 0.5 * prior.log(), y))


def test_logit_adjust_posthoc_only_at_evaluation(batch):
    logits, y = batch
    p = plan_for([{"name": "logit_adjust", "mode": "posthoc", "tau": 1.5}])
    close(p.loss(logits, y), F.cross_entropy(logits, y))
    prior = torch.tensor([40.0, 20, 10, 5]) / 75
    close(p.eval_logit_offset, -1.5 * prior.log())


def test_label_smoothing_on_no_classes_is_ce(batch):
    logits, y = batch
    p = plan_for([{"name": "label_smoothing", "eps": 0.3, "classes": []}])
    close(p.loss(logits, y), F.cross_entropy(logits, y))


def test_label_smoothing_all_and_minority_by_hand(batch):
    logits, y = batch
    eps = 0.2
    logp = F.log_softmax(logits, 1)
    rows = []
    for i in range(len(y)):
        t = int(y[i])
        others = sum(float(logp[i, k]) for k in range(C) if k != t)
        smooth = -(1 - eps) * float(logp[i, t]) - eps / C * others  # S1: others get eps / K
        rows.append((smooth, -float(logp[i, t]), t))
    all_cls = plan_for([{"name": "label_smoothing", "eps": eps}]).loss(logits, y)
    assert all_cls.item() == pytest.approx(sum(r[0] for r in rows) / len(rows), rel=1e-5)
    minority = plan_for([{"name": "label_smoothing", "eps": eps, "classes": "minority"}])
    expect = sum(r[0] if r[2] in (2, 3) else r[1] for r in rows) / len(rows)
    assert minority.loss(logits, y).item() == pytest.approx(expect, rel=1e-5)


def test_class_weights_equal_counts_is_ce_and_match_torch_weight(batch):
    logits, y = batch
    equal = plan_for(["class_weights"], counts=(9, 9, 9, 9))
    close(equal.loss(logits, y), F.cross_entropy(logits, y))
    w = 75 / torch.tensor([40.0, 20, 10, 5])  # S2: sum_i N_i / N_j
    close(plan_for(["class_weights"]).loss(logits, y), F.cross_entropy(logits, y, weight=w))
    mean = plan_for([{"name": "class_weights", "reduction": "mean"}]).loss(logits, y)
    close(mean, (w[y] * F.cross_entropy(logits, y, reduction="none")).mean())


def test_weight_normalisations_by_hand():
    n = torch.tensor([30, 10])
    close(inverse_frequency_weights(n, "none"), torch.tensor([4 / 3, 4.0]))
    close(inverse_frequency_weights(n, "sum_to_C"), torch.tensor([0.5, 1.5]))
    close(inverse_frequency_weights(n, "sample_mean"), torch.tensor([2 / 3, 2.0]))


def test_effective_number_weights_by_hand():
    raw = [0.1 / (1 - 0.9**10), 0.1 / (1 - 0.9**1)]  # (1 - beta) / (1 - beta^N)
    expect = torch.tensor([2 * r / sum(raw) for r in raw])  # normalised to sum C = 2
    close(effective_number_weights(torch.tensor([10, 1]), 0.9), expect)
    assert expect.tolist() == pytest.approx([0.266198, 1.733802], abs=1e-6)
    close(effective_number_weights(torch.tensor([10, 1]), 0.0), torch.tensor([1.0, 1.0]))


def test_class_weights_beta_uses_effective_number(batch):
    logits, y = batch
    w = effective_number_weights(torch.tensor([40, 20, 10, 5]), 0.99)
    p = plan_for([{"name": "class_weights", "beta": 0.99}])
    close(p.loss(logits, y), F.cross_entropy(logits, y, weight=w))


def test_batch_inverse_weights_by_hand():
    y = torch.tensor([0, 0, 0, 1, 2, 2])  # class 3 absent
    # 1/N = [1/3, 1, 1/2, -], sum 11/6; w = 4 (1/N) / (11/6)
    close(batch_inverse_weights(y, 4), torch.tensor([8 / 11, 24 / 11, 12 / 11, 0.0]))
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    per = F.cross_entropy(logits, y, reduction="none")
    w = torch.tensor([8, 8, 8, 24, 12, 12]) / 11
    p = plan_for(["batch_inverse"])
    close(p.loss(logits, y), (w * per).sum() / w.sum())
    mean = plan_for([{"name": "batch_inverse", "reduction": "mean"}])
    close(mean.loss(logits, y), (w * per).mean())


def test_ldam_margins_loss_and_drw_switch(batch):
    close(ldam_margins(torch.tensor([81, 16, 1]), 0.5), torch.tensor([1 / 6, 1 / 4, 1 / 2]))
    logits, y = batch
    cos = torch.tanh(logits)
    p = plan_for(["ldam"], counts=(81, 16, 16, 1), epochs=10)  # drw_epoch 0.8 -> epoch 8
    assert p.head == "normed"
    m = torch.tensor([1 / 6, 1 / 4, 1 / 4, 1 / 2])
    z = 30 * (cos - m[y][:, None] * F.one_hot(y, C))
    w = effective_number_weights(torch.tensor([81, 16, 16, 1]), 0.9999)
    close(p.loss(cos, y), F.cross_entropy(z, y))
    for epoch, on in [(7, False), (8, True), (9, True), (3, False)]:  # any order (resume)
        for hook in p.epoch_hooks:
            hook(epoch)
        expect = F.cross_entropy(z, y, weight=w) if on else F.cross_entropy(z, y)
        close(p.loss(cos, y), expect)
    fixed = plan_for([{"name": "ldam", "drw_epoch": 3}], epochs=10)
    fixed.epoch_hooks[0](2)
    assert not fixed.loss.weights_on
    fixed.epoch_hooks[0](3)
    assert fixed.loss.weights_on
    assert plan_for([{"name": "ldam", "drw_epoch": None}]).epoch_hooks == []


FUSED = [None, ["balanced_softmax"], ["logit_adjust"], ["ldam"], ["class_weights"],
         [{"name": "class_weights", "beta": 0.99}, "balanced_softmax"], ["batch_inverse"],
         [{"name": "focal", "gamma": 0, "alpha": [0.25, 0.5, 1.0, 2.0]}]]


@pytest.mark.parametrize("remedies", FUSED, ids=str)
def test_fused_cross_entropy_path_equals_the_general_formula(batch, remedies):
    """Settings without smoothing or focal power take F.cross_entropy; it must give the module
    docstring's formula (per-sample loss, weights w_{y_i}, sum w l / sum w), value and gradient."""
    logits, y = batch
    loss = plan_for(remedies).loss
    if remedies == ["ldam"]:
        loss.weights_on = True  # DRW phase: margins and class weights together
        logits = torch.tanh(logits)
    z1, z2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fused = loss(z1, y)
    per = -F.log_softmax(loss.adjusted_logits(z2, y), 1).gather(1, y[:, None]).squeeze(1)
    w = loss.sample_weights(y)
    general = per.mean() if w is None else (w * per).sum() / w.sum()
    close(fused, general)
    fused.backward()
    general.backward()
    close(z1.grad, z2.grad)


def test_focal_schedule_values_per_epoch():
    s3 = [0.2, 0.5, 0.8, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 15]
    p = plan_for([{"name": "focal", "gamma_schedule": s3}], epochs=10)
    seen = []
    for epoch in range(10):
        for hook in p.epoch_hooks:
            hook(epoch)
        seen.append(p.loss.gamma)
    # index round(e * 11 / 9): first and last values reached, two interior ones skipped
    assert seen == [0.2, 0.5, 0.8, 1.5, 2, 2.5, 3, 5, 10, 15]
    assert [schedule_value([1, 2], e, 4) for e in range(4)] == [1, 1, 2, 2]
    assert [schedule_value(s3[:5], e, 5) for e in range(5)] == s3[:5]
    lin = plan_for([{"name": "focal", "gamma_schedule": {"start": 0, "end": 2}}], epochs=5)
    assert lin.loss.gamma == 0.0
    vals = []
    for e in range(5):
        lin.epoch_hooks[0](e)
        vals.append(lin.loss.gamma)
    assert vals == [0.0, 0.5, 1.0, 1.5, 2.0]


# ---- samplers --------------------------------------------------------------------------------

SKEWED = [1000, 100, 10, 1]


def draw(mode: str, size: int, seed: int = 0, counts=SKEWED) -> tuple[torch.Tensor, torch.Tensor]:
    t = targets_for(counts)
    s = ClassSampler(t, class_probabilities(torch.tensor(counts), mode), size)
    return t, s.epoch_indices(0, torch.Generator().manual_seed(seed))


def test_balanced_sampler_frequencies():
    # 200,000 draws: std of a class frequency is sqrt(.25 * .75 / 2e5) < 0.001; tolerance 0.005.
    t, idx = draw("balanced", 200_000)
    freq = torch.bincount(t[idx], minlength=4).double() / idx.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.005)
    assert idx.dtype == torch.long and int(idx.min()) >= 0 and int(idx.max()) < t.numel()
    # every image of a small class is reachable (a draw is uniform within the class)
    assert set(idx[t[idx] == 2].tolist()) == set(range(1100, 1110))


def test_sqrt_sampler_frequencies():
    t, idx = draw("sqrt", 200_000)
    freq = torch.bincount(t[idx], minlength=4).double() / idx.numel()
    root = torch.tensor(SKEWED, dtype=torch.float64).sqrt()
    assert torch.allclose(freq, root / root.sum(), atol=0.005)


def test_sampler_empty_class_never_drawn_and_default_epoch_size():
    t, idx = draw("balanced", 30_000, counts=[50, 0, 5])
    freq = torch.bincount(t[idx], minlength=3).double() / idx.numel()
    assert freq[1] == 0 and abs(freq[0] - 0.5) < 0.02
    p = plan_for(["oversample"])
    assert len(p.sampler) == 75 and p.sampler.epoch_indices(0, torch.Generator()).numel() == 75


def test_sampler_same_generator_state_same_indices():
    _, a = draw("balanced", 5000, seed=7)
    _, b = draw("balanced", 5000, seed=7)
    _, c = draw("balanced", 5000, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampler_ten_million_draws():
    start = time.perf_counter()
    t, idx = draw("balanced", 10_000_000)
    elapsed = time.perf_counter() - start
    assert idx.shape == (10_000_000,) and int(idx.max()) < t.numel()
    freq = torch.bincount(t[idx], minlength=4).double() / idx.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.001)
    assert elapsed < 20, f"10M draws took {elapsed:.1f}s"


# ---- copy / undersample ----------------------------------------------------------------------


def labels_in_step(p) -> bool:
    return torch.equal(p.images[:, 0, 0, 0].long(), 10 * p.targets + 5)


def test_copy_k_exact_counts_labels_in_step():
    p = plan_for([{"name": "copy", "k": 2}])  # minority classes 2, 3
    assert p.class_counts == [40, 20, 30, 15]
    assert torch.bincount(p.targets).tolist() == [40, 20, 30, 15]
    assert labels_in_step(p)
    assert torch.equal(p.images[75:85], p.images[60:70])  # class 2's first copy, untransformed


def test_copy_balance_exact_counts():
    p = plan_for([{"name": "copy", "classes": [1, 2, 3]}], counts=(50, 7, 20, 3))
    assert p.class_counts == [50, 50, 50, 50] and labels_in_step(p)
    # 43 extra of class 1's 7 images: each appears floor or ceil of 50/7 times in total
    ids = p.images[p.targets == 1][:, 2, 0, 0]
    assert sorted(set(torch.bincount(ids).tolist()) - {0}) == [7, 8]


def test_copy_hflip_copies_differ_and_are_flipped():
    p = plan_for([{"name": "copy", "k": 1, "transforms": ["hflip"], "flip_p": 1.0}])
    originals, copies = p.images[60:75], p.images[75:]
    assert torch.equal(copies, originals.flip(-1)) and labels_in_step(p)
    assert all(not torch.equal(a, b) for a, b in zip(copies, originals, strict=True))
    half = plan_for(
        [{"name": "copy", "k": 20, "classes": "all", "transforms": ["hflip"]}],
        counts=(20, 20),
        minority=(1,),
    )
    # copies are laid out class by class: class 0's images 20 times, then class 1's
    src = torch.cat([half.images[:20].repeat(20, 1, 1, 1), half.images[20:40].repeat(20, 1, 1, 1)])
    assert labels_in_step(half)
    flipped = (half.images[40:] != src).flatten(1).any(1).double().mean()
    assert 0.4 < flipped < 0.6  # flip_p 0.5 over 800 copies (std 0.018)


def test_copy_brightness_contrast_stay_uint8_and_change_images():
    p = plan_for([{"name": "copy", "k": 3, "transforms": ["brightness", "contrast", "vflip"]}])
    assert p.images.dtype == torch.uint8 and p.class_counts == [40, 20, 40, 20]
    assert (p.images[75:] != p.images[60:75].repeat(3, 1, 1, 1)).any()


def test_undersample_exact_counts_labels_in_step_and_reproducible():
    p = plan_for([{"name": "undersample", "target": 10}], counts=(50, 7, 20, 3))
    assert p.class_counts == [10, 7, 10, 3] and labels_in_step(p)
    ids = p.images[p.targets == 0][:, 2, 0, 0]
    assert len(set(ids.tolist())) == 10  # distinct images, not repeats
    assert plan_for(["undersample"], counts=(50, 7, 20, 3)).class_counts == [3, 3, 3, 3]
    again = plan_for([{"name": "undersample", "target": 10}], counts=(50, 7, 20, 3))
    other = plan_for([{"name": "undersample", "target": 10}], counts=(50, 7, 20, 3), seed=1)
    assert torch.equal(p.images, again.images) and not torch.equal(p.images, other.images)


def test_focal_alpha_as_class_weights(batch):
    logits, y = batch
    alpha = [0.25, 0.5, 1.0, 2.0]
    p = plan_for([{"name": "focal", "gamma": 0, "alpha": alpha}])
    close(p.loss(logits, y), F.cross_entropy(logits, y, weight=torch.tensor(alpha)))


def test_focal_on_balanced_softmax_offset(batch):
    logits, y = batch
    p = plan_for([{"name": "focal", "gamma": 1.0}, "balanced_softmax"])
    z = logits + torch.log(torch.tensor([40.0, 20, 10, 5]))
    logp_t = F.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    close(p.loss(logits, y), (-(1 - logp_t.exp()) * logp_t).mean())
    assert math.isfinite(p.loss(logits, y).item())
